// swift-tools-version:5.9
// GemmaKit for iOS (and macOS). Before building, on a Mac:
//   ../scripts/gen-bindings.sh        generated Swift sources + C header/modulemap
//   ./build-xcframework.sh            GemmaKitFFI.xcframework (static libraries)
// Swift 5 language mode: uniffi 0.32's generated code is not yet Swift 6 strict-concurrency clean.
import PackageDescription

let package = Package(
    name: "GemmaKit",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "GemmaKit", targets: ["GemmaKit"]),
    ],
    targets: [
        // The Rust library (libgemmakit_ffi.a per platform) with its C header and modulemap.
        .binaryTarget(name: "GemmaKitFFI", path: "GemmaKitFFI.xcframework"),
        // The uniffi-generated Swift (Sources/GemmaKit/Generated) and the wrapper.
        .target(
            name: "GemmaKit",
            dependencies: ["GemmaKitFFI"],
            path: "Sources/GemmaKit",
            linkerSettings: [.linkedFramework("Metal"), .linkedFramework("QuartzCore")]
        ),
    ]
)

// GemmaKit for Android: the hand-written wrapper (src/main/kotlin), the uniffi-generated bindings
// (src/main/generated, from ../../scripts/gen-bindings.sh) and the native library per ABI
// (src/main/jniLibs, from ../../scripts/build-jni-libs.sh).
//
// Publishing the AAR to a local Maven repository (android/build/repo):
//   ./gradlew :gemmakit:publishReleasePublicationToLocalRepository
// An app then adds `maven { url = uri("<path>/android/build/repo") }` and
// `implementation("dev.gemmakit:gemmakit:0.1.0")` (README "Add GemmaKit to an Android app").
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
    `maven-publish`
}

android {
    namespace = "dev.gemmakit"
    compileSdk = 36

    defaultConfig {
        minSdk = 26
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets["main"].apply {
        java.srcDirs("src/main/kotlin", "src/main/generated")
        jniLibs.srcDirs("src/main/jniLibs")
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    publishing {
        singleVariant("release") { withSourcesJar() }
    }

    packaging {
        // Keep the .so page-aligned and uncompressed (Play's 16 KB page-size requirement).
        jniLibs.useLegacyPackaging = false
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // The generated bindings call the native library through JNA (the AAR carries its .so).
    implementation("net.java.dev.jna:jna:5.17.0@aar")
    // api: the wrapper's public API returns Flows.
    api("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.10.2")
    implementation("androidx.annotation:annotation:1.9.1")
}

publishing {
    publications {
        register<MavenPublication>("release") {
            groupId = "dev.gemmakit"
            artifactId = "gemmakit"
            version = "0.1.0"
            afterEvaluate { from(components["release"]) }
        }
    }
    repositories {
        maven {
            name = "local"
            url = uri(rootProject.layout.buildDirectory.dir("repo"))
        }
    }
}


//! Swift sources, C headers and the modulemap as separate outputs (what an xcframework needs):
//! `uniffi-bindgen-swift <built library> DIR --swift-sources --headers --modulemap ...`.
fn main() {
    uniffi::uniffi_bindgen_swift()
}

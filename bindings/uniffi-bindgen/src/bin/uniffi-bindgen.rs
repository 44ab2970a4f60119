//! `uniffi-bindgen generate <built library> --language kotlin|swift --out-dir DIR`.
fn main() {
    uniffi::uniffi_bindgen_main()
}

//! Platform glue, compiled only where it applies, and free functions.
//!
//! Android: `JNI_OnLoad` (run by the Kotlin wrapper's `System.loadLibrary`) hands the `JavaVM`
//! to jni, which keeps it as its process-wide singleton (`jni::JavaVM::singleton()`), and
//! routes `log` to logcat. Generation runs on the thread that calls `send` (a JVM thread, so
//! already attached); no Rust-spawned thread calls into the JVM today. One that ever does
//! must attach itself once with `JavaVM::singleton()?.attach_current_thread(..)` (jni 0.22:
//! a permanent attach), not per callback.
//!
//! Apple: with the `oslog` feature, `init_logging` routes `log` to the unified logging system.

use std::sync::OnceLock;

use crate::types::{EngineOptions, GenerateOptions, SamplingOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// Whether this library installed the process's `log` logger.
static LOGGER_INSTALLED: OnceLock<bool> = OnceLock::new();

/// Routes the engine's log to logcat (Android) or os_log (Apple, `oslog` feature) and sets the
/// level. Elsewhere only the level is set (a host app installs its own `log` logger). Safe to
/// call more than once: the logger is installed once, the level is updated each time.
#[uniffi::export]
pub fn init_logging(max_level: LogLevel) {
    let level: log::LevelFilter = max_level.into();
    LOGGER_INSTALLED.get_or_init(install_logger);
    log::set_max_level(level);
}

#[cfg(target_os = "android")]
fn install_logger() -> bool {
    android_logger::init_once(
        android_logger::Config::default()
            .with_tag("GemmaKit")
            .with_max_level(log::LevelFilter::Trace),
    );
    true
}

#[cfg(all(target_vendor = "apple", feature = "oslog"))]
fn install_logger() -> bool {
    oslog::OsLogger::new("dev.gemmakit")
        .level_filter(log::LevelFilter::Trace)
        .init()
        .is_ok()
}

#[cfg(not(any(target_os = "android", all(target_vendor = "apple", feature = "oslog"))))]
fn install_logger() -> bool {
    false
}

#[cfg(target_os = "android")]
mod android {
    use std::ffi::c_void;

    use jni::sys::{JNI_VERSION_1_6, JavaVM as RawJavaVM, jint};

    /// Run by `System.loadLibrary("gemmakit_ffi")`. Not run when only JNA loads the library,
    /// which is why the Kotlin wrapper calls `System.loadLibrary` first.
    #[unsafe(no_mangle)]
    pub extern "system" fn JNI_OnLoad(vm: *mut RawJavaVM, _reserved: *mut c_void) -> jint {
        // A panic must not unwind into the VM.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if !vm.is_null() {
                // SAFETY: the VM passes a valid, process-lifetime JavaVM pointer. jni keeps it
                // as its singleton.
                let _vm = unsafe { jni::JavaVM::from_raw(vm) };
            }
            super::init_logging(super::LogLevel::Info);
        }));
        JNI_VERSION_1_6
    }
}

/// The engine's default load options (what `EngineOptions()` should equal).
#[uniffi::export]
pub fn default_engine_options() -> EngineOptions {
    gemmakit::engine::EngineOptions::default().into()
}

/// The engine's default generation options: greedy, 256 tokens (what `GenerateOptions()`
/// should equal).
#[uniffi::export]
pub fn default_generate_options() -> GenerateOptions {
    gemmakit::generate::GenerateOptions::default().into()
}

/// Gemma's recommended sampling (generation_config.json): temperature 1.0, top-k 64, top-p 0.95.
#[uniffi::export]
pub fn gemma_recommended_sampling() -> SamplingOptions {
    gemmakit::sampling::SamplingOptions::gemma_default().into()
}

/// The GemmaKit version of this library.
#[uniffi::export]
pub fn gemmakit_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

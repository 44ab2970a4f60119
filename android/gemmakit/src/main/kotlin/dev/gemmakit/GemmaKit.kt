package dev.gemmakit

import java.util.concurrent.atomic.AtomicBoolean

/**
 * Loads the native library once, before the first call into it.
 *
 * `System.loadLibrary` runs the library's `JNI_OnLoad` (Android: keeps the JavaVM, routes the
 * engine's log to logcat); the generated bindings then reach the same library through JNA.
 * On a desktop JVM the library may be found by JNA alone (`-Djna.library.path`), so a failed
 * `System.loadLibrary` is only fatal on Android.
 */
object GemmaKit {
    const val LIBRARY_NAME: String = "gemmakit_ffi"

    private val loaded = AtomicBoolean(false)

    private val isAndroid: Boolean by lazy {
        System.getProperty("java.vm.vendor").orEmpty().contains("Android", ignoreCase = true) ||
            System.getProperty("java.vm.name").orEmpty().contains("Dalvik", ignoreCase = true)
    }

    /** Idempotent and thread-safe; every entry point of this package calls it. */
    @JvmStatic
    fun ensureLoaded() {
        if (loaded.get()) return
        synchronized(this) {
            if (loaded.get()) return
            try {
                System.loadLibrary(LIBRARY_NAME)
            } catch (e: UnsatisfiedLinkError) {
                if (isAndroid) throw e
                // Desktop JVM: JNA searches jna.library.path itself.
            }
            loaded.set(true)
        }
    }

    /** Routes the engine's log to logcat (Android) and sets its level. */
    @JvmStatic
    fun initLogging(level: dev.gemmakit.ffi.LogLevel) {
        ensureLoaded()
        dev.gemmakit.ffi.initLogging(level)
    }

    /** The version of the native library. */
    @JvmStatic
    val version: String
        get() {
            ensureLoaded()
            return dev.gemmakit.ffi.gemmakitVersion()
        }
}

// Versions not verified here (Gradle never runs on the development machines): Google's Maven (AGP) is unreachable from the dev machines and there is
// no Android SDK; Kotlin matches android/jvm-test (2.4.21).
plugins {
    id("com.android.library") version "8.13.0" apply false
    id("com.android.application") version "8.13.0" apply false
    id("org.jetbrains.kotlin.plugin.compose") version "2.4.21" apply false
    id("org.jetbrains.kotlin.android") version "2.4.21" apply false
}

// The GemmaKit sample app for Android: the shared screens (../sample-ui), the app logic
// (../sample-core) and the Android shell (src/main/kotlin). Not built on the development machines
// (no Android SDK, no Google Maven there): its framework-only sources are type-checked by
// typecheck/pom.xml (scripts/typecheck-android.sh) against Robolectric's android-all.
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
    id("org.jetbrains.kotlin.plugin.compose")
}

android {
    namespace = "dev.gemmakit.sample.android"
    compileSdk = 36

    defaultConfig {
        applicationId = "dev.gemmakit.sample"
        minSdk = 26
        targetSdk = 36
        versionCode = 1
        versionName = "0.1.0"
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
    }

    sourceSets["main"].java.srcDirs(
        "src/main/kotlin",
        "../sample-core/src/main/kotlin",
        "../sample-ui/src/main/kotlin",
    )

    buildFeatures { compose = true }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    packaging {
        // Page-aligned, uncompressed .so (Play's 16 KB page-size requirement).
        jniLibs.useLegacyPackaging = false
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    implementation(project(":gemmakit"))
    implementation(platform("androidx.compose:compose-bom:2026.01.00"))
    implementation("androidx.compose.material:material")
    implementation("androidx.compose.ui:ui")
    implementation("androidx.activity:activity-compose:1.12.2")
    implementation("androidx.lifecycle:lifecycle-viewmodel-compose:2.10.0")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.10.2")
}

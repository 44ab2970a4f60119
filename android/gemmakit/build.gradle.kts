// GemmaKit for Android: the hand-written wrapper (src/main/kotlin), the uniffi-generated bindings
// (src/main/generated, from ../../scripts/gen-bindings.sh) and the native library per ABI
// (src/main/jniLibs, from ../build-jni-libs.sh).
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
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
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.10.2")
    implementation("androidx.annotation:annotation:1.9.1")
}

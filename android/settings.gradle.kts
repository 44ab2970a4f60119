// The GemmaKit Android library. Before building: ../scripts/gen-bindings.sh (generated Kotlin)
// and ./build-jni-libs.sh (native libraries for each ABI).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}
rootProject.name = "gemmakit-android"
include(":gemmakit")

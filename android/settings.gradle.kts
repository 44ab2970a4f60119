// The GemmaKit Android library and the sample app. Before building: ../scripts/gen-bindings.sh (generated Kotlin)
// and ../scripts/build-jni-libs.sh (native libraries for each ABI).
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
// The sample app (Compose); its screens and logic are shared with the desktop app.
include(":sample-app")

package dev.gemmakit.sample.android

import android.content.Intent
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.compose.ui.graphics.asImageBitmap
import androidx.lifecycle.lifecycleScope
import dev.gemmakit.GemmaKit
import dev.gemmakit.ffi.LogLevel
import dev.gemmakit.sample.ModelViewModel
import dev.gemmakit.sample.TranscribeViewModel
import dev.gemmakit.sample.ui.PlatformShell
import dev.gemmakit.sample.ui.SampleApp
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/**
 * The Android shell around the shared screens (androidx: not type-checked on the development
 * machines; the framework-only parts are in AndroidPlatform.kt). The model view model lives as
 * long as the activity's lifecycle scope; the other screens' view models close when their screen
 * leaves the composition, which cancels their generation.
 */
class MainActivity : ComponentActivity() {
    private lateinit var models: ModelViewModel
    private val recorder = Recorder()
    private var onImage: ((ByteArray) -> Unit)? = null
    private var pendingRecording: TranscribeViewModel? = null

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        GemmaKit.initLogging(LogLevel.INFO)
        models = ModelViewModel(
            lifecycleScope,
            AndroidPlatform.modelsDir(this),
            AndroidPlatform.engineOptions(this),
            availableMemory = { AndroidPlatform.availableMemory(this) },
        )
        val shell = PlatformShell(
            decodeImage = { bytes -> BitmapFactory.decodeByteArray(bytes, 0, bytes.size)?.asImageBitmap() },
            pickModelFile = { AndroidPlatform.pickModel(this) },
            pickImage = { onBytes -> onImage = onBytes; AndroidPlatform.pickImage(this) },
            takePhoto = { onBytes -> onImage = onBytes; AndroidPlatform.takePhoto(this) },
            startRecording = { vm ->
                if (AndroidPlatform.hasMicPermission(this)) {
                    recorder.start(vm)
                } else {
                    pendingRecording = vm
                    AndroidPlatform.requestMicPermission(this)
                }
            },
            stopRecording = recorder::stop,
            memoryNote = AndroidPlatform.memoryNote(this),
        )
        setContent { SampleApp(models, shell) }
    }

    @Deprecated("framework result API: keeps the shell free of androidx.activity.result")
    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        if (resultCode != RESULT_OK) return
        when (requestCode) {
            AndroidPlatform.REQUEST_PICK_IMAGE ->
                data?.data?.let { AndroidPlatform.readUri(this, it) }?.let { onImage?.invoke(it) }
            AndroidPlatform.REQUEST_TAKE_PHOTO ->
                @Suppress("DEPRECATION")
                (data?.extras?.get("data") as? Bitmap)?.let { onImage?.invoke(AndroidPlatform.jpeg(it)) }
            AndroidPlatform.REQUEST_PICK_MODEL -> data?.data?.let { uri ->
                lifecycleScope.launch {
                    // Gigabytes: copied off the main thread.
                    val path = withContext(Dispatchers.IO) {
                        AndroidPlatform.importModel(this@MainActivity, uri, uri.lastPathSegment ?: "model.gguf")
                    }
                    models.load(path)
                }
            }
        }
    }

    override fun onRequestPermissionsResult(requestCode: Int, permissions: Array<String>, grantResults: IntArray) {
        super.onRequestPermissionsResult(requestCode, permissions, grantResults)
        val vm = pendingRecording ?: return
        pendingRecording = null
        if (AndroidPlatform.hasMicPermission(this)) recorder.start(vm) else vm.failed("Microphone permission denied")
    }

    override fun onDestroy() {
        if (isFinishing) models.close()
        super.onDestroy()
    }
}

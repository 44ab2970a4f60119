package dev.gemmakit.sample.android

import android.Manifest
import android.app.Activity
import android.app.ActivityManager
import android.content.Context
import android.content.Intent
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.media.AudioFormat
import android.media.AudioRecord
import android.media.MediaRecorder
import android.net.Uri
import android.os.Build
import android.provider.MediaStore
import dev.gemmakit.ffi.BackendChoice
import dev.gemmakit.ffi.EngineOptions
import dev.gemmakit.sample.TranscribeViewModel
import dev.gemmakit.sample.Wav
import java.io.ByteArrayOutputStream
import java.io.File
import kotlin.concurrent.thread

/**
 * The Android pieces of the sample app that need only the framework (no androidx): model
 * storage, the memory budget, image and audio capture. Type-checked on the development machines
 * against Robolectric's android-all (scripts/typecheck-android.sh); MainActivity wires them to
 * the shared Compose screens.
 */
object AndroidPlatform {
    /**
     * Models live in the app's files dir, at the catalogue's relative paths. Sideload (a debug
     * build) with `adb push model.gguf /data/local/tmp/` then `adb shell run-as
     * dev.gemmakit.sample cp /data/local/tmp/model.gguf files/models/<owner--repo>/` (README).
     */
    fun modelsDir(context: Context): File = File(context.filesDir, "models").apply { mkdirs() }

    /** Memory the system can give the app now: the engine refuses a model larger than this. */
    fun availableMemory(context: Context): Long {
        val am = context.getSystemService(Context.ACTIVITY_SERVICE) as ActivityManager
        val info = ActivityManager.MemoryInfo()
        am.getMemoryInfo(info)
        return info.availMem
    }

    /** A line for the model screen: the JVM heap (largeHeap) and whether the system is low. */
    fun memoryNote(context: Context): String {
        val am = context.getSystemService(Context.ACTIVITY_SERVICE) as ActivityManager
        val info = ActivityManager.MemoryInfo()
        am.getMemoryInfo(info)
        val low = if (info.lowMemory) " The system is low on memory: close other apps." else ""
        return "JVM heap limit ${am.largeMemoryClass} MB (largeHeap); weights live in native memory.$low"
    }

    /**
     * Auto picks the GPU (Vulkan) where it works and falls back to the CPU with a reason, which
     * the model and chat screens show; the memory budget is the system's.
     */
    fun engineOptions(context: Context): EngineOptions =
        EngineOptions(backend = BackendChoice.AUTO, memoryBudget = availableMemory(context).toULong())

    // ------------------------------------------------------------------ images

    const val REQUEST_PICK_IMAGE = 1
    const val REQUEST_TAKE_PHOTO = 2
    const val REQUEST_PICK_MODEL = 3
    const val REQUEST_RECORD_AUDIO = 4

    /** The system photo picker (Android 13+), else the document picker for images. */
    fun pickImage(activity: Activity) {
        val intent = if (Build.VERSION.SDK_INT >= 33) {
            Intent(MediaStore.ACTION_PICK_IMAGES).setType("image/*")
        } else {
            Intent(Intent.ACTION_GET_CONTENT).setType("image/*").addCategory(Intent.CATEGORY_OPENABLE)
        }
        activity.startActivityForResult(intent, REQUEST_PICK_IMAGE)
    }

    /** The camera app's preview-sized photo (a Bitmap in the result's extras). */
    fun takePhoto(activity: Activity) {
        activity.startActivityForResult(Intent(MediaStore.ACTION_IMAGE_CAPTURE), REQUEST_TAKE_PHOTO)
    }

    /** A `.gguf` from the device's storage (copied into [modelsDir]: the engine needs a path). */
    fun pickModel(activity: Activity) {
        val intent = Intent(Intent.ACTION_OPEN_DOCUMENT).setType("*/*").addCategory(Intent.CATEGORY_OPENABLE)
        activity.startActivityForResult(intent, REQUEST_PICK_MODEL)
    }

    /** The bytes behind a picked image's URI. */
    fun readUri(context: Context, uri: Uri): ByteArray? =
        context.contentResolver.openInputStream(uri)?.use { it.readBytes() }

    /** Copies a picked model into the models directory; returns its path. */
    fun importModel(context: Context, uri: Uri, name: String): String {
        val dest = File(modelsDir(context), name.substringAfterLast('/').ifEmpty { "model.gguf" })
        context.contentResolver.openInputStream(uri)?.use { input ->
            dest.outputStream().use { input.copyTo(it) }
        } ?: error("cannot open $uri")
        return dest.path
    }

    /** A camera thumbnail as JPEG bytes. */
    fun jpeg(bitmap: Bitmap): ByteArray =
        ByteArrayOutputStream().also { bitmap.compress(Bitmap.CompressFormat.JPEG, 92, it) }.toByteArray()

    // ------------------------------------------------------------------ audio

    fun hasMicPermission(activity: Activity): Boolean =
        activity.checkSelfPermission(Manifest.permission.RECORD_AUDIO) == PackageManager.PERMISSION_GRANTED

    /** Asks for the microphone; the answer arrives in the activity's onRequestPermissionsResult. */
    fun requestMicPermission(activity: Activity) =
        activity.requestPermissions(arrayOf(Manifest.permission.RECORD_AUDIO), REQUEST_RECORD_AUDIO)
}

/** 16 kHz mono capture with AudioRecord, pushed 100 ms at a time into the transcribe screen. */
class Recorder {
    @Volatile private var record: AudioRecord? = null

    /** Call only with the RECORD_AUDIO permission granted ([AndroidPlatform.hasMicPermission]). */
    @Suppress("MissingPermission")
    fun start(vm: TranscribeViewModel) {
        val rate = vm.sampleRate
        val min = AudioRecord.getMinBufferSize(rate, AudioFormat.CHANNEL_IN_MONO, AudioFormat.ENCODING_PCM_16BIT)
        if (min <= 0) {
            vm.failed("This device cannot record 16 kHz mono audio")
            return
        }
        val r = try {
            AudioRecord(
                MediaRecorder.AudioSource.VOICE_RECOGNITION,
                rate,
                AudioFormat.CHANNEL_IN_MONO,
                AudioFormat.ENCODING_PCM_16BIT,
                maxOf(min, rate / 5 * 2),
            )
        } catch (e: SecurityException) {
            vm.failed("Microphone permission denied")
            return
        }
        if (r.state != AudioRecord.STATE_INITIALIZED) {
            r.release()
            vm.failed("The microphone is not available")
            return
        }
        record = r
        vm.startRecording()
        r.startRecording()
        thread(name = "AudioRecord", isDaemon = true) {
            val buf = ShortArray(rate / 10)
            while (record === r) {
                val n = r.read(buf, 0, buf.size)
                if (n <= 0) break
                vm.append(Wav.fromPcm16(buf, n))
            }
        }
    }

    fun stop(vm: TranscribeViewModel) {
        record?.let {
            record = null
            it.stop()
            it.release()
        }
        vm.stopRecording()
    }
}

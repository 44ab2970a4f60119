package dev.gemmakit.desktop

import androidx.compose.ui.graphics.ImageBitmap
import androidx.compose.ui.graphics.toComposeImageBitmap
import androidx.compose.ui.unit.DpSize
import androidx.compose.ui.unit.dp
import androidx.compose.ui.window.Window
import androidx.compose.ui.window.application
import androidx.compose.ui.window.rememberWindowState
import dev.gemmakit.sample.ModelViewModel
import dev.gemmakit.sample.TranscribeViewModel
import dev.gemmakit.sample.ui.PlatformShell
import dev.gemmakit.sample.ui.SampleApp
import dev.gemmakit.sample.ui.Screen
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import java.awt.FileDialog
import java.awt.Frame
import java.io.File
import javax.sound.sampled.AudioFormat
import javax.sound.sampled.AudioSystem
import javax.sound.sampled.TargetDataLine
import kotlin.concurrent.thread

/** The models directory the CLI uses too (`gemmakit pull`). */
fun defaultModelsDir(): File = File(System.getProperty("user.home"), ".cache/gemmakit/models")

/** Image bytes → a bitmap, through Skia (the desktop's decoder). */
fun decodeImage(bytes: ByteArray): ImageBitmap? =
    runCatching { org.jetbrains.skia.Image.makeFromEncoded(bytes).toComposeImageBitmap() }.getOrNull()

private fun pickFile(title: String, onPicked: (File) -> Unit) {
    val dialog = FileDialog(null as Frame?, title, FileDialog.LOAD)
    dialog.isVisible = true
    val name = dialog.file ?: return
    onPicked(File(dialog.directory, name))
}

/** Microphone capture at 16 kHz mono through javax.sound (the desktop's AudioRecord). */
private class Microphone {
    @Volatile private var line: TargetDataLine? = null

    fun start(vm: TranscribeViewModel) {
        val format = AudioFormat(vm.sampleRate.toFloat(), 16, 1, true, false)
        val l = try {
            AudioSystem.getTargetDataLine(format).apply { open(format); start() }
        } catch (e: Exception) {
            vm.failed("No microphone: ${e.message}")
            return
        }
        line = l
        vm.startRecording()
        thread(name = "microphone", isDaemon = true) {
            val bytes = ByteArray(3200) // 100 ms
            while (line === l) {
                val n = l.read(bytes, 0, bytes.size)
                if (n <= 0) break
                val samples = FloatArray(n / 2) { i ->
                    ((bytes[2 * i].toInt() and 0xff) or (bytes[2 * i + 1].toInt() shl 8)).toShort() / 32767f
                }
                vm.append(samples)
            }
        }
    }

    fun stop(vm: TranscribeViewModel) {
        line?.let { it.stop(); it.close() }
        line = null
        vm.stopRecording()
    }
}

/** The platform pieces of the desktop app. */
fun desktopShell(models: ModelViewModel): PlatformShell {
    val mic = Microphone()
    return PlatformShell(
        decodeImage = ::decodeImage,
        pickModelFile = { pickFile("Open a .gguf model") { models.load(it.path) } },
        pickImage = { onBytes -> pickFile("Open an image") { onBytes(it.readBytes()) } },
        startRecording = mic::start,
        stopRecording = mic::stop,
        pickWav = { onBytes -> pickFile("Open a WAV file") { onBytes(it.readBytes()) } },
    )
}

/**
 * `gemmakit-desktop [MODEL.gguf]`: the sample app's four screens on the desktop with the real
 * engine; a model path given on the command line is loaded at start.
 */
fun main(args: Array<String>) {
    val scope = CoroutineScope(Dispatchers.Main + SupervisorJob())
    val models = ModelViewModel(scope, defaultModelsDir())
    val start = args.firstOrNull()
    if (start != null) models.load(start)
    val shell = desktopShell(models)
    application {
        Window(
            onCloseRequest = { models.close(); exitApplication() },
            title = "GemmaKit sample",
            state = rememberWindowState(size = DpSize(900.dp, 900.dp)),
        ) {
            SampleApp(models, shell, if (start != null) Screen.Chat else Screen.Model)
        }
    }
}

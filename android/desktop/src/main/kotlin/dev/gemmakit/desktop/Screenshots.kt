package dev.gemmakit.desktop

import androidx.compose.foundation.layout.Column
import androidx.compose.material.MaterialTheme
import androidx.compose.material.Surface
import androidx.compose.runtime.Composable
import androidx.compose.ui.ImageComposeScene
import androidx.compose.ui.unit.Density
import dev.gemmakit.GemmaEngine
import dev.gemmakit.ffi.BackendChoice
import dev.gemmakit.ffi.EngineOptions
import dev.gemmakit.ffi.GenerateOptions
import dev.gemmakit.sample.CaptionViewModel
import dev.gemmakit.sample.ChatViewModel
import dev.gemmakit.sample.ModelViewModel
import dev.gemmakit.sample.TranscribeViewModel
import dev.gemmakit.sample.Wav
import dev.gemmakit.sample.ui.CaptionScreen
import dev.gemmakit.sample.ui.ChatScreen
import dev.gemmakit.sample.ui.ModelScreen
import dev.gemmakit.sample.ui.Screen
import dev.gemmakit.sample.ui.ScreenTabs
import dev.gemmakit.sample.ui.TranscribeScreen
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.runBlocking
import org.jetbrains.skia.EncodedImageFormat
import java.io.File

/**
 * Renders each screen headless (Compose's ImageComposeScene: Skia on the CPU, no display) to
 * PNG, with real engine output: the demo model continuing a prompt on the chat screen, the tiny
 * fixture's vision and audio towers on the caption and transcribe screens (its text is noise).
 *
 * Arguments: OUT_DIR DEMO_MODEL.gguf FIXTURE_MODEL.gguf IMAGE
 */
fun main(args: Array<String>) = runBlocking {
    require(args.size == 4) { "usage: OUT_DIR DEMO_MODEL FIXTURE_MODEL IMAGE" }
    val (outDir, demo, fixture, image) = args.map(::File)
    outDir.mkdirs()
    val scope = CoroutineScope(Dispatchers.Default + SupervisorJob())
    val shell = desktopShell(ModelViewModel(scope, defaultModelsDir()))

    val models = ModelViewModel(scope, defaultModelsDir())
    models.load(demo.path)!!.join()
    models.state.value.message?.let { error(it) }
    render(File(outDir, "model.png"), Screen.Model) { ModelScreen(models, shell) }

    val engine = models.engine.value!!
    val chat = ChatViewModel(scope, engine, GenerateOptions(maxTokens = 40u))
    chat.send("The three largest cities in Europe are")!!.join()
    chat.state.value.message?.let { error(it) }
    render(File(outDir, "chat.png"), Screen.Chat) { ChatScreen(chat) }

    GemmaEngine.load(fixture.path, EngineOptions(backend = BackendChoice.CPU)).use { tiny ->
        val caption = CaptionViewModel(scope, tiny, GenerateOptions(maxTokens = 24u))
        caption.caption(image.readBytes())!!.join()
        caption.state.value.message?.let { error(it) }
        render(File(outDir, "caption.png"), Screen.Caption) { CaptionScreen(caption, shell) }

        val transcribe = TranscribeViewModel(scope, tiny, GenerateOptions(maxTokens = 24u))
        val tone = FloatArray(32000) { (0.25 * Math.sin(2 * Math.PI * 440 * it / 16000.0)).toFloat() }
        transcribe.transcribePcm(tone, 16000)!!.join()
        transcribe.state.value.message?.let { error(it) }
        render(File(outDir, "transcribe.png"), Screen.Transcribe) { TranscribeScreen(transcribe, shell) }
        check(Wav.MAX_SAMPLES > 0)
    }
    models.close()
    println("wrote ${outDir.listFiles()!!.sorted().joinToString { it.name }} to $outDir")
}

private fun render(file: File, selected: Screen, content: @Composable () -> Unit) {
    val scene = ImageComposeScene(width = 900, height = 1100, density = Density(1.5f)) {
        MaterialTheme {
            Surface {
                Column {
                    ScreenTabs(selected) {}
                    content()
                }
            }
        }
    }
    try {
        // A few frames: the first composes, the next lay out lazily loaded items and images.
        var image = scene.render(0)
        for (frame in 1..4) image = scene.render(frame * 16_000_000L)
        val png = image.encodeToData(EncodedImageFormat.PNG) ?: error("PNG encoding failed")
        file.writeBytes(png.bytes)
        println("rendered $file")
    } finally {
        scene.close()
    }
}

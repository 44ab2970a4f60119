package dev.gemmakit.sample.ui

import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.padding
import androidx.compose.material.MaterialTheme
import androidx.compose.material.Surface
import androidx.compose.material.Tab
import androidx.compose.material.TabRow
import androidx.compose.material.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.DisposableEffect
import androidx.compose.runtime.collectAsState
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.rememberCoroutineScope
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.ImageBitmap
import androidx.compose.ui.unit.dp
import dev.gemmakit.GemmaEngine
import dev.gemmakit.sample.CaptionViewModel
import dev.gemmakit.sample.ChatViewModel
import dev.gemmakit.sample.ModelViewModel
import dev.gemmakit.sample.TranscribeViewModel

/**
 * What only the platform can do, handed to the shared screens by the Android app and the
 * desktop app: decode image bytes for display, pick files, capture a photo, record audio.
 * A `null` action hides its button.
 */
class PlatformShell(
    /** JPEG/PNG/WebP bytes → a bitmap (Android: BitmapFactory; desktop: Skia). */
    val decodeImage: (ByteArray) -> ImageBitmap?,
    /** Opens a file picker for a `.gguf` and loads it. */
    val pickModelFile: (() -> Unit)? = null,
    /** Opens the photo picker; the bytes go to [CaptionViewModel.caption]. */
    val pickImage: ((ByteArray) -> Unit) -> Unit = {},
    /** Takes a photo with the camera (Android). */
    val takePhoto: (((ByteArray) -> Unit) -> Unit)? = null,
    /** Starts microphone capture into [TranscribeViewModel.append] (after the permission flow). */
    val startRecording: ((TranscribeViewModel) -> Unit)? = null,
    val stopRecording: ((TranscribeViewModel) -> Unit)? = null,
    /** Opens a WAV file picker. */
    val pickWav: (((ByteArray) -> Unit) -> Unit)? = null,
    /** A line the model screen shows under the memory figure (e.g. Android's largeHeap note). */
    val memoryNote: String? = null,
)

enum class Screen(val title: String) { Model("Model"), Chat("Chat"), Caption("Caption"), Transcribe("Transcribe") }

/** The four screens in tabs. The model screen owns the engine; the others need one loaded. */
@Composable
fun SampleApp(models: ModelViewModel, shell: PlatformShell, initial: Screen = Screen.Model) {
    var screen by remember { mutableStateOf(initial) }
    val engine by models.engine.collectAsState()
    MaterialTheme {
        Surface(Modifier.fillMaxSize()) {
            Column {
                ScreenTabs(screen) { screen = it }
                val e = engine
                when {
                    screen == Screen.Model -> ModelScreen(models, shell)
                    e == null -> Text("Load a model on the Model screen first.", Modifier.padding(16.dp))
                    screen == Screen.Chat -> ChatRoute(e)
                    screen == Screen.Caption -> CaptionRoute(e, shell)
                    screen == Screen.Transcribe -> TranscribeRoute(e, shell)
                }
            }
        }
    }
}

@Composable
fun ScreenTabs(selected: Screen, onSelect: (Screen) -> Unit) {
    TabRow(selectedTabIndex = selected.ordinal) {
        Screen.values().forEach { s ->
            Tab(selected = s == selected, onClick = { onSelect(s) }, text = { Text(s.title) })
        }
    }
}

/** A view model per visit: leaving the screen (or unloading the engine) closes it, which cancels its work. */
@Composable
private fun <T : AutoCloseable> rememberScreenModel(engine: GemmaEngine, create: (kotlinx.coroutines.CoroutineScope) -> T): T {
    val scope = rememberCoroutineScope()
    val model = remember(engine) { create(scope) }
    DisposableEffect(model) { onDispose { model.close() } }
    return model
}

@Composable
fun ChatRoute(engine: GemmaEngine) = ChatScreen(rememberScreenModel(engine) { ChatViewModel(it, engine) })

@Composable
fun CaptionRoute(engine: GemmaEngine, shell: PlatformShell) =
    CaptionScreen(rememberScreenModel(engine) { CaptionViewModel(it, engine) }, shell)

@Composable
fun TranscribeRoute(engine: GemmaEngine, shell: PlatformShell) =
    TranscribeScreen(rememberScreenModel(engine) { TranscribeViewModel(it, engine) }, shell)

package dev.gemmakit.sample

import dev.gemmakit.GemmaEngine
import dev.gemmakit.ffi.GenerateOptions
import dev.gemmakit.ffi.GenerationStats
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch

data class CaptionState(
    /** The picked or captured image (JPEG/PNG/WebP bytes), shown above the caption. */
    val image: ByteArray? = null,
    val caption: String = "",
    val busy: Boolean = false,
    val stats: GenerationStats? = null,
    val message: String? = null,
) {
    val statsLine: String? get() = stats?.let(::statsLine)

    override fun equals(other: Any?): Boolean = other is CaptionState && image.contentEquals(other.image) &&
        caption == other.caption && busy == other.busy && stats == other.stats && message == other.message

    override fun hashCode(): Int = listOf(image?.contentHashCode(), caption, busy, stats, message).hashCode()
}

/**
 * The caption screen: image bytes (photo picker, camera, a file) → the engine's caption
 * (Google's captioning prompt, the model's vision tower). A bad image is a message, not a crash.
 * The native caption call is not interruptible: leaving the screen drops its result.
 */
class CaptionViewModel(
    parent: CoroutineScope,
    private val engine: GemmaEngine,
    private val options: GenerateOptions = GenerateOptions(maxTokens = 128u),
) : ScreenModel(parent) {
    private val _state = MutableStateFlow(CaptionState())
    val state: StateFlow<CaptionState> = _state.asStateFlow()
    private var job: Job? = null

    fun dismissMessage() = _state.update { it.copy(message = null) }

    fun caption(image: ByteArray): Job? {
        if (job?.isActive == true) return null
        _state.value = CaptionState(image = image, busy = true)
        return scope.launch {
            try {
                val result = engine.caption(image, options)
                _state.update { it.copy(caption = result.text.trim(), stats = result.stats) }
            } catch (e: CancellationException) {
                throw e
            } catch (e: Exception) {
                _state.update { it.copy(message = userMessage(e)) }
            } finally {
                _state.update { it.copy(busy = false) }
            }
        }.also { job = it }
    }
}

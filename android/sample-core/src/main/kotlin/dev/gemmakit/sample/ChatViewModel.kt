package dev.gemmakit.sample

import dev.gemmakit.GemmaConversation
import dev.gemmakit.GemmaEngine
import dev.gemmakit.GenerationEvent
import dev.gemmakit.ffi.GenerateOptions
import dev.gemmakit.ffi.GenerationStats
import dev.gemmakit.ffi.Role
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch

/** One message on the chat screen. */
data class ChatLine(val role: Role, val text: String, val thought: String = "")

data class ChatState(
    val lines: List<ChatLine> = emptyList(),
    /** A turn is running (Stop is enabled, Send is not). */
    val generating: Boolean = false,
    val systemPrompt: String = "",
    val thinking: Boolean = false,
    /** Text chunks the running (or last) answer has received. */
    val chunks: Int = 0,
    /** The last finished (or stopped) turn's statistics. */
    val stats: GenerationStats? = null,
    /** "CPU (…)" or "GPU (…)" and why: shown in the chat header. */
    val backend: String = "",
    val message: String? = null,
) {
    val statsLine: String? get() = stats?.let(::statsLine)
}

/**
 * The chat screen: one multi-turn conversation with streaming, Stop, a system prompt and
 * thinking mode. Generation runs in the wrapper on `Dispatchers.IO`; the state is updated on the
 * screen scope's dispatcher. Stop (or leaving the screen) cancels the collector, and the
 * wrapper stops the engine within one token. A stopped turn stays in the conversation (and on
 * screen).
 */
class ChatViewModel(
    parent: CoroutineScope,
    engine: GemmaEngine,
    private val options: GenerateOptions = GenerateOptions(maxTokens = 1024u),
) : ScreenModel(parent) {
    private val conversation: GemmaConversation = engine.conversation()

    private val _state = MutableStateFlow(
        ChatState(backend = engine.backend.let { "${it.backend.name} (${it.device}): ${it.reason}" }),
    )
    val state: StateFlow<ChatState> = _state.asStateFlow()

    private var turn: Job? = null

    /** Sends [prompt] (with [options], or the screen's); ignored while a turn runs or for blank input. */
    fun send(prompt: String, options: GenerateOptions = this.options): Job? {
        if (prompt.isBlank() || turn?.isActive == true) return null
        _state.update {
            it.copy(
                lines = it.lines + ChatLine(Role.USER, prompt) + ChatLine(Role.ASSISTANT, ""),
                generating = true,
                chunks = 0,
                message = null,
            )
        }
        return scope.launch {
            try {
                conversation.events(prompt, options).collect { event ->
                    when (event) {
                        is GenerationEvent.Text -> appendToAnswer(text = event.text)
                        is GenerationEvent.Thought -> appendToAnswer(thought = event.text)
                        is GenerationEvent.ToolCallRequested, is GenerationEvent.Finished -> Unit
                    }
                }
            } catch (e: CancellationException) {
                throw e
            } catch (e: Exception) {
                _state.update { it.copy(message = userMessage(e)) }
            } finally {
                // The turn has returned (the wrapper's flow waits for the native call).
                val stats = if (conversation.isClosed) null else conversation.lastStats
                _state.update { it.copy(generating = false, stats = stats ?: it.stats) }
            }
        }.also { turn = it }
    }

    private fun appendToAnswer(text: String = "", thought: String = "") = _state.update { s ->
        val last = s.lines.last()
        s.copy(
            lines = s.lines.dropLast(1) + last.copy(text = last.text + text, thought = last.thought + thought),
            chunks = s.chunks + if (text.isNotEmpty()) 1 else 0,
        )
    }

    /** Stops the running turn within one token. */
    fun stop() {
        turn?.cancel()
    }

    /** [stop], returning once the conversation is idle again. */
    suspend fun stopAndWait() {
        turn?.cancelAndJoin()
    }

    /** Sets the system prompt (blank: none); it applies from the next turn on. */
    fun setSystemPrompt(text: String) {
        conversation.setSystemPrompt(text.ifBlank { null })
        _state.update { it.copy(systemPrompt = text) }
    }

    /** Gemma 4 thinking mode: thoughts show above the answer. */
    fun setThinking(enabled: Boolean) {
        conversation.setThinking(enabled)
        _state.update { it.copy(thinking = enabled) }
    }

    /** Starts over (keeps the system prompt and thinking setting). */
    fun clear() {
        if (turn?.isActive == true) return
        conversation.reset()
        conversation.setSystemPrompt(_state.value.systemPrompt.ifBlank { null })
        conversation.setThinking(_state.value.thinking)
        _state.update { it.copy(lines = emptyList(), chunks = 0, stats = null, message = null) }
    }

    /** The conversation's own transcript (what the model will see next turn). */
    val transcript get() = conversation.messages

    /** Positions in the conversation's cache. */
    val cachedTokens: Int get() = conversation.cachedTokens

    fun dismissMessage() = _state.update { it.copy(message = null) }

    override fun close() {
        super.close()
        conversation.close()
    }
}

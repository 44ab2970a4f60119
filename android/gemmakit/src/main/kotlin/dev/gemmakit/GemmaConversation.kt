package dev.gemmakit

import dev.gemmakit.ffi.ChatMessage
import dev.gemmakit.ffi.Chunk
import dev.gemmakit.ffi.ContextPolicy
import dev.gemmakit.ffi.Conversation
import dev.gemmakit.ffi.GenerateOptions
import dev.gemmakit.ffi.GenerationResult
import dev.gemmakit.ffi.GenerationSink
import dev.gemmakit.ffi.GenerationStats
import dev.gemmakit.ffi.MessagePart
import dev.gemmakit.ffi.SinkFlow
import dev.gemmakit.ffi.ToolCall
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.transform
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.selects.select
import java.util.concurrent.atomic.AtomicBoolean

/** What a turn streams, in order: text, thoughts and tool calls as produced, then [Finished]. */
sealed class GenerationEvent {
    /** Visible answer text; concatenated, the result's `text`. */
    data class Text(val text: String) : GenerationEvent()

    /** Text of the thought channel (Gemma 4 thinking, [GemmaConversation.setThinking]). */
    data class Thought(val text: String) : GenerationEvent()

    /** The model called a tool: answer with [GemmaConversation.sendToolResult]. */
    data class ToolCallRequested(val call: ToolCall) : GenerationEvent()

    /** The turn ended; the last event. */
    data class Finished(val result: GenerationResult) : GenerationEvent()
}

/**
 * A multi-turn chat with its own KV cache. Turns on one conversation run one at a time;
 * different conversations may generate concurrently. Close it when done.
 *
 * Generation runs on [Dispatchers.IO]. Cancelling the collector of a flow (or the coroutine of
 * a suspending call) cancels the generation within one token; when the collector returns, the
 * conversation is idle again and the turn, up to where it stopped, is in the transcript.
 */
class GemmaConversation internal constructor(
    private val inner: Conversation,
    private val engine: GemmaEngine,
) : AutoCloseable {
    private val closed = AtomicBoolean(false)

    /** Streams the answer to [prompt] as text chunks. */
    fun generate(prompt: String, options: GenerateOptions = GenerateOptions()): Flow<String> =
        events(prompt, options).transform { if (it is GenerationEvent.Text) emit(it.text) }

    /** Streams every event of the answer to [prompt]: text, thoughts, tool calls, the result. */
    fun events(prompt: String, options: GenerateOptions = GenerateOptions()): Flow<GenerationEvent> =
        turn { sink -> open().send(prompt, options, sink) }

    /** The whole answer to [prompt]. */
    suspend fun send(prompt: String, options: GenerateOptions = GenerateOptions()): GenerationResult =
        result(events(prompt, options))

    /**
     * Streams every event of the answer to a message of text and media parts in order, e.g.
     * `listOf(MessagePart.Image(jpegBytes, null), MessagePart.Text("What is this?"))`. The
     * model's vision/audio towers load on the first media turn.
     */
    fun events(parts: List<MessagePart>, options: GenerateOptions = GenerateOptions()): Flow<GenerationEvent> =
        turn { sink -> open().sendParts(parts, options, sink) }

    /** Streams the answer to a multimodal message as text chunks. */
    fun generate(parts: List<MessagePart>, options: GenerateOptions = GenerateOptions()): Flow<String> =
        events(parts, options).transform { if (it is GenerationEvent.Text) emit(it.text) }

    /** The whole answer to a multimodal message. */
    suspend fun send(parts: List<MessagePart>, options: GenerateOptions = GenerateOptions()): GenerationResult =
        result(events(parts, options))

    /** Streams the model's continuation after the result of the tool [toolName]. */
    fun toolResultEvents(
        toolName: String,
        content: String,
        options: GenerateOptions = GenerateOptions(),
    ): Flow<GenerationEvent> = turn { sink -> open().sendToolResult(toolName, content, options, sink) }

    /** Answers the model's tool call with its result; returns the model's continuation. */
    suspend fun sendToolResult(
        toolName: String,
        content: String,
        options: GenerateOptions = GenerateOptions(),
    ): GenerationResult = result(toolResultEvents(toolName, content, options))

    /** Stops the running generation within one token, from any thread. */
    fun cancel() {
        if (!closed.get()) inner.cancel()
    }

    /** An independent copy (the KV cache is shared copy-on-write: no prefill). */
    fun fork(): GemmaConversation = engine.track(GemmaConversation(open().fork(), engine))

    /** Forgets every message (the system prompt too) and the cache. */
    fun reset() = open().reset()

    /** Sets, or with `null` removes, the system prompt. */
    fun setSystemPrompt(text: String?) = open().setSystemPrompt(text)

    /** Gemma 4 thinking mode: thoughts arrive as [GenerationEvent.Thought]. */
    fun setThinking(enabled: Boolean) = open().setThinking(enabled)

    /** Tool declarations, each a JSON object in OpenAI function format. */
    fun setTools(toolsJson: List<String>) = open().setTools(toolsJson)

    fun setContextPolicy(policy: ContextPolicy) = open().setContextPolicy(policy)

    /** The transcript after the last finished turn; never waits for a running one. */
    val messages: List<ChatMessage> get() = open().messages()

    /** Positions held in the KV cache after the last finished turn; never waits. */
    val cachedTokens: Int get() = open().cachedTokens().toInt()

    /** Statistics of the last finished turn (null before the first); never waits. */
    val lastStats: GenerationStats? get() = open().lastStats()

    /** Whether turns are rendered with a chat template (false: plain text continuation). */
    val usesChatTemplate: Boolean get() = open().usesChatTemplate()

    val isClosed: Boolean get() = closed.get()

    /** Cancels a running generation and frees the conversation once it has returned. */
    override fun close() {
        if (!closed.compareAndSet(false, true)) return
        // A running turn stops within one token; the native object is freed once it returns.
        inner.cancel()
        inner.close()
        engine.untrack(this)
    }

    private fun open(): Conversation {
        check(!closed.get()) { "GemmaConversation is closed" }
        return inner
    }

    /**
     * One turn as a flow. The blocking native call runs on [Dispatchers.IO]; its sink forwards
     * chunks into the flow's channel (blocking when the collector is slower: backpressure). When
     * the collector goes away, the sink answers [SinkFlow.STOP] and [Conversation.cancel] stops
     * the turn between tokens; the flow completes only after the native call has returned.
     */
    private fun turn(run: (GenerationSink) -> GenerationResult): Flow<GenerationEvent> = callbackFlow {
        val stopped = AtomicBoolean(false)
        val running = AtomicBoolean(true)
        val stop = CompletableDeferred<Unit>()
        val sink = object : GenerationSink {
            override fun onChunk(chunk: Chunk): SinkFlow {
                if (stopped.get()) return SinkFlow.STOP
                val event = when (chunk) {
                    is Chunk.Text -> GenerationEvent.Text(chunk.text)
                    is Chunk.Thought -> GenerationEvent.Thought(chunk.text)
                    is Chunk.Tool -> GenerationEvent.ToolCallRequested(chunk.call)
                }
                if (trySend(event).isSuccess) return SinkFlow.CONTINUE
                // The collector is behind: wait for it, or for the flow to be closed. Not
                // `trySendBlocking`: a cancelled collector cancels this producer, whose channel
                // is only cancelled once its children (this native call) have finished, so a
                // blocked send would wait for itself. `stop` is completed by awaitClose, which
                // runs as soon as the producer is cancelled.
                val sent = runCatching {
                    runBlocking {
                        select<Boolean> {
                            channel.onSend(event) { true }
                            stop.onAwait { false }
                        }
                    }
                }.getOrDefault(false)
                return if (sent) SinkFlow.CONTINUE else SinkFlow.STOP
            }

            override fun onDone(stats: GenerationStats) = Unit
        }
        launch(Dispatchers.IO) {
            try {
                val result = run(sink)
                running.set(false)
                send(GenerationEvent.Finished(result))
                channel.close()
            } catch (e: Throwable) {
                running.set(false)
                channel.close(e)
            }
        }
        awaitClose {
            stop.complete(Unit)
            if (running.get()) {
                stopped.set(true)
                // The conversation may have been closed meanwhile (close() cancels too).
                runCatching { inner.cancel() }
            }
        }
    }

    private suspend fun result(events: Flow<GenerationEvent>): GenerationResult =
        events.filterIsInstance<GenerationEvent.Finished>().first().result
}

package dev.gemmakit

import dev.gemmakit.ffi.ActivationReport
import dev.gemmakit.ffi.BackendReport
import dev.gemmakit.ffi.Engine
import dev.gemmakit.ffi.EngineOptions
import dev.gemmakit.ffi.GenerateOptions
import dev.gemmakit.ffi.GenerationResult
import dev.gemmakit.ffi.ModelInfo
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.withContext
import java.util.Collections
import java.util.WeakHashMap
import java.util.concurrent.atomic.AtomicBoolean

/**
 * A loaded model. Load once (seconds for a real model), open conversations, and [close] it when
 * done: the weights are freed then, not by the garbage collector. Closing cancels the
 * conversations opened from it and closes them; closing twice is harmless.
 *
 * ```
 * GemmaEngine.load("/data/.../gemma-4-e2b-it.gguf").use { engine ->
 *     engine.conversation().use { chat ->
 *         chat.generate("Hello!").collect { print(it) }
 *     }
 * }
 * ```
 */
class GemmaEngine private constructor(private val engine: Engine) : AutoCloseable {
    private val closed = AtomicBoolean(false)
    private val conversations: MutableSet<GemmaConversation> =
        Collections.synchronizedSet(Collections.newSetFromMap(WeakHashMap()))

    /** Which backend runs (CPU or GPU), on which device, and why. */
    val backend: BackendReport get() = open().backend()

    /**
     * The CPU activation numerics that run per phase (`EXACT` on a GPU, or where the CPU has
     * no fast int8 kernel for what `EngineOptions.prefillActivations`/`decodeActivations` asked).
     */
    val activations: ActivationReport get() = open().activations()

    /** Architecture, sizes, weight types and memory estimate. */
    val info: ModelInfo get() = open().info()

    /** Maximum positions per conversation. */
    val contextLen: Int get() = open().contextLen().toInt()

    /**
     * Prepares constrained decoding (JSON schema, regex, grammar, strict tools) for this model
     * off the caller's thread; otherwise the first constrained request pays for it (about a
     * second for a 262k vocabulary).
     */
    suspend fun prepareConstraints() = withContext(Dispatchers.IO) { open().prepareConstraints() }

    /**
     * Runs a short scratch generation on [Dispatchers.IO] so the first message does not pay
     * the backend's first-use costs (GPU pipeline compilation: seconds on some phones); returns
     * the milliseconds it took. Call it after loading, e.g. while the chat screen appears.
     */
    suspend fun warmUp(): Double = withContext(Dispatchers.IO) { open().warmUp() }

    /** Describes an image (JPEG/PNG/WebP bytes) with Google's captioning prompt, on [Dispatchers.IO]. */
    suspend fun caption(image: ByteArray, options: GenerateOptions = GenerateOptions()): GenerationResult =
        withContext(Dispatchers.IO) { open().caption(image, options, null) }

    /**
     * Transcribes a WAV file's speech in [language] (e.g. "English"), on [Dispatchers.IO]; audio
     * longer than 30 s is transcribed clip by clip and the texts joined.
     */
    suspend fun transcribe(wav: ByteArray, language: String, options: GenerateOptions = GenerateOptions()): String =
        withContext(Dispatchers.IO) { open().transcribeWav(wav, language, options) }

    /** A new, empty conversation. Close it when done (or close the engine). */
    fun conversation(): GemmaConversation = track(GemmaConversation(open().conversation(), this))

    internal fun track(conversation: GemmaConversation): GemmaConversation {
        conversations.add(conversation)
        if (closed.get()) {
            conversation.close()
            throw IllegalStateException("GemmaEngine is closed")
        }
        return conversation
    }

    internal fun untrack(conversation: GemmaConversation) {
        conversations.remove(conversation)
    }

    val isClosed: Boolean get() = closed.get()

    override fun close() {
        if (!closed.compareAndSet(false, true)) return
        val open = synchronized(conversations) { conversations.toList() }
        for (c in open) c.close()
        engine.close()
    }

    private fun open(): Engine {
        check(!closed.get()) { "GemmaEngine is closed" }
        return engine
    }

    companion object {
        /**
         * Loads a `.gguf` file or a Hugging Face checkpoint directory on [Dispatchers.IO].
         * @throws dev.gemmakit.ffi.GemmaKitException (e.g. `Io` for a missing file,
         *   `InvalidWeightFile` for a corrupt one).
         */
        @JvmStatic
        suspend fun load(path: String, options: EngineOptions = EngineOptions()): GemmaEngine =
            withContext(Dispatchers.IO) { loadBlocking(path, options) }

        /** [load] on the calling thread (not the main thread: it takes seconds). */
        @JvmStatic
        @JvmOverloads
        fun loadBlocking(path: String, options: EngineOptions = EngineOptions()): GemmaEngine {
            GemmaKit.ensureLoaded()
            return GemmaEngine(Engine.load(path, options))
        }
    }
}

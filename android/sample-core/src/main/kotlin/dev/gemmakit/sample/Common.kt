package dev.gemmakit.sample

import dev.gemmakit.ffi.GemmaKitException
import dev.gemmakit.ffi.GenerationStats
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.job
import java.util.Locale

/**
 * What the screens show for a failure: the engine's own sentence for a [GemmaKitException]
 * (its `toString()`), the message of anything else. Failures become state, never crashes.
 */
fun userMessage(e: Throwable): String = when (e) {
    is GemmaKitException -> e.toString()
    is OutOfMemoryError -> "Out of memory: ${e.message ?: "the JVM heap is full"}"
    else -> e.message ?: e::class.java.simpleName
}

/** One line under an answer: tokens, decode speed, time to first token. */
fun statsLine(stats: GenerationStats): String = String.format(
    Locale.ROOT,
    "%d tokens · %.1f tok/s · first token %.0f ms · %s",
    stats.generatedTokens.toInt(),
    stats.decodeTokS,
    stats.timeToFirstTokenMs,
    stats.stopReason.name.lowercase(Locale.ROOT).replace('_', ' '),
)

/**
 * The base of the view models: a child scope of the screen's [parent] (on Android the
 * ViewModel's or the composition's scope; its dispatcher is the main thread), so leaving the
 * screen (cancelling [parent]) or [close] cancels what the screen started. A child failure does
 * not cancel its siblings.
 */
abstract class ScreenModel(parent: CoroutineScope) : AutoCloseable {
    protected val scope: CoroutineScope =
        CoroutineScope(parent.coroutineContext + SupervisorJob(parent.coroutineContext.job))

    /**
     * Cancels the screen's work: a chat turn stops within one token; a caption or transcription
     * (not interruptible through the FFI) runs to its end and its result is dropped.
     */
    override fun close() = scope.cancel()
}

package dev.gemmakit

import dev.gemmakit.ffi.BackendChoice
import dev.gemmakit.ffi.EngineOptions
import dev.gemmakit.ffi.GenerateOptions
import dev.gemmakit.ffi.LogitBias
import dev.gemmakit.ffi.SamplingOptions
import dev.gemmakit.ffi.StopReason
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import java.io.File

/**
 * A collector that takes one chunk at a time (a rendezvous buffer: the engine can never run
 * ahead of the screen) and is then cancelled while the native turn waits to hand it the next
 * chunk. Before the sink waited on "sent or closed", that wait blocked for ever in about one
 * try in ten: the producer's channel is cancelled only after its children, i.e. after the
 * blocked native call itself, returned.
 */
class SlowCollectorCancelTest {
    private val fixtures = File(System.getProperty("gemmakit.fixtures") ?: "../../tests/fixtures")
    private val noEos = listOf(LogitBias(tokenId = 1u, bias = -1.0e9f))

    @Test
    fun `cancelling a one-chunk-at-a-time collector always ends the native turn`() = runBlocking {
        val engine = GemmaEngine.load(
            File(fixtures, "tiny_gemma4_e2b/model-f32.gguf").absolutePath,
            EngineOptions(backend = BackendChoice.CPU, contextLen = 4096u),
        )
        engine.use {
            engine.conversation().use { chat ->
                repeat(100) { i ->
                    chat.reset()
                    val screen = CoroutineScope(SupervisorJob() + Dispatchers.Default)
                    val firstChunk = CompletableDeferred<Unit>()
                    val job = screen.launch {
                        chat.events("turn $i", GenerateOptions(sampling = SamplingOptions(logitBias = noEos), maxTokens = 300u))
                            .buffer(Channel.RENDEZVOUS)
                            .collect { firstChunk.complete(Unit) }
                    }
                    firstChunk.await()
                    withTimeout(30_000) { job.cancelAndJoin() }
                    screen.cancel()
                    // The conversation is free again: the next turn runs to its end.
                    val next = withTimeout(30_000) {
                        chat.send("next $i", GenerateOptions(sampling = SamplingOptions(logitBias = noEos), maxTokens = 2u))
                    }
                    assertEquals(StopReason.MAX_TOKENS, next.stats.stopReason)
                }
            }
        }
    }
}

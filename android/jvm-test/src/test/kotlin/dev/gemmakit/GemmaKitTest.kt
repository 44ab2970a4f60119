package dev.gemmakit

import dev.gemmakit.ffi.ActivationPrecision
import dev.gemmakit.ffi.ActivationReport
import dev.gemmakit.ffi.BackendChoice
import dev.gemmakit.ffi.BackendKind
import dev.gemmakit.ffi.Chunk
import dev.gemmakit.ffi.Constraint
import dev.gemmakit.ffi.Draft
import dev.gemmakit.ffi.EngineOptions
import dev.gemmakit.ffi.GemmaKitException
import dev.gemmakit.ffi.GenerateOptions
import dev.gemmakit.ffi.GenerationSink
import dev.gemmakit.ffi.GenerationStats
import dev.gemmakit.ffi.KvType
import dev.gemmakit.ffi.LogitBias
import dev.gemmakit.ffi.MessagePart
import dev.gemmakit.ffi.Role
import dev.gemmakit.ffi.SamplingOptions
import dev.gemmakit.ffi.SinkFlow
import dev.gemmakit.ffi.StopReason
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir
import java.io.File
import java.nio.file.Path
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlin.concurrent.thread

/**
 * The Kotlin wrapper and the generated bindings against the host library and the tiny random
 * Gemma 4 fixture (vocab 512, a tiny chat template): its text is noise, so the tests check
 * structure (streams, stop reasons, token counts, transcripts), not content.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class GemmaKitTest {
    private val fixtures = File(System.getProperty("gemmakit.fixtures") ?: "../../tests/fixtures")
    private val modelPath = File(fixtures, "tiny_gemma4_e2b/model-f32.gguf").absolutePath

    /** CPU: deterministic and fast; `Auto` would probe for a GPU first. */
    private val engineOptions = EngineOptions(backend = BackendChoice.CPU, contextLen = 4096u)

    /** The tiny model's only end-of-turn id is `<eos>` (1): biasing it away gives long runs. */
    private val noEos = listOf(LogitBias(tokenId = 1u, bias = -1.0e9f))

    private fun greedy(maxTokens: Int) = GenerateOptions(maxTokens = maxTokens.toUInt())

    private fun long(maxTokens: Int) =
        GenerateOptions(sampling = SamplingOptions(logitBias = noEos), maxTokens = maxTokens.toUInt())

    private lateinit var engine: GemmaEngine

    @BeforeAll
    fun loadEngine() = runBlocking {
        engine = GemmaEngine.load(modelPath, engineOptions)
    }

    @AfterAll
    fun closeEngine() = engine.close()

    @Test
    fun `load reports the model and the backend`() {
        val info = engine.info
        assertEquals("gemma4", info.architecture)
        assertEquals(512u, info.vocabSize)
        assertEquals(6u, info.layers)
        assertTrue(info.fileBytes > 0u)
        assertTrue(info.weightTypes.containsKey("F32"), "${info.weightTypes}")
        assertTrue(info.chatTemplate != null, "the fixture has a chat template")
        val backend = engine.backend
        assertEquals(BackendKind.CPU, backend.backend)
        assertEquals("requested", backend.reason)
        assertEquals(4096, engine.contextLen)
        assertTrue(GemmaKit.version.isNotEmpty())
    }

    @Test
    fun `record defaults are the engine's defaults`() {
        GemmaKit.ensureLoaded()
        assertEquals(dev.gemmakit.ffi.defaultGenerateOptions(), GenerateOptions())
        val core = dev.gemmakit.ffi.defaultEngineOptions()
        val mine = EngineOptions()
        assertEquals(core.contextLen, mine.contextLen)
        assertEquals(core.threads, mine.threads)
        assertEquals(core.memoryBudget, mine.memoryBudget)
        assertEquals(core.kvTypeK, mine.kvTypeK)
        assertEquals(core.kvTypeV, mine.kvTypeV)
        assertEquals(BackendChoice.AUTO, core.backend, "null backend means the engine default")
        assertEquals(ActivationPrecision.EXACT, core.prefillActivations)
        assertEquals(ActivationPrecision.EXACT, core.decodeActivations)
        assertEquals(null, mine.decodeActivations, "null activations mean the engine default")
        assertEquals(ActivationReport(ActivationPrecision.EXACT, ActivationPrecision.EXACT), engine.activations)
        val recommended = SamplingOptions.gemmaRecommended()
        assertEquals(64u, recommended.topK)
        assertEquals(1.0f, recommended.temperature)
    }

    @Test
    fun `int8 decode activations load, report what runs and generate`(): Unit = runBlocking {
        val options = engineOptions.copy(decodeActivations = ActivationPrecision.INT8)
        GemmaEngine.load(modelPath, options).use { int8 ->
            // INT8 where this CPU has a fast int8 kernel (x86 with AVX2), EXACT otherwise.
            assertEquals(ActivationPrecision.EXACT, int8.activations.prefill)
            int8.conversation().use { chat ->
                val answer = chat.send("Hello", long(6))
                assertEquals(6u, answer.stats.generatedTokens)
            }
        }
    }

    @Test
    fun `warming up takes time once and changes no answer`(): Unit = runBlocking {
        val before = engine.conversation().use { it.send("Hello", long(6)).text }
        val ms = engine.warmUp()
        assertTrue(ms > 0.0, "warm-up took $ms ms")
        val after = engine.conversation().use { it.send("Hello", long(6)).text }
        assertEquals(before, after)
    }

    @Test
    fun `constrained answers follow their choice and regex, bad schemas throw`(): Unit = runBlocking {
        engine.prepareConstraints()
        val words = listOf("alpha", "beta", "gamma delta")
        engine.conversation().use { chat ->
            val choice = GenerateOptions(maxTokens = 16u, constraint = Constraint.Choice(words))
            val answer = chat.send("Pick one", choice)
            assertTrue(answer.text in words, answer.text)
        }
        engine.conversation().use { chat ->
            val date = GenerateOptions(maxTokens = 24u, constraint = Constraint.Regex("[0-9]{4}-[0-9]{2}-[0-9]{2}"))
            val answer = chat.send("When?", date)
            assertTrue(Regex("[0-9]{4}-[0-9]{2}-[0-9]{2}").matches(answer.text), answer.text)
        }
        engine.conversation().use { chat ->
            val bad = GenerateOptions(constraint = Constraint.JsonSchema("{\"type\": 12"))
            assertThrows<GemmaKitException.InvalidConstraint> { runBlocking { chat.send("x", bad) } }
        }
    }

    @Test
    fun `prompt lookup gives the plain answer and counts its drafts, a missing MTP assistant is an I-O error`(): Unit = runBlocking {
        val prompt = "one two three one two three one two three"
        val plain = engine.conversation().use { it.send(prompt, greedy(24)) }
        val drafted = engine.conversation().use {
            it.send(prompt, GenerateOptions(maxTokens = 24u, draft = Draft.Ngram(3u, 7u, true)))
        }
        assertEquals(plain.tokenIds, drafted.tokenIds)
        assertEquals(0u, plain.stats.drafted)
        assertTrue(drafted.stats.accepted <= drafted.stats.drafted, drafted.stats.toString())
        engine.conversation().use { chat ->
            val mtp = GenerateOptions(draft = Draft.Mtp("no-such-assistant.gguf"))
            val e = assertThrows<GemmaKitException.Io> { runBlocking { chat.send("x", mtp) } }
            assertTrue(e.path.endsWith("no-such-assistant.gguf"), e.toString())
        }
    }

    @Test
    fun `generate streams text and the flow completes`() = runBlocking {
        engine.conversation().use { chat ->
            val chunks = chat.generate("Hello there", greedy(24)).toList()
            assertTrue(chunks.isNotEmpty(), "no chunk streamed")
            assertTrue(chunks.all { it.isNotEmpty() })
            val messages = chat.messages
            assertEquals(listOf(Role.USER, Role.ASSISTANT), messages.map { it.role })
            assertEquals("Hello there", messages[0].content)
            assertEquals(chunks.joinToString(""), messages[1].content)
        }
    }

    @Test
    fun `streamed chunks concatenate to the non-streamed result`() = runBlocking {
        val options = long(64)
        val streamed = engine.conversation().use { it.generate("Tell me a story", options).toList() }
        val events = engine.conversation().use { it.events("Tell me a story", options).toList() }
        val finished = events.filterIsInstance<GenerationEvent.Finished>().single().result
        val whole = engine.conversation().use { it.send("Tell me a story", options) }
        assertEquals(whole.text, streamed.joinToString(""))
        assertEquals(whole.text, events.filterIsInstance<GenerationEvent.Text>().joinToString("") { it.text })
        assertEquals(whole.text, finished.text)
        assertEquals(whole.tokenIds, finished.tokenIds)
        assertEquals(64u, whole.stats.generatedTokens)
        assertEquals(StopReason.MAX_TOKENS, whole.stats.stopReason)
        assertTrue(events.last() is GenerationEvent.Finished)
    }

    @Test
    fun `cancelling the collector stops generation promptly and the engine stays usable`() = runBlocking {
        engine.conversation().use { chat ->
            val started = System.nanoTime()
            val firstThree = withTimeout(30_000) { chat.generate("Go on forever", long(3000)).take(3).toList() }
            val elapsedMs = (System.nanoTime() - started) / 1e6
            assertEquals(3, firstThree.size)
            // The turn stopped within the channel's buffer (64) plus one token of the 3,000 asked.
            val answer = chat.messages.last()
            assertEquals(Role.ASSISTANT, answer.role)
            val promptTokens = engine.conversation().use { it.send("Go on forever", greedy(1)).stats.promptTokens }
            val generated = chat.cachedTokens - promptTokens.toInt()
            println("cancel after 3 chunks: $generated tokens in the cache after the prompt, ${"%.1f".format(elapsedMs)} ms")
            assertTrue(generated in 2..100, "generated $generated tokens after cancellation")
            assertTrue(elapsedMs < 10_000, "took $elapsedMs ms")
            // The same conversation, and the engine, go on.
            val next = chat.send("And now?", long(8))
            assertEquals(8u, next.stats.generatedTokens)
            assertEquals(4, chat.messages.size)
        }
        engine.conversation().use { assertTrue(it.send("Hi", greedy(4)).stats.generatedTokens > 0u) }
    }

    @Test
    fun `cancelling a suspended send stops generation`() = runBlocking {
        engine.conversation().use { chat ->
            val started = System.nanoTime()
            assertThrows<kotlinx.coroutines.TimeoutCancellationException> {
                runBlocking { withTimeout(50) { chat.send("Go on forever", long(4000)) } }
            }
            val elapsedMs = (System.nanoTime() - started) / 1e6
            println("send cancelled by a 50 ms timeout: ${chat.cachedTokens} tokens in the cache, ${"%.1f".format(elapsedMs)} ms")
            assertTrue(chat.cachedTokens < 2000, "${chat.cachedTokens} tokens: generation was not cancelled")
            assertTrue(chat.send("Again", long(4)).stats.generatedTokens == 4u)
        }
    }

    @Test
    fun `cancel from another thread stops a blocking send`() {
        engine.conversation().use { chat ->
            val ffi = conversationHandle(chat)
            val firstChunk = CountDownLatch(1)
            val chunks = AtomicInteger()
            val sink = object : GenerationSink {
                override fun onChunk(chunk: Chunk): SinkFlow {
                    chunks.incrementAndGet()
                    firstChunk.countDown()
                    Thread.sleep(1) // slow consumer: the canceller gets in
                    return SinkFlow.CONTINUE
                }

                override fun onDone(stats: GenerationStats) = Unit
            }
            val canceller = thread {
                firstChunk.await(30, TimeUnit.SECONDS)
                ffi.cancel()
            }
            val result = ffi.send("Go on forever", long(3000), sink)
            canceller.join()
            assertEquals(StopReason.CANCELLED, result.stats.stopReason)
            assertTrue(result.stats.generatedTokens < 3000u)
        }
    }

    @Test
    fun `a throwing sink becomes a typed exception`() {
        engine.conversation().use { chat ->
            val sink = object : GenerationSink {
                override fun onChunk(chunk: Chunk): SinkFlow = throw IllegalStateException("sink broke")
                override fun onDone(stats: GenerationStats) = Unit
            }
            val e = assertThrows<GemmaKitException.Callback> {
                conversationHandle(chat).send("Hello", long(16), sink)
            }
            assertTrue(e.reason.contains("sink broke"), e.reason)
            // Still usable.
            assertTrue(runBlocking { chat.send("Hello", greedy(4)) }.stats.generatedTokens > 0u)
        }
    }

    @Test
    fun `multi-turn conversation reuses the cache`() = runBlocking {
        engine.conversation().use { chat ->
            chat.setSystemPrompt("You are terse.")
            val first = chat.send("What is the capital of France?", greedy(16))
            val second = chat.send("And of Italy?", greedy(16))
            assertEquals(
                listOf(Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT),
                chat.messages.map { it.role },
            )
            assertTrue(second.stats.promptTokens > first.stats.promptTokens)
            assertTrue(
                second.stats.prefilledTokens < second.stats.promptTokens,
                "second turn prefilled ${second.stats.prefilledTokens} of ${second.stats.promptTokens}",
            )
            // A fork continues independently.
            chat.fork().use { fork ->
                assertEquals(chat.messages, fork.messages)
                fork.send("Bye", greedy(4))
                assertEquals(7, fork.messages.size)
                assertEquals(5, chat.messages.size)
            }
            // A tool result turn, and tool declarations as JSON.
            chat.setTools(listOf("""{"type":"function","function":{"name":"now","parameters":{"type":"object"}}}"""))
            chat.sendToolResult("now", "12:00", greedy(4))
            assertEquals(Role.TOOL, chat.messages[5].role)
            assertEquals("now", chat.messages[5].toolName)
            assertThrows<GemmaKitException.InvalidArgument> { chat.setTools(listOf("{not json")) }
            chat.reset()
            assertEquals(0, chat.messages.size)
            assertEquals(0, chat.cachedTokens)
        }
    }

    @Test
    fun `two conversations generate from two coroutines`() = runBlocking {
        val options = long(48)
        val expected = engine.conversation().use { it.send("Same prompt", options).text }
        val results = (0 until 2).map {
            async(Dispatchers.Default) {
                engine.conversation().use { chat -> chat.generate("Same prompt", options).toList().joinToString("") }
            }
        }.awaitAll()
        assertEquals(listOf(expected, expected), results)
    }

    @Test
    fun `KV types are chosen per load, keys and values apart`() = runBlocking {
        val options = engineOptions.copy(kvTypeK = KvType.Q8_0, kvTypeV = KvType.TQ3)
        GemmaEngine.load(modelPath, options).use { quantized ->
            quantized.conversation().use { chat ->
                val answer = chat.send("Hello", long(8))
                assertEquals(8u, answer.stats.generatedTokens)
            }
        }
    }

    @Test
    fun `a missing file throws a typed exception naming the path`() {
        val missing = File(fixtures, "does-not-exist.gguf").absolutePath
        val e = assertThrows<GemmaKitException.Io> { runBlocking { GemmaEngine.load(missing, engineOptions) } }
        assertEquals(missing, e.path)
        assertTrue(e.message.contains(missing), e.message)
        assertTrue(e.toString().startsWith("cannot read $missing: "), e.toString())
    }

    @Test
    fun `a corrupt file throws a typed exception with the reason`(@TempDir dir: Path) {
        val corrupt = dir.resolve("corrupt.gguf").toFile()
        corrupt.writeBytes(ByteArray(4096) { (it * 31 + 7).toByte() })
        val e = assertThrows<GemmaKitException.InvalidWeightFile> {
            runBlocking { GemmaEngine.load(corrupt.absolutePath, engineOptions) }
        }
        assertEquals(corrupt.absolutePath, e.path)
        assertTrue(e.reason.isNotBlank())
        // A truncated copy of the real model too.
        val truncated = dir.resolve("truncated.gguf").toFile()
        truncated.writeBytes(File(modelPath).readBytes().copyOf(100_000))
        val t = assertThrows<GemmaKitException> { runBlocking { GemmaEngine.load(truncated.absolutePath, engineOptions) } }
        assertTrue(t.toString().contains(truncated.absolutePath), t.toString())
    }

    @Test
    fun `closing the engine twice is harmless and closes its conversations`() = runBlocking {
        val local = GemmaEngine.load(modelPath, engineOptions)
        val chat = local.conversation()
        chat.send("Hi", greedy(2))
        local.close()
        local.close()
        assertTrue(local.isClosed && chat.isClosed)
        chat.close()
        assertThrows<IllegalStateException> { local.info }
        assertThrows<IllegalStateException> { chat.messages }
        Unit
    }

    private fun procStatusKb(field: String): Long =
        File("/proc/self/status").readLines().first { it.startsWith("$field:") }
            .split(Regex("\\s+"))[1].toLong()

    /** Memory the JVM itself has committed (heap and non-heap pools), in kB. */
    private fun jvmCommittedKb(): Long {
        val memory = java.lang.management.ManagementFactory.getMemoryMXBean()
        return (memory.heapMemoryUsage.committed + memory.nonHeapMemoryUsage.committed) / 1024
    }

    private fun openFds(): Int = File("/proc/self/fd").list()!!.size

    @Test
    fun `a thousand turns and a hundred forks keep memory, fds and threads flat`(): Unit = runBlocking {
        engine.conversation().use { chat ->
            suspend fun turn(i: Int) {
                chat.send("item $i", greedy(2))
                if (i % 10 == 0) chat.fork().use { it.send("fork $i", greedy(2)) }
                if (i % 50 == 49) {
                    chat.reset()
                    assertEquals(0, chat.cachedTokens, "a reset conversation holds no KV")
                }
            }
            repeat(200) { turn(it) }
            System.gc()
            val jvm0 = jvmCommittedKb()
            val (rss0, fds0, threads0) = Triple(procStatusKb("VmRSS"), openFds(), procStatusKb("Threads"))
            for (i in 200 until 1200) turn(i)
            System.gc()
            val jvm1 = jvmCommittedKb()
            val (rss1, fds1, threads1) = Triple(procStatusKb("VmRSS"), openFds(), procStatusKb("Threads"))
            println("soak through Kotlin: RSS $rss0 -> $rss1 kB, JVM-committed $jvm0 -> $jvm1 kB, fds $fds0 -> $fds1, threads $threads0 -> $threads1")
            assertTrue(rss1 <= rss0 * 105 / 100, "RSS grew from $rss0 to $rss1 kB")
            assertEquals(fds0, fds1, "file descriptors leaked")
            // A leak per turn or per fork would add hundreds of threads; the JVM may still start one
            // service thread of its own late (a compiler or GC worker), which is not ours.
            assertTrue(threads1 <= threads0 + 2, "threads grew from $threads0 to $threads1")
        }
    }

    @Test
    fun `1000 streamed tokens leak no JVM threads`() = runBlocking {
        // Warm up the IO dispatcher and the JNA callback machinery.
        engine.conversation().use { it.generate("warm up", long(16)).toList() }
        val before = liveThreads()
        var streamedTokens = 0u
        var chunks = 0
        engine.conversation().use { chat ->
            repeat(5) { turn ->
                val events = chat.events("Turn $turn: keep going", long(200)).toList()
                chunks += events.count { it is GenerationEvent.Text }
                streamedTokens += events.filterIsInstance<GenerationEvent.Finished>().single().result.stats.generatedTokens
            }
        }
        assertTrue(streamedTokens >= 1000u, "streamed $streamedTokens tokens")
        assertTrue(chunks > 500, "only $chunks chunks")
        val after = liveThreads()
        println("streamed $streamedTokens tokens in $chunks chunks; JVM threads before ${before.size}, after ${after.size}")
        assertTrue(
            after.size <= before.size + 2,
            "threads before ${before.size}, after ${after.size}: new ${after - before.toSet()}",
        )
    }

    /** A 64×40 RGB gradient as PNG bytes (the fixture's image size: 60 soft tokens at budget 70). */
    private fun pngBytes(): ByteArray {
        val img = java.awt.image.BufferedImage(64, 40, java.awt.image.BufferedImage.TYPE_INT_RGB)
        for (y in 0 until 40) for (x in 0 until 64) img.setRGB(x, y, (x * 4 shl 16) or (y * 6 shl 8) or 128)
        val out = java.io.ByteArrayOutputStream()
        javax.imageio.ImageIO.write(img, "png", out)
        return out.toByteArray()
    }

    /** One second of a 440 Hz tone, 16-bit mono 16 kHz WAV. */
    private fun wavBytes(): ByteArray {
        val n = 16000
        val buf = java.nio.ByteBuffer.allocate(44 + 2 * n).order(java.nio.ByteOrder.LITTLE_ENDIAN)
        buf.put("RIFF".toByteArray()).putInt(36 + 2 * n).put("WAVE".toByteArray())
        buf.put("fmt ".toByteArray()).putInt(16).putShort(1).putShort(1).putInt(16000).putInt(32000)
            .putShort(2).putShort(16)
        buf.put("data".toByteArray()).putInt(2 * n)
        for (i in 0 until n) buf.putShort((8000 * Math.sin(2 * Math.PI * 440 * i / 16000.0)).toInt().toShort())
        return buf.array()
    }

    @Test
    fun `image and audio parts run through the mmproj towers`() = runBlocking {
        engine.conversation().use { chat ->
            val result = chat.send(
                listOf(
                    MessagePart.Image(pngBytes(), 70u),
                    MessagePart.AudioWav(wavBytes()),
                    MessagePart.Text("What do you see and hear?"),
                ),
                greedy(3),
            )
            // 60 image + 25 audio placeholders, each run wrapped in begin/end ids.
            assertTrue(result.stats.promptTokens >= 60u + 25u + 4u, "prompt ${result.stats.promptTokens}")
            assertTrue(result.stats.generatedTokens > 0u)
        }
        val caption = engine.caption(pngBytes(), greedy(2))
        assertTrue(caption.stats.promptTokens > 280u, "default budget 280: ${caption.stats.promptTokens}")
    }

    @Test
    fun `bad media throw typed exceptions`() = runBlocking {
        engine.conversation().use { chat ->
            assertThrows<GemmaKitException.InvalidImage> {
                runBlocking { chat.send(listOf(MessagePart.Image(byteArrayOf(1, 2, 3), null)), greedy(1)) }
            }
            val silent = wavBytes().also { it.fill(0, 44) }
            assertThrows<GemmaKitException.InvalidAudio> {
                runBlocking { chat.send(listOf(MessagePart.AudioWav(silent)), greedy(1)) }
            }
            // The conversation is still usable.
            assertTrue(chat.send("hello", greedy(1)).stats.generatedTokens <= 1u)
        }
    }

    private fun liveThreads(): List<String> =
        Thread.getAllStackTraces().keys.filter { it.isAlive }.map { it.name }.sorted()

    /** The generated object behind a wrapper conversation, for the low-level sink tests. */
    private fun conversationHandle(chat: GemmaConversation): dev.gemmakit.ffi.Conversation {
        val field = GemmaConversation::class.java.getDeclaredField("inner")
        field.isAccessible = true
        return field.get(chat) as dev.gemmakit.ffi.Conversation
    }
}

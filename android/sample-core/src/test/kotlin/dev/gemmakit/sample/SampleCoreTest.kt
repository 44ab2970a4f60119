package dev.gemmakit.sample

import com.sun.net.httpserver.HttpServer
import dev.gemmakit.GemmaEngine
import dev.gemmakit.GenerationEvent
import dev.gemmakit.ffi.BackendChoice
import dev.gemmakit.ffi.BackendKind
import dev.gemmakit.ffi.EngineOptions
import dev.gemmakit.ffi.GenerateOptions
import dev.gemmakit.ffi.LogitBias
import dev.gemmakit.ffi.Role
import dev.gemmakit.ffi.SamplingOptions
import dev.gemmakit.ffi.StopReason
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.io.TempDir
import java.io.ByteArrayInputStream
import java.io.ByteArrayOutputStream
import java.io.File
import java.net.InetSocketAddress
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.concurrent.Executors
import javax.sound.sampled.AudioFileFormat
import javax.sound.sampled.AudioFormat
import javax.sound.sampled.AudioInputStream
import javax.sound.sampled.AudioSystem

/**
 * The sample apps' view models against the host library and the tiny random Gemma 4 fixture
 * (its text is noise). References: the wrapper called directly with the same options (chat,
 * caption, transcribe), the fixture files' bytes (download), the JDK's WAV writer and reader
 * (javax.sound) for the audio the transcribe screen encodes. A single-thread "main" dispatcher
 * plays the UI thread.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class SampleCoreTest {
    private val fixtures = File(System.getProperty("gemmakit.fixtures") ?: "../../tests/fixtures")
    private val modelFile = File(fixtures, "tiny_gemma4_e2b/model-f32.gguf")
    private val mmprojFile = File(fixtures, "tiny_gemma4_e2b/mmproj-f32.gguf")
    private val engineOptions = EngineOptions(backend = BackendChoice.CPU, contextLen = 4096u)

    /** The tiny model's only end-of-turn id is `<eos>` (1): biasing it away gives long runs. */
    private fun noEos(maxTokens: Int) = GenerateOptions(
        sampling = SamplingOptions(logitBias = listOf(LogitBias(tokenId = 1u, bias = -1.0e9f))),
        maxTokens = maxTokens.toUInt(),
    )

    private val mainThread = Executors.newSingleThreadExecutor { r -> Thread(r, "test-main") }
    private val main = mainThread.asCoroutineDispatcher()
    private fun screenScope() = CoroutineScope(main + SupervisorJob())

    private lateinit var engine: GemmaEngine

    @BeforeAll
    fun load() = runBlocking { engine = GemmaEngine.load(modelFile.path, engineOptions) }

    @AfterAll
    fun close() {
        engine.close()
        main.close()
    }

    // ------------------------------------------------------------------ model screen

    /** Serves the fixture's model and towers, as a model host would, on 127.0.0.1. */
    private fun server(): HttpServer = HttpServer.create(InetSocketAddress("127.0.0.1", 0), 0).apply {
        for (file in listOf(modelFile, mmprojFile)) {
            createContext("/${file.name}") { ex ->
                val body = file.readBytes()
                ex.sendResponseHeaders(200, body.size.toLong())
                ex.responseBody.use { it.write(body) }
            }
        }
        start()
    }

    private fun catalogue(port: Int) = """
        {"models": [
          {"name": "tiny", "repo": "test/tiny", "file": "model-f32.gguf",
           "url": "http://127.0.0.1:$port/model-f32.gguf", "path": "tiny/model-f32.gguf",
           "quantization": "F32", "min_ram_mb": 1, "context": 4096, "mmproj": "tiny-mmproj"},
          {"name": "tiny-mmproj", "repo": "test/tiny", "file": "mmproj-f32.gguf",
           "url": "http://127.0.0.1:$port/mmproj-f32.gguf", "path": "tiny/mmproj-f32.gguf",
           "quantization": "F32", "min_ram_mb": 1, "context": 0},
          {"name": "huge", "repo": "test/huge", "file": "missing.gguf",
           "url": "http://127.0.0.1:$port/missing.gguf", "quantization": "F32",
           "min_ram_mb": 1000000000, "context": 4096}
        ]}
    """.trimIndent()

    @Test
    fun `the model screen loads a local file and shows the backend with its reason`(@TempDir dir: File) =
        runBlocking {
            val vm = ModelViewModel(screenScope(), dir, engineOptions, availableMemory = { 1L shl 33 })
            vm.load(modelFile.path)!!.join()
            val loaded = assertNotNull(vm.state.value.loaded).let { vm.state.value.loaded!! }
            assertEquals("gemma4", loaded.architecture)
            assertEquals(BackendKind.CPU, loaded.backend)
            assertTrue(loaded.backendReason.isNotBlank())
            assertEquals(vm.engine.value!!.info.estimatedMemoryBytes.toLong(), loaded.estimatedMemoryBytes)
            assertNull(vm.state.value.message)
            vm.close()
            assertNull(vm.engine.value)
        }

    @Test
    fun `the model screen downloads a catalogue model with its towers, loads it and deletes it`(@TempDir dir: File) =
        runBlocking {
            val server = server()
            try {
                val vm = ModelViewModel(
                    screenScope(), dir, engineOptions, catalogue(server.address.port),
                    availableMemory = { 1L shl 33 },
                )
                val items = vm.state.value.catalogue.associateBy { it.model.name }
                assertEquals(false, items.getValue("tiny").downloaded)
                assertEquals(true, items.getValue("tiny").fitsInMemory)
                assertEquals(false, items.getValue("huge").fitsInMemory)
                vm.download("tiny")!!.join()
                assertNull(vm.state.value.message, vm.state.value.message)
                assertArrayEquals(modelFile.readBytes(), File(dir, "tiny/model-f32.gguf").readBytes())
                assertArrayEquals(mmprojFile.readBytes(), File(dir, "tiny/mmproj-f32.gguf").readBytes())
                assertTrue(vm.state.value.catalogue.first { it.model.name == "tiny" }.downloaded)
                assertEquals(File(dir, "tiny/model-f32.gguf").path, vm.state.value.loaded?.path)
                assertNull(vm.state.value.download)
                // The towers came along: the downloaded model captions.
                val caption = vm.engine.value!!.caption(pngBytes(), noEos(2))
                assertEquals(2u, caption.stats.generatedTokens)

                vm.delete("tiny")
                assertFalse(File(dir, "tiny/model-f32.gguf").exists())
                assertFalse(vm.state.value.catalogue.first { it.model.name == "tiny" }.downloaded)
                assertNull(vm.state.value.loaded)
                assertNull(vm.engine.value)

                // A file the server does not have: a message, nothing loaded.
                vm.download("huge")!!.join()
                assertNotNull(vm.state.value.message)
                assertTrue(vm.state.value.message!!.contains("404"), vm.state.value.message)
                assertNull(vm.state.value.loaded)
                vm.close()
            } finally {
                server.stop(0)
            }
        }

    @Test
    fun `a bad file and a model over the memory budget reach the state as messages`(@TempDir dir: File) =
        runBlocking {
            val bad = File(dir, "bad.gguf").apply { writeBytes(ByteArray(1000) { it.toByte() }) }
            val vm = ModelViewModel(screenScope(), dir, engineOptions)
            vm.load(bad.path)!!.join()
            assertNull(vm.state.value.loaded)
            assertTrue(vm.state.value.message!!.contains("bad.gguf"), vm.state.value.message)
            vm.dismissMessage()
            assertNull(vm.state.value.message)

            val small = ModelViewModel(screenScope(), dir, engineOptions.copy(memoryBudget = 65_536uL))
            small.load(modelFile.path)!!.join()
            assertNull(small.state.value.loaded)
            assertTrue(small.state.value.message!!.contains("memory"), small.state.value.message)
            vm.close()
            small.close()
        }

    // ------------------------------------------------------------------ chat screen

    @Test
    fun `chat streams the wrapper's answer, turn after turn`() = runBlocking {
        val options = noEos(12)
        val vm = ChatViewModel(screenScope(), engine, options)
        assertTrue(vm.state.value.backend.startsWith("CPU"), vm.state.value.backend)
        vm.setSystemPrompt("Be brief.")
        vm.send("Hello")!!.join()
        vm.send("And then?")!!.join()
        val reference = engine.conversation().use { c ->
            c.setSystemPrompt("Be brief.")
            listOf(c.send("Hello", options).text, c.send("And then?", options).text)
        }
        val lines = vm.state.value.lines
        assertEquals(listOf(Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT), lines.map { it.role })
        assertEquals(reference, listOf(lines[1].text, lines[3].text))
        assertTrue(vm.state.value.chunks > 1, "streamed in ${vm.state.value.chunks} chunks")
        assertEquals(12u, vm.state.value.stats!!.generatedTokens)
        assertFalse(vm.state.value.generating)
        // The screen and the conversation agree.
        assertEquals(lines.map { it.text }, vm.transcript.filter { it.role != Role.SYSTEM }.map { it.content })
        vm.clear()
        assertTrue(vm.state.value.lines.isEmpty())
        assertEquals(0, vm.cachedTokens)
        vm.close()
    }

    @Test
    fun `Stop ends the turn, and the chat goes on from the stopped answer`() = runBlocking {
        val vm = ChatViewModel(screenScope(), engine, noEos(8))
        vm.send("Go on forever", noEos(3000))
        withTimeout(60_000) { vm.state.first { it.chunks >= 3 } }
        vm.stopAndWait()
        val stopped = vm.state.value
        assertFalse(stopped.generating)
        val stats = stopped.stats!!
        assertTrue(stats.stopReason == StopReason.CANCELLED || stats.stopReason == StopReason.CALLBACK_STOPPED, "$stats")
        // Stopped long before the 3,000 tokens asked (the wrapper stops the engine within one
        // token of the collector's cancellation; its own tests measure that).
        assertTrue(stats.generatedTokens < 3000u, "${stats.generatedTokens}")
        // What the screen shows is the reference answer's beginning (the reference: the same
        // greedy turn through the wrapper), and the conversation kept at least that much.
        val shown = stopped.lines.last().text
        val reference = engine.conversation().use { c ->
            c.events("Go on forever", noEos(stats.generatedTokens.toInt())).toList()
                .filterIsInstance<GenerationEvent.Text>().joinToString("") { it.text }
        }
        assertTrue(shown.isNotEmpty() && reference.startsWith(shown), "shown \"$shown\", reference \"$reference\"")
        assertTrue(vm.transcript.last { it.role == Role.ASSISTANT }.content.startsWith(shown))
        // The chat goes on from the stopped answer.
        vm.send("And now?")!!.join()
        assertEquals(4, vm.state.value.lines.size)
        assertEquals(8u, vm.state.value.stats!!.generatedTokens)
        assertEquals(4, vm.transcript.size)
        vm.close()
    }

    @Test
    fun `generation keeps the main thread free, and leaving the screen cancels it`() = runBlocking {
        val parent = screenScope()
        val vm = ChatViewModel(parent, engine, noEos(4000))
        val turn = vm.send("Go on forever")!!
        withTimeout(60_000) { vm.state.first { it.chunks >= 1 } }
        // Were the turn on the main thread, this would run only after it had finished.
        assertTrue(withContext(main) { vm.state.value.generating })
        parent.cancel() // the screen goes away
        turn.join()
        assertTrue(turn.isCancelled)
        assertFalse(vm.state.value.generating)
        assertTrue(vm.state.value.stats!!.generatedTokens < 4000u)
        vm.close()
        // The engine is free for the next screen.
        engine.conversation().use { assertEquals(3u, it.send("Hi", noEos(3)).stats.generatedTokens) }
    }

    // ------------------------------------------------------------------ caption screen

    /** A 64×40 RGB gradient as PNG bytes (written by the JDK's ImageIO). */
    private fun pngBytes(): ByteArray {
        val img = java.awt.image.BufferedImage(64, 40, java.awt.image.BufferedImage.TYPE_INT_RGB)
        for (y in 0 until 40) for (x in 0 until 64) img.setRGB(x, y, (x * 4 shl 16) or (y * 6 shl 8) or 128)
        val out = ByteArrayOutputStream()
        javax.imageio.ImageIO.write(img, "png", out)
        return out.toByteArray()
    }

    @Test
    fun `caption returns the wrapper's caption, and a bad image is a message`() = runBlocking {
        val options = noEos(6)
        val vm = CaptionViewModel(screenScope(), engine, options)
        vm.caption(pngBytes())!!.join()
        val reference = engine.caption(pngBytes(), options).text.trim()
        assertTrue(reference.isNotEmpty())
        assertEquals(reference, vm.state.value.caption)
        assertEquals(6u, vm.state.value.stats!!.generatedTokens)
        assertFalse(vm.state.value.busy)

        vm.caption(byteArrayOf(1, 2, 3))!!.join()
        assertEquals("", vm.state.value.caption)
        assertNotNull(vm.state.value.message)
        assertFalse(vm.state.value.busy)
        vm.close()
    }

    // ------------------------------------------------------------------ transcribe screen

    /** 16-bit samples of [seconds] of a 440 Hz tone at 16 kHz. */
    private fun tone(seconds: Double): ShortArray =
        ShortArray((16000 * seconds).toInt()) { (8000 * Math.sin(2 * Math.PI * 440 * it / 16000.0)).toInt().toShort() }

    /** The same samples as a WAV file written by javax.sound (the reference encoder). */
    private fun jdkWav(samples: ShortArray): ByteArray {
        val bytes = ByteBuffer.allocate(samples.size * 2).order(ByteOrder.LITTLE_ENDIAN)
        samples.forEach { bytes.putShort(it) }
        val format = AudioFormat(16000f, 16, 1, true, false)
        val stream = AudioInputStream(ByteArrayInputStream(bytes.array()), format, samples.size.toLong())
        return ByteArrayOutputStream().also { AudioSystem.write(stream, AudioFileFormat.Type.WAVE, it) }.toByteArray()
    }

    @Test
    fun `the WAV the transcribe screen encodes reads back in javax sound as the same samples`() {
        val samples = tone(0.25)
        val wav = Wav.encode(Wav.fromPcm16(samples), 16000)
        val stream = AudioSystem.getAudioInputStream(ByteArrayInputStream(wav))
        assertEquals(AudioFormat.Encoding.PCM_SIGNED, stream.format.encoding)
        assertEquals(16000f, stream.format.sampleRate)
        assertEquals(1, stream.format.channels)
        assertEquals(16, stream.format.sampleSizeInBits)
        assertFalse(stream.format.isBigEndian)
        val back = ByteBuffer.wrap(stream.readAllBytes()).order(ByteOrder.LITTLE_ENDIAN).asShortBuffer()
        assertArrayEquals(samples, ShortArray(back.remaining()).also { back.get(it) })
    }

    @Test
    fun `transcribe turns recorded PCM into the wrapper's text, and silence is a message`() = runBlocking {
        val options = noEos(5)
        val samples = tone(1.0)
        val reference = engine.transcribe(jdkWav(samples), "English", options).trim()
        assertTrue(reference.isNotEmpty())

        val vm = TranscribeViewModel(screenScope(), engine, options)
        // As the microphone delivers it: 100 ms buffers of 16-bit samples.
        vm.startRecording()
        for (at in samples.indices step 1600) {
            val chunk = samples.copyOfRange(at, minOf(at + 1600, samples.size))
            vm.append(Wav.fromPcm16(chunk))
        }
        assertEquals(1.0, vm.state.value.seconds, 1e-9)
        vm.stopRecording()!!.join()
        assertEquals(reference, vm.state.value.text)
        assertFalse(vm.state.value.busy)
        assertNull(vm.state.value.message)

        vm.transcribePcm(FloatArray(16000), 16000)!!.join()
        assertEquals("", vm.state.value.text)
        assertNotNull(vm.state.value.message)
        vm.close()
    }

    @Test
    fun `long audio is transcribed in clips, as the wrapper does`() = runBlocking {
        val options = noEos(3)
        val samples = tone(31.0)
        val reference = engine.transcribe(jdkWav(samples), "English", options).trim()
        val vm = TranscribeViewModel(screenScope(), engine, options)
        vm.transcribePcm(Wav.fromPcm16(samples), 16000)!!.join()
        assertNull(vm.state.value.message, vm.state.value.message)
        assertEquals(31.0, vm.state.value.seconds, 1e-9)
        assertEquals(reference, vm.state.value.text)
        vm.close()
    }
}

package dev.gemmakit

import com.sun.net.httpserver.HttpServer
import dev.gemmakit.ffi.DownloadFailureKind
import dev.gemmakit.ffi.DownloadProgress
import dev.gemmakit.ffi.GemmaKitException
import dev.gemmakit.ffi.Verification
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir
import java.io.File
import java.net.InetSocketAddress
import java.security.MessageDigest
import kotlin.random.Random

/**
 * [GemmaDownload] against a JDK HttpServer on 127.0.0.1 that serves byte ranges and declares
 * the file's sha256 as its ETag (as Hugging Face does), slowly on one path, behind a token on
 * another.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class DownloadTest {
    private val body = Random(7).nextBytes(1 shl 20)
    private val sha256 = MessageDigest.getInstance("SHA-256").digest(body).joinToString("") { "%02x".format(it) }
    private val ranges = mutableListOf<String?>()

    private val server = HttpServer.create(InetSocketAddress("127.0.0.1", 0), 0).apply {
        fun serve(path: String, chunkDelayMs: Long = 0, token: String? = null) = createContext(path) { ex ->
            if (token != null && ex.requestHeaders.getFirst("Authorization") != "Bearer $token") {
                ex.sendResponseHeaders(401, -1)
                ex.close()
                return@createContext
            }
            val range = ex.requestHeaders.getFirst("Range")
            synchronized(ranges) { ranges.add(range) }
            val start = range?.removePrefix("bytes=")?.removeSuffix("-")?.toInt() ?: 0
            ex.responseHeaders.add("ETag", "\"$sha256\"")
            ex.responseHeaders.add("Accept-Ranges", "bytes")
            if (start > 0) {
                ex.responseHeaders.add("Content-Range", "bytes $start-${body.size - 1}/${body.size}")
            }
            ex.sendResponseHeaders(if (start > 0) 206 else 200, (body.size - start).toLong())
            try {
                ex.responseBody.use { out ->
                    var at = start
                    while (at < body.size) {
                        val n = minOf(16384, body.size - at)
                        out.write(body, at, n)
                        out.flush()
                        at += n
                        if (chunkDelayMs > 0) Thread.sleep(chunkDelayMs)
                    }
                }
            } catch (_: java.io.IOException) {
                // the client went away (cancelled)
            }
        }
        serve("/fast.gguf")
        serve("/slow.gguf", chunkDelayMs = 20)
        serve("/gated.gguf", token = "hf_secret")
        start()
    }

    private fun url(path: String) = "http://127.0.0.1:${server.address.port}$path"

    @AfterAll
    fun stop() = server.stop(0)

    @Test
    fun `progress flows to completion and the file is verified`(@TempDir dir: File) = runBlocking {
        val dest = File(dir, "m.gguf")
        GemmaDownload.fromUrl(url("/fast.gguf"), dest.path).use { download ->
            val seen: List<DownloadProgress> = download.progress().toList()
            assertEquals(body.size.toULong(), seen.last().downloaded)
            assertEquals(body.size.toULong(), seen.last().total)
            assertArrayEquals(body, dest.readBytes())
            assertEquals(Verification.SERVER_DECLARED, download.result!!.verification)
            assertEquals(sha256, download.result!!.sha256)
        }
    }

    @Test
    fun `cancelling the collector keeps a partial file that the next download resumes`(@TempDir dir: File) =
        runBlocking {
            val dest = File(dir, "m.gguf")
            val part = File(dir, "m.gguf.part")
            GemmaDownload.fromUrl(url("/slow.gguf"), dest.path).use { download ->
                download.progress().first { it.downloaded > 0u }
            }
            // The native call stops within one read of the cancel: wait until the file is still.
            var kept = -1L
            repeat(50) {
                if (part.length() == kept) return@repeat
                kept = part.length()
                Thread.sleep(100)
            }
            assertTrue(kept in 1 until body.size, "kept $kept")
            assertTrue(!dest.exists())
            GemmaDownload.fromUrl(url("/fast.gguf"), dest.path).use { it.progress().toList() }
            assertArrayEquals(body, dest.readBytes())
        }

    @Test
    fun `a gated file without a token is a typed error that asks for one`(@TempDir dir: File) = runBlocking {
        val dest = File(dir, "g.gguf")
        val error = assertThrows<GemmaKitException.Download> {
            runBlocking { GemmaDownload.fromUrl(url("/gated.gguf"), dest.path).use { it.progress().toList() } }
        }
        assertEquals(DownloadFailureKind.AuthRequired(401u), error.kind)
        assertTrue(error.toString().contains("access token"), error.toString())
        GemmaDownload.fromUrl(url("/gated.gguf"), dest.path, token = "hf_secret").use { it.progress().toList() }
        assertArrayEquals(body, dest.readBytes())
    }

    @Test
    fun `the built-in catalogue lists the Gemma 4 files`() {
        val names = GemmaDownload.catalogue().map { it.name }
        assertTrue("gemma-4-e2b-it-q4_k_m" in names && "gemma-3-270m" in names, names.toString())
    }
}

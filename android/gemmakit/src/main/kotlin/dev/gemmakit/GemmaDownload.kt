package dev.gemmakit

import dev.gemmakit.ffi.CatalogueModel
import dev.gemmakit.ffi.DownloadListener
import dev.gemmakit.ffi.DownloadProgress
import dev.gemmakit.ffi.DownloadedFile
import dev.gemmakit.ffi.ModelDownload
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.flow.conflate
import kotlinx.coroutines.launch
import java.util.concurrent.atomic.AtomicReference

/**
 * One model file to download: resumable (a failed or cancelled download keeps its partial
 * file, and the next one for the same file continues it), sha256-verified, one at a time per
 * file.
 *
 * ```
 * val download = GemmaDownload.fromCatalogue("gemma-4-e2b-it-q4_k_m", File(filesDir, "models").path)
 * download.progress().collect { p -> showProgress(p.downloaded, p.total, p.etaSeconds) }
 * GemmaEngine.load(download.destPath, EngineOptions(memoryBudget = memoryInfo.availMem.toULong()))
 * ```
 */
class GemmaDownload private constructor(private val handle: ModelDownload) : AutoCloseable {
    private val finished = AtomicReference<DownloadedFile?>(null)

    /** Where the file goes (and is, once [progress] completed). */
    val destPath: String get() = handle.destPath()

    /** The finished file (size, sha256, how it was verified), once [progress] completed. */
    val result: DownloadedFile? get() = finished.get()

    /**
     * Runs the download on [Dispatchers.IO] and emits its progress (the latest when the
     * collector is slower). Completes when the file is in place; throws
     * [dev.gemmakit.ffi.GemmaKitException.Download] on failure (its `kind` says why: a token
     * needed, no disk space, …). Cancelling the collector cancels the download; the partial
     * file is kept.
     */
    fun progress(): Flow<DownloadProgress> = callbackFlow {
        val listener = object : DownloadListener {
            override fun onProgress(progress: DownloadProgress) {
                trySend(progress)
            }
        }
        launch(Dispatchers.IO) {
            try {
                finished.set(handle.run(listener))
                channel.close()
            } catch (e: Throwable) {
                channel.close(e)
            }
        }
        awaitClose { handle.cancel() }
    }.conflate()

    /** Stops a running download from any thread (the partial file is kept). */
    fun cancel() = handle.cancel()

    override fun close() = handle.close()

    companion object {
        /** Any URL to [destPath]; [sha256]: the expected hex digest; [token]: a bearer token. */
        @JvmStatic
        @JvmOverloads
        fun fromUrl(url: String, destPath: String, sha256: String? = null, token: String? = null): GemmaDownload {
            GemmaKit.ensureLoaded()
            return GemmaDownload(ModelDownload(url, destPath, sha256, token))
        }

        /**
         * The catalogue model [name] into [modelsDir] (the app's storage); [catalogueJson]: the
         * app's own catalogue instead of the built-in one; [token]: for gated repositories.
         */
        @JvmStatic
        @JvmOverloads
        fun fromCatalogue(
            name: String,
            modelsDir: String,
            catalogueJson: String? = null,
            token: String? = null,
        ): GemmaDownload {
            GemmaKit.ensureLoaded()
            return GemmaDownload(ModelDownload.fromCatalogue(name, modelsDir, catalogueJson, token))
        }

        /** The built-in catalogue, or the app's own. */
        @JvmStatic
        @JvmOverloads
        fun catalogue(catalogueJson: String? = null): List<CatalogueModel> {
            GemmaKit.ensureLoaded()
            return dev.gemmakit.ffi.catalogueModels(catalogueJson)
        }
    }
}

package dev.gemmakit.sample

import dev.gemmakit.GemmaDownload
import dev.gemmakit.GemmaEngine
import dev.gemmakit.ffi.BackendKind
import dev.gemmakit.ffi.CatalogueModel
import dev.gemmakit.ffi.EngineOptions
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import java.io.File

/** A catalogue entry as the model screen lists it. */
data class CatalogueItem(
    val model: CatalogueModel,
    /** Where the file is (or goes) under the app's models directory. */
    val path: String,
    val downloaded: Boolean,
    /** The catalogue's RAM guide against the memory available now (`null`: unknown). */
    val fitsInMemory: Boolean?,
)

/** A running download. */
data class DownloadState(val name: String, val downloaded: Long, val total: Long?, val etaSeconds: Double?) {
    /** 0..1, or `null` while the size is unknown. */
    val fraction: Float? get() = total?.takeIf { it > 0 }?.let { downloaded.toFloat() / it }
}

/** The loaded model, as the screens show it. */
data class LoadedModel(
    val path: String,
    val name: String,
    val architecture: String,
    val estimatedMemoryBytes: Long,
    val backend: BackendKind,
    val device: String,
    /** Why this backend runs (e.g. why the GPU was not used): shown next to the backend. */
    val backendReason: String,
    /** The warm-up run while loading (GPU pipelines compiled before the first message). */
    val warmUpMs: Double = 0.0,
)

data class ModelState(
    val catalogue: List<CatalogueItem> = emptyList(),
    val availableMemoryBytes: Long? = null,
    val download: DownloadState? = null,
    /** The path being loaded. */
    val loading: String? = null,
    val loaded: LoadedModel? = null,
    /** The last failure (a bad file, over the memory budget, a failed download), until dismissed. */
    val message: String? = null,
)

/**
 * The model screen: the catalogue (downloaded or not, fits in memory or not), downloads with
 * progress (a model's vision/audio towers come with it), a local file, delete, and the loaded
 * engine the other screens use ([engine]). [engineOptions] is the app's: on Android its
 * `memoryBudget` is `ActivityManager.MemoryInfo.availMem`, so a model that does not fit is
 * refused with a message instead of the app being killed.
 */
class ModelViewModel(
    parent: CoroutineScope,
    private val modelsDir: File,
    private val engineOptions: EngineOptions = EngineOptions(),
    private val catalogueJson: String? = null,
    private val availableMemory: () -> Long? = { dev.gemmakit.ffi.availableMemory()?.toLong() },
) : ScreenModel(parent) {
    private val _state = MutableStateFlow(ModelState())
    val state: StateFlow<ModelState> = _state.asStateFlow()

    private val _engine = MutableStateFlow<GemmaEngine?>(null)

    /** The loaded engine (`null` before a load, after [unload] and [close]). */
    val engine: StateFlow<GemmaEngine?> = _engine.asStateFlow()

    private var downloadJob: Job? = null
    private var loadJob: Job? = null

    init {
        refresh()
    }

    /** Re-reads the catalogue, the files present and the memory available. */
    fun refresh() {
        try {
            val memory = availableMemory()
            val items = GemmaDownload.catalogue(catalogueJson).map { m ->
                val file = File(modelsDir, m.relativePath)
                CatalogueItem(
                    model = m,
                    path = file.path,
                    downloaded = file.isFile,
                    fitsInMemory = memory?.let { m.minRamMb.toLong() * 1024 * 1024 <= it },
                )
            }
            _state.update { it.copy(catalogue = items, availableMemoryBytes = memory) }
        } catch (e: Exception) {
            _state.update { it.copy(message = userMessage(e)) }
        }
    }

    /**
     * Downloads the catalogue model [name] (and its towers, if it has some), then loads it.
     * One download at a time; [cancelDownload] keeps the partial file for the next try.
     */
    fun download(name: String, thenLoad: Boolean = true): Job? {
        if (downloadJob?.isActive == true) return null
        return scope.launch {
            try {
                val item = _state.value.catalogue.firstOrNull { it.model.name == name }
                    ?: error("$name is not in the catalogue")
                val names = listOfNotNull(name, item.model.mmproj)
                for (n in names) {
                    GemmaDownload.fromCatalogue(n, modelsDir.path, catalogueJson).use { d ->
                        d.progress().collect { p ->
                            _state.update {
                                it.copy(
                                    download = DownloadState(
                                        n,
                                        p.downloaded.toLong(),
                                        p.total?.toLong(),
                                        p.etaSeconds,
                                    ),
                                )
                            }
                        }
                    }
                }
                _state.update { it.copy(download = null) }
                refresh()
                if (thenLoad) loadNow(item.path)
            } catch (e: CancellationException) {
                _state.update { it.copy(download = null) }
                throw e
            } catch (e: Exception) {
                _state.update { it.copy(download = null, message = userMessage(e)) }
            }
        }.also { downloadJob = it }
    }

    fun cancelDownload() {
        downloadJob?.cancel()
    }

    /** Loads a local `.gguf` (picked by the user, pushed with `adb push`, or downloaded). */
    fun load(path: String): Job? {
        if (loadJob?.isActive == true) return null
        return scope.launch { loadNow(path) }.also { loadJob = it }
    }

    private suspend fun loadNow(path: String) {
        unload()
        _state.update { it.copy(loading = path, message = null) }
        try {
            val engine = GemmaEngine.load(path, engineOptions)
            // Part of loading, so the first message does not compile the GPU's pipelines.
            val warmUpMs = try {
                engine.warmUp()
            } catch (e: Throwable) {
                engine.close()
                throw e
            }
            val info = engine.info
            val backend = engine.backend
            _engine.value = engine
            _state.update {
                it.copy(
                    loading = null,
                    loaded = LoadedModel(
                        path = path,
                        name = info.name.ifEmpty { File(path).name },
                        architecture = info.architecture,
                        estimatedMemoryBytes = info.estimatedMemoryBytes.toLong(),
                        backend = backend.backend,
                        device = backend.device,
                        backendReason = backend.reason,
                        warmUpMs = warmUpMs,
                    ),
                )
            }
        } catch (e: CancellationException) {
            _state.update { it.copy(loading = null) }
            throw e
        } catch (e: Exception) {
            _state.update { it.copy(loading = null, message = userMessage(e)) }
        }
    }

    /**
     * Deletes the catalogue model [name]'s file (unloading it first if it is the loaded one).
     * Its towers stay: another model of the same repository may use them.
     */
    fun delete(name: String) {
        val item = _state.value.catalogue.firstOrNull { it.model.name == name } ?: return
        if (_state.value.loaded?.path == item.path) unload()
        val file = File(item.path)
        if (file.exists() && !file.delete()) {
            _state.update { it.copy(message = "Could not delete ${file.path}") }
        }
        File(item.path + ".part").delete()
        refresh()
    }

    /** Frees the loaded model (its conversations are closed: leave the other screens first). */
    fun unload() {
        _engine.value?.close()
        _engine.value = null
        _state.update { it.copy(loaded = null) }
    }

    fun dismissMessage() = _state.update { it.copy(message = null) }

    override fun close() {
        super.close()
        unload()
    }
}

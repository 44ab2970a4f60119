package dev.gemmakit.sample

import dev.gemmakit.GemmaEngine
import dev.gemmakit.ffi.GenerateOptions
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch

data class TranscribeState(
    val recording: Boolean = false,
    /** Seconds of audio recorded (or loaded). */
    val seconds: Double = 0.0,
    val language: String = "English",
    val text: String = "",
    val busy: Boolean = false,
    val message: String? = null,
)

/**
 * The transcribe screen: microphone audio (Android `AudioRecord`, iOS `AVAudioEngine`, 16 kHz
 * mono float samples pushed with [append]) or a WAV file → text. Audio longer than 30 s is
 * transcribed clip by clip by the engine and the texts joined. Recording stops at
 * [Wav.MAX_SAMPLES] (ten minutes).
 */
class TranscribeViewModel(
    parent: CoroutineScope,
    private val engine: GemmaEngine,
    private val options: GenerateOptions = GenerateOptions(maxTokens = 448u),
    val sampleRate: Int = 16_000,
) : ScreenModel(parent) {
    private val _state = MutableStateFlow(TranscribeState())
    val state: StateFlow<TranscribeState> = _state.asStateFlow()
    private var job: Job? = null

    private val lock = Any()
    private var recorded = FloatArray(0)
    private var recordedLength = 0

    /** A capture failure from the platform (no microphone, permission denied). */
    fun failed(message: String) = _state.update { it.copy(recording = false, message = message) }

    fun dismissMessage() = _state.update { it.copy(message = null) }

    fun setLanguage(language: String) = _state.update { it.copy(language = language) }

    /** Starts a new recording (drops the previous one). */
    fun startRecording() {
        synchronized(lock) { recordedLength = 0 }
        _state.update { it.copy(recording = true, seconds = 0.0, text = "", message = null) }
    }

    /** Appends microphone samples (any thread: the capture callback's). */
    fun append(samples: FloatArray, length: Int = samples.size) {
        if (!_state.value.recording) return
        val seconds = synchronized(lock) {
            val room = Wav.MAX_SAMPLES - recordedLength
            val n = minOf(length, room)
            if (recorded.size < recordedLength + n) {
                recorded = recorded.copyOf(minOf(Wav.MAX_SAMPLES, maxOf(recordedLength + n, recorded.size * 2)))
            }
            System.arraycopy(samples, 0, recorded, recordedLength, n)
            recordedLength += n
            recordedLength.toDouble() / sampleRate
        }
        _state.update { it.copy(seconds = seconds, recording = seconds * sampleRate < Wav.MAX_SAMPLES) }
    }

    /** Stops recording and transcribes what was recorded. */
    fun stopRecording(): Job? {
        val samples = synchronized(lock) { recorded.copyOf(recordedLength) }
        _state.update { it.copy(recording = false) }
        return transcribePcm(samples, sampleRate)
    }

    /** Transcribes float samples in [-1, 1]. */
    fun transcribePcm(samples: FloatArray, sampleRate: Int, channels: Int = 1): Job? {
        val wav = try {
            Wav.encode(samples, sampleRate, channels)
        } catch (e: IllegalArgumentException) {
            _state.update { it.copy(message = userMessage(e)) }
            return null
        }
        _state.update { it.copy(seconds = samples.size.toDouble() / channels / sampleRate) }
        return transcribeWav(wav)
    }

    /** Transcribes a WAV file's bytes. */
    fun transcribeWav(wav: ByteArray): Job? {
        if (job?.isActive == true) return null
        _state.update { it.copy(busy = true, text = "", message = null) }
        return scope.launch {
            try {
                val text = engine.transcribe(wav, _state.value.language, options)
                _state.update { it.copy(text = text.trim()) }
            } catch (e: CancellationException) {
                throw e
            } catch (e: Exception) {
                _state.update { it.copy(message = userMessage(e)) }
            } finally {
                _state.update { it.copy(busy = false) }
            }
        }.also { job = it }
    }
}

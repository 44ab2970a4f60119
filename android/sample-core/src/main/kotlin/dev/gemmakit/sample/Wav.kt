package dev.gemmakit.sample

import java.nio.ByteBuffer
import java.nio.ByteOrder

/** Audio as the transcribe screen collects it: interleaved float samples in [-1, 1]. */
object Wav {
    /** Longest recording the transcribe screen keeps (10 minutes at 16 kHz mono: 19 MB as WAV). */
    const val MAX_SAMPLES: Int = 10 * 60 * 16_000

    /**
     * A 16-bit PCM WAV file of [samples] (what `AudioRecord`/`AVAudioEngine` deliver, as floats).
     * Samples outside [-1, 1] are clipped.
     */
    fun encode(samples: FloatArray, sampleRate: Int, channels: Int = 1): ByteArray {
        require(sampleRate > 0 && channels in 1..8) { "bad format: $sampleRate Hz, $channels channels" }
        require(samples.size <= MAX_SAMPLES * channels) { "${samples.size} samples: over the limit" }
        val data = samples.size * 2
        val buf = ByteBuffer.allocate(44 + data).order(ByteOrder.LITTLE_ENDIAN)
        buf.put("RIFF".toByteArray(Charsets.US_ASCII)).putInt(36 + data).put("WAVE".toByteArray(Charsets.US_ASCII))
        buf.put("fmt ".toByteArray(Charsets.US_ASCII)).putInt(16)
            .putShort(1) // PCM
            .putShort(channels.toShort())
            .putInt(sampleRate)
            .putInt(sampleRate * channels * 2)
            .putShort((channels * 2).toShort())
            .putShort(16)
        buf.put("data".toByteArray(Charsets.US_ASCII)).putInt(data)
        for (s in samples) {
            val clipped = s.coerceIn(-1f, 1f)
            buf.putShort(Math.round(clipped * 32767f).toShort())
        }
        return buf.array()
    }

    /** 16-bit PCM (as `AudioRecord.read(ShortArray…)` gives it) as floats in [-1, 1]. */
    fun fromPcm16(pcm: ShortArray, length: Int = pcm.size): FloatArray =
        FloatArray(length) { pcm[it] / 32767f }
}

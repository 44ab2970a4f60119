package dev.gemmakit

import dev.gemmakit.ffi.GenerateOptions
import dev.gemmakit.ffi.SamplingOptions

/** Gemma's recommended sampling (temperature 1.0, top-k 64, top-p 0.95). */
fun SamplingOptions.Companion.gemmaRecommended(seed: ULong? = null): SamplingOptions {
    GemmaKit.ensureLoaded()
    return dev.gemmakit.ffi.gemmaRecommendedSampling().copy(seed = seed)
}

/** Greedy decoding (the default of [GenerateOptions]). */
fun SamplingOptions.Companion.greedy(): SamplingOptions = SamplingOptions()

/** [GenerateOptions] with a token limit, e.g. `GenerateOptions.maxTokens(64)`. */
fun GenerateOptions.Companion.maxTokens(n: Int, sampling: SamplingOptions = SamplingOptions()): GenerateOptions =
    GenerateOptions(sampling = sampling, maxTokens = n.toUInt())

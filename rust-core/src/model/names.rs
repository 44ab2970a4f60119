//! The one table of tensor names: Hugging Face (transformers checkpoints) ↔ GGUF (llama.cpp's
//! converter, gguf-py's tensor map), for the text model and the vision and audio towers.
//! Loading a GGUF reads it from GGUF to Hugging Face names (the graph loaders know only
//! those); `convert` reads it the other way.

/// Prefixes under which checkpoints store the text model, most specific first. Under the bare
/// `model.` prefix the towers live too ([`TOWER_MODULES`]).
pub const TEXT_PREFIXES: [&str; 3] = ["model.language_model.", "language_model.model.", "model."];
/// The tower and projector modules that sit next to the text model under `model.`.
pub const TOWER_MODULES: [&str; 4] = [
    "vision_tower.",
    "audio_tower.",
    "embed_vision.",
    "embed_audio.",
];
pub const VISION_TOWER: &str = "model.vision_tower.";
pub const VISION_PROJECTOR: &str = "model.embed_vision.";
pub const AUDIO_TOWER: &str = "model.audio_tower.";
pub const AUDIO_PROJECTOR: &str = "model.embed_audio.";

/// How one module's tensors are named on each side.
#[derive(Debug, Clone, Copy)]
enum Form {
    /// `g.weight` ↔ `h.weight`.
    Weight,
    /// A parameter without `.weight` on either side: `g` ↔ `h`.
    Plain,
    /// `g.weight` ↔ `h.weight` and `g.bias` ↔ `h.bias`.
    WeightAndBias,
    /// A parameter without a `.weight` on the Hugging Face side: `g.weight` (or `g`) ↔ `h`.
    Bare,
    /// transformers' `Gemma4ClippableLinear`: `g.weight` ↔ `h.linear.weight`, and the clip
    /// bounds `g.input_min` ↔ `h.input_min` (likewise `input_max`, `output_min`, `output_max`).
    Clipped,
}

const CLIP_BOUNDS: [&str; 4] = ["input_min", "input_max", "output_min", "output_max"];

#[derive(Debug, Clone, Copy)]
struct Entry {
    gguf: &'static str,
    hf: &'static str,
    form: Form,
}

const fn e(gguf: &'static str, hf: &'static str, form: Form) -> Entry {
    Entry { gguf, hf, form }
}

impl Entry {
    /// Every (GGUF name, Hugging Face name) pair of this module, the canonical one first.
    fn pairs(&self) -> Vec<(String, String)> {
        let (g, h) = (self.gguf, self.hf);
        match self.form {
            Form::Weight => vec![(format!("{g}.weight"), format!("{h}.weight"))],
            Form::Plain => vec![(g.to_string(), h.to_string())],
            Form::WeightAndBias => vec![
                (format!("{g}.weight"), format!("{h}.weight")),
                (format!("{g}.bias"), format!("{h}.bias")),
            ],
            Form::Bare => vec![
                (format!("{g}.weight"), h.to_string()),
                (g.to_string(), h.to_string()),
            ],
            Form::Clipped => std::iter::once((format!("{g}.weight"), format!("{h}.linear.weight")))
                .chain(
                    CLIP_BOUNDS
                        .iter()
                        .map(|b| (format!("{g}.{b}"), format!("{h}.{b}"))),
                )
                .collect(),
        }
    }
}

/// One model part's names: whole-model tensors, and per-layer tensors under a numbered layer
/// prefix on each side.
pub struct NameTable {
    global: &'static [Entry],
    gguf_layers: &'static str,
    hf_layers: &'static str,
    layer: &'static [Entry],
}

impl NameTable {
    /// The Hugging Face name of a GGUF tensor, `None` for tensors no loader uses.
    pub fn to_hf(&self, gguf: &str) -> Option<String> {
        translate(
            gguf,
            self.gguf_layers,
            self.hf_layers,
            self.global,
            self.layer,
            |p| p,
        )
    }

    /// The GGUF name of a Hugging Face tensor, `None` for tensors the GGUF layout lacks.
    pub fn to_gguf(&self, hf: &str) -> Option<String> {
        translate(
            hf,
            self.hf_layers,
            self.gguf_layers,
            self.global,
            self.layer,
            |(g, h)| (h, g),
        )
    }
}

/// Looks `name` up among the `from` side of the pairs (as oriented by `orient`) and returns
/// the `to` side; layer tensors keep their layer number.
fn translate(
    name: &str,
    from_layers: &str,
    to_layers: &str,
    global: &[Entry],
    layer: &[Entry],
    orient: impl Fn((String, String)) -> (String, String),
) -> Option<String> {
    let find = |entries: &[Entry], wanted: &str| {
        entries
            .iter()
            .flat_map(Entry::pairs)
            .map(&orient)
            .find(|(from, _)| from == wanted)
            .map(|(_, to)| to)
    };
    if let Some(to) = find(global, name) {
        return Some(to);
    }
    let rest = name.strip_prefix(from_layers)?;
    let (index, tensor) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    find(layer, tensor).map(|to| format!("{to_layers}{index}.{to}"))
}

/// One decoder layer's tensors (the text decoder's and the MTP assistant's).
const DECODER_LAYER: &[Entry] = &[
    e("attn_norm", "input_layernorm", Form::Weight),
    e("attn_q", "self_attn.q_proj", Form::Weight),
    e("attn_k", "self_attn.k_proj", Form::Weight),
    e("attn_v", "self_attn.v_proj", Form::Weight),
    e("attn_output", "self_attn.o_proj", Form::Weight),
    e("attn_q_norm", "self_attn.q_norm", Form::Weight),
    e("attn_k_norm", "self_attn.k_norm", Form::Weight),
    e(
        "post_attention_norm",
        "post_attention_layernorm",
        Form::Weight,
    ),
    e("ffn_norm", "pre_feedforward_layernorm", Form::Weight),
    e("post_ffw_norm", "post_feedforward_layernorm", Form::Weight),
    e("ffn_gate", "mlp.gate_proj", Form::Weight),
    e("ffn_up", "mlp.up_proj", Form::Weight),
    e("ffn_down", "mlp.down_proj", Form::Weight),
    e("inp_gate", "per_layer_input_gate", Form::Weight),
    e("proj", "per_layer_projection", Form::Weight),
    e("post_norm", "post_per_layer_input_norm", Form::Weight),
    e("layer_output_scale", "layer_scalar", Form::Bare),
];

/// The text decoder; Hugging Face names without their prefix ([`TEXT_PREFIXES`]).
pub static TEXT: NameTable = NameTable {
    global: &[
        e("token_embd", "embed_tokens", Form::Weight),
        e(
            "per_layer_token_embd",
            "embed_tokens_per_layer",
            Form::Weight,
        ),
        e(
            "per_layer_model_proj",
            "per_layer_model_projection",
            Form::Weight,
        ),
        e(
            "per_layer_proj_norm",
            "per_layer_projection_norm",
            Form::Weight,
        ),
        e("output_norm", "norm", Form::Weight),
    ],
    gguf_layers: "blk.",
    hf_layers: "layers.",
    layer: DECODER_LAYER,
};

/// Prefixes of every tensor of an MTP assistant checkpoint (other files in its directory,
/// such as reference outputs, hold none).
pub const ASSISTANT_PREFIXES: [&str; 4] = [
    "model.",
    "pre_projection.",
    "post_projection.",
    "masked_embedding.",
];

/// Gemma 4's MTP assistant (`Gemma4AssistantForCausalLM`, llama.cpp's `gemma4-assistant`),
/// full Hugging Face names. llama.cpp's converter drops the centroid head
/// (`masked_embd_centroids.weight`, `masked_embd_ordering`, names it reserves); `gemmakit
/// convert` writes them.
pub static ASSISTANT: NameTable = NameTable {
    global: &[
        e("token_embd", "model.embed_tokens", Form::Weight),
        e("output_norm", "model.norm", Form::Weight),
        e("nextn.pre_projection", "pre_projection", Form::Weight),
        e("nextn.post_projection", "post_projection", Form::Weight),
        e(
            "masked_embd_centroids",
            "masked_embedding.centroids",
            Form::Weight,
        ),
        e(
            "masked_embd_ordering",
            "masked_embedding.token_ordering",
            Form::Plain,
        ),
    ],
    gguf_layers: "blk.",
    hf_layers: "model.layers.",
    layer: DECODER_LAYER,
};

/// The vision tower and its projector in an mmproj GGUF (full Hugging Face names).
pub static VISION: NameTable = NameTable {
    global: &[
        e(
            "v.patch_embd",
            "model.vision_tower.patch_embedder.input_proj",
            Form::Weight,
        ),
        e(
            "v.position_embd",
            "model.vision_tower.patch_embedder.position_embedding_table",
            Form::Bare,
        ),
        e("v.std_bias", "model.vision_tower.std_bias", Form::Bare),
        e("v.std_scale", "model.vision_tower.std_scale", Form::Bare),
        e(
            "mm.input_projection",
            "model.embed_vision.embedding_projection",
            Form::Weight,
        ),
    ],
    gguf_layers: "v.blk.",
    hf_layers: "model.vision_tower.encoder.layers.",
    layer: &[
        e("attn_q", "self_attn.q_proj", Form::Clipped),
        e("attn_k", "self_attn.k_proj", Form::Clipped),
        e("attn_v", "self_attn.v_proj", Form::Clipped),
        e("attn_out", "self_attn.o_proj", Form::Clipped),
        e("ffn_gate", "mlp.gate_proj", Form::Clipped),
        e("ffn_up", "mlp.up_proj", Form::Clipped),
        e("ffn_down", "mlp.down_proj", Form::Clipped),
        e("attn_q_norm", "self_attn.q_norm", Form::Weight),
        e("attn_k_norm", "self_attn.k_norm", Form::Weight),
        e("ln1", "input_layernorm", Form::Weight),
        e("attn_post_norm", "post_attention_layernorm", Form::Weight),
        e("ln2", "pre_feedforward_layernorm", Form::Weight),
        e("ffn_post_norm", "post_feedforward_layernorm", Form::Weight),
    ],
};

/// The audio tower (conformer) and its projector in an mmproj GGUF (full Hugging Face names).
pub static AUDIO: NameTable = NameTable {
    global: &[
        e(
            "mm.a.input_projection",
            "model.embed_audio.embedding_projection",
            Form::Weight,
        ),
        e(
            "a.conv1d.0",
            "model.audio_tower.subsample_conv_projection.layer0.conv",
            Form::Weight,
        ),
        e(
            "a.conv1d.1",
            "model.audio_tower.subsample_conv_projection.layer1.conv",
            Form::Weight,
        ),
        e(
            "a.conv1d.0.norm",
            "model.audio_tower.subsample_conv_projection.layer0.norm",
            Form::Weight,
        ),
        e(
            "a.conv1d.1.norm",
            "model.audio_tower.subsample_conv_projection.layer1.norm",
            Form::Weight,
        ),
        e(
            "a.input_projection",
            "model.audio_tower.subsample_conv_projection.input_proj_linear",
            Form::Weight,
        ),
        e(
            "a.pre_encode.out",
            "model.audio_tower.output_proj",
            Form::WeightAndBias,
        ),
    ],
    gguf_layers: "a.blk.",
    hf_layers: "model.audio_tower.layers.",
    layer: &[
        e("ffn_up", "feed_forward1.ffw_layer_1", Form::Clipped),
        e("ffn_down", "feed_forward1.ffw_layer_2", Form::Clipped),
        e("ffn_up_1", "feed_forward2.ffw_layer_1", Form::Clipped),
        e("ffn_down_1", "feed_forward2.ffw_layer_2", Form::Clipped),
        e("ffn_norm", "feed_forward1.pre_layer_norm", Form::Weight),
        e(
            "ffn_post_norm",
            "feed_forward1.post_layer_norm",
            Form::Weight,
        ),
        e("ffn_norm_1", "feed_forward2.pre_layer_norm", Form::Weight),
        e(
            "ffn_post_norm_1",
            "feed_forward2.post_layer_norm",
            Form::Weight,
        ),
        e("attn_q", "self_attn.q_proj", Form::Clipped),
        e("attn_k", "self_attn.k_proj", Form::Clipped),
        e("attn_v", "self_attn.v_proj", Form::Clipped),
        e("attn_out", "self_attn.post", Form::Clipped),
        e("attn_k_rel", "self_attn.relative_k_proj", Form::Weight),
        // Stored through softplus by llama.cpp's converter; the loader knows
        // (model::audio::PerDimScale::Softplus).
        e("per_dim_scale", "self_attn.per_dim_scale", Form::Bare),
        e("attn_pre_norm", "norm_pre_attn", Form::Weight),
        e("attn_post_norm", "norm_post_attn", Form::Weight),
        e("ln2", "norm_out", Form::Weight),
        e("conv_pw1", "lconv1d.linear_start", Form::Clipped),
        e("conv_pw2", "lconv1d.linear_end", Form::Clipped),
        e("conv_dw", "lconv1d.depthwise_conv1d", Form::Weight),
        // The converter's names look swapped: the norm before `conv_pw1` is `conv_norm`, the
        // one after the depthwise convolution `norm_conv` (llama.cpp's clip.cpp swaps them
        // back when loading).
        e("conv_norm", "lconv1d.pre_layer_norm", Form::Weight),
        e("norm_conv", "lconv1d.conv_norm", Form::Weight),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_translate_both_ways() {
        for (gguf, hf) in [
            ("token_embd.weight", "embed_tokens.weight"),
            ("blk.3.attn_q.weight", "layers.3.self_attn.q_proj.weight"),
            ("blk.11.layer_output_scale.weight", "layers.11.layer_scalar"),
            ("blk.0.proj.weight", "layers.0.per_layer_projection.weight"),
        ] {
            assert_eq!(TEXT.to_hf(gguf).as_deref(), Some(hf));
            assert_eq!(TEXT.to_gguf(hf).as_deref(), Some(gguf));
        }
        // llama.cpp has written the layer scalar both with and without `.weight`.
        assert_eq!(
            TEXT.to_hf("blk.2.layer_output_scale").as_deref(),
            Some("layers.2.layer_scalar")
        );
        assert_eq!(TEXT.to_hf("rope_freqs.weight"), None);
        assert_eq!(TEXT.to_hf("blk.x.attn_q.weight"), None);
        assert_eq!(TEXT.to_gguf("layers.0.self_attn.q_proj.bias"), None);
    }

    #[test]
    fn assistant_names_translate_both_ways() {
        for (gguf, hf) in [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("nextn.pre_projection.weight", "pre_projection.weight"),
            ("nextn.post_projection.weight", "post_projection.weight"),
            (
                "masked_embd_centroids.weight",
                "masked_embedding.centroids.weight",
            ),
            ("masked_embd_ordering", "masked_embedding.token_ordering"),
            (
                "blk.3.attn_q_norm.weight",
                "model.layers.3.self_attn.q_norm.weight",
            ),
            (
                "blk.0.layer_output_scale.weight",
                "model.layers.0.layer_scalar",
            ),
        ] {
            assert_eq!(ASSISTANT.to_hf(gguf).as_deref(), Some(hf));
            assert_eq!(ASSISTANT.to_gguf(hf).as_deref(), Some(gguf));
        }
        assert_eq!(ASSISTANT.to_hf("rope_freqs.weight"), None);
    }

    #[test]
    fn tower_names_cover_clipped_linears_and_projectors() {
        assert_eq!(
            VISION.to_hf("v.blk.1.attn_out.input_max").as_deref(),
            Some("model.vision_tower.encoder.layers.1.self_attn.o_proj.input_max")
        );
        assert_eq!(
            VISION.to_hf("v.blk.1.ffn_up.weight").as_deref(),
            Some("model.vision_tower.encoder.layers.1.mlp.up_proj.linear.weight")
        );
        assert_eq!(
            VISION.to_hf("v.std_bias").as_deref(),
            Some("model.vision_tower.std_bias")
        );
        assert_eq!(
            AUDIO.to_hf("a.pre_encode.out.bias").as_deref(),
            Some("model.audio_tower.output_proj.bias")
        );
        assert_eq!(
            AUDIO.to_hf("mm.a.input_projection.weight").as_deref(),
            Some("model.embed_audio.embedding_projection.weight")
        );
        assert_eq!(
            AUDIO
                .to_gguf("model.audio_tower.layers.4.lconv1d.conv_norm.weight")
                .as_deref(),
            Some("a.blk.4.norm_conv.weight")
        );
        assert_eq!(AUDIO.to_hf("a.blk.0.attn_q.bias"), None);
    }

    #[test]
    fn mmproj_names_map_to_hugging_face_names() {
        assert_eq!(
            VISION.to_hf("v.blk.3.attn_out.output_max").as_deref(),
            Some("model.vision_tower.encoder.layers.3.self_attn.o_proj.output_max")
        );
        assert_eq!(
            VISION.to_hf("v.blk.0.ffn_down.weight").as_deref(),
            Some("model.vision_tower.encoder.layers.0.mlp.down_proj.linear.weight")
        );
        assert_eq!(
            VISION.to_hf("v.blk.1.ln2.weight").as_deref(),
            Some("model.vision_tower.encoder.layers.1.pre_feedforward_layernorm.weight")
        );
        assert_eq!(
            VISION.to_hf("mm.input_projection.weight").as_deref(),
            Some("model.embed_vision.embedding_projection.weight")
        );
        assert_eq!(VISION.to_hf("a.blk.0.attn_q.weight"), None);
        assert_eq!(VISION.to_hf("mm.a.input_projection.weight"), None);
    }
}

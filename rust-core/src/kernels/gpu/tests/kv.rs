//! KV cache kernel tests: the row encoder against the CPU codec (byte for byte) and against
//! the separate norm and RoPE kernels, attention over f32 and encoded rows against float64,
//! and attention that prepares its own queries against attention over prepared ones. GPU
//! tests run on any wgpu adapter (lavapipe in CI); set GEMMAKIT_SKIP_GPU_TESTS=1 to skip them.

use burn::tensor::{Tensor, TensorData, s};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{gpu, random_x};
use crate::device::to_host;
use crate::device::{BackendKind, ComputeDevice};
use crate::kernels::gpu::{AttentionCall, decode_attention};

#[test]
fn gpu_decode_attention_matches_f64_reference() {
    let Some(device) = gpu() else { return };
    check_decode_attention(&device);
}

#[test]
fn cpu_decode_attention_matches_f64_reference() {
    check_decode_attention(&ComputeDevice::open(BackendKind::Cpu).expect("cpu"));
}

/// kernels::attention on `device` (the CubeCL kernel or the host kernel).
fn check_decode_attention(device: &ComputeDevice) {
    let dev = &device.device;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    // (heads, kv_heads, head_dim, slots used, slots allocated, scale, first visible slot):
    // GQA, Gemma 4's head sizes, slot counts around the cube size and the CPU kernel's
    // 128-slot tasks, a cache view narrower than its buffer, and whole tasks that see nothing
    // (a sliding window far into a long cache).
    for (heads, kv_heads, d, slots, capacity, scale, first) in [
        (8, 1, 256, 37, 64, 1.0f32, 0),
        (8, 2, 512, 130, 130, 1.0, 0),
        (4, 4, 16, 1, 8, 0.25, 0),
        (6, 2, 96, 65, 100, 0.125, 0),
        (8, 1, 512, 1000, 1100, 1.0, 300),
    ] {
        let mut values = |n: usize, amp: f32| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(-amp..amp)).collect()
        };
        let q = values(heads * d, 0.3);
        let k_full = values(kv_heads * capacity * d, 0.3);
        let v_full = values(kv_heads * capacity * d, 1.0);
        let visible: Vec<f32> = (0..slots)
            .map(|s| {
                if s == first || (s > first && s % 5 != 3) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let view = |full: &[f32]| -> Vec<f32> {
            (0..kv_heads)
                .flat_map(|h| full[h * capacity * d..(h * capacity + slots) * d].to_vec())
                .collect()
        };
        let expected = crate::kernels::reference::attention(
            &q,
            &view(&k_full),
            &view(&v_full),
            &visible,
            heads,
            kv_heads,
            slots,
            d,
            f64::from(scale),
        );
        let t3 = |v: Vec<f32>| {
            Tensor::<3>::from_data(TensorData::new(v, [kv_heads, capacity, d]), dev).slice(s![
                ..,
                0..slots,
                ..
            ])
        };
        let out = decode_attention(
            Tensor::<2>::from_data(TensorData::new(q, [heads, d]), dev),
            t3(k_full),
            t3(v_full),
            Tensor::<1>::from_data(TensorData::new(visible, [slots]), dev),
            AttentionCall {
                groups: heads / kv_heads,
                scale,
            },
        );
        let got = to_host(out).expect("read back");
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(g, e)| (f64::from(*g) - e).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "{:?} attention heads {heads}/{kv_heads} d {d} slots {slots}: max error {worst:.1e}",
            device.kind
        );
        assert!(
            worst < 1e-5,
            "attention heads {heads} d {d} slots {slots}: {worst}"
        );
    }
}

/// The GPU's encoded rows as bytes (each row padded to whole words).
fn words_as_bytes(words: burn::tensor::Tensor<3, burn::tensor::Int>) -> Vec<u8> {
    let data = words.into_data();
    data.convert::<i32>()
        .try_into_vec::<i32>()
        .expect("i32 words")
        .into_iter()
        .flat_map(i32::to_le_bytes)
        .collect()
}

#[test]
fn gpu_kv_encoding_is_the_cpu_codecs_bytes() {
    use crate::kernels::kv::KvType;
    use crate::kernels::reference::{encoded_rows, gaussians};
    let Some(device) = gpu() else { return };
    let dev = &device.device;
    // f16's edges: subnormals, ties to even (1 + 2⁻¹¹, 1 + 3·2⁻¹¹), the largest finite,
    // overflow, signed zero, underflow to zero and to the smallest subnormal.
    let edges = [
        1.0e-6f32,
        -6.0e-8,
        2.9802322e-8,
        8.940697e-8,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
        65504.0,
        65519.0,
        65520.0,
        1.0e5,
        -0.0,
        1.0e-9,
        6.1035156e-5,
        6.097555e-5,
    ];
    for (ty, d) in KvType::ALL
        .into_iter()
        .map(|t| (t, 64))
        .chain([(KvType::F16, 18), (KvType::F32, 18), (KvType::Q8_0, 96)])
        .chain([
            (KvType::Tq(3), 256),
            (KvType::Tq(4), 512),
            (KvType::Q8_0, 512),
        ])
        .chain([(KvType::Q8_0, 16), (KvType::Q8_0, 48), (KvType::Tq(3), 16)])
    {
        let (kv_heads, tokens) = (3, 7);
        let mut x: Vec<f32> = gaussians(kv_heads * tokens * d, 4)
            .into_iter()
            .enumerate()
            .map(|(i, v)| (v * 10f64.powi(i as i32 % 9 - 4)) as f32)
            .collect();
        x[..edges.len()].copy_from_slice(&edges);
        // q8_0 halves round away from zero (Rust's `round`), not to even: a block of scale 1
        // (amax 127) holding halves and quarters.
        x[d..d + 6].copy_from_slice(&[127.0, 2.5, -3.5, 0.5, -0.5, 126.5]);
        for (i, v) in x[d + 6..d + 32].iter_mut().enumerate() {
            *v = (i as f32 - 13.0) * 0.25;
        }
        let cpu = encoded_rows(ty, kv_heads, d, 9, &x);
        let t = Tensor::<3>::from_data(TensorData::new(x, [kv_heads, tokens, d]), dev);
        let words = crate::kernels::gpu::kv::encode(&cpu.codec, t, &Default::default());
        let wpr = crate::kernels::gpu::kv::KvLayout::of(ty).words_per_row(d);
        assert_eq!(words.dims(), [kv_heads, tokens, wpr], "{ty} d {d}");
        let got = words_as_bytes(words);
        let rb = ty.row_bytes(d);
        for h in 0..kv_heads {
            for s in 0..tokens {
                let at = (h * tokens + s) * wpr * 4;
                assert_eq!(
                    &got[at..at + rb],
                    cpu.row(h, s),
                    "{ty} d {d}: head {h} token {s}"
                );
                assert!(
                    got[at + rb..at + wpr * 4].iter().all(|&b| b == 0),
                    "{ty}: padding"
                );
            }
        }
    }
}

/// Keys normed and roped and values normed by the encode kernel itself give the bytes of
/// the separate norm (+ RoPE) kernels' output encoded (those kernels are tested against
/// float64 above, the encoding against the CPU codec), for every type, whole steps and a
/// step's later tokens written alone (a ring that wraps inside a step).
#[test]
fn gpu_kv_rows_prepared_by_the_encode_kernel_equal_the_separate_kernels() {
    use crate::kernels::gpu::kv::{RowPrep, encode, encode_into};
    use crate::kernels::kv::KvType;
    let Some(device) = gpu() else { return };
    let dev = &device.device;
    for (ty, d) in KvType::ALL.into_iter().map(|t| (t, 64)).chain([
        (KvType::Tq(4), 256),
        (KvType::Q8_0, 512),
        (KvType::F16, 512),
    ]) {
        let (tokens, kv_heads, eps) = (3, 2, 1e-6f32);
        let x = random_x(tokens * kv_heads, d, 41);
        let w = random_x(1, d, 42);
        let codec = crate::kernels::kv::KvCodec::new(ty, kv_heads, d, 9).expect("codec");
        let positions = [5usize, 6, 7];
        let (cos, sin): (Vec<f32>, Vec<f32>) = positions
            .iter()
            .flat_map(|&p| {
                (0..d / 2).map(move |j| {
                    let angle = p as f32 * 10000f32.powf(-(2.0 * j as f32) / d as f32);
                    (angle.cos(), angle.sin())
                })
            })
            .unzip();
        let cos = crate::device::from_host(cos, [tokens, 1, d / 2], dev);
        let sin = crate::device::from_host(sin, [tokens, 1, d / 2], dev);
        let weight = crate::device::from_host(w, [1, 1, d], dev);
        // `[tokens, kv_heads, d]` as the layer makes them; the cache takes `[kv_heads, tokens, d]`.
        let raw = crate::device::from_host(x, [tokens, kv_heads, d], dev);
        let key = RowPrep {
            norm: Some(eps),
            weight: Some(weight.clone()),
            rope: Some((cos.clone(), sin.clone())),
        };
        let value = RowPrep {
            norm: Some(eps),
            ..RowPrep::default()
        };
        let keys = crate::kernels::gpu::ops::rms_norm_rope(raw.clone(), &weight, &cos, &sin, eps);
        let values = crate::kernels::gpu::ops::rms_norm(raw.clone(), None, None, eps, 1.0);
        let none = RowPrep::default();
        for (label, prep, separate) in [("key", &key, keys), ("value", &value, values)] {
            let fused = encode(&codec, raw.clone().swap_dims(0, 1), prep);
            let want = encode(&codec, separate.clone().swap_dims(0, 1), &none);
            assert_eq!(
                words_as_bytes(fused),
                words_as_bytes(want.clone()),
                "{ty} d {d}: {label}s, whole step"
            );
            // Tokens 1..3 alone into slots 4..6 of a plane of 8.
            let wpr = crate::kernels::gpu::kv::KvLayout::of(ty).words_per_row(d);
            let plane = || Tensor::<3, burn::tensor::Int>::zeros([kv_heads, 8, wpr], dev);
            let late = raw.clone().swap_dims(0, 1).narrow(1, 1, 2);
            let fused = encode_into(&codec, plane(), late, &prep.tokens(1..3), 4);
            let want = encode_into(
                &codec,
                plane(),
                separate.swap_dims(0, 1).narrow(1, 1, 2),
                &none,
                4,
            );
            assert_eq!(
                words_as_bytes(fused),
                words_as_bytes(want),
                "{ty} d {d}: {label}s, later tokens alone"
            );
        }
    }
}

/// Raw queries normed and roped by the attention kernel give the result of queries prepared
/// by the separate kernel (tested against float64), bit for bit, with the queries split into
/// blocks (each block's RoPE rows) and grouped heads.
#[test]
fn gpu_attention_preparing_its_queries_equals_attention_over_prepared_queries() {
    use crate::kernels::gpu::kv::{DeviceRows, Queries, RowPrep, attend_in_blocks, encode};
    use crate::kernels::kv::{KvCodec, KvType};
    let Some(device) = gpu() else { return };
    let dev = &device.device;
    let (heads, kv_heads, d, slots, tokens, eps) = (4, 2, 64, 20, 5, 1e-6f32);
    for ty in [KvType::F16, KvType::Q8_0, KvType::F32] {
        let codec = std::sync::Arc::new(KvCodec::new(ty, kv_heads, d, 9).expect("codec"));
        let rows = |seed| DeviceRows {
            codec: codec.clone(),
            words: encode(
                &codec,
                crate::device::from_host(
                    random_x(kv_heads * slots, d, seed),
                    [kv_heads, slots, d],
                    dev,
                ),
                &RowPrep::default(),
            ),
        };
        let (k, v) = (rows(51), rows(52));
        let raw =
            crate::device::from_host(random_x(tokens * heads, d, 53), [tokens, heads, d], dev);
        let weight = crate::device::from_host(random_x(1, d, 54), [1, 1, d], dev);
        let angles: Vec<f32> = (0..tokens * d / 2).map(|i| i as f32 * 0.37).collect();
        let cos = crate::device::from_host(
            angles.iter().map(|a| a.cos()).collect::<Vec<_>>(),
            [tokens, 1, d / 2],
            dev,
        );
        let sin = crate::device::from_host(
            angles.iter().map(|a| a.sin()).collect::<Vec<_>>(),
            [tokens, 1, d / 2],
            dev,
        );
        let key_pos: Vec<Option<usize>> = (0..slots).map(Some).collect();
        let q_pos: Vec<usize> = (15..15 + tokens).collect();
        let prep = RowPrep {
            norm: Some(eps),
            weight: Some(weight.clone()),
            rope: Some((cos.clone(), sin.clone())),
        };
        let queries = |prep| Queries {
            key_pos: &key_pos,
            q_pos: &q_pos,
            window: Some(9),
            scale: 0.125,
            prep,
        };
        // Two query tokens a block.
        let budget = 4 * heads * slots * 2;
        let fused = attend_in_blocks(raw.clone(), (&k, &v), queries(Some(&prep)), budget);
        let prepared =
            crate::kernels::gpu::ops::rms_norm_rope(raw.clone(), &weight, &cos, &sin, eps);
        let want = attend_in_blocks(prepared, (&k, &v), queries(None), budget);
        assert_eq!(
            to_host(fused).unwrap(),
            to_host(want).unwrap(),
            "{ty}: queries prepared in the attention kernel"
        );
    }
}

#[test]
fn gpu_encoded_attention_matches_f64_attention_over_decoded_rows() {
    use crate::kernels::gpu::kv::{DeviceRows, Queries, attend_in_blocks, encode};
    use crate::kernels::kv::KvType;
    use crate::kernels::reference::{attention, decoded, encoded_rows, gaussians};
    let Some(device) = gpu() else { return };
    let dev = &device.device;
    let types: Vec<(KvType, KvType)> = KvType::ALL
        .into_iter()
        .map(|t| (t, t))
        .chain([
            (KvType::Tq(4), KvType::Tq(3)),
            (KvType::F16, KvType::Tq(2)),
            (KvType::F32, KvType::F16),
            (KvType::Q8_0, KvType::F16),
        ])
        .collect();
    // (heads, kv_heads, d, slots used, slots allocated, query tokens, sliding window,
    // scores budget): decode and several query tokens, GQA, a view narrower than its buffer,
    // slot counts around the cube size, and budgets that split the queries into blocks.
    let cases = [
        (8, 2, 64, 300, 300, 1, None, 64 << 20),
        (4, 1, 256, 130, 150, 5, Some(37), 4 * 4 * 130 * 2),
        (6, 2, 128, 65, 70, 3, None, 1),
        (2, 2, 32, 1, 8, 1, None, 64 << 20),
    ];
    let as_f32 = |x: Vec<f64>, amp: f64| x.into_iter().map(|v| (v * amp) as f32).collect();
    for (heads, kv_heads, d, slots, capacity, tokens, window, budget) in cases {
        let scale = 1.0 / (d as f32).sqrt();
        let keys: Vec<f32> = as_f32(gaussians(kv_heads * capacity * d, 2), 1.0);
        let values: Vec<f32> = as_f32(gaussians(kv_heads * capacity * d, 3), 1.0);
        let q: Vec<f32> = as_f32(gaussians(tokens * heads * d, 1), 1.0);
        // Slot s holds position (s·7) mod slots (a wrapped ring's order); every ninth empty.
        let key_pos: Vec<Option<usize>> = (0..slots)
            .map(|s| (s % 9 != 4 || slots == 1).then_some(s * 7 % slots))
            .collect();
        let q_pos: Vec<usize> = (0..tokens).map(|t| slots - tokens + t).collect();
        for &(kt, vt) in &types {
            if d % 32 != 0 && matches!(kt, KvType::Tq(_)) {
                continue;
            }
            let (k_rows, v_rows) = (
                encoded_rows(kt, kv_heads, d, 5, &keys),
                encoded_rows(vt, kv_heads, d, 6, &values),
            );
            let upload = |rows: &crate::kernels::kv::EncodedRows, x: &[f32]| DeviceRows {
                codec: rows.codec.clone(),
                words: encode(
                    &rows.codec,
                    Tensor::<3>::from_data(
                        TensorData::new(x.to_vec(), [kv_heads, capacity, d]),
                        dev,
                    ),
                    &Default::default(),
                )
                .slice(s![.., 0..slots, ..]),
            };
            let (k_dev, v_dev) = (upload(&k_rows, &keys), upload(&v_rows, &values));
            let queries = Queries {
                key_pos: &key_pos,
                q_pos: &q_pos,
                window,
                scale,
                prep: None,
            };
            let out = attend_in_blocks(
                Tensor::<3>::from_data(TensorData::new(q.clone(), [tokens, heads, d]), dev),
                (&k_dev, &v_dev),
                queries,
                budget,
            );
            let got = to_host(out).expect("read back");
            let view = |full: Vec<f32>| -> Vec<f32> {
                (0..kv_heads)
                    .flat_map(|h| full[h * capacity * d..(h * capacity + slots) * d].to_vec())
                    .collect()
            };
            let (k_dec, v_dec) = (view(decoded(&k_rows)), view(decoded(&v_rows)));
            let mut worst = 0.0f64;
            for (t, &at) in q_pos.iter().enumerate() {
                let visible: Vec<f32> = key_pos
                    .iter()
                    .map(|p| match p {
                        Some(p) if *p <= at && window.is_none_or(|w| p + w > at) => 1.0,
                        _ => 0.0,
                    })
                    .collect();
                let span = t * heads * d..(t + 1) * heads * d;
                let want = attention(
                    &q[span.clone()],
                    &k_dec,
                    &v_dec,
                    &visible,
                    heads,
                    kv_heads,
                    slots,
                    d,
                    f64::from(scale),
                );
                for (g, w) in got[span].iter().zip(&want) {
                    worst = worst.max((f64::from(*g) - w).abs());
                }
            }
            eprintln!(
                "{kt}/{vt} heads {heads}/{kv_heads} d {d} slots {slots} tokens {tokens}: \
                 max error {worst:.1e}"
            );
            assert!(worst <= 1e-5, "{kt}/{vt} d {d} slots {slots}: {worst}");
        }
    }
}

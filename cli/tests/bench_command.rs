//! `gemmakit bench` on the command line: one JSON object per configuration, and a typed
//! refusal of what is not implemented. (The measurements themselves: rust-core/tests/bench.rs.)

#[path = "../../rust-core/tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::{positive, tiny_gguf};

#[test]
fn bench_command_line_prints_one_json_object_per_configuration() {
    let out = Command::new(env!("CARGO_BIN_EXE_gemmakit"))
        .args(["bench", "-m"])
        .arg(tiny_gguf())
        .args([
            "-p",
            "5",
            "-n",
            "2,4",
            "-r",
            "2",
            "-t",
            "1",
            "--backend",
            "cpu",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (v, n_gen) in lines.iter().zip([2, 4]) {
        for key in ["prefill_tok_s", "decode_tok_s", "ttft_ms", "load_ms"] {
            positive(v, key);
        }
        assert!(v.get("peak_rss_bytes").is_some());
        assert_eq!(v["n_prompt"], 5);
        assert_eq!(v["n_gen"], n_gen);
        assert_eq!(v["decode_tokens_run"], n_gen * 2);
    }

    let out = Command::new(env!("CARGO_BIN_EXE_gemmakit"))
        .args(["bench", "-m"])
        .arg(tiny_gguf())
        .args(["-p", "5", "-n", "2", "--kv-type", "q4", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown KV type `q4`"));
}

//! Arbitrary bytes into the GGUF parser. When a file parses, everything the parser promised is
//! exercised: every tensor's byte range is read from the input, its first row is decoded, the
//! typed getters are called on every key, and the file is re-written and re-parsed (writing what
//! was parsed must reproduce itself).

use gemmakit::weights::gguf::{GgufFile, GgufWriter};
use gemmakit::weights::quant;

use super::Outcome;

pub fn run(data: &[u8]) -> Outcome {
    let file = match GgufFile::parse(data) {
        Ok(file) => file,
        Err(e) => return Outcome::Rejected(e.to_string()),
    };

    for t in file.tensors() {
        let bytes = t
            .data(data)
            .expect("a parsed tensor range lies inside the parsed bytes");
        assert_eq!(bytes.len(), t.byte_len());
        assert_eq!(t.byte_range().start % file.alignment() as usize, 0);
        if t.n_elements() == 0 || !quant::is_supported(t.ggml_type()) {
            continue;
        }
        // Bounded by the input: a non-empty tensor's rows lie inside it.
        let row_len = usize::try_from(t.row_len()).expect("row length fits in memory");
        let row_bytes = t.row_bytes();
        assert!(row_bytes <= bytes.len());
        let mut row = vec![0f32; row_len];
        quant::dequantize_row(t.ggml_type(), &bytes[..row_bytes], &mut row)
            .expect("a whole row decodes");
    }

    for key in file.metadata().keys() {
        let _ = (
            file.get_u32(key),
            file.get_f32(key),
            file.get_bool(key),
            file.get_uint(key),
        );
        let _ = (
            file.get_str(key),
            file.get_array(key),
            file.get_str_array(key),
        );
        let _ = file.get_f32_array(key);
    }

    let rewritten = rewrite(&file, data);
    let reparsed = GgufFile::parse(&rewritten).expect("the writer's output parses");
    assert_eq!(
        rewrite(&reparsed, &rewritten),
        rewritten,
        "write(parse(write(x))) == write(x)"
    );
    Outcome::Accepted
}

fn rewrite(file: &GgufFile, data: &[u8]) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata() {
        w.add_metadata(k.clone(), v.clone())
            .expect("parsed metadata is writable");
    }
    for t in file.tensors() {
        w.add_tensor(t.name(), t.shape(), t.ggml_type(), t.data(data).unwrap())
            .expect("parsed tensor is writable");
    }
    w.to_bytes()
}

//! GGUF v3 (and v2) reader and writer.
//!
//! The reader takes the whole file as one byte slice (the caller memory-maps it) and copies only
//! the metadata out. Tensors stay where they are: each [`TensorInfo`] carries the absolute byte
//! range of its data in that slice, so the caller can keep views as `(offset, len)` pairs.
//!
//! A GGUF header is untrusted input, so the reader is hardened:
//! * every count, length and offset is checked against the bytes that remain before it is used;
//! * nothing is allocated from a header number that the remaining bytes could not back (a 40-byte
//!   file cannot make us reserve room for 2^64 tensors or a 2^64-byte string);
//! * all arithmetic on numbers from the file is checked;
//! * tensor data must be aligned, inside the file, whole blocks per row, and non-overlapping.
//!
//! Where ggml's own loader (`ggml/src/gguf.cpp`) is stricter than the spec we follow it:
//! duplicate keys, empty keys and duplicate tensor names are errors, `general.alignment` must be a
//! u32 power of two, and a row (`ne0`) must be a whole number of blocks. ggml additionally requires
//! tensors to be packed back to back in declaration order; we only require that they do not
//! overlap, which gives the same guarantee that matters (all tensor bytes together fit in the file,
//! so a small file cannot claim many aliased huge tensors) without rejecting re-ordered files.
//!
//! File layout (little-endian throughout):
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count     × ( key: string | value_type u32 | value )
//! tensor_count × ( name: string | n_dims u32 | ne[n_dims] u64 | ggml_type u32 | offset u64 )
//! zero padding up to a multiple of `general.alignment` (default 32)
//! tensor data; each tensor's `offset` is relative to here and a multiple of the alignment
//! ```
//! A string is a u64 byte length followed by UTF-8 bytes (no terminator). An array value is an
//! element type u32, a u64 count and the elements; elements may themselves be arrays.
//! `ne[0]` is the fastest-varying dimension, the reverse of PyTorch/row-major order.
//!
//! The parser is in `read.rs`, the writer in `write.rs`; this file holds the types they share.

use std::fmt;
use std::ops::Range;

mod read;
mod write;

pub use read::GgufFile;
pub use write::{GgufWriter, TensorHeader};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The version the writer emits. The reader accepts 2 and 3, which share one layout (v3 only
/// added the possibility of big-endian files, which we reject; v1 used 32-bit counts).
pub const GGUF_VERSION: u32 = 3;
pub const GGUF_DEFAULT_ALIGNMENT: u32 = 32;
pub const GGUF_MAX_DIMS: usize = 4;
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Nested arrays are legal GGUF, but no known writer emits them and ggml's loader rejects them.
/// We read them, up to this depth, so that hostile input cannot drive unbounded recursion.
pub const MAX_ARRAY_NESTING: usize = 8;

/// Everything that can go wrong reading or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file: magic bytes are {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {version}: only versions 2 and 3 are read{hint}")]
    UnsupportedVersion { version: u32, hint: &'static str },
    #[error(
        "truncated GGUF: {what} needs {needed} bytes at offset {offset}, but only {available} remain"
    )]
    Truncated {
        what: String,
        offset: usize,
        needed: u64,
        available: usize,
    },
    #[error("GGUF claims {count} {what}, but the {available} bytes left can hold at most {max}")]
    CountTooLarge {
        what: String,
        count: u64,
        max: u64,
        available: usize,
    },
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: String },
    #[error("metadata key #{index} is empty")]
    EmptyKey { index: u64 },
    #[error("duplicate metadata key '{0}'")]
    DuplicateKey(String),
    #[error("metadata key '{key}' has unknown value type id {type_id}")]
    UnknownValueType { key: String, type_id: u32 },
    #[error("metadata key '{key}' nests arrays deeper than {max} levels")]
    ArrayTooDeep { key: String, max: usize },
    #[error("'general.alignment' must be a u32, but it is {found}")]
    AlignmentType { found: String },
    #[error("'general.alignment' is {0}; it must be a non-zero power of two")]
    BadAlignment(u64),
    #[error("duplicate tensor name '{0}'")]
    DuplicateTensor(String),
    #[error("tensor '{tensor}' has {n_dims} dimensions; GGUF allows at most 4")]
    TooManyDims { tensor: String, n_dims: u32 },
    #[error("tensor '{tensor}': dimension {dim} is {value}, larger than i64::MAX")]
    DimTooLarge {
        tensor: String,
        dim: usize,
        value: u64,
    },
    #[error("tensor '{tensor}' has unknown ggml type id {type_id}")]
    UnknownGgmlType { tensor: String, type_id: u32 },
    #[error(
        "tensor '{tensor}': row length {row_len} is not a multiple of the {ty} block size {block_size}"
    )]
    NotBlockMultiple {
        tensor: String,
        ty: GgmlType,
        row_len: u64,
        block_size: usize,
    },
    #[error("arithmetic overflow computing {what}")]
    Overflow { what: String },
    #[error(
        "tensor '{tensor}': data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    Misaligned {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor '{tensor}': data bytes {start}..{end} lie outside the {file_len}-byte file")]
    OutOfBounds {
        tensor: String,
        start: u64,
        end: u64,
        file_len: usize,
    },
    #[error("tensors '{first}' and '{second}' overlap in the data section")]
    Overlap { first: String, second: String },
    #[error("metadata key '{0}' is missing")]
    MissingKey(String),
    #[error("metadata key '{key}' is {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("no tensor named '{0}'")]
    MissingTensor(String),
    #[error(
        "tensor '{tensor}': bytes {start}..{end} are outside the {len}-byte buffer given (not the parsed file?)"
    )]
    BufferMismatch {
        tensor: String,
        start: usize,
        end: usize,
        len: usize,
    },
    #[error("GGUF writer: {0}")]
    Writer(String),
}

type Result<T> = std::result::Result<T, GgufError>;

// ------------------------------------------------------------------------------------------------
// ggml tensor types
// ------------------------------------------------------------------------------------------------

/// Declares [`GgmlType`] from one table so ids, names and block geometry cannot drift apart.
macro_rules! ggml_types {
    ($($variant:ident = $id:literal, block $block:literal, bytes $bytes:literal;)*) => {
        /// A ggml tensor element encoding. Ids, block sizes (elements per block) and block byte
        /// sizes are those of `ggml.h` / `ggml.c`'s type traits (gguf-py's `GGML_QUANT_SIZES`
        /// agrees; the reference fixture test checks the table against it). Ids 4, 5 and 31..=38
        /// belong to removed types and are rejected as unknown, as ggml does.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum GgmlType {
            $($variant,)*
        }

        impl GgmlType {
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant,)*];

            /// The type for a ggml type id, or `None` for ids this build does not know.
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $($id => Some(GgmlType::$variant),)*
                    _ => None,
                }
            }

            /// The id stored in GGUF tensor infos.
            pub fn id(self) -> u32 {
                match self {
                    $(GgmlType::$variant => $id,)*
                }
            }

            /// The name as ggml and gguf-py spell it in upper case (`"Q4_K"`, `"BF16"`).
            pub fn name(self) -> &'static str {
                match self {
                    $(GgmlType::$variant => stringify!($variant),)*
                }
            }

            /// Elements per block (1 for plain types, 32 for Q4_0.., 256 for k-quants).
            pub fn block_size(self) -> usize {
                match self {
                    $(GgmlType::$variant => $block,)*
                }
            }

            /// Bytes per block.
            pub fn block_bytes(self) -> usize {
                match self {
                    $(GgmlType::$variant => $bytes,)*
                }
            }
        }
    };
}

ggml_types! {
    F32     = 0,  block 1,   bytes 4;
    F16     = 1,  block 1,   bytes 2;
    Q4_0    = 2,  block 32,  bytes 18;  // f16 d, 16 B of nibbles
    Q4_1    = 3,  block 32,  bytes 20;  // f16 d, f16 m, 16 B of nibbles
    Q5_0    = 6,  block 32,  bytes 22;  // f16 d, u32 high bits, 16 B of nibbles
    Q5_1    = 7,  block 32,  bytes 24;  // f16 d, f16 m, u32 high bits, 16 B of nibbles
    Q8_0    = 8,  block 32,  bytes 34;  // f16 d, 32 × i8
    Q8_1    = 9,  block 32,  bytes 36;  // f16 d, f16 s, 32 × i8
    Q2_K    = 10, block 256, bytes 84;
    Q3_K    = 11, block 256, bytes 110;
    Q4_K    = 12, block 256, bytes 144;
    Q5_K    = 13, block 256, bytes 176;
    Q6_K    = 14, block 256, bytes 210;
    Q8_K    = 15, block 256, bytes 292; // f32 d (not f16), 256 × i8, 16 × i16 sums
    IQ2_XXS = 16, block 256, bytes 66;
    IQ2_XS  = 17, block 256, bytes 74;
    IQ3_XXS = 18, block 256, bytes 98;
    IQ1_S   = 19, block 256, bytes 50;
    IQ4_NL  = 20, block 32,  bytes 18;
    IQ3_S   = 21, block 256, bytes 110;
    IQ2_S   = 22, block 256, bytes 82;
    IQ4_XS  = 23, block 256, bytes 136;
    I8      = 24, block 1,   bytes 1;
    I16     = 25, block 1,   bytes 2;
    I32     = 26, block 1,   bytes 4;
    I64     = 27, block 1,   bytes 8;
    F64     = 28, block 1,   bytes 8;
    IQ1_M   = 29, block 256, bytes 56;
    BF16    = 30, block 1,   bytes 2;
    TQ1_0   = 34, block 256, bytes 54;
    TQ2_0   = 35, block 256, bytes 66;
    MXFP4   = 39, block 32,  bytes 17;
    NVFP4   = 40, block 64,  bytes 36;
    Q1_0    = 41, block 128, bytes 18;
}

impl GgmlType {
    /// Bytes taken by `n_elements` elements, or `None` if that is not a whole number of blocks
    /// or overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n_elements.is_multiple_of(block) {
            return None;
        }
        (n_elements / block).checked_mul(self.block_bytes() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ------------------------------------------------------------------------------------------------
// Metadata values
// ------------------------------------------------------------------------------------------------

/// GGUF metadata value type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgufValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl GgufValueType {
    pub fn from_id(id: u32) -> Option<GgufValueType> {
        use GgufValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        use GgufValueType::*;
        match self {
            U8 => 0,
            I8 => 1,
            U16 => 2,
            I16 => 3,
            U32 => 4,
            I32 => 5,
            F32 => 6,
            Bool => 7,
            String => 8,
            Array => 9,
            U64 => 10,
            I64 => 11,
            F64 => 12,
        }
    }

    /// Short name as ggml prints it (`"u32"`, `"str"`, `"arr"`).
    pub fn name(self) -> &'static str {
        use GgufValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "str",
            Array => "arr",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type can occupy in a file; bounds array counts.
    fn min_encoded_len(self) -> u64 {
        use GgufValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            String => 8,    // the length prefix of an empty string
            Array => 4 + 8, // element type + count of an empty array
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array. Arrays are stored typed (not as `Vec<MetaValue>`) so a large array, such as
/// a tokenizer's scores, costs its element size in memory rather than the size of the enum.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    /// Each inner array carries its own element type, as in the file.
    Array(Vec<MetaArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetaValue {
    pub fn value_type(&self) -> GgufValueType {
        match self {
            MetaValue::U8(_) => GgufValueType::U8,
            MetaValue::I8(_) => GgufValueType::I8,
            MetaValue::U16(_) => GgufValueType::U16,
            MetaValue::I16(_) => GgufValueType::I16,
            MetaValue::U32(_) => GgufValueType::U32,
            MetaValue::I32(_) => GgufValueType::I32,
            MetaValue::F32(_) => GgufValueType::F32,
            MetaValue::Bool(_) => GgufValueType::Bool,
            MetaValue::String(_) => GgufValueType::String,
            MetaValue::Array(_) => GgufValueType::Array,
            MetaValue::U64(_) => GgufValueType::U64,
            MetaValue::I64(_) => GgufValueType::I64,
            MetaValue::F64(_) => GgufValueType::F64,
        }
    }

    /// Human-readable type for error messages, e.g. `"u32"` or `"arr[str]"`.
    pub fn type_description(&self) -> String {
        match self {
            MetaValue::Array(a) => format!("arr[{}]", a.elem_type().name()),
            other => other.value_type().name().to_string(),
        }
    }
}

impl MetaArray {
    pub fn elem_type(&self) -> GgufValueType {
        match self {
            MetaArray::U8(_) => GgufValueType::U8,
            MetaArray::I8(_) => GgufValueType::I8,
            MetaArray::U16(_) => GgufValueType::U16,
            MetaArray::I16(_) => GgufValueType::I16,
            MetaArray::U32(_) => GgufValueType::U32,
            MetaArray::I32(_) => GgufValueType::I32,
            MetaArray::F32(_) => GgufValueType::F32,
            MetaArray::Bool(_) => GgufValueType::Bool,
            MetaArray::String(_) => GgufValueType::String,
            MetaArray::Array(_) => GgufValueType::Array,
            MetaArray::U64(_) => GgufValueType::U64,
            MetaArray::I64(_) => GgufValueType::I64,
            MetaArray::F64(_) => GgufValueType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::Array(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ------------------------------------------------------------------------------------------------
// Tensor infos
// ------------------------------------------------------------------------------------------------

/// One tensor's description, validated against the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    name: String,
    shape: Vec<u64>,
    ty: GgmlType,
    relative_offset: u64,
    range: Range<usize>,
}

impl TensorInfo {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimensions in GGUF order: `shape()[0]` (ne0) is the fastest-varying one, i.e. the length
    /// of a row. Empty for a 0-dimensional (single-element) tensor.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Dimensions in PyTorch / row-major order (the reverse of [`shape`](Self::shape)): a GGUF
    /// matrix with ne0 = in_features, ne1 = out_features is `[out_features, in_features]`.
    pub fn shape_row_major(&self) -> Vec<u64> {
        self.shape.iter().rev().copied().collect()
    }

    pub fn ggml_type(&self) -> GgmlType {
        self.ty
    }

    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Elements per row (ne0); 1 for a 0-dimensional tensor. Always a whole number of blocks.
    /// For a non-empty tensor it is bounded by the file (the data is there). An empty tensor
    /// (some other dimension 0) has no data, and ggml puts no bound on its row length beyond
    /// i64::MAX: check [`n_elements`](Self::n_elements) before sizing a row buffer from this.
    pub fn row_len(&self) -> u64 {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of ne1..); 0 for an empty tensor.
    pub fn n_rows(&self) -> u64 {
        match self.row_len() {
            0 => 0,
            row => self.n_elements() / row,
        }
    }

    /// Bytes of one row. For a non-empty tensor a row lies inside the file, so this is exact;
    /// only the phantom row of an empty tensor can saturate to usize::MAX.
    pub fn row_bytes(&self) -> usize {
        // row_len is whole blocks (checked at parse time), so bytes_for only fails on overflow.
        self.ty
            .bytes_for(self.row_len())
            .and_then(|b| usize::try_from(b).ok())
            .unwrap_or(usize::MAX)
    }

    /// The tensor's `offset` field as stored: relative to the start of the data section.
    pub fn relative_offset(&self) -> u64 {
        self.relative_offset
    }

    /// Absolute byte range of the tensor's data in the parsed file.
    pub fn byte_range(&self) -> Range<usize> {
        self.range.clone()
    }

    pub fn byte_len(&self) -> usize {
        self.range.len()
    }

    /// The tensor's bytes in `file`, which should be the slice that was parsed. Fails (rather
    /// than panicking) if `file` is shorter than the parsed one.
    pub fn data<'a>(&self, file: &'a [u8]) -> Result<&'a [u8]> {
        file.get(self.range.clone())
            .ok_or_else(|| GgufError::BufferMismatch {
                tensor: self.name.clone(),
                start: self.range.start,
                end: self.range.end,
                len: file.len(),
            })
    }
}

// ------------------------------------------------------------------------------------------------
// Shape rules
// ------------------------------------------------------------------------------------------------

/// Shape rules shared by the reader and the writer, so that whatever the writer accepts parses.
/// They are ggml's: every dimension and the element count fit in an i64 (ggml stores them as
/// int64_t), a row (ne0) is a whole number of blocks, and the byte size is representable.
/// Returns the tensor's size in bytes. (The caller checks n_dims.)
fn check_shape(tensor: &str, shape: &[u64], ty: GgmlType) -> Result<u64> {
    const MAX: u64 = i64::MAX as u64;
    if let Some((dim, &value)) = shape.iter().enumerate().find(|&(_, &d)| d > MAX) {
        return Err(GgufError::DimTooLarge {
            tensor: tensor.to_string(),
            dim,
            value,
        });
    }
    let n_elements = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX)
        .ok_or_else(|| GgufError::Overflow {
            what: format!("the element count of tensor '{tensor}'"),
        })?;
    let row_len = shape.first().copied().unwrap_or(1);
    if !row_len.is_multiple_of(ty.block_size() as u64) {
        return Err(GgufError::NotBlockMultiple {
            tensor: tensor.to_string(),
            ty,
            row_len,
            block_size: ty.block_size(),
        });
    }
    ty.bytes_for(n_elements).ok_or_else(|| GgufError::Overflow {
        what: format!("the byte size of tensor '{tensor}'"),
    })
}

#[cfg(test)]
mod tests;

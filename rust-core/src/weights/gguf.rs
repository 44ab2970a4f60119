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

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

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

// The smallest possible encodings, used to bound counts by the bytes left before allocating.
/// key length + value type + the smallest (1-byte) value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// name length + n_dims + ggml type + offset (an empty name and zero dimensions).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

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
// Parsed file
// ------------------------------------------------------------------------------------------------

/// A parsed GGUF file: owned metadata and tensor descriptions. Tensor bytes are not copied.
#[derive(Debug, Clone)]
pub struct GgufFile {
    version: u32,
    alignment: u32,
    data_offset: usize,
    file_len: usize,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    by_name: BTreeMap<String, usize>,
}

/// Generates a strict scalar getter: the value must have exactly this GGUF type.
macro_rules! scalar_getter {
    ($(#[$doc:meta])* $fn:ident, $variant:ident, $ty:ty, $name:literal) => {
        $(#[$doc])*
        pub fn $fn(&self, key: &str) -> Result<$ty> {
            match self.require(key)? {
                MetaValue::$variant(v) => Ok(*v),
                other => Err(wrong_type(key, $name, other)),
            }
        }
    };
}

/// Generates a typed array getter.
macro_rules! array_getter {
    ($fn:ident, $variant:ident, $ty:ty, $name:literal) => {
        pub fn $fn(&self, key: &str) -> Result<&[$ty]> {
            match self.require(key)? {
                MetaValue::Array(MetaArray::$variant(v)) => Ok(v),
                other => Err(wrong_type(key, $name, other)),
            }
        }
    };
}

fn wrong_type(key: &str, expected: &'static str, found: &MetaValue) -> GgufError {
    GgufError::WrongType {
        key: key.to_string(),
        expected,
        found: found.type_description(),
    }
}

impl GgufFile {
    /// Parses and validates a whole GGUF file held in memory.
    pub fn parse(bytes: &[u8]) -> Result<GgufFile> {
        let mut r = Reader { bytes, pos: 0 };

        let found = r.array::<4>(|| "magic".into())?;
        if found != GGUF_MAGIC {
            return Err(GgufError::BadMagic { found });
        }
        let version = r.u32(|| "version".into())?;
        if version != 2 && version != 3 {
            // A big-endian v3 file reads as 0x0300_0000 here.
            let hint = if version & 0xFFFF == 0 {
                " (big-endian files are not supported)"
            } else {
                ""
            };
            return Err(GgufError::UnsupportedVersion { version, hint });
        }
        let tensor_count = r.u64(|| "tensor count".into())?;
        let kv_count = r.u64(|| "metadata key count".into())?;
        // Early, coarse bounds so an absurd header fails at once with a clear message.
        r.check_count(kv_count, MIN_KV_BYTES, || "metadata key/value pairs".into())?;
        r.check_count(tensor_count, MIN_TENSOR_INFO_BYTES, || {
            "tensor infos".into()
        })?;

        let mut metadata = BTreeMap::new();
        for index in 0..kv_count {
            let key = r.string(&|| format!("name of metadata key #{index}"))?;
            if key.is_empty() {
                return Err(GgufError::EmptyKey { index });
            }
            if metadata.contains_key(&key) {
                return Err(GgufError::DuplicateKey(key));
            }
            let type_id = r.u32(|| format!("value type of key '{key}'"))?;
            let ty =
                GgufValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
                    key: key.clone(),
                    type_id,
                })?;
            let value = read_value(&mut r, &key, ty)?;
            metadata.insert(key, value);
        }

        let alignment = match metadata.get(ALIGNMENT_KEY) {
            None => GGUF_DEFAULT_ALIGNMENT,
            Some(MetaValue::U32(a)) => *a,
            Some(other) => {
                return Err(GgufError::AlignmentType {
                    found: other.type_description(),
                });
            }
        };
        if !alignment.is_power_of_two() {
            return Err(GgufError::BadAlignment(alignment.into()));
        }

        // Now the exact bound: every remaining tensor info needs at least its minimum size.
        let n_tensors = r.check_count(tensor_count, MIN_TENSOR_INFO_BYTES, || {
            "tensor infos".into()
        })?;
        let file_len = bytes.len();
        let mut raw = Vec::with_capacity(n_tensors);
        let mut by_name = BTreeMap::new();
        for index in 0..n_tensors {
            let name = r.string(&|| format!("name of tensor #{index}"))?;
            if by_name.insert(name.clone(), index).is_some() {
                return Err(GgufError::DuplicateTensor(name));
            }
            raw.push(read_tensor_info(&mut r, name)?);
        }

        // The data section starts at the next multiple of the alignment. Like ggml, a file
        // without tensors needs no padding.
        let end_of_infos = r.pos;
        let data_offset = if n_tensors == 0 {
            end_of_infos
        } else {
            let aligned = align_up(end_of_infos as u64, alignment.into()).ok_or_else(|| {
                GgufError::Overflow {
                    what: "start of the tensor data section".into(),
                }
            })?;
            if aligned > file_len as u64 {
                return Err(GgufError::Truncated {
                    what: "padding before the tensor data section".into(),
                    offset: end_of_infos,
                    needed: aligned - end_of_infos as u64,
                    available: file_len - end_of_infos,
                });
            }
            aligned as usize
        };

        let mut tensors = Vec::with_capacity(raw.len());
        for t in raw {
            tensors.push(t.place(data_offset, alignment, file_len)?);
        }
        check_no_overlap(&tensors)?;

        Ok(GgufFile {
            version,
            alignment,
            data_offset,
            file_len,
            metadata,
            tensors,
            by_name,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of every tensor offset, in bytes.
    pub fn alignment(&self) -> u32 {
        self.alignment
    }

    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// Length of the byte slice that was parsed.
    pub fn file_len(&self) -> usize {
        self.file_len
    }

    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// Tensors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// Like [`tensor`](Self::tensor) but with a "no tensor named" error.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))
    }

    /// The bytes of tensor `name` in `file` (the slice that was parsed).
    pub fn tensor_data<'a>(&self, file: &'a [u8], name: &str) -> Result<&'a [u8]> {
        self.require_tensor(name)?.data(file)
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// The value of `key`, or a "missing key" error.
    pub fn require(&self, key: &str) -> Result<&MetaValue> {
        self.metadata
            .get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    scalar_getter!(get_u8, U8, u8, "u8");
    scalar_getter!(get_i8, I8, i8, "i8");
    scalar_getter!(get_u16, U16, u16, "u16");
    scalar_getter!(get_i16, I16, i16, "i16");
    scalar_getter!(get_u32, U32, u32, "u32");
    scalar_getter!(get_i32, I32, i32, "i32");
    scalar_getter!(get_u64, U64, u64, "u64");
    scalar_getter!(get_i64, I64, i64, "i64");
    scalar_getter!(get_f32, F32, f32, "f32");
    scalar_getter!(get_f64, F64, f64, "f64");
    scalar_getter!(get_bool, Bool, bool, "bool");

    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            MetaValue::String(s) => Ok(s),
            other => Err(wrong_type(key, "str", other)),
        }
    }

    /// Any unsigned or non-negative signed integer, widened to u64. Writers disagree on the
    /// integer width of counts and sizes (u32 from gguf-py, sometimes u64 or i32 elsewhere).
    pub fn get_uint(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        let n: Option<u64> = match *v {
            MetaValue::U8(x) => Some(x.into()),
            MetaValue::U16(x) => Some(x.into()),
            MetaValue::U32(x) => Some(x.into()),
            MetaValue::U64(x) => Some(x),
            MetaValue::I8(x) => u64::try_from(x).ok(),
            MetaValue::I16(x) => u64::try_from(x).ok(),
            MetaValue::I32(x) => u64::try_from(x).ok(),
            MetaValue::I64(x) => u64::try_from(x).ok(),
            _ => None,
        };
        n.ok_or_else(|| wrong_type(key, "a non-negative integer", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&MetaArray> {
        match self.require(key)? {
            MetaValue::Array(a) => Ok(a),
            other => Err(wrong_type(key, "arr", other)),
        }
    }

    array_getter!(get_str_array, String, String, "arr[str]");
    array_getter!(get_f32_array, F32, f32, "arr[f32]");
    array_getter!(get_i32_array, I32, i32, "arr[i32]");
    array_getter!(get_u32_array, U32, u32, "arr[u32]");
}

/// Byte cursor over the file; every read is bounds-checked and reports what it was reading.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8]> {
        let available = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= available => {
                let out = &self.bytes[self.pos..self.pos + n];
                self.pos += n;
                Ok(out)
            }
            _ => Err(GgufError::Truncated {
                what: what(),
                offset: self.pos,
                needed: n,
                available,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: impl FnOnce() -> String) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(|| format!("length of {}", what()))?;
        let raw = self.take(len, what)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| GgufError::InvalidUtf8 { what: what() })
    }

    /// Checks that `count` items of at least `min_size` bytes each could fit in what is left,
    /// and returns the count as a usize that is then safe to reserve capacity for.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        what: impl FnOnce() -> String,
    ) -> Result<usize> {
        let available = self.remaining();
        let max = available as u64 / min_size;
        if count > max {
            return Err(GgufError::CountTooLarge {
                what: what(),
                count,
                max,
                available,
            });
        }
        // count <= available, which is a usize.
        Ok(count as usize)
    }
}

fn read_value(r: &mut Reader<'_>, key: &str, ty: GgufValueType) -> Result<MetaValue> {
    let what = || format!("value of key '{key}'");
    Ok(match ty {
        GgufValueType::U8 => MetaValue::U8(u8::from_le_bytes(r.array(what)?)),
        GgufValueType::I8 => MetaValue::I8(i8::from_le_bytes(r.array(what)?)),
        GgufValueType::U16 => MetaValue::U16(u16::from_le_bytes(r.array(what)?)),
        GgufValueType::I16 => MetaValue::I16(i16::from_le_bytes(r.array(what)?)),
        GgufValueType::U32 => MetaValue::U32(u32::from_le_bytes(r.array(what)?)),
        GgufValueType::I32 => MetaValue::I32(i32::from_le_bytes(r.array(what)?)),
        GgufValueType::F32 => MetaValue::F32(f32::from_le_bytes(r.array(what)?)),
        // ggml reads a bool as a byte and treats any non-zero value as true; so do we, so that
        // files llama.cpp loads load here too.
        GgufValueType::Bool => MetaValue::Bool(r.array::<1>(what)?[0] != 0),
        GgufValueType::String => MetaValue::String(r.string(&what)?),
        GgufValueType::Array => MetaValue::Array(read_array(r, key, 1)?),
        GgufValueType::U64 => MetaValue::U64(u64::from_le_bytes(r.array(what)?)),
        GgufValueType::I64 => MetaValue::I64(i64::from_le_bytes(r.array(what)?)),
        GgufValueType::F64 => MetaValue::F64(f64::from_le_bytes(r.array(what)?)),
    })
}

fn read_array(r: &mut Reader<'_>, key: &str, depth: usize) -> Result<MetaArray> {
    if depth > MAX_ARRAY_NESTING {
        return Err(GgufError::ArrayTooDeep {
            key: key.to_string(),
            max: MAX_ARRAY_NESTING,
        });
    }
    let type_id = r.u32(|| format!("array element type of key '{key}'"))?;
    let elem = GgufValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_string(),
        type_id,
    })?;
    let count = r.u64(|| format!("array length of key '{key}'"))?;
    let n = r.check_count(count, elem.min_encoded_len(), || {
        format!("elements in array '{key}'")
    })?;
    let what = || format!("elements of array '{key}'");

    Ok(match elem {
        GgufValueType::U8 => MetaArray::U8(r.take(count, what)?.to_vec()),
        GgufValueType::I8 => MetaArray::I8(le_vec(r, n, what, i8::from_le_bytes)?),
        GgufValueType::U16 => MetaArray::U16(le_vec(r, n, what, u16::from_le_bytes)?),
        GgufValueType::I16 => MetaArray::I16(le_vec(r, n, what, i16::from_le_bytes)?),
        GgufValueType::U32 => MetaArray::U32(le_vec(r, n, what, u32::from_le_bytes)?),
        GgufValueType::I32 => MetaArray::I32(le_vec(r, n, what, i32::from_le_bytes)?),
        GgufValueType::F32 => MetaArray::F32(le_vec(r, n, what, f32::from_le_bytes)?),
        GgufValueType::U64 => MetaArray::U64(le_vec(r, n, what, u64::from_le_bytes)?),
        GgufValueType::I64 => MetaArray::I64(le_vec(r, n, what, i64::from_le_bytes)?),
        GgufValueType::F64 => MetaArray::F64(le_vec(r, n, what, f64::from_le_bytes)?),
        GgufValueType::Bool => {
            MetaArray::Bool(r.take(count, what)?.iter().map(|&b| b != 0).collect())
        }
        GgufValueType::String => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(r.string(&|| format!("element {i} of array '{key}'"))?);
            }
            MetaArray::String(v)
        }
        GgufValueType::Array => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_array(r, key, depth + 1)?);
            }
            MetaArray::Array(v)
        }
    })
}

/// Reads `n` fixed-size little-endian numbers in one bounds check.
fn le_vec<T, const N: usize>(
    r: &mut Reader<'_>,
    n: usize,
    what: impl FnOnce() -> String,
    from_le: fn([u8; N]) -> T,
) -> Result<Vec<T>> {
    // n was bounded by the remaining bytes divided by N, so this cannot overflow.
    let raw = r.take((n as u64).saturating_mul(N as u64), what)?;
    Ok(raw
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            from_le(a)
        })
        .collect())
}

/// A tensor info as read, before its offset is placed in the file.
struct RawTensor {
    name: String,
    shape: Vec<u64>,
    ty: GgmlType,
    offset: u64,
    n_bytes: u64,
}

fn read_tensor_info(r: &mut Reader<'_>, name: String) -> Result<RawTensor> {
    let n_dims = r.u32(|| format!("n_dims of tensor '{name}'"))?;
    if n_dims as usize > GGUF_MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name,
            n_dims,
        });
    }
    let mut shape = Vec::with_capacity(n_dims as usize);
    for dim in 0..n_dims as usize {
        shape.push(r.u64(|| format!("dimension {dim} of tensor '{name}'"))?);
    }
    let type_id = r.u32(|| format!("ggml type of tensor '{name}'"))?;
    let offset = r.u64(|| format!("data offset of tensor '{name}'"))?;
    let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownGgmlType {
        tensor: name.clone(),
        type_id,
    })?;

    let n_bytes = check_shape(&name, &shape, ty)?;
    Ok(RawTensor {
        name,
        shape,
        ty,
        offset,
        n_bytes,
    })
}

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

impl RawTensor {
    fn place(self, data_offset: usize, alignment: u32, file_len: usize) -> Result<TensorInfo> {
        let alignment = u64::from(alignment);
        if !self.offset.is_multiple_of(alignment) {
            return Err(GgufError::Misaligned {
                tensor: self.name,
                offset: self.offset,
                alignment,
            });
        }
        let start = (data_offset as u64)
            .checked_add(self.offset)
            .ok_or_else(|| GgufError::Overflow {
                what: format!("the data start of tensor '{}'", self.name),
            })?;
        let end = start
            .checked_add(self.n_bytes)
            .ok_or_else(|| GgufError::Overflow {
                what: format!("the data end of tensor '{}'", self.name),
            })?;
        if end > file_len as u64 {
            return Err(GgufError::OutOfBounds {
                tensor: self.name,
                start,
                end,
                file_len,
            });
        }
        Ok(TensorInfo {
            name: self.name,
            shape: self.shape,
            ty: self.ty,
            relative_offset: self.offset,
            // end <= file_len, a usize.
            range: start as usize..end as usize,
        })
    }
}

fn check_no_overlap(tensors: &[TensorInfo]) -> Result<()> {
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| !t.range.is_empty()).collect();
    order.sort_by_key(|t| t.range.start);
    for pair in order.windows(2) {
        if pair[1].range.start < pair[0].range.end {
            return Err(GgufError::Overlap {
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
            });
        }
    }
    Ok(())
}

fn align_up(pos: u64, alignment: u64) -> Option<u64> {
    // alignment is a power of two.
    Some(pos.checked_add(alignment - 1)? & !(alignment - 1))
}

// ------------------------------------------------------------------------------------------------
// Writer
// ------------------------------------------------------------------------------------------------

/// Builds a GGUF v3 file in memory. Metadata is written in insertion order, tensors in the order
/// added, each tensor's data padded with zeros to the alignment (as ggml and gguf-py do).
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor>,
}

#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    shape: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Adds a metadata pair. Keys must be non-empty and unique; `general.alignment` must be a
    /// u32 power of two (it sets the alignment used for the data section).
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: MetaValue,
    ) -> Result<&mut GgufWriter> {
        let key = key.into();
        if key.is_empty() {
            return Err(GgufError::Writer("empty metadata key".into()));
        }
        if self.metadata.iter().any(|(k, _)| *k == key) {
            return Err(GgufError::Writer(format!("duplicate metadata key '{key}'")));
        }
        if let MetaValue::Array(a) = &value
            && array_depth(a) > MAX_ARRAY_NESTING
        {
            return Err(GgufError::Writer(format!(
                "metadata key '{key}' nests arrays deeper than {MAX_ARRAY_NESTING} levels"
            )));
        }
        if key == ALIGNMENT_KEY {
            match value {
                MetaValue::U32(a) if a.is_power_of_two() => {}
                _ => {
                    return Err(GgufError::Writer(format!(
                        "'{ALIGNMENT_KEY}' must be a u32 power of two"
                    )));
                }
            }
        }
        self.metadata.push((key, value));
        Ok(self)
    }

    /// Sets `general.alignment` (replacing an earlier value).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<&mut GgufWriter> {
        self.metadata.retain(|(k, _)| k != ALIGNMENT_KEY);
        self.add_metadata(ALIGNMENT_KEY, MetaValue::U32(alignment))
    }

    /// Adds a tensor. `shape` is in GGUF order (ne0 first); `data` must be exactly the encoded
    /// bytes for that shape and type.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        shape: &[u64],
        ty: GgmlType,
        data: impl Into<Vec<u8>>,
    ) -> Result<&mut GgufWriter> {
        let name = name.into();
        let data = data.into();
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::Writer(format!("duplicate tensor name '{name}'")));
        }
        if shape.len() > GGUF_MAX_DIMS {
            return Err(GgufError::Writer(format!(
                "tensor '{name}' has {} dimensions",
                shape.len()
            )));
        }
        let n_bytes = check_shape(&name, shape, ty)?;
        if n_bytes != data.len() as u64 {
            return Err(GgufError::Writer(format!(
                "tensor '{name}': {ty} {shape:?} takes {n_bytes} bytes, got {}",
                data.len()
            )));
        }
        self.tensors.push(PendingTensor {
            name,
            shape: shape.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find_map(|(k, v)| match (k.as_str(), v) {
                (ALIGNMENT_KEY, MetaValue::U32(a)) => Some(u64::from(*a)),
                _ => None,
            })
            .unwrap_or(GGUF_DEFAULT_ALIGNMENT.into())
    }

    /// Serialises the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let alignment = self.alignment() as usize;
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            write_value(&mut out, value);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            write_string(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += t.data.len().next_multiple_of(alignment);
        }
        if !self.tensors.is_empty() {
            pad_to(&mut out, alignment);
        }
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            pad_to(&mut out, alignment);
        }
        out
    }
}

fn array_depth(a: &MetaArray) -> usize {
    match a {
        MetaArray::Array(inner) => 1 + inner.iter().map(array_depth).max().unwrap_or(0),
        _ => 1,
    }
}

fn pad_to(out: &mut Vec<u8>, alignment: usize) {
    out.resize(out.len().next_multiple_of(alignment), 0);
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.push(u8::from(*v)),
        MetaValue::String(s) => write_string(out, s),
        MetaValue::Array(a) => write_array(out, a),
        MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

fn write_array(out: &mut Vec<u8>, a: &MetaArray) {
    out.extend_from_slice(&a.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    fn each<T: Copy, const N: usize>(out: &mut Vec<u8>, v: &[T], to_le: fn(T) -> [u8; N]) {
        for &x in v {
            out.extend_from_slice(&to_le(x));
        }
    }
    match a {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => each(out, v, i8::to_le_bytes),
        MetaArray::U16(v) => each(out, v, u16::to_le_bytes),
        MetaArray::I16(v) => each(out, v, i16::to_le_bytes),
        MetaArray::U32(v) => each(out, v, u32::to_le_bytes),
        MetaArray::I32(v) => each(out, v, i32::to_le_bytes),
        MetaArray::F32(v) => each(out, v, f32::to_le_bytes),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        MetaArray::String(v) => v.iter().for_each(|s| write_string(out, s)),
        MetaArray::Array(v) => v.iter().for_each(|inner| write_array(out, inner)),
        MetaArray::U64(v) => each(out, v, u64::to_le_bytes),
        MetaArray::I64(v) => each(out, v, i64::to_le_bytes),
        MetaArray::F64(v) => each(out, v, f64::to_le_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-assembles GGUF bytes, including invalid ones the writer refuses to produce.
    struct Raw(Vec<u8>);

    impl Raw {
        fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
            let mut r = Raw(GGUF_MAGIC.to_vec());
            r.u32(version).u64(n_tensors).u64(n_kv);
            r
        }
        fn u32(&mut self, v: u32) -> &mut Raw {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Raw {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn bytes(&mut self, b: &[u8]) -> &mut Raw {
            self.0.extend_from_slice(b);
            self
        }
        fn str(&mut self, s: &str) -> &mut Raw {
            self.u64(s.len() as u64).bytes(s.as_bytes())
        }
        fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
            self.str(key).u32(GgufValueType::U32.id()).u32(v)
        }
        fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Raw {
            self.str(name).u32(dims.len() as u32);
            for &d in dims {
                self.u64(d);
            }
            self.u32(ty).u64(offset)
        }
        fn pad(&mut self, alignment: usize) -> &mut Raw {
            self.0.resize(self.0.len().next_multiple_of(alignment), 0);
            self
        }
        fn zeros(&mut self, n: usize) -> &mut Raw {
            self.0.resize(self.0.len() + n, 0);
            self
        }
    }

    fn parse_err(bytes: &[u8]) -> GgufError {
        GgufFile::parse(bytes).expect_err("hostile input parsed")
    }

    /// A file with one valid tensor `t` (F32, `dims`) and `ty`/`offset` as given, data zeroed.
    fn one_tensor(dims: &[u64], ty: u32, offset: u64, data_len: usize) -> Vec<u8> {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("blk.0.attn_q.weight", dims, ty, offset)
            .pad(32)
            .zeros(data_len);
        r.0
    }

    fn every_value_type() -> Vec<(String, MetaValue)> {
        let v = vec![
            ("u8", MetaValue::U8(250)),
            ("i8", MetaValue::I8(-7)),
            ("u16", MetaValue::U16(65535)),
            ("i16", MetaValue::I16(-32768)),
            ("u32", MetaValue::U32(4_000_000_000)),
            ("i32", MetaValue::I32(-5)),
            ("f32", MetaValue::F32(-0.0)),
            ("bool.t", MetaValue::Bool(true)),
            ("bool.f", MetaValue::Bool(false)),
            ("str", MetaValue::String("Gemma ✓".into())),
            ("u64", MetaValue::U64(u64::MAX)),
            ("i64", MetaValue::I64(i64::MIN)),
            ("f64", MetaValue::F64(std::f64::consts::PI)),
            ("arr.u8", MetaValue::Array(MetaArray::U8(vec![1, 2, 3]))),
            ("arr.i8", MetaValue::Array(MetaArray::I8(vec![-1, 1]))),
            ("arr.u16", MetaValue::Array(MetaArray::U16(vec![9]))),
            ("arr.i16", MetaValue::Array(MetaArray::I16(vec![-9, 9]))),
            (
                "arr.u32",
                MetaValue::Array(MetaArray::U32(vec![1, 1 << 31])),
            ),
            ("arr.i32", MetaValue::Array(MetaArray::I32(vec![0, -1, 2]))),
            (
                "arr.f32",
                MetaValue::Array(MetaArray::F32(vec![0.5, f32::INFINITY])),
            ),
            (
                "arr.bool",
                MetaValue::Array(MetaArray::Bool(vec![true, false, true])),
            ),
            (
                "arr.str",
                MetaValue::Array(MetaArray::String(vec![
                    "<pad>".into(),
                    "".into(),
                    "▁the".into(),
                ])),
            ),
            ("arr.u64", MetaValue::Array(MetaArray::U64(vec![u64::MAX]))),
            (
                "arr.i64",
                MetaValue::Array(MetaArray::I64(vec![i64::MIN, 3])),
            ),
            (
                "arr.f64",
                MetaValue::Array(MetaArray::F64(vec![1e300, -2.5])),
            ),
            ("arr.empty", MetaValue::Array(MetaArray::F32(vec![]))),
            (
                "arr.nested",
                MetaValue::Array(MetaArray::Array(vec![
                    MetaArray::I32(vec![1, 2]),
                    MetaArray::String(vec!["x".into()]),
                    MetaArray::Array(vec![MetaArray::U8(vec![]), MetaArray::Bool(vec![true])]),
                ])),
            ),
        ];
        v.into_iter()
            .map(|(k, v)| (format!("test.{k}"), v))
            .collect()
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// A writer with every metadata type and four tensors of different types and ranks.
    fn sample_writer() -> GgufWriter {
        let mut w = GgufWriter::new();
        for (k, v) in every_value_type() {
            w.add_metadata(k, v).unwrap();
        }
        let f32_data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 4.0).collect();
        w.add_tensor("f32.weight", &[8, 3], GgmlType::F32, f32_bytes(&f32_data))
            .unwrap();
        w.add_tensor(
            "f16.bias",
            &[3],
            GgmlType::F16,
            vec![0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B],
        )
        .unwrap();
        w.add_tensor(
            "q8.weight",
            &[64, 2],
            GgmlType::Q8_0,
            (0..136).map(|i| i as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        w.add_tensor(
            "q4k.scalar_rows",
            &[256, 1, 1, 2],
            GgmlType::Q4_K,
            vec![7u8; 288],
        )
        .unwrap();
        w
    }

    #[test]
    fn writer_parser_round_trip() {
        let w = sample_writer();
        let bytes = w.to_bytes();
        let f = GgufFile::parse(&bytes).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), 32);
        assert_eq!(f.data_offset() % 32, 0);
        assert_eq!(f.file_len(), bytes.len());
        let want: BTreeMap<String, MetaValue> = every_value_type().into_iter().collect();
        assert_eq!(f.metadata(), &want);

        let names: Vec<&str> = f.tensors().iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            ["f32.weight", "f16.bias", "q8.weight", "q4k.scalar_rows"]
        );
        for (t, p) in f.tensors().iter().zip(&w.tensors) {
            assert_eq!(t.shape(), p.shape.as_slice());
            assert_eq!(t.ggml_type(), p.ty);
            assert_eq!(t.data(&bytes).unwrap(), p.data.as_slice());
            assert_eq!(t.relative_offset() % 32, 0);
            assert_eq!(
                t.byte_range().start,
                f.data_offset() + t.relative_offset() as usize
            );
        }
        let t = f.tensor("f32.weight").unwrap();
        assert_eq!(t.shape_row_major(), vec![3, 8]);
        assert_eq!(
            (t.row_len(), t.n_rows(), t.n_elements(), t.row_bytes()),
            (8, 3, 24, 32)
        );
        let t = f.require_tensor("q4k.scalar_rows").unwrap();
        assert_eq!(t.shape_row_major(), vec![2, 1, 1, 256]);
        assert_eq!((t.n_rows(), t.row_bytes(), t.byte_len()), (2, 144, 288));
        assert_eq!(
            f.tensor_data(&bytes, "f16.bias").unwrap(),
            &[0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B]
        );

        // Writing what was parsed gives the same bytes back.
        let mut again = GgufWriter::new();
        for (k, v) in every_value_type() {
            again.add_metadata(k, v).unwrap();
        }
        for t in f.tensors() {
            again
                .add_tensor(t.name(), t.shape(), t.ggml_type(), t.data(&bytes).unwrap())
                .unwrap();
        }
        assert_eq!(again.to_bytes(), bytes);
    }

    #[test]
    fn typed_getters() {
        let bytes = sample_writer().to_bytes();
        let f = GgufFile::parse(&bytes).unwrap();
        assert_eq!(f.get_u8("test.u8").unwrap(), 250);
        assert_eq!(f.get_i8("test.i8").unwrap(), -7);
        assert_eq!(f.get_u16("test.u16").unwrap(), 65535);
        assert_eq!(f.get_i16("test.i16").unwrap(), -32768);
        assert_eq!(f.get_u32("test.u32").unwrap(), 4_000_000_000);
        assert_eq!(f.get_i32("test.i32").unwrap(), -5);
        assert_eq!(f.get_u64("test.u64").unwrap(), u64::MAX);
        assert_eq!(f.get_i64("test.i64").unwrap(), i64::MIN);
        assert_eq!(
            f.get_f32("test.f32").unwrap().to_bits(),
            (-0.0f32).to_bits()
        );
        assert_eq!(f.get_f64("test.f64").unwrap(), std::f64::consts::PI);
        assert!(f.get_bool("test.bool.t").unwrap() && !f.get_bool("test.bool.f").unwrap());
        assert_eq!(f.get_str("test.str").unwrap(), "Gemma ✓");
        assert_eq!(
            f.get_str_array("test.arr.str").unwrap(),
            ["<pad>", "", "▁the"]
        );
        assert_eq!(
            f.get_f32_array("test.arr.f32").unwrap(),
            [0.5, f32::INFINITY]
        );
        assert_eq!(f.get_i32_array("test.arr.i32").unwrap(), [0, -1, 2]);
        assert_eq!(f.get_u32_array("test.arr.u32").unwrap(), [1, 1 << 31]);
        assert_eq!(f.get_array("test.arr.nested").unwrap().len(), 3);
        assert_eq!(f.get_uint("test.u8").unwrap(), 250);
        assert_eq!(f.get_uint("test.u32").unwrap(), 4_000_000_000);
        assert!(matches!(
            f.get_uint("test.i32"),
            Err(GgufError::WrongType { .. })
        ));

        let e = f.get_u32("test.str").unwrap_err();
        assert!(
            matches!(&e, GgufError::WrongType { key, expected: "u32", found } if key == "test.str" && found == "str")
        );
        assert_eq!(
            e.to_string(),
            "metadata key 'test.str' is str, expected u32"
        );
        let e = f.get_str_array("test.arr.i32").unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata key 'test.arr.i32' is arr[i32], expected arr[str]"
        );
        let e = f.get_f32("gemma3.rope.freq_base").unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata key 'gemma3.rope.freq_base' is missing"
        );
        assert!(
            matches!(f.require_tensor("nope"), Err(GgufError::MissingTensor(n)) if n == "nope")
        );
        assert!(f.tensor("nope").is_none() && f.get("nope").is_none());
    }

    /// Byte-for-byte against the spec: the writer's output for a small file equals a file
    /// assembled by hand from the layout description.
    #[test]
    fn writer_output_matches_the_spec() {
        let mut r = Raw::header(3, 1, 1);
        r.str("a").u32(GgufValueType::U8.id()).bytes(&[7]);
        r.tensor("t", &[2, 3], GgmlType::F32.id(), 0);
        // 24 header + 14 kv + 41 tensor info = 79 bytes, padded to 96.
        assert_eq!(r.0.len(), 79);
        r.pad(32);
        let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        r.bytes(&data);

        let mut w = GgufWriter::new();
        w.add_metadata("a", MetaValue::U8(7)).unwrap();
        w.add_tensor("t", &[2, 3], GgmlType::F32, data.clone())
            .unwrap();
        let written = w.to_bytes();
        assert_eq!(
            written.len(),
            128,
            "the last tensor is padded to the alignment too"
        );
        assert_eq!(&written[..120], r.0.as_slice());
        assert!(written[120..].iter().all(|&b| b == 0));

        let f = GgufFile::parse(&r.0).unwrap();
        assert_eq!(f.data_offset(), 96);
        let t = f.tensor("t").unwrap();
        assert_eq!(t.byte_range(), 96..120);
        assert_eq!(t.data(&r.0).unwrap(), data.as_slice());
        assert_eq!(t.shape_row_major(), vec![3, 2]);
    }

    #[test]
    fn custom_alignment() {
        for alignment in [1u32, 8, 64, 4096] {
            let mut w = sample_writer();
            w.set_alignment(alignment).unwrap();
            let bytes = w.to_bytes();
            let f = GgufFile::parse(&bytes).unwrap();
            assert_eq!(f.alignment(), alignment);
            assert_eq!(f.data_offset() % alignment as usize, 0);
            for t in f.tensors() {
                assert_eq!(t.byte_range().start % alignment as usize, 0, "{}", t.name());
            }
            assert_eq!(f.get_u32(ALIGNMENT_KEY).unwrap(), alignment);
        }
        let mut w = GgufWriter::new();
        assert!(w.set_alignment(48).is_err());
        assert!(w.add_metadata(ALIGNMENT_KEY, MetaValue::U64(64)).is_err());
    }

    /// A file written by gguf-py's GGUFWriter (scripts/reference/gguf_dequant_ref.py).
    #[test]
    fn reads_gguf_py_output() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/quant/gguf_py_sample.gguf"
        );
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let f = GgufFile::parse(&bytes).unwrap();
        assert_eq!((f.version(), f.alignment(), f.data_offset()), (3, 64, 768));
        assert_eq!(f.get_str("general.architecture").unwrap(), "gemma3");
        assert_eq!(f.get_str("general.name").unwrap(), "gemmakit-ref-sample");
        assert_eq!(f.get_u8("test.u8").unwrap(), 200);
        assert_eq!(f.get_i8("test.i8").unwrap(), -100);
        assert_eq!(f.get_u16("test.u16").unwrap(), 60000);
        assert_eq!(f.get_i16("test.i16").unwrap(), -30000);
        assert_eq!(f.get_u32("test.u32").unwrap(), 4_000_000_000);
        assert_eq!(f.get_i32("test.i32").unwrap(), -2_000_000_000);
        assert_eq!(f.get_f32("test.f32").unwrap(), 0.25);
        assert!(f.get_bool("test.bool").unwrap());
        assert_eq!(f.get_u64("test.u64").unwrap(), (1 << 63) + 5);
        assert_eq!(f.get_i64("test.i64").unwrap(), -(1 << 62));
        assert_eq!(f.get_f64("test.f64").unwrap(), -1.5e300);
        assert_eq!(f.get_str_array("test.strings").unwrap(), ["a", "", "héllo"]);
        assert_eq!(f.get_f32_array("test.f32s").unwrap(), [1.5, -2.0, 3.25]);
        assert_eq!(
            f.get_array("test.nested").unwrap(),
            &MetaArray::Array(vec![MetaArray::I32(vec![1, 2]), MetaArray::I32(vec![3])])
        );
        assert_eq!(f.metadata().len(), 17);

        let t = f.tensor("f32.weight").unwrap();
        assert_eq!(
            (t.ggml_type(), t.shape(), t.relative_offset()),
            (GgmlType::F32, &[8u64, 3][..], 0)
        );
        let want: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 4.0).collect();
        assert_eq!(t.data(&bytes).unwrap(), f32_bytes(&want).as_slice());
        let t = f.tensor("f16.bias").unwrap();
        assert_eq!(
            (t.ggml_type(), t.shape(), t.relative_offset()),
            (GgmlType::F16, &[4u64][..], 128)
        );
        assert_eq!(
            t.data(&bytes).unwrap(),
            [0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38, 0xFF, 0x7B]
        );
        let t = f.tensor("q8.weight").unwrap();
        assert_eq!(
            (t.ggml_type(), t.shape(), t.relative_offset()),
            (GgmlType::Q8_0, &[64u64, 2][..], 192)
        );
        assert_eq!((t.byte_len(), t.row_bytes()), (136, 68));
    }

    #[test]
    fn version_2_is_accepted() {
        let mut bytes = sample_writer().to_bytes();
        bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(GgufFile::parse(&bytes).unwrap().version(), 2);
    }

    #[test]
    fn wrong_magic_and_versions() {
        let mut bytes = sample_writer().to_bytes();
        bytes[..4].copy_from_slice(b"GGML");
        assert!(matches!(parse_err(&bytes), GgufError::BadMagic { found } if &found == b"GGML"));
        assert!(matches!(
            parse_err(b"\x89PNG\r\n\x1a\n"),
            GgufError::BadMagic { .. }
        ));

        for version in [0u32, 1, 4, u32::MAX, 0x0300_0000] {
            let e = parse_err(&Raw::header(version, 0, 0).0);
            assert!(matches!(e, GgufError::UnsupportedVersion { version: v, .. } if v == version));
            if version == 0x0300_0000 {
                assert!(e.to_string().contains("big-endian"), "{e}");
            }
        }
    }

    /// Every proper prefix of a valid file that cuts into the header or the tensor data must be
    /// rejected (and none may panic). Cutting only the final padding leaves a valid file.
    #[test]
    fn truncated_at_every_length() {
        let bytes = sample_writer().to_bytes();
        let full = GgufFile::parse(&bytes).unwrap();
        let data_end = full
            .tensors()
            .iter()
            .map(|t| t.byte_range().end)
            .max()
            .unwrap();
        for len in 0..bytes.len() {
            let res = GgufFile::parse(&bytes[..len]);
            if len < data_end {
                let e = res.expect_err("truncated file parsed");
                assert!(
                    matches!(
                        e,
                        GgufError::Truncated { .. }
                            | GgufError::CountTooLarge { .. }
                            | GgufError::OutOfBounds { .. }
                    ),
                    "len {len}: {e}"
                );
            } else {
                assert!(res.is_ok(), "len {len}");
            }
        }
        // A tensor's data range is checked against the slice it was parsed from, and `data`
        // refuses a shorter buffer instead of panicking.
        let t = &full.tensors()[3];
        assert!(matches!(
            t.data(&bytes[..t.byte_range().end - 1]),
            Err(GgufError::BufferMismatch { .. })
        ));
    }

    #[test]
    fn absurd_counts() {
        let e = parse_err(&Raw::header(3, u64::MAX, 0).0);
        assert!(
            matches!(
                e,
                GgufError::CountTooLarge {
                    count: u64::MAX,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse_err(&Raw::header(3, 0, u64::MAX).0);
        assert!(
            matches!(
                e,
                GgufError::CountTooLarge {
                    count: u64::MAX,
                    ..
                }
            ),
            "{e}"
        );
        // More tensors than the bytes left after the metadata could describe.
        let mut r = Raw::header(3, 2, 0);
        r.tensor("a", &[1], 0, 0);
        assert!(matches!(
            parse_err(&r.0),
            GgufError::CountTooLarge {
                count: 2,
                max: 1,
                ..
            }
        ));

        for (elem, count) in [
            (GgufValueType::U8, u64::MAX),
            (GgufValueType::String, 1 << 40),
            (GgufValueType::Array, 2),
        ] {
            let mut r = Raw::header(3, 0, 1);
            r.str("tokenizer.ggml.tokens")
                .u32(GgufValueType::Array.id())
                .u32(elem.id())
                .u64(count)
                .zeros(16);
            let e = parse_err(&r.0);
            assert!(
                matches!(e, GgufError::CountTooLarge { .. }),
                "{elem:?}: {e}"
            );
            assert!(e.to_string().contains("tokenizer.ggml.tokens"), "{e}");
        }
        // Enough bytes for the length prefixes, but the strings themselves run off the end.
        let mut r = Raw::header(3, 0, 1);
        r.str("k")
            .u32(GgufValueType::Array.id())
            .u32(GgufValueType::String.id())
            .u64(2);
        r.u64(3).bytes(b"abc").u64(100).zeros(8);
        let e = parse_err(&r.0);
        assert!(
            matches!(&e, GgufError::Truncated { what, needed: 100, .. } if what == "element 1 of array 'k'"),
            "{e}"
        );
    }

    #[test]
    fn string_lengths_past_the_end() {
        for len in [13u64, 1000, u64::MAX] {
            let mut r = Raw::header(3, 0, 1);
            r.u64(len).bytes(b"general.name");
            let e = parse_err(&r.0);
            assert!(
                matches!(e, GgufError::Truncated { needed, .. } if needed == len),
                "{e}"
            );
        }
        let mut r = Raw::header(3, 0, 1);
        r.str("general.name")
            .u32(GgufValueType::String.id())
            .u64(u64::MAX)
            .bytes(b"gemma");
        let e = parse_err(&r.0);
        assert_eq!(
            e.to_string(),
            "truncated GGUF: value of key 'general.name' needs 18446744073709551615 bytes at offset 56, but only 5 remain"
        );

        let mut r = Raw::header(3, 1, 0);
        r.u64(1 << 62).bytes(b"blk.0").zeros(32);
        assert!(
            matches!(parse_err(&r.0), GgufError::Truncated { what, .. } if what == "name of tensor #0")
        );
    }

    #[test]
    fn metadata_rules() {
        let mut r = Raw::header(3, 0, 1);
        r.str("k").u32(13).u32(0);
        assert!(matches!(
            parse_err(&r.0),
            GgufError::UnknownValueType { type_id: 13, .. }
        ));
        let mut r = Raw::header(3, 0, 1);
        r.str("k").u32(GgufValueType::Array.id()).u32(99).u64(0);
        assert!(matches!(
            parse_err(&r.0),
            GgufError::UnknownValueType { type_id: 99, .. }
        ));

        let mut r = Raw::header(3, 0, 2);
        r.kv_u32("k", 1).kv_u32("k", 2);
        assert!(matches!(parse_err(&r.0), GgufError::DuplicateKey(k) if k == "k"));
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("", 1);
        assert!(matches!(parse_err(&r.0), GgufError::EmptyKey { index: 0 }));
        let mut r = Raw::header(3, 0, 1);
        r.u64(2)
            .bytes(&[0xC3, 0x28])
            .u32(GgufValueType::U8.id())
            .bytes(&[0]);
        assert!(matches!(parse_err(&r.0), GgufError::InvalidUtf8 { .. }));

        // Arrays of arrays, one level deeper than allowed.
        let mut r = Raw::header(3, 0, 1);
        r.str("deep").u32(GgufValueType::Array.id());
        for _ in 0..MAX_ARRAY_NESTING {
            r.u32(GgufValueType::Array.id()).u64(1);
        }
        r.u32(GgufValueType::U8.id()).u64(0);
        assert!(matches!(parse_err(&r.0), GgufError::ArrayTooDeep { .. }));
        // ... and exactly at the limit it parses.
        let mut r = Raw::header(3, 0, 1);
        r.str("deep").u32(GgufValueType::Array.id());
        for _ in 1..MAX_ARRAY_NESTING {
            r.u32(GgufValueType::Array.id()).u64(1);
        }
        r.u32(GgufValueType::U8.id()).u64(0);
        GgufFile::parse(&r.0).unwrap();

        // ggml reads any non-zero bool byte as true.
        let mut r = Raw::header(3, 0, 1);
        r.str("b").u32(GgufValueType::Bool.id()).bytes(&[2]);
        assert!(GgufFile::parse(&r.0).unwrap().get_bool("b").unwrap());

        let mut w = GgufWriter::new();
        let mut deep = MetaArray::U8(vec![]);
        for _ in 0..MAX_ARRAY_NESTING {
            deep = MetaArray::Array(vec![deep]);
        }
        assert!(w.add_metadata("deep", MetaValue::Array(deep)).is_err());
        assert!(w.add_metadata("", MetaValue::U8(0)).is_err());
        w.add_metadata("k", MetaValue::U8(0)).unwrap();
        assert!(w.add_metadata("k", MetaValue::U8(0)).is_err());
    }

    #[test]
    fn alignment_rules() {
        let mut r = Raw::header(3, 0, 1);
        r.str(ALIGNMENT_KEY).u32(GgufValueType::U64.id()).u64(32);
        assert!(matches!(parse_err(&r.0), GgufError::AlignmentType { found } if found == "u64"));
        for bad in [0u32, 3, 48, u32::MAX] {
            let mut r = Raw::header(3, 0, 1);
            r.kv_u32(ALIGNMENT_KEY, bad);
            assert!(matches!(parse_err(&r.0), GgufError::BadAlignment(a) if a == u64::from(bad)));
        }
        // A huge alignment whose padding runs past the end of the file.
        let mut r = Raw::header(3, 1, 1);
        r.kv_u32(ALIGNMENT_KEY, 1 << 31)
            .tensor("t", &[1], 0, 0)
            .zeros(4);
        assert!(
            matches!(parse_err(&r.0), GgufError::Truncated { what, .. } if what.contains("padding"))
        );
        // No tensors: no padding required.
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("k", 1);
        let f = GgufFile::parse(&r.0).unwrap();
        assert_eq!((f.data_offset(), f.tensors().len()), (r.0.len(), 0));
    }

    #[test]
    fn tensor_info_rules() {
        let name = "blk.0.attn_q.weight";
        let e = parse_err(&one_tensor(&[1, 1, 1, 1, 1], 0, 0, 4));
        assert!(
            matches!(&e, GgufError::TooManyDims { n_dims: 5, .. }),
            "{e}"
        );
        assert!(e.to_string().contains(name), "{e}");

        for id in [4u32, 5, 31, 36, 38, 42, 1000, u32::MAX] {
            let e = parse_err(&one_tensor(&[32], id, 0, 128));
            assert!(
                matches!(e, GgufError::UnknownGgmlType { type_id, .. } if type_id == id),
                "{e}"
            );
        }
        for dims in [&[u64::MAX][..], &[4, u64::MAX], &[0, 1 << 63]] {
            let e = parse_err(&one_tensor(dims, 0, 0, 16));
            assert!(matches!(e, GgufError::DimTooLarge { .. }), "{dims:?}: {e}");
        }
        let e = parse_err(&one_tensor(&[16, 2], GgmlType::Q4_0.id(), 0, 64));
        assert!(
            matches!(
                e,
                GgufError::NotBlockMultiple {
                    row_len: 16,
                    block_size: 32,
                    ..
                }
            ),
            "{e}"
        );
        // Whole blocks in total but not per row is still rejected (ggml checks ne0).
        let e = parse_err(&one_tensor(&[16, 4], GgmlType::Q4_0.id(), 0, 64));
        assert!(matches!(e, GgufError::NotBlockMultiple { .. }), "{e}");

        let e = parse_err(&one_tensor(&[4], 0, 8, 64));
        assert!(
            matches!(
                e,
                GgufError::Misaligned {
                    offset: 8,
                    alignment: 32,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse_err(&one_tensor(&[4], 0, 32, 16));
        assert!(matches!(e, GgufError::OutOfBounds { .. }), "{e}");
        let e = parse_err(&one_tensor(&[8], 0, 0, 16));
        assert!(matches!(e, GgufError::OutOfBounds { .. }), "{e}");
        let e = parse_err(&one_tensor(&[4], 0, u64::MAX - 31, 16));
        assert!(matches!(e, GgufError::Overflow { .. }), "{e}");
        assert!(e.to_string().contains(name), "{e}");

        // Element count overflowing u64, and exceeding i64::MAX (ggml's limit) without overflowing.
        for dims in [
            [1 << 20, 1 << 20, 1 << 20, 1 << 20],
            [1 << 20, 1 << 20, 1 << 20, 1 << 3],
        ] {
            let e = parse_err(&one_tensor(&dims, 0, 0, 64));
            assert!(
                matches!(&e, GgufError::Overflow { what } if what.contains("element count")),
                "{e}"
            );
        }
        // Byte size overflowing u64 while the element count (2^62) does not.
        let e = parse_err(&one_tensor(&[1 << 20, 1 << 20, 1 << 20, 1 << 2], 0, 0, 64));
        assert!(
            matches!(&e, GgufError::Overflow { what } if what.contains("byte size")),
            "{e}"
        );

        // Empty tensors are allowed (as in ggml) and take no bytes, whatever their other dims.
        let bytes = one_tensor(&[0, 5], 0, 0, 0);
        let f = GgufFile::parse(&bytes).unwrap();
        let t = f.tensor(name).unwrap();
        assert_eq!((t.n_elements(), t.byte_len(), t.n_rows()), (0, 0, 0));
        let f = GgufFile::parse(&one_tensor(&[1 << 62, 0], 0, 0, 0)).unwrap();
        let t = f.tensor(name).unwrap();
        assert_eq!(
            (t.n_elements(), t.row_len(), t.row_bytes()),
            (0, 1 << 62, usize::MAX)
        );
        // A 0-dimensional tensor is one element.
        let f = GgufFile::parse(&one_tensor(&[], 0, 0, 4)).unwrap();
        assert_eq!(
            (f.tensors()[0].n_elements(), f.tensors()[0].byte_len()),
            (1, 4)
        );
    }

    #[test]
    fn duplicate_and_overlapping_tensors() {
        let mut r = Raw::header(3, 2, 0);
        r.tensor("t", &[4], 0, 0)
            .tensor("t", &[4], 0, 32)
            .pad(32)
            .zeros(64);
        assert!(matches!(parse_err(&r.0), GgufError::DuplicateTensor(n) if n == "t"));

        let mut r = Raw::header(3, 2, 0);
        r.tensor("a", &[16], 0, 0)
            .tensor("b", &[4], 0, 32)
            .pad(32)
            .zeros(64);
        let e = parse_err(&r.0);
        assert!(
            matches!(&e, GgufError::Overlap { first, second } if first == "a" && second == "b"),
            "{e}"
        );

        // Out of order but disjoint is fine (ggml itself insists on packed order).
        let mut r = Raw::header(3, 2, 0);
        r.tensor("a", &[4], 0, 32)
            .tensor("b", &[4], 0, 0)
            .pad(32)
            .zeros(64);
        let f = GgufFile::parse(&r.0).unwrap();
        assert!(
            f.tensor("a").unwrap().byte_range().start > f.tensor("b").unwrap().byte_range().start
        );
    }

    #[test]
    fn writer_rejects_inconsistent_tensors() {
        let mut w = GgufWriter::new();
        assert!(
            w.add_tensor("t", &[4], GgmlType::F32, vec![0u8; 15])
                .is_err()
        );
        assert!(
            w.add_tensor("t", &[16], GgmlType::Q4_0, vec![0u8; 9])
                .is_err()
        );
        assert!(
            w.add_tensor("t", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0u8; 4])
                .is_err()
        );
        assert!(
            w.add_tensor("t", &[u64::MAX, 2], GgmlType::F32, vec![])
                .is_err()
        );
        assert!(matches!(
            w.add_tensor("t", &[1 << 63, 0], GgmlType::F32, vec![]),
            Err(GgufError::DimTooLarge { .. })
        ));
        // Accepted by the writer means accepted by the reader, whatever the file length.
        w.add_tensor("empty", &[(1 << 63) - 1, 0], GgmlType::F32, vec![])
            .unwrap();
        w.add_tensor("t", &[4], GgmlType::F32, vec![0u8; 16])
            .unwrap();
        assert!(
            w.add_tensor("t", &[4], GgmlType::F32, vec![0u8; 16])
                .is_err()
        );
        let f = GgufFile::parse(&w.to_bytes()).unwrap();
        assert_eq!(f.tensor("empty").unwrap().shape(), [(1 << 63) - 1, 0]);
    }

    /// Valid GGUF files from this writer, used as the fuzzer's seed corpus
    /// (rust-core/fuzz/corpus/gguf_parse). Regenerate with GGUF_WRITE_FUZZ_SEEDS=1.
    fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
        let pattern = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 37 + 11) as u8).collect() };

        let mut minimal = GgufWriter::new();
        minimal
            .add_metadata("general.architecture", MetaValue::String("gemma3".into()))
            .unwrap();

        let mut values = GgufWriter::new();
        for (k, v) in every_value_type() {
            values.add_metadata(k, v).unwrap();
        }
        values
            .add_tensor(
                "v",
                &[2, 2],
                GgmlType::F32,
                f32_bytes(&[1.0, -1.0, 0.5, 2.0]),
            )
            .unwrap();

        let mut blocks = GgufWriter::new();
        blocks.set_alignment(16).unwrap();
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::IQ4_NL,
        ] {
            let row = ty.block_size().max(8) as u64;
            let bytes = ty.bytes_for(row).unwrap() as usize;
            blocks
                .add_tensor(format!("t.{}", ty.name()), &[row], ty, pattern(bytes))
                .unwrap();
        }

        let mut gemma = GgufWriter::new();
        gemma.set_alignment(64).unwrap();
        let tokens = [
            "<pad>", "<eos>", "<bos>", "<unk>", "▁the", "▁a", "<0x0A>", "é",
        ];
        gemma
            .add_metadata("general.architecture", MetaValue::String("gemma3".into()))
            .unwrap()
            .add_metadata("gemma3.context_length", MetaValue::U32(8192))
            .unwrap()
            .add_metadata("gemma3.embedding_length", MetaValue::U32(64))
            .unwrap()
            .add_metadata(
                "gemma3.attention.layer_norm_rms_epsilon",
                MetaValue::F32(1e-6),
            )
            .unwrap()
            .add_metadata("tokenizer.ggml.model", MetaValue::String("llama".into()))
            .unwrap()
            .add_metadata(
                "tokenizer.ggml.tokens",
                MetaValue::Array(MetaArray::String(
                    tokens.iter().map(|t| t.to_string()).collect(),
                )),
            )
            .unwrap()
            .add_metadata(
                "tokenizer.ggml.scores",
                MetaValue::Array(MetaArray::F32(vec![
                    0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0,
                ])),
            )
            .unwrap()
            .add_metadata(
                "tokenizer.ggml.token_type",
                MetaValue::Array(MetaArray::I32(vec![3, 3, 3, 2, 1, 1, 6, 1])),
            )
            .unwrap()
            .add_metadata("tokenizer.ggml.add_bos_token", MetaValue::Bool(true))
            .unwrap();
        gemma
            .add_tensor(
                "token_embd.weight",
                &[64, 8],
                GgmlType::Q8_0,
                pattern(8 * 2 * 34),
            )
            .unwrap()
            .add_tensor(
                "blk.0.attn_norm.weight",
                &[64],
                GgmlType::F32,
                f32_bytes(&[1.0; 64]),
            )
            .unwrap()
            .add_tensor(
                "blk.0.ffn_down.weight",
                &[256, 2],
                GgmlType::Q4_K,
                pattern(2 * 144),
            )
            .unwrap();

        vec![
            ("minimal.gguf", minimal.to_bytes()),
            ("all_value_types.gguf", values.to_bytes()),
            ("block_types.gguf", blocks.to_bytes()),
            ("gemma_like.gguf", gemma.to_bytes()),
        ]
    }

    #[test]
    fn fuzz_seed_corpus_is_current() {
        let dir = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/gguf_parse"
        ));
        let write = std::env::var_os("GGUF_WRITE_FUZZ_SEEDS").is_some();
        for (name, bytes) in fuzz_seeds() {
            assert!(bytes.len() < 10 * 1024, "{name} is {} bytes", bytes.len());
            GgufFile::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            let path = dir.join(name);
            if write {
                std::fs::write(&path, &bytes).unwrap();
            }
            let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (regenerate with GGUF_WRITE_FUZZ_SEEDS=1)",
                    path.display()
                )
            });
            assert!(
                on_disk == bytes,
                "{} is stale (regenerate with GGUF_WRITE_FUZZ_SEEDS=1)",
                path.display()
            );
        }
    }

    #[test]
    fn ggml_type_table() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert!(
                t.block_size().is_power_of_two() && t.block_bytes() > 0,
                "{t}"
            );
        }
        let spot = [
            (GgmlType::F32, 0, 1, 4),
            (GgmlType::F16, 1, 1, 2),
            (GgmlType::Q4_0, 2, 32, 18),
            (GgmlType::Q4_1, 3, 32, 20),
            (GgmlType::Q5_0, 6, 32, 22),
            (GgmlType::Q5_1, 7, 32, 24),
            (GgmlType::Q8_0, 8, 32, 34),
            (GgmlType::Q8_1, 9, 32, 36),
            (GgmlType::Q2_K, 10, 256, 84),
            (GgmlType::Q3_K, 11, 256, 110),
            (GgmlType::Q4_K, 12, 256, 144),
            (GgmlType::Q5_K, 13, 256, 176),
            (GgmlType::Q6_K, 14, 256, 210),
            (GgmlType::Q8_K, 15, 256, 292),
            (GgmlType::BF16, 30, 1, 2),
        ];
        for (t, id, block, bytes) in spot {
            assert_eq!(
                (t.id(), t.block_size(), t.block_bytes()),
                (id, block, bytes),
                "{t}"
            );
        }
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q4_K.bytes_for(100), None);
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
        assert_eq!(GgmlType::Q6_K.to_string(), "Q6_K");
    }
}

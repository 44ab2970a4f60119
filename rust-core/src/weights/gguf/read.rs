//! The parser: [`GgufFile`] and the bounds-checked reading beneath it. The rules it enforces on
//! untrusted input are listed in the documentation of the parent module.

use std::collections::BTreeMap;

use super::{
    ALIGNMENT_KEY, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_MAX_DIMS, GgmlType, GgufError,
    GgufValueType, MAX_ARRAY_NESTING, MetaArray, MetaValue, Result, TensorInfo, check_shape,
};

// The smallest possible encodings, used to bound counts by the bytes left before allocating.
/// key length + value type + the smallest (1-byte) value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// name length + n_dims + ggml type + offset (an empty name and zero dimensions).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

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

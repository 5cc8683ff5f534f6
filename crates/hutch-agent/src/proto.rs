//! Just enough of the protobuf binary wire format for the agent's own messages.
//!
//! The SDKs use JSON, but Connect clients may send `application/proto`; the messages are few and
//! flat, so a hand-written reader and writer cost less than a code generator in the build.

/// Why a binary message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The message ends in the middle of a field.
    #[error("truncated protobuf message")]
    Truncated,
    /// A varint runs past 10 bytes.
    #[error("malformed varint in protobuf message")]
    BadVarint,
    /// A wire type this reader does not handle (groups) or that does not exist.
    #[error("unsupported protobuf wire type {0}")]
    BadWireType(u8),
    /// Field number 0, which protobuf forbids.
    #[error("protobuf field number 0 is invalid")]
    FieldZero,
    /// A field has a different wire type than its declaration.
    #[error("field {0} has the wrong wire type")]
    WrongType(u32),
    /// A string field is not UTF-8.
    #[error("field {0} is not valid UTF-8")]
    BadUtf8(u32),
}

/// A message that can be decoded from the binary format.
pub trait FromProto: Default {
    /// Merges the fields encoded in `buf` into `self` (protobuf's merge semantics).
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError>;

    /// Decodes a whole message.
    fn from_proto(buf: &[u8]) -> Result<Self, ProtoError> {
        let mut message = Self::default();
        message.merge_proto(buf)?;
        Ok(message)
    }
}

/// A message that can be encoded in the binary format.
pub trait ToProto {
    /// The encoded message.
    fn to_proto(&self) -> Vec<u8>;
}

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: strings, bytes, embedded messages, packed repeated fields.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

impl<'a> Value<'a> {
    /// The value of a varint field (`uint32`, `bool`, enums, ...).
    pub fn varint(self, field: u32) -> Result<u64, ProtoError> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(ProtoError::WrongType(field)),
        }
    }

    /// The payload of a length-delimited field.
    pub fn bytes(self, field: u32) -> Result<&'a [u8], ProtoError> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(ProtoError::WrongType(field)),
        }
    }

    /// A `string` field.
    pub fn string(self, field: u32) -> Result<String, ProtoError> {
        let bytes = self.bytes(field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ProtoError::BadUtf8(field))
    }

    /// A `uint32` field (truncated like protobuf implementations do).
    pub fn uint32(self, field: u32) -> Result<u32, ProtoError> {
        Ok(self.varint(field)? as u32)
    }

    /// A `bool` field.
    pub fn boolean(self, field: u32) -> Result<bool, ProtoError> {
        Ok(self.varint(field)? != 0)
    }
}

/// Iterates over the fields of one message.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over an encoded message.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.buf.split_first().ok_or(ProtoError::Truncated)?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::BadVarint)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(ProtoError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field number and value, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, ProtoError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| ProtoError::BadVarint)?;
        if field == 0 {
            return Err(ProtoError::FieldZero);
        }
        let value = match (key & 7) as u8 {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Value::Fixed64(u64::from_le_bytes(
                    b.try_into().map_err(|_| ProtoError::Truncated)?,
                ))
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| ProtoError::Truncated)?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes(
                    b.try_into().map_err(|_| ProtoError::Truncated)?,
                ))
            }
            other => return Err(ProtoError::BadWireType(other)),
        };
        Ok(Some((field, value)))
    }
}

/// Builds one encoded message.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.raw_varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    /// A varint field (`uint32`, `bool`, enums); proto3 omits zero values.
    pub fn varint(&mut self, field: u32, v: u64) -> &mut Self {
        if v != 0 {
            self.key(field, 0);
            self.raw_varint(v);
        }
        self
    }

    /// A `sint32` field (zigzag-encoded).
    pub fn sint32(&mut self, field: u32, v: i32) -> &mut Self {
        self.varint(field, u64::from(((v << 1) ^ (v >> 31)) as u32))
    }

    /// A `bool` field.
    pub fn boolean(&mut self, field: u32, v: bool) -> &mut Self {
        self.varint(field, u64::from(v))
    }

    /// A length-delimited field, written even when empty (for oneof members and presence).
    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.raw_varint(v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    /// A `string`/`bytes` field with proto3 default omission.
    pub fn non_empty(&mut self, field: u32, v: &[u8]) -> &mut Self {
        if !v.is_empty() {
            self.bytes(field, v);
        }
        self
    }

    /// An embedded message built by `build`.
    pub fn message(&mut self, field: u32, build: impl FnOnce(&mut Writer)) -> &mut Self {
        let mut inner = Writer::new();
        build(&mut inner);
        self.bytes(field, &inner.buf)
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back_every_wire_type() {
        let mut w = Writer::new();
        w.varint(1, 300)
            .sint32(2, -1)
            .bytes(3, b"hi")
            .message(4, |m| {
                m.boolean(1, true);
            });
        let buf = w.finish();
        let mut r = Reader::new(&buf);
        assert_eq!(r.next_field().unwrap(), Some((1, Value::Varint(300))));
        assert_eq!(r.next_field().unwrap(), Some((2, Value::Varint(1))));
        assert_eq!(r.next_field().unwrap(), Some((3, Value::Bytes(b"hi"))));
        assert_eq!(r.next_field().unwrap(), Some((4, Value::Bytes(&[8, 1]))));
        assert_eq!(r.next_field().unwrap(), None);
    }

    #[test]
    fn rejects_malformed_input_without_panicking() {
        for bad in [
            &[0x0a, 0x05, b'a'][..],
            &[0xff; 12][..],
            &[0x00][..],
            &[0x0b][..],
            &[0x09, 1, 2][..],
        ] {
            let mut r = Reader::new(bad);
            assert!(r.next_field().is_err(), "{bad:?}");
        }
    }
}

//! Serializing encoded values with any serde serializer, so a value received in one protocol
//! can be sent in another (a JSON caller's argument forwarded to MessagePack clients).
//!
//! The value is decoded into a small self-describing tree and serialized from it. This costs
//! a decode; the encoders in this crate skip it and copy the bytes when the protocols match.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::value::{Arguments, EncodedValue, deserialize_slice};

/// Upper bound on speculative preallocation: a hostile length header must not reserve memory.
const MAX_PREALLOCATED_ITEMS: usize = 256;

/// Any JSON or MessagePack value.
///
/// MessagePack extension values (such as the timestamps JavaScript clients send for `Date`)
/// survive MessagePack to MessagePack; JSON has no such type, so there they become
/// `[type, [bytes...]]`, which is what serde makes of rmp-serde's extension representation.
#[derive(Debug)]
enum Value<'a> {
    Nil,
    Bool(bool),
    Signed(i64),
    Unsigned(u64),
    Float32(f32),
    Float64(f64),
    Str(Cow<'a, str>),
    Binary(Cow<'a, [u8]>),
    Array(Vec<Value<'a>>),
    Map(Vec<(Value<'a>, Value<'a>)>),
    Extension(i8, Cow<'a, [u8]>),
}

/// Serializes bytes as bytes (MessagePack bin) rather than as a sequence of numbers.
struct BinarySer<'a>(&'a [u8]);

impl Serialize for BinarySer<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Serializes the value with any serializer by decoding it first, so it can be nested in
/// typed data (`("alice", value)`) and sent in either protocol. Where an encoded value is
/// sent as a whole ([`encode_completion`](crate::encode_completion),
/// [`encode_message`](crate::encode_message)) its bytes are copied instead when the
/// protocol matches.
impl Serialize for EncodedValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value: Value<'_> =
            deserialize_slice(self.protocol(), self.as_bytes()).map_err(ser::Error::custom)?;
        value.serialize(serializer)
    }
}

impl Serialize for Arguments {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for argument in self.iter() {
            seq.serialize_element(&argument)?;
        }
        seq.end()
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => serializer.serialize_unit(),
            Value::Bool(value) => serializer.serialize_bool(*value),
            Value::Signed(value) => serializer.serialize_i64(*value),
            Value::Unsigned(value) => serializer.serialize_u64(*value),
            Value::Float32(value) => serializer.serialize_f32(*value),
            Value::Float64(value) => serializer.serialize_f64(*value),
            Value::Str(value) => serializer.serialize_str(value),
            Value::Binary(value) => serializer.serialize_bytes(value),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
            Value::Extension(tag, data) => serializer.serialize_newtype_struct(
                rmp_serde::MSGPACK_EXT_STRUCT_NAME,
                &(tag, BinarySer(data)),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON or MessagePack value")
    }

    /// rmp-serde presents an extension value as a newtype holding `(tag, bytes)`.
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(ExtensionVisitor)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Value::Nil)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Value::Nil)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Value::Signed(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Value::Unsigned(value))
    }

    fn visit_f32<E: de::Error>(self, value: f32) -> Result<Self::Value, E> {
        Ok(Value::Float32(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(Value::Float64(value))
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Borrowed(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(value)))
    }

    fn visit_borrowed_bytes<E: de::Error>(self, value: &'de [u8]) -> Result<Self::Value, E> {
        Ok(Value::Binary(Cow::Borrowed(value)))
    }

    fn visit_bytes<E: de::Error>(self, value: &[u8]) -> Result<Self::Value, E> {
        Ok(Value::Binary(Cow::Owned(value.to_vec())))
    }

    fn visit_byte_buf<E: de::Error>(self, value: Vec<u8>) -> Result<Self::Value, E> {
        Ok(Value::Binary(Cow::Owned(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let hint = seq.size_hint().unwrap_or(0).min(MAX_PREALLOCATED_ITEMS);
        let mut items = Vec::with_capacity(hint);
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let hint = map.size_hint().unwrap_or(0).min(MAX_PREALLOCATED_ITEMS);
        let mut entries = Vec::with_capacity(hint);
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

struct ExtensionVisitor;

impl<'de> Visitor<'de> for ExtensionVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack extension (type and data)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let tag: i8 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        match seq.next_element()? {
            Some(Value::Binary(data)) => Ok(Value::Extension(tag, data)),
            _ => Err(de::Error::invalid_length(1, &self)),
        }
    }
}

//! The MessagePack hub protocol: each message a MessagePack array, prefixed by its length as a
//! VarInt.

mod decode;
mod encode;
mod reader;

pub(crate) use decode::{array_spans, parse};
pub(crate) use encode::{write_array_len, write_message, write_ping, write_sequence_message};
pub(crate) use reader::describe as describe_marker;

/// The length of the one MessagePack value at the start of `bytes`, if it holds a
/// complete, well-formed one.
pub(crate) fn value_len(bytes: &[u8]) -> Option<usize> {
    reader::Reader::new(bytes)
        .value_span()
        .ok()
        .map(|(_, end)| end)
}

/// The `nil` marker.
pub(crate) const NIL: u8 = 0xC0;

/// An empty fixarray.
pub(crate) const EMPTY_ARRAY: u8 = 0x90;

/// Whether `marker` starts an array (fixarray, array 16 or array 32).
pub(crate) fn is_array_marker(marker: Option<u8>) -> bool {
    matches!(marker, Some(0x90..=0x9F | 0xDC | 0xDD))
}

//! The JSON hub protocol: one JSON object per message, each followed by `0x1E`.

mod decode;
mod encode;

pub(crate) use decode::{array_spans, parse};
pub(crate) use encode::{write_escaped_str, write_message, write_ping, write_sequence_message};

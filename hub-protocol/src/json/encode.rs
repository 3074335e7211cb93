//! Writing JSON hub messages by hand around serde-serialized values, so that no intermediate
//! value tree is built and field order is fixed.

use bytes::{BufMut, BytesMut};

use crate::encode::{EncodeError, Outgoing, OutgoingResult};
use crate::record::RECORD_SEPARATOR;
use crate::{Headers, Protocol};

/// Writes one message and its separator; on error the buffer is restored.
pub(crate) fn write_message(buf: &mut BytesMut, message: &Outgoing<'_>) -> Result<(), EncodeError> {
    let start = buf.len();
    match write_object(buf, message) {
        Ok(()) => {
            buf.put_u8(RECORD_SEPARATOR);
            Ok(())
        }
        Err(error) => {
            buf.truncate(start);
            Err(error)
        }
    }
}

/// `{"type":6}` and its separator.
pub(crate) fn write_ping(buf: &mut BytesMut) {
    buf.put_slice(b"{\"type\":6}\x1e");
}

/// `{"type":8,"sequenceId":N}` (Ack) or the same with type 9 (Sequence), and the separator.
pub(crate) fn write_sequence_message(buf: &mut BytesMut, message_type: u8, sequence_id: u64) {
    write_type(buf, message_type);
    buf.put_slice(b",\"sequenceId\":");
    write_u64(buf, sequence_id);
    buf.put_u8(b'}');
    buf.put_u8(RECORD_SEPARATOR);
}

fn write_object(buf: &mut BytesMut, message: &Outgoing<'_>) -> Result<(), EncodeError> {
    match *message {
        Outgoing::Invocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            write_type(buf, 1);
            write_headers(buf, headers);
            if let Some(id) = invocation_id {
                write_field_str(buf, "invocationId", id);
            }
            write_field_str(buf, "target", target);
            write_key(buf, "arguments");
            arguments.write(Protocol::Json, buf)?;
            write_stream_ids(buf, stream_ids);
        }
        Outgoing::StreamInvocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            write_type(buf, 4);
            write_headers(buf, headers);
            write_field_str(buf, "invocationId", invocation_id);
            write_field_str(buf, "target", target);
            write_key(buf, "arguments");
            arguments.write(Protocol::Json, buf)?;
            write_stream_ids(buf, stream_ids);
        }
        Outgoing::StreamItem {
            headers,
            invocation_id,
            item,
        } => {
            write_type(buf, 2);
            write_headers(buf, headers);
            write_field_str(buf, "invocationId", invocation_id);
            write_key(buf, "item");
            item.write(Protocol::Json, buf)?;
        }
        Outgoing::Completion {
            headers,
            invocation_id,
            ref result,
        } => {
            write_type(buf, 3);
            write_headers(buf, headers);
            write_field_str(buf, "invocationId", invocation_id);
            match *result {
                OutgoingResult::Void => {}
                OutgoingResult::Value(value) => {
                    write_key(buf, "result");
                    value.write(Protocol::Json, buf)?;
                }
                OutgoingResult::Error(error) => write_field_str(buf, "error", error),
            }
        }
        Outgoing::CancelInvocation {
            headers,
            invocation_id,
        } => {
            write_type(buf, 5);
            write_headers(buf, headers);
            write_field_str(buf, "invocationId", invocation_id);
        }
        Outgoing::Close {
            error,
            allow_reconnect,
        } => {
            write_type(buf, 7);
            if let Some(error) = error {
                write_field_str(buf, "error", error);
            }
            if allow_reconnect {
                buf.put_slice(b",\"allowReconnect\":true");
            }
        }
    }
    buf.put_u8(b'}');
    Ok(())
}

/// Opens the object with its `type` field, the only field every message has.
fn write_type(buf: &mut BytesMut, message_type: u8) {
    buf.put_slice(b"{\"type\":");
    write_u64(buf, u64::from(message_type));
}

/// Writes `,"key":`; keys are constants that need no escaping.
fn write_key(buf: &mut BytesMut, key: &str) {
    buf.put_slice(b",\"");
    buf.put_slice(key.as_bytes());
    buf.put_slice(b"\":");
}

fn write_field_str(buf: &mut BytesMut, key: &str, value: &str) {
    write_key(buf, key);
    write_escaped_str(buf, value);
}

fn write_headers(buf: &mut BytesMut, headers: &Headers) {
    if headers.is_empty() {
        return;
    }
    write_key(buf, "headers");
    buf.put_u8(b'{');
    for (index, (key, value)) in headers.iter().enumerate() {
        if index > 0 {
            buf.put_u8(b',');
        }
        write_escaped_str(buf, key);
        buf.put_u8(b':');
        write_escaped_str(buf, value);
    }
    buf.put_u8(b'}');
}

fn write_stream_ids(buf: &mut BytesMut, stream_ids: &[String]) {
    if stream_ids.is_empty() {
        return;
    }
    write_key(buf, "streamIds");
    buf.put_u8(b'[');
    for (index, id) in stream_ids.iter().enumerate() {
        if index > 0 {
            buf.put_u8(b',');
        }
        write_escaped_str(buf, id);
    }
    buf.put_u8(b']');
}

/// Writes `value` as a JSON string. Only `"`, `\` and control characters need escaping;
/// everything else, including non-ASCII text, is valid inside a JSON string as UTF-8.
pub(crate) fn write_escaped_str(buf: &mut BytesMut, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.put_u8(b'"');
    let bytes = value.as_bytes();
    let mut clean_from = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0C => b"\\f",
            0x00..=0x1F => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xF)],
            ],
            _ => continue,
        };
        buf.put_slice(&bytes[clean_from..index]);
        buf.put_slice(escape);
        clean_from = index + 1;
    }
    buf.put_slice(&bytes[clean_from..]);
    buf.put_u8(b'"');
}

/// Writes a decimal number without going through `fmt` (no `Result` to handle, no
/// allocation).
fn write_u64(buf: &mut BytesMut, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    buf.put_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_matches_serde_json() {
        for text in [
            "",
            "plain",
            "quote\" backslash\\ slash/",
            "controls \n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}",
            "unicode é 😀 \u{2028}",
        ] {
            let mut buf = BytesMut::new();
            write_escaped_str(&mut buf, text);
            let parsed: String = serde_json::from_slice(&buf).unwrap();
            assert_eq!(parsed, text);
            assert_eq!(&buf[..], serde_json::to_string(text).unwrap().as_bytes());
        }
    }

    #[test]
    fn numbers() {
        for value in [0, 7, 10, 1394, u64::MAX] {
            let mut buf = BytesMut::new();
            write_u64(&mut buf, value);
            assert_eq!(&buf[..], value.to_string().as_bytes());
        }
    }
}

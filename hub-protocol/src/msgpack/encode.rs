//! Writing MessagePack hub messages: the envelope by hand, application values with rmp-serde.

use bytes::{BufMut, BytesMut};

use crate::encode::{EncodeError, Outgoing, OutgoingResult};
use crate::varint::{self, MAX_FRAME_LEN, MAX_PREFIX_LEN};
use crate::{Headers, Protocol};

/// Room reserved for the length prefix before the body is written. Two bytes cover bodies up
/// to 16 KiB, the common case; other sizes move the body once.
const PREFIX_GUESS: usize = 2;

/// Writes one message with its length prefix; on error the buffer is restored.
pub(crate) fn write_message(buf: &mut BytesMut, message: &Outgoing<'_>) -> Result<(), EncodeError> {
    write_frame(buf, |buf| write_body(buf, message))
}

/// A Ping is always exactly `0x91 0x06`, and so its frame is constant.
pub(crate) fn write_ping(buf: &mut BytesMut) {
    buf.put_slice(&[0x02, 0x91, 0x06]);
}

/// `[8, id]` (Ack) or `[9, id]` (Sequence) with its prefix.
pub(crate) fn write_sequence_message(buf: &mut BytesMut, message_type: u8, sequence_id: u64) {
    // At most 11 bytes, so the prefix is one byte.
    let mut body = [0u8; 11];
    let mut cursor = &mut body[..];
    cursor.put_u8(0x92);
    cursor.put_u8(message_type);
    write_uint(&mut cursor, sequence_id);
    let len = 11 - cursor.len();
    buf.put_u8(len as u8);
    buf.put_slice(&body[..len]);
}

fn write_frame(
    buf: &mut BytesMut,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.put_bytes(0, PREFIX_GUESS);
    if let Err(error) = body(buf) {
        buf.truncate(start);
        return Err(error);
    }
    let body_start = start + PREFIX_GUESS;
    let body_len = buf.len() - body_start;
    if body_len > MAX_FRAME_LEN {
        buf.truncate(start);
        return Err(EncodeError::FrameTooLarge { len: body_len });
    }
    let mut prefix = [0u8; MAX_PREFIX_LEN];
    let prefix_len = varint::encode(body_len, &mut prefix);
    if prefix_len != PREFIX_GUESS {
        if prefix_len > PREFIX_GUESS {
            buf.put_bytes(0, prefix_len - PREFIX_GUESS);
        }
        buf.copy_within(body_start..body_start + body_len, start + prefix_len);
        buf.truncate(start + prefix_len + body_len);
    }
    buf[start..start + prefix_len].copy_from_slice(&prefix[..prefix_len]);
    Ok(())
}

fn write_body(buf: &mut BytesMut, message: &Outgoing<'_>) -> Result<(), EncodeError> {
    match *message {
        Outgoing::Invocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            write_array_len(buf, 6);
            buf.put_u8(1);
            write_headers(buf, headers);
            match invocation_id {
                Some(id) => write_str(buf, id),
                None => buf.put_u8(super::NIL),
            }
            write_str(buf, target);
            arguments.write(Protocol::MessagePack, buf)?;
            write_stream_ids(buf, stream_ids);
        }
        Outgoing::StreamInvocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            write_array_len(buf, 6);
            buf.put_u8(4);
            write_headers(buf, headers);
            write_str(buf, invocation_id);
            write_str(buf, target);
            arguments.write(Protocol::MessagePack, buf)?;
            write_stream_ids(buf, stream_ids);
        }
        Outgoing::StreamItem {
            headers,
            invocation_id,
            item,
        } => {
            write_array_len(buf, 4);
            buf.put_u8(2);
            write_headers(buf, headers);
            write_str(buf, invocation_id);
            item.write(Protocol::MessagePack, buf)?;
        }
        Outgoing::Completion {
            headers,
            invocation_id,
            ref result,
        } => {
            let with_payload = !matches!(result, OutgoingResult::Void);
            write_array_len(buf, if with_payload { 5 } else { 4 });
            buf.put_u8(3);
            write_headers(buf, headers);
            write_str(buf, invocation_id);
            match *result {
                OutgoingResult::Error(error) => {
                    buf.put_u8(1);
                    write_str(buf, error);
                }
                OutgoingResult::Void => buf.put_u8(2),
                OutgoingResult::Value(value) => {
                    buf.put_u8(3);
                    value.write(Protocol::MessagePack, buf)?;
                }
            }
        }
        Outgoing::CancelInvocation {
            headers,
            invocation_id,
        } => {
            write_array_len(buf, 3);
            buf.put_u8(5);
            write_headers(buf, headers);
            write_str(buf, invocation_id);
        }
        Outgoing::Close {
            error,
            allow_reconnect,
        } => {
            // Always three elements, as ASP.NET Core writes it; clients accept two or three.
            write_array_len(buf, 3);
            buf.put_u8(7);
            match error {
                Some(error) => write_str(buf, error),
                None => buf.put_u8(super::NIL),
            }
            buf.put_u8(if allow_reconnect { 0xC3 } else { 0xC2 });
        }
    }
    Ok(())
}

fn write_headers(buf: &mut BytesMut, headers: &Headers) {
    write_len(buf, headers.len(), 0x80, 0xDE, 0xDF);
    for (key, value) in headers {
        write_str(buf, key);
        write_str(buf, value);
    }
}

fn write_stream_ids(buf: &mut BytesMut, stream_ids: &[String]) {
    write_array_len(buf, stream_ids.len());
    for id in stream_ids {
        write_str(buf, id);
    }
}

/// Writes an array header.
pub(crate) fn write_array_len(buf: &mut BytesMut, len: usize) {
    write_len(buf, len, 0x90, 0xDC, 0xDD);
}

/// Writes a fix/16/32 header for arrays or maps.
///
/// A count beyond `u32::MAX` is not representable; such a body would be far over the 2 GiB
/// frame limit and is refused by the frame check, so the truncating cast never escapes.
fn write_len(buf: &mut BytesMut, len: usize, fix: u8, marker16: u8, marker32: u8) {
    if len < 16 {
        buf.put_u8(fix | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        buf.put_u8(marker16);
        buf.put_u16(len);
    } else {
        buf.put_u8(marker32);
        buf.put_u32(len as u32);
    }
}

/// Writes a str with the smallest header, as JavaScript and .NET peers do.
///
/// Lengths beyond `u32::MAX` are caught by the frame check (see [`write_len`]).
fn write_str(buf: &mut BytesMut, value: &str) {
    let len = value.len();
    if len < 32 {
        buf.put_u8(0xA0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        buf.put_u8(0xD9);
        buf.put_u8(len);
    } else if let Ok(len) = u16::try_from(len) {
        buf.put_u8(0xDA);
        buf.put_u16(len);
    } else {
        buf.put_u8(0xDB);
        buf.put_u32(len as u32);
    }
    buf.put_slice(value.as_bytes());
}

/// Writes an unsigned integer in its smallest encoding.
fn write_uint(buf: &mut impl BufMut, value: u64) {
    if value < 0x80 {
        buf.put_u8(value as u8);
    } else if let Ok(value) = u8::try_from(value) {
        buf.put_u8(0xCC);
        buf.put_u8(value);
    } else if let Ok(value) = u16::try_from(value) {
        buf.put_u8(0xCD);
        buf.put_u16(value);
    } else if let Ok(value) = u32::try_from(value) {
        buf.put_u8(0xCE);
        buf.put_u32(value);
    } else {
        buf.put_u8(0xCF);
        buf.put_u64(value);
    }
}

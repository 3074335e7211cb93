//! Splitting one WebSocket message into the hub messages it holds, as every SignalR client
//! does: the server may send several in one message (ASP.NET Core sends whatever its
//! output pipe holds; hub-server, what one drain of the send queue holds).

use std::collections::VecDeque;

use super::Frame;

/// The hub messages of one WebSocket message, in order. Text: each record up to and
/// including its 0x1E separator (a trailing part without one is kept as it is). Binary:
/// each MessagePack message with its length prefix, when the whole message splits
/// cleanly that way; otherwise (the JSON handshake answer in a binary frame) the message
/// whole.
pub fn split(frame: Frame) -> VecDeque<Frame> {
    match frame {
        Frame::Text(text) if text.is_empty() => VecDeque::from([Frame::Text(text)]),
        Frame::Text(text) => text
            .split_inclusive('\u{1e}')
            .map(|record| Frame::Text(record.to_owned()))
            .collect(),
        Frame::Binary(bytes) => match split_binary(&bytes) {
            Some(parts) => parts.into_iter().map(Frame::Binary).collect(),
            None => VecDeque::from([Frame::Binary(bytes)]),
        },
        other => VecDeque::from([other]),
    }
}

/// Length-prefixed (unsigned LEB128, at most 5 bytes) parts of `bytes`, if it is exactly
/// a sequence of them.
fn split_binary(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut parts = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let mut len = 0usize;
        let mut prefix = 0;
        loop {
            let byte = *rest.get(prefix)?;
            len |= usize::from(byte & 0x7F) << (7 * prefix);
            prefix += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if prefix == 5 {
                return None;
            }
        }
        let end = prefix.checked_add(len)?;
        if end > rest.len() || len == 0 {
            return None;
        }
        parts.push(rest[..end].to_vec());
        rest = &rest[end..];
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_splits_at_separators_and_binary_at_prefixes() {
        let text = split(Frame::Text("{\"type\":6}\u{1e}{}\u{1e}".into()));
        assert_eq!(text.len(), 2);
        let binary = split(Frame::Binary(vec![2, 0x91, 6, 1, 0x90]));
        assert_eq!(binary.len(), 2);
        let handshake = split(Frame::Binary(b"{}\x1e".to_vec()));
        assert_eq!(handshake.len(), 1);
    }
}

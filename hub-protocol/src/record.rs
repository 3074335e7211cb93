//! Finding `0x1E`-terminated records (the handshake and JSON messages) in a growing buffer.

/// The ASCII record separator that ends the handshake and every JSON hub message.
pub(crate) const RECORD_SEPARATOR: u8 = 0x1E;

/// The front record is longer than the caller allows.
#[derive(Debug)]
pub(crate) struct RecordTooLarge;

/// Remembers how much of the buffer is known to hold no separator, so that a record arriving
/// in many small pieces is scanned once in total rather than once per piece.
#[derive(Debug, Default)]
pub(crate) struct RecordScanner {
    /// Bytes at the front of the buffer already searched without finding a separator.
    scanned: usize,
}

impl RecordScanner {
    /// Returns the length (without the separator) of the record at the front of `buf`, or
    /// `None` when its separator has not arrived yet.
    ///
    /// Only the first `max_len + 1` bytes are ever searched: once `buf` holds more than
    /// `max_len` bytes without a separator among them, the record is too large, and the caller
    /// can stop buffering.
    ///
    /// The scanner assumes it sees the same buffer each time, only growing at the back, until a
    /// record is returned (the caller then removes it) or an error is reported.
    pub(crate) fn next_record(
        &mut self,
        buf: &[u8],
        max_len: usize,
    ) -> Result<Option<usize>, RecordTooLarge> {
        if self.scanned > buf.len() {
            // The buffer shrank behind our back: forget what we knew.
            self.scanned = 0;
        }
        let limit = buf.len().min(max_len.saturating_add(1));
        let from = self.scanned.min(limit);
        // Vectorised: every JSON message a connection receives is scanned here once.
        if let Some(offset) = memchr::memchr(RECORD_SEPARATOR, &buf[from..limit]) {
            self.scanned = 0;
            return Ok(Some(from + offset));
        }
        if buf.len() > max_len {
            self.scanned = 0;
            return Err(RecordTooLarge);
        }
        self.scanned = limit;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_record_arriving_in_pieces() {
        let mut scanner = RecordScanner::default();
        let mut buf = Vec::new();
        for piece in [&b"{\"ty"[..], b"pe\":6}", b"\x1e{"] {
            buf.extend_from_slice(piece);
            let found = scanner.next_record(&buf, 100).unwrap();
            if piece.starts_with(b"\x1e") {
                assert_eq!(found, Some(10));
            } else {
                assert_eq!(found, None);
            }
        }
    }

    #[test]
    fn record_of_exactly_max_len_is_accepted() {
        let mut scanner = RecordScanner::default();
        assert_eq!(scanner.next_record(b"abcd\x1e", 4).unwrap(), Some(4));
        assert_eq!(scanner.next_record(b"abcd", 4).unwrap(), None);
        assert!(scanner.next_record(b"abcde", 4).is_err());
        assert!(scanner.next_record(b"abcde\x1e", 4).is_err());
    }

    #[test]
    fn shrunk_buffer_resets_the_scan() {
        let mut scanner = RecordScanner::default();
        assert_eq!(scanner.next_record(b"abcdef", 100).unwrap(), None);
        assert_eq!(scanner.next_record(b"a\x1e", 100).unwrap(), Some(1));
    }
}

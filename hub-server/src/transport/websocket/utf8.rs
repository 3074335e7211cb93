//! Incremental UTF-8 validation of a text message that arrives in pieces.

/// Checks that the pieces of one text message, fed in order, form valid UTF-8, wherever
/// the piece boundaries fall (a multi-byte character may be split across frames or reads).
#[derive(Debug, Default)]
pub(crate) struct Utf8Validator {
    /// The start of a character the previous piece ended in the middle of.
    carry: [u8; 4],
    /// How many bytes of `carry` are in use (0 when the last piece ended on a character
    /// boundary).
    carried: u8,
}

/// The bytes are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidUtf8;

impl Utf8Validator {
    /// Check the next piece of the message.
    pub(crate) fn feed(&mut self, mut piece: &[u8]) -> Result<(), InvalidUtf8> {
        if self.carried > 0 {
            let carried = usize::from(self.carried);
            let width = char_width(self.carry[0]);
            let take = (width - carried).min(piece.len());
            self.carry[carried..carried + take].copy_from_slice(&piece[..take]);
            let carried = carried + take;
            piece = &piece[take..];
            match std::str::from_utf8(&self.carry[..carried]) {
                Ok(_) => self.carried = 0,
                // Still a valid start of a character: wait for the rest.
                Err(error) if error.error_len().is_none() && carried < width => {
                    self.carried = carried as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match std::str::from_utf8(piece) {
            Ok(_) => Ok(()),
            // The piece ends inside a character that may still be completed.
            Err(error) if error.error_len().is_none() => {
                let tail = &piece[error.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carried = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// The message ended: it is invalid if it ended inside a character. Resets for the
    /// next message.
    pub(crate) fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.carried == 0;
        self.carried = 0;
        if complete { Ok(()) } else { Err(InvalidUtf8) }
    }
}

/// The length of the character `lead` starts (only called on a lead byte `from_utf8`
/// accepted as the start of an incomplete character, so 2 to 4).
fn char_width(lead: u8) -> usize {
    match lead {
        0xF0.. => 4,
        0xE0.. => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pieces: &[&[u8]]) -> Result<(), InvalidUtf8> {
        let mut validator = Utf8Validator::default();
        for piece in pieces {
            validator.feed(piece)?;
        }
        validator.finish()
    }

    #[test]
    fn every_split_of_valid_text_is_valid() {
        let text = "aé€😀z".as_bytes();
        for first in 0..=text.len() {
            for second in first..=text.len() {
                let pieces = [&text[..first], &text[first..second], &text[second..]];
                assert_eq!(check(&pieces), Ok(()), "split at {first}, {second}");
            }
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(check(&bytes), Ok(()));
    }

    #[test]
    fn invalid_bytes_are_found_wherever_they_are_split() {
        // A truncated character at the end, an invalid continuation, an overlong
        // encoding, a surrogate, and a lone continuation byte.
        let cases: [&[u8]; 5] = [
            b"ab\xE2\x82",
            b"a\xE2\x28\xA1",
            b"\xC0\xAF",
            b"\xED\xA0\x80",
            b"\x80",
        ];
        for case in cases {
            for split in 0..=case.len() {
                let pieces = [&case[..split], &case[split..]];
                assert_eq!(
                    check(&pieces),
                    Err(InvalidUtf8),
                    "{case:?} split at {split}"
                );
            }
        }
    }
}

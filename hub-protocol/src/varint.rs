//! The VarInt length prefix of MessagePack frames: 1-5 bytes, 7 bits per byte, least
//! significant group first, high bit set on every byte but the last.
//!
//! Public because other framing in the workspace (the PostgreSQL backplane packs several
//! envelopes into one notification) uses the same prefix rather than a second copy.

/// The largest body a frame may announce: 2 GiB - 1, the limit of the official implementations.
pub const MAX_FRAME_LEN: usize = 0x7FFF_FFFF;

/// The longest prefix that can encode [`MAX_FRAME_LEN`].
pub const MAX_PREFIX_LEN: usize = 5;

/// Why a length prefix could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum PrefixError {
    /// The prefix runs past five bytes or announces more than [`MAX_FRAME_LEN`].
    Invalid,
}

/// Reads the length prefix at the front of `buf`.
///
/// Returns the announced body length and the prefix length, or `None` when the prefix itself
/// is still incomplete.
///
/// # Errors
///
/// [`PrefixError::Invalid`] when the prefix runs past five bytes or announces more than
/// [`MAX_FRAME_LEN`].
pub fn decode(buf: &[u8]) -> Result<Option<(usize, usize)>, PrefixError> {
    let mut value: u64 = 0;
    for (index, &byte) in buf.iter().take(MAX_PREFIX_LEN).enumerate() {
        value |= u64::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            if value > MAX_FRAME_LEN as u64 {
                return Err(PrefixError::Invalid);
            }
            // Lossless: value <= MAX_FRAME_LEN, which fits every usize we build for.
            return Ok(Some((value as usize, index + 1)));
        }
    }
    if buf.len() >= MAX_PREFIX_LEN {
        Err(PrefixError::Invalid)
    } else {
        Ok(None)
    }
}

/// Writes `len` as a prefix into `out`, returning how many bytes it took.
pub fn encode(mut len: usize, out: &mut [u8; MAX_PREFIX_LEN]) -> usize {
    let mut count = 0;
    loop {
        let low = (len & 0x7F) as u8;
        len >>= 7;
        if len == 0 {
            out[count] = low;
            return count + 1;
        }
        out[count] = low | 0x80;
        count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(len: usize) -> Vec<u8> {
        let mut out = [0; MAX_PREFIX_LEN];
        let n = encode(len, &mut out);
        out[..n].to_vec()
    }

    #[test]
    fn spec_examples() {
        assert_eq!(decode(&[0x35]), Ok(Some((0x35, 1))));
        assert_eq!(decode(&[0x80, 0x29]), Ok(Some((5248, 2))));
        assert_eq!(encoded(5248), vec![0x80, 0x29]);
        assert_eq!(
            decode(&[0xFF, 0xFF, 0xFF, 0xFF, 0x07]),
            Ok(Some((MAX_FRAME_LEN, 5)))
        );
        assert_eq!(encoded(MAX_FRAME_LEN), vec![0xFF, 0xFF, 0xFF, 0xFF, 0x07]);
        assert_eq!(encoded(0), vec![0]);
        assert_eq!(encoded(127), vec![0x7F]);
        assert_eq!(encoded(128), vec![0x80, 0x01]);
    }

    #[test]
    fn incomplete_and_invalid_prefixes() {
        assert_eq!(decode(&[]), Ok(None));
        assert_eq!(decode(&[0x80]), Ok(None));
        assert_eq!(decode(&[0xFF, 0xFF, 0xFF, 0xFF]), Ok(None));
        assert_eq!(
            decode(&[0xFF, 0xFF, 0xFF, 0xFF, 0x08]),
            Err(PrefixError::Invalid)
        );
        assert_eq!(
            decode(&[0x80, 0x80, 0x80, 0x80, 0x80]),
            Err(PrefixError::Invalid)
        );
        assert_eq!(
            decode(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(PrefixError::Invalid)
        );
    }

    #[test]
    fn round_trip() {
        for len in [
            1,
            2,
            126,
            127,
            128,
            300,
            16383,
            16384,
            2_097_151,
            2_097_152,
            MAX_FRAME_LEN,
        ] {
            let bytes = encoded(len);
            assert_eq!(decode(&bytes), Ok(Some((len, bytes.len()))));
        }
    }
}

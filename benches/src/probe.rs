//! What every benchmark message carries, so receivers can check it: who sent it, its
//! sequence number, when it counts as sent, and when it was actually written.

use std::sync::OnceLock;
use std::time::Instant;

/// The instant all send and receive times of this process are measured from.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since this process's measurement epoch. Senders and receivers run in
/// the same process, so their clocks agree exactly.
pub fn now_micros() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The header of one benchmark message, written at the start of the chat text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Which sender of the scenario sent it (0-based).
    pub sender: u32,
    /// Its position in that sender's stream (0-based, no gaps).
    pub seq: u64,
    /// When it counts as sent, in [`now_micros`] time: latency is measured from here. An
    /// open-loop sender puts the time its schedule says the message is due.
    pub sent_micros: u64,
    /// When the sender actually wrote it (at or after `sent_micros`).
    pub written_micros: u64,
}

impl Probe {
    /// The chat text carrying this probe: `sender:seq:sent:written:` padded with `.` to
    /// `len` bytes (or longer, if the header alone needs more).
    pub fn to_text(&self, len: usize) -> String {
        let mut text = format!(
            "{}:{}:{}:{}:",
            self.sender, self.seq, self.sent_micros, self.written_micros
        );
        if text.len() < len {
            text.extend(std::iter::repeat_n('.', len - text.len()));
        }
        text
    }

    /// The probe at the start of `text`, or `None` if it carries none.
    ///
    /// Read for every delivery, on the receivers' share of the machine the servers run
    /// on, so it is one pass over the header's digits.
    pub fn parse(text: &str) -> Option<Probe> {
        let mut rest = text.as_bytes();
        let sender = u32::try_from(field(&mut rest)?).ok()?;
        Some(Probe {
            sender,
            seq: field(&mut rest)?,
            sent_micros: field(&mut rest)?,
            written_micros: field(&mut rest)?,
        })
    }
}

/// The decimal number at the front of `rest`, up to and past its `:`.
fn field(rest: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for (at, &byte) in rest.iter().enumerate() {
        match byte {
            b'0'..=b'9' => {
                value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
            }
            b':' if at > 0 => {
                *rest = &rest[at + 1..];
                return Some(value);
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_text() {
        let probe = Probe {
            sender: 3,
            seq: 18_446_744_073_709_551_615,
            sent_micros: 7,
            written_micros: 9,
        };
        assert_eq!(Probe::parse(&probe.to_text(0)), Some(probe));
        assert_eq!(probe.to_text(100).len(), 100);
        assert_eq!(Probe::parse("hello"), None);
        assert_eq!(Probe::parse("1:2:3:4"), None);
        assert_eq!(Probe::parse("1:2:3:"), None);
        assert_eq!(Probe::parse("a:2:3:4:"), None);
        assert_eq!(Probe::parse("1::3:4:"), None);
        assert_eq!(
            Probe::parse("4294967296:2:3:4:"),
            None,
            "the sender is a u32"
        );
        assert_eq!(Probe::parse("1:18446744073709551616:3:4:"), None);
        assert_eq!(
            Probe::parse("1:2:3:4:...."),
            Some(Probe {
                sender: 1,
                seq: 2,
                sent_micros: 3,
                written_micros: 4
            })
        );
    }
}

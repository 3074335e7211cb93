//! What every benchmark message carries, so receivers can check it: who sent it, its
//! sequence number, and when it was sent.

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
    /// When it was sent, in [`now_micros`] time.
    pub sent_micros: u64,
}

impl Probe {
    /// The chat text carrying this probe: `sender:seq:micros:` padded with `.` to `len`
    /// bytes (or longer, if the header alone needs more).
    pub fn to_text(&self, len: usize) -> String {
        let mut text = format!("{}:{}:{}:", self.sender, self.seq, self.sent_micros);
        if text.len() < len {
            text.extend(std::iter::repeat_n('.', len - text.len()));
        }
        text
    }

    /// The probe at the start of `text`, or `None` if it carries none.
    pub fn parse(text: &str) -> Option<Probe> {
        let mut fields = text.splitn(4, ':');
        let sender = fields.next()?.parse().ok()?;
        let seq = fields.next()?.parse().ok()?;
        let sent_micros = fields.next()?.parse().ok()?;
        fields.next()?;
        Some(Probe {
            sender,
            seq,
            sent_micros,
        })
    }
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
        };
        assert_eq!(Probe::parse(&probe.to_text(0)), Some(probe));
        assert_eq!(probe.to_text(100).len(), 100);
        assert_eq!(Probe::parse("hello"), None);
        assert_eq!(Probe::parse("1:2:3"), None);
        assert_eq!(Probe::parse("a:2:3:"), None);
    }
}

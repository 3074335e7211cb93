//! What receivers verify: every message of every sender arrives exactly once, in the
//! order it was sent.

use serde::Serialize;

use crate::probe::Probe;

/// One receiver's view of the messages it was sent.
#[derive(Debug, Clone, Default)]
pub struct DeliveryCheck {
    /// Per sender: which sequence numbers arrived, and the highest one.
    senders: Vec<SenderTrack>,
    /// Messages each sender sends (sequence numbers `0..messages`).
    messages: u64,
    /// Messages received, duplicates included.
    received: u64,
    /// Messages that arrived a second (or later) time.
    duplicated: u64,
    /// Messages that arrived after a later message of the same sender.
    out_of_order: u64,
    /// Messages whose sender or sequence number is outside the scenario.
    unexpected: u64,
}

#[derive(Debug, Clone, Default)]
struct SenderTrack {
    /// Bit per sequence number: arrived at least once.
    seen: Vec<u64>,
    /// Distinct sequence numbers that arrived.
    distinct: u64,
    /// Highest sequence number that arrived.
    highest: Option<u64>,
}

/// The totals of one or more [`DeliveryCheck`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CheckTotals {
    /// Messages that should have arrived (senders x messages x receivers).
    pub expected: u64,
    /// Distinct messages that arrived.
    pub delivered: u64,
    /// Expected messages that never arrived.
    pub lost: u64,
    /// Extra copies that arrived.
    pub duplicated: u64,
    /// Messages that overtook an earlier one of the same sender.
    pub out_of_order: u64,
    /// Messages the scenario never sent.
    pub unexpected: u64,
}

impl DeliveryCheck {
    /// A check for `senders` senders of `messages` messages each.
    pub fn new(senders: u32, messages: u64) -> Self {
        let words = usize::try_from(messages.div_ceil(64)).expect("message count fits memory");
        let track = SenderTrack {
            seen: vec![0; words],
            distinct: 0,
            highest: None,
        };
        Self {
            senders: vec![track; senders as usize],
            messages,
            ..Self::default()
        }
    }

    /// Record one arrival; `true` if it was new (not a duplicate, not unexpected).
    pub fn record(&mut self, probe: &Probe) -> bool {
        self.received += 1;
        let track = self.senders.get_mut(probe.sender as usize);
        let Some(track) = track.filter(|_| probe.seq < self.messages) else {
            self.unexpected += 1;
            return false;
        };
        let (word, bit) = (probe.seq / 64, probe.seq % 64);
        let Some(slot) = usize::try_from(word)
            .ok()
            .and_then(|w| track.seen.get_mut(w))
        else {
            self.unexpected += 1;
            return false;
        };
        if *slot & (1 << bit) != 0 {
            self.duplicated += 1;
            return false;
        }
        *slot |= 1 << bit;
        track.distinct += 1;
        match track.highest {
            Some(highest) if probe.seq < highest => self.out_of_order += 1,
            _ => track.highest = Some(probe.seq),
        }
        true
    }

    /// Distinct messages received so far.
    pub fn distinct(&self) -> u64 {
        self.senders.iter().map(|track| track.distinct).sum()
    }

    /// Whether every expected message has arrived.
    pub fn complete(&self) -> bool {
        self.senders
            .iter()
            .all(|track| track.distinct >= self.messages)
    }

    /// This receiver's totals.
    pub fn totals(&self) -> CheckTotals {
        let expected = self.messages * self.senders.len() as u64;
        let delivered = self.distinct();
        CheckTotals {
            expected,
            delivered,
            lost: expected.saturating_sub(delivered),
            duplicated: self.duplicated,
            out_of_order: self.out_of_order,
            unexpected: self.unexpected,
        }
    }
}

impl std::ops::AddAssign for CheckTotals {
    fn add_assign(&mut self, other: Self) {
        self.expected += other.expected;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(sender: u32, seq: u64) -> Probe {
        Probe {
            sender,
            seq,
            sent_micros: 0,
            written_micros: 0,
        }
    }

    #[test]
    fn counts_loss_duplicates_and_reordering() {
        let mut check = DeliveryCheck::new(2, 100);
        for seq in [0, 1, 3, 2, 2, 5] {
            check.record(&probe(0, seq));
        }
        check.record(&probe(1, 0));
        check.record(&probe(2, 0));
        check.record(&probe(0, 100));
        let totals = check.totals();
        assert_eq!(totals.expected, 200);
        assert_eq!(totals.delivered, 6);
        assert_eq!(totals.lost, 194);
        assert_eq!(totals.duplicated, 1);
        assert_eq!(totals.out_of_order, 1);
        assert_eq!(totals.unexpected, 2);
        assert!(!check.complete());
    }

    #[test]
    fn complete_when_everything_arrived_in_order() {
        let mut check = DeliveryCheck::new(1, 130);
        for seq in 0..130 {
            assert!(check.record(&probe(0, seq)));
        }
        assert!(check.complete());
        let totals = check.totals();
        assert_eq!(
            (totals.lost, totals.duplicated, totals.out_of_order),
            (0, 0, 0)
        );
    }
}

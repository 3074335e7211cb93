//! What the soak's clients write down while they churn, and the conservative count of
//! what should have arrived.
//!
//! Clients join and leave groups and reconnect all the time, so a message's rightful
//! receivers are not simply "the members": a receiver that leaves while a message is on
//! its way may or may not get it, and either is correct. Only deliveries nobody can argue
//! about are expected: to a connection that was in the group (or, for a message to all,
//! connected) before the message was written, and still there, never having left, at the
//! end of the drain. Every other delivery is counted as delivered but never as missing.
//! Duplicates and order are checked on every delivery.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

/// Where a message was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// `SendMessageToGroup` to group number N.
    Group(u32),
    /// `SendMessage`: every connection of every instance.
    All,
}

/// One message a client sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendRecord {
    /// The sending client (its index).
    pub(crate) sender: u32,
    /// Its position in that client's stream (increasing, across its connections).
    pub(crate) seq: u64,
    /// Where it went.
    pub(crate) target: Target,
    /// When the invocation was written; memberships must be older to expect it.
    pub(crate) started: u64,
    /// Whether the server answered with a completion that was not an error; a refused or
    /// unanswered message is expected nowhere (but may still arrive).
    pub(crate) accepted: bool,
}

/// One stay of a connection in a group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Membership {
    /// The group's number.
    pub(crate) group: u32,
    /// When the `JoinGroup` completion arrived: the server had added the connection.
    pub(crate) joined: u64,
    /// Whether `LeaveGroup` was written (or the connection closed) before the end:
    /// such a stay only ever explains deliveries, it never expects any.
    pub(crate) left: bool,
}

/// One message arriving on one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    /// The sending client.
    pub(crate) sender: u32,
    /// The sender's sequence number.
    pub(crate) seq: u64,
    /// Whether it came as a message to all (`ReceiveMessage`) rather than to a group,
    /// so order is checked per sender and kind, as the backplane orders them.
    pub(crate) to_all: bool,
}

/// Everything one connection of one client saw.
#[derive(Debug, Default)]
pub(crate) struct ConnectionLog {
    /// When its handshake completed.
    pub(crate) opened: u64,
    /// Whether it was closed (or failed) before the end.
    pub(crate) closed: bool,
    /// Its stays in groups, in order.
    pub(crate) memberships: Vec<Membership>,
    /// Every message it received, in arrival order.
    pub(crate) arrivals: Vec<Arrival>,
}

/// What one client did over the whole soak.
#[derive(Debug, Default)]
pub(crate) struct ClientLog {
    /// Its messages.
    pub(crate) sends: Vec<SendRecord>,
    /// Its connections, the last one open until the end unless it failed.
    pub(crate) connections: Vec<ConnectionLog>,
    /// Reconnects it chose to make (a fresh connection after closing the old one).
    pub(crate) reconnects: u64,
    /// Connections that failed or invocations that got no answer, and why.
    pub(crate) errors: Vec<String>,
}

/// The delivery figures of a soak.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SoakTotals {
    /// Messages written by the clients.
    pub sent: u64,
    /// Of those, to all connections.
    pub sent_to_all: u64,
    /// Messages the servers refused or never answered.
    pub refused_or_unanswered: u64,
    /// Every message arriving on every connection.
    pub delivered: u64,
    /// Deliveries the conservative rule demands (see the module documentation).
    pub expected: u64,
    /// Expected deliveries that arrived.
    pub expected_delivered: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Messages that arrived more than once on one connection (each extra arrival).
    pub duplicated: u64,
    /// Arrivals older than one already received from the same sender and of the same
    /// kind (group or all) on the same connection.
    pub out_of_order: u64,
}

/// Count everything the clients wrote down.
pub(crate) fn tally(clients: &[ClientLog]) -> SoakTotals {
    let mut totals = SoakTotals::default();
    // Accepted messages per target, in send order (each sender's in increasing seq).
    let mut by_target: HashMap<Target, Vec<&SendRecord>> = HashMap::new();
    for send in clients.iter().flat_map(|client| &client.sends) {
        totals.sent += 1;
        totals.sent_to_all += u64::from(send.target == Target::All);
        if send.accepted {
            by_target.entry(send.target).or_default().push(send);
        } else {
            totals.refused_or_unanswered += 1;
        }
    }
    let none = Vec::new();
    for connection in clients.iter().flat_map(|client| &client.connections) {
        let received = check_arrivals(connection, &mut totals);
        if connection.closed {
            continue;
        }
        // A connection open at the end: every accepted message to all written after it
        // opened, and to each group it is still in, written after it joined.
        let mut stays = vec![(Target::All, connection.opened)];
        stays.extend(
            connection
                .memberships
                .iter()
                .filter(|stay| !stay.left)
                .map(|stay| (Target::Group(stay.group), stay.joined)),
        );
        for (target, since) in stays {
            for send in by_target.get(&target).unwrap_or(&none) {
                if send.started > since {
                    totals.expected += 1;
                    if received.contains(&(send.sender, send.seq)) {
                        totals.expected_delivered += 1;
                    } else {
                        totals.lost += 1;
                    }
                }
            }
        }
    }
    totals
}

/// Count `connection`'s deliveries, duplicates and reorderings; the messages it got.
fn check_arrivals(connection: &ConnectionLog, totals: &mut SoakTotals) -> HashSet<(u32, u64)> {
    let mut received = HashSet::with_capacity(connection.arrivals.len());
    let mut newest: HashMap<(u32, bool), u64> = HashMap::new();
    for arrival in &connection.arrivals {
        totals.delivered += 1;
        if !received.insert((arrival.sender, arrival.seq)) {
            totals.duplicated += 1;
            continue;
        }
        let last = newest.entry((arrival.sender, arrival.to_all)).or_insert(0);
        if arrival.seq < *last {
            totals.out_of_order += 1;
        } else {
            *last = arrival.seq;
        }
    }
    received
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(sender: u32, seq: u64, target: Target, started: u64) -> SendRecord {
        SendRecord {
            sender,
            seq,
            target,
            started,
            accepted: true,
        }
    }

    fn arrival(sender: u32, seq: u64, to_all: bool) -> Arrival {
        Arrival {
            sender,
            seq,
            to_all,
        }
    }

    #[test]
    fn only_stays_open_at_the_end_expect_deliveries() {
        let sender = ClientLog {
            sends: vec![
                send(0, 1, Target::Group(7), 100),
                send(0, 2, Target::Group(7), 300),
                send(0, 3, Target::All, 400),
            ],
            ..ClientLog::default()
        };
        // Joined group 7 at 200: expects seq 2 (group) and 3 (all, opened at 50); got 2
        // twice and an unexpected 1, but not 3.
        let stayed = ClientLog {
            connections: vec![ConnectionLog {
                opened: 50,
                closed: false,
                memberships: vec![Membership {
                    group: 7,
                    joined: 200,
                    left: false,
                }],
                arrivals: vec![
                    arrival(0, 2, false),
                    arrival(0, 1, false),
                    arrival(0, 2, false),
                ],
            }],
            ..ClientLog::default()
        };
        // Left the group and closed: expects nothing whatever it got.
        let left = ClientLog {
            connections: vec![ConnectionLog {
                opened: 10,
                closed: true,
                memberships: vec![Membership {
                    group: 7,
                    joined: 20,
                    left: true,
                }],
                arrivals: vec![arrival(0, 1, false)],
            }],
            ..ClientLog::default()
        };
        let totals = tally(&[sender, stayed, left]);
        assert_eq!(
            totals,
            SoakTotals {
                sent: 3,
                sent_to_all: 1,
                refused_or_unanswered: 0,
                delivered: 4,
                expected: 2,
                expected_delivered: 1,
                lost: 1,
                duplicated: 1,
                out_of_order: 1,
            }
        );
    }
}

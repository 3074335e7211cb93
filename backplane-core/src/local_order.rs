//! Local deliveries in publish order, whatever order the sends' futures are resumed in.
//!
//! A send that also goes to other nodes is published first and delivered to this node's
//! connections once the backplane has stored it. The backplane confirms publishes in the
//! order they were queued, but the futures waiting for those confirmations may be resumed
//! in another order: a connection task running many invocations at once polls them in
//! the order their wake-ups were queued, and tokio's cooperative budget can make a
//! confirmation that has arrived look pending to one of them, which is then resumed after
//! later ones. Delivering from the future would then give this node's connections a
//! client's messages in another order than every other node gets them.
//!
//! So each such send takes a [`Ticket`] when it is queued for publishing (its first poll,
//! in arrival order) and hands its local delivery to the ticket once published. A
//! delivery runs when every earlier ticket has delivered or been given up; until then it
//! waits here, and the send whose turn it was runs the waiting ones after its own. A
//! ticket dropped without delivering (a failed publish, a send cancelled with its
//! connection) gives up its turn, so nothing waits behind it for ever.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::sync::lock;

/// A local delivery waiting for its turn.
type Delivery = Box<dyn FnOnce() + Send>;

/// The order in which local deliveries of published sends run: one per lifetime manager.
#[derive(Default)]
pub(crate) struct LocalOrder {
    state: Mutex<OrderState>,
}

#[derive(Default)]
struct OrderState {
    /// The number the next ticket gets.
    next_ticket: u64,
    /// The ticket whose delivery runs next.
    next_turn: u64,
    /// Later tickets that are done, by number: their delivery, or `None` for one given
    /// up. Bounded by the sends in flight, each of which holds a ticket.
    waiting: BTreeMap<u64, Option<Delivery>>,
}

impl LocalOrder {
    /// A place in the order, taken when the send is queued for publishing.
    pub(crate) fn ticket(self: &Arc<Self>) -> Ticket {
        let mut state = lock(&self.state);
        let number = state.next_ticket;
        state.next_ticket += 1;
        Ticket {
            order: Arc::clone(self),
            number,
            done: false,
        }
    }

    /// Ticket `number` is done: run its delivery if it is its turn (and every waiting
    /// one whose turn follows), else keep it until then.
    fn done(&self, number: u64, delivery: Option<Delivery>) {
        let mut state = lock(&self.state);
        if number != state.next_turn {
            state.waiting.insert(number, delivery);
            return;
        }
        // Deliveries run under the lock so that the next turn cannot start before this
        // one has finished; each only queues frames for connections (no await, no lock
        // that is held while taking this one).
        if let Some(deliver) = delivery {
            deliver();
        }
        state.next_turn += 1;
        loop {
            let turn = state.next_turn;
            let Some(delivery) = state.waiting.remove(&turn) else {
                break;
            };
            if let Some(deliver) = delivery {
                deliver();
            }
            state.next_turn += 1;
        }
    }
}

/// A send's place in the [`LocalOrder`]; dropping it without [`Ticket::deliver`] gives
/// up the place.
pub(crate) struct Ticket {
    order: Arc<LocalOrder>,
    number: u64,
    done: bool,
}

impl Ticket {
    /// Run `deliver` in this ticket's turn: now, or when the earlier tickets are done.
    pub(crate) fn deliver(mut self, deliver: impl FnOnce() + Send + 'static) {
        self.done = true;
        self.order.done(self.number, Some(Box::new(deliver)));
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.order.done(self.number, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> (Arc<Mutex<Vec<u32>>>, impl Fn(u32) -> Delivery) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let make = {
            let log = Arc::clone(&log);
            move |n: u32| {
                let log = Arc::clone(&log);
                Box::new(move || lock(&log).push(n)) as Delivery
            }
        };
        (log, make)
    }

    #[test]
    fn deliveries_run_in_ticket_order_whatever_order_they_finish_in() {
        let order = Arc::new(LocalOrder::default());
        let (log, make) = recorder();
        let tickets: Vec<Ticket> = (0..4).map(|_| order.ticket()).collect();
        let mut tickets = tickets.into_iter();
        let (t0, t1, t2, t3) = (
            tickets.next().unwrap(),
            tickets.next().unwrap(),
            tickets.next().unwrap(),
            tickets.next().unwrap(),
        );
        t2.deliver(make(2));
        t1.deliver(make(1));
        assert!(lock(&log).is_empty(), "nothing runs before ticket 0");
        t0.deliver(make(0));
        assert_eq!(*lock(&log), [0, 1, 2]);
        t3.deliver(make(3));
        assert_eq!(*lock(&log), [0, 1, 2, 3]);
        assert!(lock(&order.state).waiting.is_empty());
    }

    #[test]
    fn a_dropped_ticket_gives_up_its_turn() {
        let order = Arc::new(LocalOrder::default());
        let (log, make) = recorder();
        let t0 = order.ticket();
        let t1 = order.ticket();
        let t2 = order.ticket();
        t2.deliver(make(2));
        t1.deliver(make(1));
        drop(t0);
        assert_eq!(*lock(&log), [1, 2]);
    }
}

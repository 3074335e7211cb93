//! Labelled envelopes and bounded waits on subscriptions, shared by the backplane tests:
//! the conformance suite's own vocabulary (`backplane_core::testkit::events`).

pub use backplane_core::testkit::WAIT;
pub use backplane_core::testkit::events::{
    expect_connected, label_of, labelled, next_envelope, next_event,
};

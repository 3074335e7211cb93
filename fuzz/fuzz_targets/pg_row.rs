//! The PostgreSQL backplane's reader of table rows (`backplane-postgres`, `fuzzing` feature):
//! a row's payload is one envelope, a tombstone or a pack of a run of envelopes, and a
//! role that can write the table can forge any of them.
//!
//! The input is a row's sequence number (8 bytes) and its payload. Properties: reading
//! never panics and never claims a number past the row's; the numbers it yields never go
//! down; a pack's entries, written again by the publisher's own row writer and read back,
//! give the same entries at the same numbers; every entry goes through the envelope
//! decoder as the listener does.
#![no_main]

use backplane_core::Envelope;
use backplane_postgres::fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((seq, payload)) = data.split_at_checked(8) else {
        return;
    };
    let seq = u64::from_be_bytes(seq.try_into().unwrap()).max(1);
    let read = fuzzing::read_row(seq, payload);
    assert!(!read.is_empty(), "a row always yields something");
    let mut previous = 0;
    for (at, entry, _) in &read {
        assert!(*at <= seq, "{at} past the row's {seq}");
        assert!(*at >= previous, "numbers went down");
        previous = *at;
        let _ = Envelope::decode(entry);
    }
    // A pack's entries, without the empty entry that ends a faulty pack (a genuine empty
    // last entry dropped with it does not change what follows), written again.
    let mut good: Vec<(u64, &[u8])> = read
        .iter()
        .filter(|(_, _, tombstone)| !tombstone)
        .map(|(at, entry, _)| (*at, entry.as_slice()))
        .collect();
    if good.last().is_some_and(|(_, entry)| entry.is_empty()) {
        good.pop();
    }
    if payload.first() == Some(&255) && good.len() >= 2 {
        let first = good[0].0;
        let consecutive = good
            .iter()
            .zip(first..=u64::MAX)
            .all(|((at, _), n)| *at == n);
        assert!(consecutive, "a pack's entries are consecutive");
        let entries: Vec<&[u8]> = good.iter().map(|(_, entry)| *entry).collect();
        let mut again = Vec::new();
        for (row_seq, row_payload) in fuzzing::write_rows(first, &entries) {
            again.extend(fuzzing::read_row(row_seq, &row_payload).into_iter().map(
                |(at, entry, tombstone)| {
                    assert!(!tombstone);
                    (at, entry)
                },
            ));
        }
        let expected: Vec<(u64, Vec<u8>)> = good.iter().map(|(at, e)| (*at, e.to_vec())).collect();
        assert_eq!(again, expected);
    }
});

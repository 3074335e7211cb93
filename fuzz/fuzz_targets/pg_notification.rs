//! The PostgreSQL backplane's notification parser (`backplane-postgres`, `fuzzing` feature).
//!
//! The input is the notification text (PostgreSQL payloads are text; invalid UTF-8 is
//! skipped). Properties: parsing never panics; the header's origin, read alone to drop
//! echoes, is the origin the parser reports; a parsed notification written again by the
//! publisher's own writer (the packer for inline packs, plain or LZ4-compressed, `reference` for references)
//! parses to the same value and fits a notification; entries of an inline pack go through
//! the envelope decoder as the listener does.
#![no_main]

use backplane_core::Envelope;
use backplane_postgres::fuzzing::{self, MAX_INLINE_ENVELOPE, MAX_NOTIFICATION, Parsed};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let header = fuzzing::origin_of(text);
    let Ok(parsed) = fuzzing::parse(text) else {
        return;
    };
    match &parsed {
        Parsed::Inline { origin, entries } => {
            assert_eq!(header, Some(*origin));
            let good: Vec<&[u8]> = entries
                .iter()
                .map_while(|entry| entry.as_deref().ok())
                .filter(|entry| entry.len() <= MAX_INLINE_ENVELOPE)
                .collect();
            for entry in &good {
                // What the listener does next; must not panic.
                let _ = Envelope::decode(entry);
            }
            for compress in [true, false] {
                let mut again = Vec::new();
                for notification in fuzzing::pack(*origin, &good, compress) {
                    assert!(notification.len() <= MAX_NOTIFICATION);
                    assert!(compress || notification.starts_with('i'));
                    match fuzzing::parse(&notification) {
                        Ok(Parsed::Inline { origin: o, entries }) => {
                            assert_eq!(o, *origin);
                            again.extend(entries.into_iter().map(Result::unwrap));
                        }
                        other => panic!("packer output parsed as {other:?}"),
                    }
                }
                assert_eq!(again, good, "pack round trip (compress: {compress})");
            }
        }
        Parsed::Reference {
            origin,
            from,
            to,
            hub,
        } => {
            assert_eq!(header, Some(*origin));
            if let Some(notification) = fuzzing::reference(*origin, *from, *to, hub) {
                assert!(notification.len() <= MAX_NOTIFICATION);
                assert_eq!(
                    fuzzing::parse(&notification).as_ref(),
                    Ok(&parsed),
                    "reference round trip"
                );
            }
        }
    }
});

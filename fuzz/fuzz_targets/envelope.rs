//! The backplane envelope decoder (backplane-core).
//!
//! Properties: decoding never panics; a decoded envelope encodes to bytes that decode to
//! the same envelope, are no longer than the input (the encoding is the shortest one)
//! and fit the envelope's `size_hint` (the upper estimate backplanes enforce limits with).
#![no_main]

use backplane_core::Envelope;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = Envelope::decode(data) else {
        return;
    };
    let encoded = envelope.encode();
    assert_eq!(
        Envelope::decode(&encoded).as_ref(),
        Ok(&envelope),
        "round trip"
    );
    assert!(
        encoded.len() <= data.len(),
        "{} > {}",
        encoded.len(),
        data.len()
    );
    assert!(
        envelope.size_hint() >= encoded.len(),
        "size_hint {} < encoded {}",
        envelope.size_hint(),
        encoded.len()
    );
});

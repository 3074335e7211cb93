//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! Most targets check a differential property: the same bytes fed to an incremental
//! decoder all at once, one byte at a time and in pseudo-random pieces must give the same
//! results. The pieces come from [`Splits`], seeded from the input itself so that a
//! crashing input reproduces exactly.

use hub_protocol::{BytesMut, Decoder, HubMessage, Protocol};

/// A small deterministic generator (xorshift64*) for split points.
#[derive(Debug)]
pub struct Splits(u64);

impl Splits {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Splits(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value in `1..=max`.
    pub fn next_len(&mut self, max: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        1 + (value % max.max(1) as u64) as usize
    }

    /// `data` cut into pieces of 1 to `max` bytes.
    pub fn pieces<'a>(&mut self, data: &'a [u8], max: usize) -> Vec<&'a [u8]> {
        let mut rest = data;
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(self.next_len(max).min(rest.len()));
            out.push(piece);
            rest = tail;
        }
        out
    }
}

/// What one `decode` call produced.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// A message.
    Message(HubMessage),
    /// An error the stream survives (the frame was consumed).
    Skipped(String),
    /// A framing error: decoding stops here.
    Fatal(String),
}

/// Every result a decoder gives for `pieces` appended one after the other, calling
/// `decode` until it wants more bytes after each piece, and the bytes left in the buffer
/// at the end (`None` after a fatal error, since then the buffer holds only what arrived
/// so far).
pub fn decode_pieces(
    protocol: Protocol,
    max_message_size: usize,
    pieces: &[&[u8]],
) -> (Vec<Step>, Option<Vec<u8>>) {
    let mut decoder = Decoder::new(protocol, max_message_size);
    let mut buf = BytesMut::new();
    let mut steps = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(message)) => steps.push(Step::Message(message)),
                Ok(None) => break,
                Err(error) if error.can_continue() => steps.push(Step::Skipped(error.to_string())),
                Err(error) => {
                    steps.push(Step::Fatal(error.to_string()));
                    return (steps, None);
                }
            }
        }
    }
    (steps, Some(buf.to_vec()))
}

/// The fuzz property of a hub-protocol decoder for `protocol`:
///
/// 1. the input decoded at once, byte by byte and in random pieces gives the same
///    messages and errors, in the same order, with the same bytes left over;
/// 2. every decoded message, encoded again with `encode_message`, decodes to itself and
///    nothing else;
/// 3. encoding it in the other protocol either fails cleanly or gives a frame that decodes.
///
/// The first input byte picks the size limit and seeds the splits.
pub fn check_hub_decoder(protocol: Protocol, data: &[u8]) {
    let Some((&config, stream)) = data.split_first() else {
        return;
    };
    let limit = [16, 100, 1024, 32 * 1024][usize::from(config & 3)];
    let whole = decode_pieces(protocol, limit, &[stream]);
    let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(
        whole,
        decode_pieces(protocol, limit, &bytewise),
        "one byte at a time"
    );
    let mut splits = Splits::new(u64::from(config) << 32 | stream.len() as u64);
    let max_piece = 1 + usize::from(config >> 2) * 4;
    let pieces = splits.pieces(stream, max_piece);
    assert_eq!(
        whole,
        decode_pieces(protocol, limit, &pieces),
        "in pieces of at most {max_piece} bytes"
    );

    for step in &whole.0 {
        if let Step::Message(message) = step {
            round_trip(protocol, message);
        }
    }
}

fn other(protocol: Protocol) -> Protocol {
    match protocol {
        Protocol::Json => Protocol::MessagePack,
        Protocol::MessagePack => Protocol::Json,
    }
}

/// Checks that `message`, decoded from `protocol`, re-encodes to a frame that decodes to
/// itself, and that transcoding it to the other protocol fails cleanly or decodes.
fn round_trip(protocol: Protocol, message: &HubMessage) {
    let mut buf = BytesMut::new();
    hub_protocol::encode_message(protocol, &mut buf, message)
        .unwrap_or_else(|error| panic!("re-encoding {message:?} failed: {error}"));
    let mut decoder = Decoder::new(protocol, usize::MAX);
    let again = decoder
        .decode(&mut buf)
        .unwrap_or_else(|error| panic!("re-encoded {message:?} does not decode: {error}"));
    assert_eq!(again.as_ref(), Some(message), "round trip");
    assert!(buf.is_empty(), "round trip left {} bytes", buf.len());

    let other = other(protocol);
    let mut buf = BytesMut::new();
    if hub_protocol::encode_message(other, &mut buf, message).is_ok() {
        let mut decoder = Decoder::new(other, usize::MAX);
        match decoder.decode(&mut buf) {
            Ok(Some(_)) => assert!(buf.is_empty(), "transcoded frame left bytes"),
            other => panic!("{message:?} transcoded does not decode: {other:?}"),
        }
    }
}

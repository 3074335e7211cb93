//! The handshake decoder, both sides.
//!
//! Properties: the request (server side) and the response (client side) decode the same
//! at once, one byte at a time and in random pieces, leaving the same bytes after them;
//! a decoded handshake encodes to one that decodes to itself; after a request that
//! resolves to a protocol, the rest of the buffer goes through that protocol's decoder
//! (as the server does) with the same incremental property.
#![no_main]

use hub_protocol::{BytesMut, HandshakeDecoder};
use signalr_fuzz::Splits;

/// What decoding a handshake from a stream arriving in pieces gave.
#[derive(Debug, PartialEq)]
enum Outcome<T> {
    /// The handshake, and every byte after it once the whole stream arrived.
    Decoded(T, Vec<u8>),
    /// An error that consumed the handshake, and every byte after it.
    Invalid(String, Vec<u8>),
    /// An error that consumed nothing (too large).
    Refused(String),
    /// The stream ended before the handshake did.
    Incomplete,
}

/// What is left in `buf` with the pieces still to arrive appended.
fn rest(buf: &[u8], later: &[&[u8]]) -> Vec<u8> {
    let mut rest = buf.to_vec();
    later.iter().for_each(|piece| rest.extend_from_slice(piece));
    rest
}

fn feed<T>(
    pieces: &[&[u8]],
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, hub_protocol::HandshakeError>,
) -> Outcome<T> {
    let mut buf = BytesMut::new();
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        match decode(&mut buf) {
            Ok(None) => {}
            Ok(Some(value)) => return Outcome::Decoded(value, rest(&buf, &pieces[i + 1..])),
            Err(error @ hub_protocol::HandshakeError::TooLarge { .. }) => {
                return Outcome::Refused(error.to_string());
            }
            Err(error) => return Outcome::Invalid(error.to_string(), rest(&buf, &pieces[i + 1..])),
        }
    }
    Outcome::Incomplete
}

fn check<T: PartialEq + std::fmt::Debug>(
    stream: &[u8],
    splits: &mut Splits,
    max_piece: usize,
    decode: impl Fn(
        &mut HandshakeDecoder,
        &mut BytesMut,
    ) -> Result<Option<T>, hub_protocol::HandshakeError>,
    limit: usize,
) -> Outcome<T> {
    let run = |pieces: &[&[u8]]| {
        let mut decoder = HandshakeDecoder::new(limit);
        feed(pieces, |buf| decode(&mut decoder, buf))
    };
    let whole = run(&[stream]);
    let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(whole, run(&bytewise), "one byte at a time");
    let pieces = splits.pieces(stream, max_piece);
    assert_eq!(
        whole,
        run(&pieces),
        "in pieces of at most {max_piece} bytes"
    );
    whole
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&config, stream)) = data.split_first() else {
        return;
    };
    let limit = [8, 64, 1024, 32 * 1024][usize::from(config & 3)];
    let max_piece = 1 + usize::from(config >> 2) * 4;
    let mut splits = Splits::new(u64::from(config) << 32 | stream.len() as u64);

    // Server side.
    let request = check(
        stream,
        &mut splits,
        max_piece,
        |d, b| d.decode_request(b),
        limit,
    );
    if let Outcome::Decoded(request, rest) = request {
        let mut buf = BytesMut::new();
        request.encode(&mut buf);
        let again = HandshakeDecoder::new(usize::MAX).decode_request(&mut buf);
        assert_eq!(
            again.ok().flatten().as_ref(),
            Some(&request),
            "request round trip"
        );
        assert!(buf.is_empty());
        if let Ok(protocol) = request.resolve_protocol() {
            signalr_fuzz::check_hub_decoder(protocol, &[&[config][..], &rest].concat());
        }
    }

    // Client side.
    let response = check(
        stream,
        &mut splits,
        max_piece,
        |d, b| d.decode_response(b),
        limit,
    );
    if let Outcome::Decoded(response, _) = response {
        let mut buf = BytesMut::new();
        response.encode(&mut buf);
        let again = HandshakeDecoder::new(usize::MAX).decode_response(&mut buf);
        assert_eq!(
            again.ok().flatten().as_ref(),
            Some(&response),
            "response round trip"
        );
        assert!(buf.is_empty());
    }
});

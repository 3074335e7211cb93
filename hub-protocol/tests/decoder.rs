//! The incremental decoder: partial and batched frames, size limits, malformed input.

use bytes::{Bytes, BytesMut};
use hub_protocol::{
    DecodeError, Decoder, HandshakeDecoder, HubMessage, Protocol, encode_completion_value,
    encode_invocation, encode_ping,
};

fn decode_all(decoder: &mut Decoder, buf: &mut BytesMut) -> Vec<HubMessage> {
    let mut messages = Vec::new();
    while let Some(message) = decoder.decode(buf).unwrap() {
        messages.push(message);
    }
    messages
}

/// A frame whose MessagePack body is `size` bytes long: a completion carrying a string.
fn msgpack_completion_of_body_size(size: usize) -> BytesMut {
    // [3, {}, "1", 3, str] is 6 bytes of envelope + the string header + the string.
    let header = match size - 6 {
        n if n < 32 + 1 => 1,
        n if n < 256 + 2 => 2,
        n if n < 65536 + 3 => 3,
        _ => 5,
    };
    let text = "x".repeat(size - 6 - header);
    let mut buf = BytesMut::new();
    encode_completion_value(Protocol::MessagePack, &mut buf, "1", &text).unwrap();
    buf
}

/// An invocation with an id, a ping, a completion longer than a short read and an
/// invocation without an id, one after another.
fn four_messages(protocol: Protocol) -> BytesMut {
    let mut stream = BytesMut::new();
    encode_invocation(protocol, &mut stream, Some("1"), "Send", &("a", 1)).unwrap();
    encode_ping(protocol, &mut stream);
    encode_completion_value(protocol, &mut stream, "2", &"x".repeat(300)).unwrap();
    encode_invocation(protocol, &mut stream, None, "Other", &()).unwrap();
    stream
}

#[test]
fn byte_by_byte_and_batched_input_give_the_same_messages() {
    for protocol in Protocol::ALL {
        let stream = four_messages(protocol);

        let batched = decode_all(&mut Decoder::new(protocol, 1024), &mut stream.clone());
        assert_eq!(batched.len(), 4);

        let mut decoder = Decoder::new(protocol, 1024);
        let mut buf = BytesMut::new();
        let mut trickled = Vec::new();
        for byte in stream.iter() {
            buf.extend_from_slice(&[*byte]);
            trickled.extend(decode_all(&mut decoder, &mut buf));
        }
        assert!(buf.is_empty());
        assert_eq!(trickled, batched, "{protocol}");
    }
}

/// Decodes `chunks` the way a client does: straight from each chunk while nothing is left
/// over, through the buffer once something is.
fn decode_chunks(decoder: &mut Decoder, chunks: &[Bytes]) -> (Vec<HubMessage>, BytesMut) {
    let mut messages = Vec::new();
    let mut buf = BytesMut::new();
    for chunk in chunks {
        if buf.is_empty() {
            let mut chunk = chunk.clone();
            while let Some(message) = decoder.decode_chunk(&mut chunk).unwrap() {
                messages.push(message);
            }
            buf.extend_from_slice(&chunk);
        } else {
            buf.extend_from_slice(chunk);
            messages.extend(decode_all(decoder, &mut buf));
        }
    }
    (messages, buf)
}

#[test]
fn chunks_decoded_in_place_give_the_same_messages_wherever_they_are_cut() {
    for protocol in Protocol::ALL {
        let stream = four_messages(protocol).freeze();
        let expected = decode_all(
            &mut Decoder::new(protocol, 1024),
            &mut stream.clone().into(),
        );
        for first in 0..=stream.len() {
            for second in first..=stream.len() {
                let chunks = [
                    stream.slice(..first),
                    stream.slice(first..second),
                    stream.slice(second..),
                ];
                let (messages, rest) = decode_chunks(&mut Decoder::new(protocol, 1024), &chunks);
                assert!(rest.is_empty(), "{protocol}: cut at {first} and {second}");
                assert_eq!(
                    messages, expected,
                    "{protocol}: cut at {first} and {second}"
                );
            }
        }
        // A chunk holding more than the limit without a separator is refused there too.
        if protocol == Protocol::Json {
            let mut chunk = Bytes::from(vec![b' '; 2000]);
            assert!(matches!(
                Decoder::new(protocol, 1024).decode_chunk(&mut chunk),
                Err(DecodeError::MessageTooLarge { limit: 1024 })
            ));
        }
    }
}

#[test]
fn messagepack_length_prefixes_of_every_size() {
    for size in [7, 127, 128, 129, 16_383, 16_384, 70_000, 2_097_152] {
        let mut buf = msgpack_completion_of_body_size(size);
        let prefix_len = buf.len() - size;
        let expected_prefix_len = match size {
            0..128 => 1,
            128..16_384 => 2,
            16_384..2_097_152 => 3,
            _ => 4,
        };
        assert_eq!(prefix_len, expected_prefix_len, "body of {size} bytes");
        let mut decoder = Decoder::new(Protocol::MessagePack, size);
        assert!(matches!(
            decoder.decode(&mut buf).unwrap(),
            Some(HubMessage::Completion(_))
        ));
        assert!(buf.is_empty());
    }
}

#[test]
fn oversized_json_message_is_refused_before_it_is_complete() {
    let mut decoder = Decoder::new(Protocol::Json, 64);
    let mut buf = BytesMut::from(&b"{\"type\":1,\"target\":\"Send\",\"arguments\":[\""[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(&[b'x'; 30]);
    let error = decoder.decode(&mut buf).unwrap_err();
    assert!(matches!(error, DecodeError::MessageTooLarge { limit: 64 }));
    assert!(!error.can_continue());
    assert_eq!(
        error.to_string(),
        "message exceeds the maximum size of 64 bytes"
    );

    // Exactly at the limit is fine.
    let mut decoder = Decoder::new(Protocol::Json, 10);
    let mut buf = BytesMut::from(&b"{\"type\":6}\x1e"[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap(), Some(HubMessage::Ping));
}

#[test]
fn oversized_messagepack_message_is_refused_from_its_prefix() {
    let full = msgpack_completion_of_body_size(200);
    let mut decoder = Decoder::new(Protocol::MessagePack, 199);
    // Only the prefix has arrived: the size is already known to be too large.
    let mut buf = BytesMut::from(&full[..2]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Err(DecodeError::MessageTooLarge { limit: 199 })
    ));

    // A prefix announcing 2 GiB - 1 is refused without reserving anything.
    let mut buf = BytesMut::from(&[0xFF, 0xFF, 0xFF, 0xFF, 0x07][..]);
    assert!(matches!(
        Decoder::new(Protocol::MessagePack, 32 * 1024).decode(&mut buf),
        Err(DecodeError::MessageTooLarge { .. })
    ));
    assert!(buf.capacity() < 1024);
}

#[test]
fn an_announced_message_reserves_memory_only_up_to_a_point() {
    // 8 MiB announced and allowed, but only the prefix arrived.
    let mut buf = BytesMut::from(&[0x80, 0x80, 0x80, 0x04][..]);
    let mut decoder = Decoder::new(Protocol::MessagePack, 16 << 20);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() <= 128 * 1024, "{}", buf.capacity());
    assert_eq!(buf.len(), 4);
}

#[test]
fn invalid_length_prefixes() {
    for prefix in [
        &[0x80, 0x80, 0x80, 0x80, 0x80][..],
        &[0xFF, 0xFF, 0xFF, 0xFF, 0x08],
    ] {
        let mut buf = BytesMut::from(prefix);
        let error = Decoder::new(Protocol::MessagePack, usize::MAX)
            .decode(&mut buf)
            .unwrap_err();
        assert!(
            matches!(error, DecodeError::InvalidLengthPrefix),
            "{prefix:?}"
        );
        assert!(!error.can_continue());
        assert_eq!(buf.len(), 5, "framing errors consume nothing");
    }
}

#[test]
fn malformed_json_messages_are_consumed_and_reported() {
    let cases: &[(&str, &str)] = &[
        ("", "a message must be a JSON object"),
        ("   ", "a message must be a JSON object"),
        ("[1]", "a message must be a JSON object"),
        ("{\"type\":1", "EOF while parsing"),
        ("{\"target\":\"x\"}", "missing required property 'type'"),
        ("{\"type\":\"1\"}", "invalid type: string"),
        ("{\"type\":1.5}", "invalid type: floating point"),
        (
            "{\"type\":1,\"arguments\":[]}",
            "missing required property 'target'",
        ),
        (
            "{\"type\":1,\"target\":\"\",\"arguments\":[]}",
            "empty 'target'",
        ),
        (
            "{\"type\":1,\"target\":\"x\"}",
            "missing required property 'arguments'",
        ),
        (
            "{\"type\":1,\"target\":\"x\",\"arguments\":{}}",
            "invalid type: map",
        ),
        (
            "{\"type\":1,\"target\":\"x\",\"arguments\":[1,]}",
            "trailing comma",
        ),
        (
            "{\"type\":1,\"target\":5,\"arguments\":[]}",
            "invalid type: integer",
        ),
        (
            "{\"type\":1,\"type\":1,\"target\":\"x\",\"arguments\":[]}",
            "duplicate field",
        ),
        (
            "{\"type\":2,\"invocationId\":\"1\"}",
            "missing required property 'item'",
        ),
        ("{\"type\":3}", "missing required property 'invocationId'"),
        ("{\"type\":3,\"invocationId\":\"\"}", "empty 'invocationId'"),
        (
            "{\"type\":3,\"invocationId\":\"1\",\"result\":1,\"error\":\"e\"}",
            "mutually exclusive",
        ),
        (
            "{\"type\":4,\"target\":\"x\",\"arguments\":[]}",
            "missing required property 'invocationId'",
        ),
        (
            "{\"type\":7,\"allowReconnect\":\"yes\"}",
            "invalid type: string",
        ),
        ("{\"type\":8}", "missing required property 'sequenceId'"),
        (
            "{\"type\":9,\"sequenceId\":-1}",
            "invalid value: integer `-1`",
        ),
        (
            "{\"type\":1,\"headers\":{\"a\":1},\"target\":\"x\",\"arguments\":[]}",
            "invalid type",
        ),
        ("{\"type\":6} x", "trailing characters"),
        (
            "{\"type\":1,\"target\":\"\\ud800\",\"arguments\":[]}",
            "hex escape",
        ),
    ];
    let mut buf = BytesMut::new();
    for (text, _) in cases {
        buf.extend_from_slice(text.as_bytes());
        buf.extend_from_slice(b"\x1e{\"type\":6}\x1e");
    }
    buf.extend_from_slice(b"\xff\xfe\x1e");
    buf.extend_from_slice(b"{\"type\":1,\"target\":\"x\",\"arguments\":[\"\xff\"]}\x1e");
    let mut decoder = Decoder::new(Protocol::Json, 1024);
    for (text, reason) in cases {
        let error = match decoder.decode(&mut buf) {
            Err(error) => error,
            Ok(message) => panic!("{text} decoded as {message:?}"),
        };
        assert!(error.can_continue(), "{text}");
        let message = error.to_string();
        assert!(
            message.starts_with("invalid json hub message: ") && message.contains(reason),
            "{text}: {message}"
        );
        // The stream is still in sync: the next message decodes.
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(HubMessage::Ping));
    }
    // Invalid UTF-8, outside and inside a string.
    assert!(decoder.decode(&mut buf).unwrap_err().can_continue());
    assert!(decoder.decode(&mut buf).unwrap_err().can_continue());
    assert!(buf.is_empty());
}

#[test]
fn unknown_message_types_are_reported_after_their_frame_is_consumed() {
    let mut buf = BytesMut::from(&b"{\"type\":99,\"future\":true}\x1e{\"type\":6}\x1e"[..]);
    let mut decoder = Decoder::new(Protocol::Json, 1024);
    let error = decoder.decode(&mut buf).unwrap_err();
    assert!(matches!(
        error,
        DecodeError::UnknownMessageType { message_type: 99 }
    ));
    assert!(error.can_continue());
    assert_eq!(decoder.decode(&mut buf).unwrap(), Some(HubMessage::Ping));

    let mut buf = BytesMut::from(&[0x03, 0x92, 0x0a, 0xc3, 0x02, 0x91, 0x06][..]);
    let mut decoder = Decoder::new(Protocol::MessagePack, 1024);
    let error = decoder.decode(&mut buf).unwrap_err();
    assert!(matches!(
        error,
        DecodeError::UnknownMessageType { message_type: 10 }
    ));
    assert_eq!(decoder.decode(&mut buf).unwrap(), Some(HubMessage::Ping));
}

#[test]
fn malformed_messagepack_messages_are_consumed_and_reported() {
    let cases: &[(&[u8], &str)] = &[
        (&[], "empty message"),
        (
            &[0x06],
            "reading 'message' failed: expected an array, found an integer",
        ),
        (&[0x90], "at least 1"),
        (&[0x91, 0xa1, b'x'], "reading 'message type' failed"),
        (
            &[0x92, 0x01, 0x80],
            "Invocation message has 2 element(s), expected at least 5",
        ),
        (
            &[0x95, 0x01, 0x90, 0xc0, 0xa1, b'x', 0x90],
            "reading 'headers' failed: expected a map, found an array",
        ),
        (&[0x95, 0x01, 0x80, 0xc0, 0xa0, 0x90], "empty target"),
        (
            &[0x95, 0x01, 0x80, 0x01, 0xa1, b'x', 0x90],
            "reading 'invocationId' failed",
        ),
        (
            &[
                0x95, 0x01, 0x80, 0xc0, 0xa1, b'x', 0xdd, 0xff, 0xff, 0xff, 0xff,
            ],
            "reading 'arguments' failed: unexpected end of message",
        ),
        (
            &[0x95, 0x01, 0x80, 0xc0, 0xa1, b'x', 0x91, 0xc1],
            "reserved marker",
        ),
        (
            &[0x95, 0x01, 0x81, 0xa1, b'k', 0x01, 0xc0],
            "reading 'header value' failed",
        ),
        (
            &[0x96, 0x01, 0x80, 0xc0, 0xa1, b'x', 0x90, 0x91, 0x01],
            "reading 'streamIds' failed",
        ),
        (
            &[0x94, 0x02, 0x80, 0xc0, 0x01],
            "null or empty invocation id",
        ),
        (
            &[0x94, 0x03, 0x80, 0xa1, b'1', 0x04],
            "invalid completion result kind 4",
        ),
        (
            &[0x94, 0x03, 0x80, 0xa1, b'1', 0x03],
            "non-void Completion message has 4",
        ),
        (
            &[0x95, 0x03, 0x80, 0xa1, b'1', 0x01, 0xc0],
            "reading 'error' failed",
        ),
        (&[0x92, 0x07, 0x01], "reading 'error' failed"),
        (&[0x93, 0x07, 0xc0, 0x01], "reading 'allowReconnect' failed"),
        (
            &[0x92, 0x08, 0xff],
            "reading 'sequenceId' failed: integer out of range",
        ),
        (&[0x92, 0x09, 0xa1, b'1'], "reading 'sequenceId' failed"),
        (
            &[0x95, 0x01, 0x80, 0xa1, 0xff, 0xa1, b'x', 0x90],
            "not valid UTF-8",
        ),
    ];
    let mut buf = BytesMut::new();
    for (body, _) in cases {
        buf.extend_from_slice(&[body.len() as u8]);
        buf.extend_from_slice(body);
        buf.extend_from_slice(&[0x02, 0x91, 0x06]);
    }
    let mut decoder = Decoder::new(Protocol::MessagePack, 1024);
    for (body, reason) in cases {
        let error = decoder.decode(&mut buf).unwrap_err();
        assert!(error.can_continue(), "{body:02x?}");
        let message = error.to_string();
        assert!(
            message.starts_with("invalid messagepack hub message: ") && message.contains(reason),
            "{body:02x?}: {message}"
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(HubMessage::Ping));
    }
    assert!(buf.is_empty());
}

#[test]
fn hostile_argument_count_does_not_preallocate() {
    // An Invocation whose argument array claims 2^32 - 1 elements but holds one.
    let body = [
        0x95, 0x01, 0x80, 0xc0, 0xa1, b'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01,
    ];
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[body.len() as u8]);
    buf.extend_from_slice(&body);
    let error = Decoder::new(Protocol::MessagePack, 1024)
        .decode(&mut buf)
        .unwrap_err();
    assert!(error.to_string().contains("unexpected end of message"));
}

#[test]
fn messagepack_frames_right_after_the_handshake_stay_in_the_buffer() {
    let mut buf = BytesMut::from(&b"{\"protocol\":\"messagepack\",\"version\":2}\x1e"[..]);
    encode_invocation(
        Protocol::MessagePack,
        &mut buf,
        Some("0"),
        "Send",
        &("\x1e",),
    )
    .unwrap();
    encode_ping(Protocol::MessagePack, &mut buf);

    let request = HandshakeDecoder::new(1024)
        .decode_request(&mut buf)
        .unwrap()
        .unwrap();
    let protocol = request.resolve_protocol().unwrap();
    let messages = decode_all(&mut Decoder::new(protocol, 1024), &mut buf);
    assert_eq!(messages.len(), 2);
    let HubMessage::Invocation(invocation) = &messages[0] else {
        panic!("not an invocation");
    };
    // A 0x1E inside binary data is just data.
    assert_eq!(
        invocation.arguments.deserialize::<String>(0).unwrap(),
        "\x1e"
    );
}

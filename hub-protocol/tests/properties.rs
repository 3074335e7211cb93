//! Property tests for both parsers: hostile bytes never panic, encoded messages decode to
//! themselves however the stream is split, and values survive a change of protocol.

use bytes::BytesMut;
use hub_protocol::{
    Ack, Arguments, CancelInvocation, Close, Completion, CompletionResult, Decoder, EncodedValue,
    HandshakeDecoder, Headers, HubMessage, Invocation, Protocol, Sequence, StreamInvocation,
    StreamItem, encode_message,
};
use proptest::prelude::*;
use serde_json::{Number, Value};

const MAX: usize = 64 * 1024;

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::Json), Just(Protocol::MessagePack)]
}

/// Any text, including control characters, quotes and the record separator.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            any::<char>(),
            Just('"'),
            Just('\\'),
            Just('\u{1e}'),
            Just('\n')
        ],
        0..max,
    )
    .prop_map(String::from_iter)
}

fn non_empty_text() -> impl Strategy<Value = String> {
    text(12).prop_filter("non-empty", |text| !text.is_empty())
}

/// JSON-compatible values: what application arguments look like.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        text(16).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(8), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn headers() -> impl Strategy<Value = Headers> {
    prop::collection::btree_map(text(8), text(8), 0..3)
}

fn encoded(protocol: Protocol) -> impl Strategy<Value = EncodedValue> {
    json_value().prop_map(move |value| EncodedValue::encode(protocol, &value).unwrap())
}

fn arguments(protocol: Protocol) -> impl Strategy<Value = Arguments> {
    prop::collection::vec(json_value(), 0..5)
        .prop_map(move |values| Arguments::encode(protocol, &values).unwrap())
}

fn message(protocol: Protocol) -> impl Strategy<Value = HubMessage> {
    let stream_ids = || prop::collection::vec(text(6), 0..3);
    prop_oneof![
        (
            headers(),
            prop::option::of(non_empty_text()),
            non_empty_text(),
            arguments(protocol),
            stream_ids()
        )
            .prop_map(|(headers, invocation_id, target, arguments, stream_ids)| {
                HubMessage::Invocation(Invocation {
                    headers,
                    invocation_id,
                    target,
                    arguments,
                    stream_ids,
                })
            }),
        (
            headers(),
            non_empty_text(),
            non_empty_text(),
            arguments(protocol),
            stream_ids()
        )
            .prop_map(|(headers, invocation_id, target, arguments, stream_ids)| {
                HubMessage::StreamInvocation(StreamInvocation {
                    headers,
                    invocation_id,
                    target,
                    arguments,
                    stream_ids,
                })
            }),
        (headers(), non_empty_text(), encoded(protocol)).prop_map(
            |(headers, invocation_id, item)| {
                HubMessage::StreamItem(StreamItem {
                    headers,
                    invocation_id,
                    item,
                })
            }
        ),
        (
            headers(),
            non_empty_text(),
            prop_oneof![
                Just(CompletionResult::Void),
                encoded(protocol).prop_map(CompletionResult::Value),
                text(20).prop_map(CompletionResult::Error),
            ]
        )
            .prop_map(|(headers, invocation_id, result)| {
                HubMessage::Completion(Completion {
                    headers,
                    invocation_id,
                    result,
                })
            }),
        (headers(), non_empty_text()).prop_map(|(headers, invocation_id)| {
            HubMessage::CancelInvocation(CancelInvocation {
                headers,
                invocation_id,
            })
        }),
        Just(HubMessage::Ping),
        (prop::option::of(text(20)), any::<bool>()).prop_map(|(error, allow_reconnect)| {
            HubMessage::Close(Close {
                error,
                allow_reconnect,
            })
        }),
        any::<u64>().prop_map(|sequence_id| HubMessage::Ack(Ack { sequence_id })),
        any::<u64>().prop_map(|sequence_id| HubMessage::Sequence(Sequence { sequence_id })),
    ]
}

fn protocol_and_messages() -> impl Strategy<Value = (Protocol, Vec<HubMessage>)> {
    protocol().prop_flat_map(|protocol| {
        (
            Just(protocol),
            prop::collection::vec(message(protocol), 1..6),
        )
    })
}

fn encode_all(protocol: Protocol, messages: &[HubMessage]) -> BytesMut {
    let mut buf = BytesMut::new();
    for message in messages {
        encode_message(protocol, &mut buf, message).unwrap();
    }
    buf
}

/// Feeds `stream` to a decoder in the given pieces, collecting every message.
fn decode_in_pieces(protocol: Protocol, stream: &[u8], cuts: &[usize]) -> Vec<HubMessage> {
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (stream.len() + 1)).collect();
    cuts.push(stream.len());
    cuts.sort_unstable();
    let mut decoder = Decoder::new(protocol, MAX);
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut from = 0;
    for cut in cuts {
        buf.extend_from_slice(&stream[from..cut]);
        from = cut;
        while let Some(message) = decoder.decode(&mut buf).unwrap() {
            messages.push(message);
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    messages
}

/// Decodes hostile input in pieces, exercising everything a caller would do with what comes
/// out, and checks only that nothing panics and the loop ends.
fn chew(protocol: Protocol, bytes: &[u8], cuts: &[usize]) {
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut decoder = Decoder::new(protocol, 1024);
    let mut buf = BytesMut::new();
    let mut from = 0;
    'feed: for cut in cuts {
        buf.extend_from_slice(&bytes[from..cut]);
        from = cut;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(message)) => use_message(&message),
                Ok(None) => break,
                Err(error) if error.can_continue() => {}
                Err(_) => break 'feed,
            }
        }
    }
    let mut handshake = BytesMut::from(bytes);
    let _ = HandshakeDecoder::new(1024).decode_request(&mut handshake);
    let mut handshake = BytesMut::from(bytes);
    let _ = HandshakeDecoder::new(1024).decode_response(&mut handshake);
}

fn use_message(message: &HubMessage) {
    let values: Vec<EncodedValue> = match message {
        HubMessage::Invocation(invocation) => invocation.arguments.iter().collect(),
        HubMessage::StreamInvocation(invocation) => invocation.arguments.iter().collect(),
        HubMessage::StreamItem(item) => vec![item.item.clone()],
        HubMessage::Completion(Completion {
            result: CompletionResult::Value(value),
            ..
        }) => vec![value.clone()],
        _ => Vec::new(),
    };
    for value in &values {
        let _ = value.deserialize::<Value>();
        let _ = value.deserialize::<serde::de::IgnoredAny>();
        let _ = value.deserialize::<(String, i64, Vec<f64>)>();
    }
    for protocol in Protocol::ALL {
        let mut buf = BytesMut::new();
        let _ = encode_message(protocol, &mut buf, message);
    }
}

/// What a receiver sees of each value once typed, regardless of encoding.
fn typed_view(message: &HubMessage) -> Vec<Value> {
    let decode = |value: EncodedValue| value.deserialize::<Value>().unwrap();
    match message {
        HubMessage::Invocation(invocation) => invocation.arguments.iter().map(decode).collect(),
        HubMessage::StreamInvocation(invocation) => {
            invocation.arguments.iter().map(decode).collect()
        }
        HubMessage::StreamItem(item) => vec![decode(item.item.clone())],
        HubMessage::Completion(Completion {
            result: CompletionResult::Value(value),
            ..
        }) => vec![decode(value.clone())],
        _ => Vec::new(),
    }
}

proptest! {

    #[test]
    fn encoded_messages_decode_to_themselves((protocol, messages) in protocol_and_messages()) {
        let stream = encode_all(protocol, &messages);
        prop_assert_eq!(decode_in_pieces(protocol, &stream, &[]), messages);
    }

    #[test]
    fn any_split_of_a_stream_decodes_to_the_same_messages(
        (protocol, messages) in protocol_and_messages(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let stream = encode_all(protocol, &messages);
        prop_assert_eq!(decode_in_pieces(protocol, &stream, &cuts), messages);
    }

    #[test]
    fn messages_survive_a_change_of_protocol((protocol, messages) in protocol_and_messages()) {
        let other = match protocol {
            Protocol::Json => Protocol::MessagePack,
            Protocol::MessagePack => Protocol::Json,
        };
        let converted = decode_in_pieces(other, &encode_all(other, &messages), &[]);
        prop_assert_eq!(converted.len(), messages.len());
        for (original, converted) in messages.iter().zip(&converted) {
            prop_assert_eq!(original.message_type(), converted.message_type());
            prop_assert_eq!(typed_view(original), typed_view(converted));
        }
        // And back: the bytes are the same as the original encoding.
        prop_assert_eq!(encode_all(protocol, &converted), encode_all(protocol, &messages));
    }

    #[test]
    fn random_bytes_never_panic(
        protocol in protocol(),
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        chew(protocol, &bytes, &cuts);
    }

    #[test]
    fn corrupted_valid_streams_never_panic(
        (protocol, messages) in protocol_and_messages(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut stream = encode_all(protocol, &messages).to_vec();
        for (at, byte) in flips {
            let at = at % stream.len();
            stream[at] = byte;
        }
        chew(protocol, &stream, &cuts);
    }
}

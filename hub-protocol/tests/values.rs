//! Typed access to arguments, stream items and results, and serde settings that must match
//! what the official clients send and expect.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bytes::BytesMut;
use hub_protocol::{
    ArgumentError, Arguments, CompletionResult, Decoder, EncodeError, EncodedValue, HubMessage,
    Protocol, encode_completion_value, encode_invocation, encode_message,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Person {
    name: String,
    age: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Mood {
    Happy,
    Tired { hours: u8 },
}

fn msgpack(bytes: &[u8]) -> EncodedValue {
    // Build a value from raw bytes the way a decoded frame would hold it: through a
    // StreamItem frame [2, {}, "1", value].
    let mut body = vec![0x94, 0x02, 0x80, 0xa1, b'1'];
    body.extend_from_slice(bytes);
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[body.len() as u8]);
    frame.extend_from_slice(&body);
    match Decoder::new(Protocol::MessagePack, 1024).decode(&mut frame) {
        Ok(Some(HubMessage::StreamItem(item))) => item.item,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn messagepack_integers_bind_to_any_fitting_number_type() {
    // @msgpack/msgpack writes 42 as a positive fixint, 300 as uint16, -5 as a negative
    // fixint, 1.5 as float64.
    let small = msgpack(&[0x2a]);
    assert_eq!(small.deserialize::<i64>().unwrap(), 42);
    assert_eq!(small.deserialize::<u8>().unwrap(), 42);
    assert_eq!(small.deserialize::<i32>().unwrap(), 42);
    assert_eq!(small.deserialize::<f64>().unwrap(), 42.0);
    assert_eq!(small.deserialize::<f32>().unwrap(), 42.0);

    let medium = msgpack(&[0xcd, 0x01, 0x2c]);
    assert_eq!(medium.deserialize::<i64>().unwrap(), 300);
    assert_eq!(medium.deserialize::<f64>().unwrap(), 300.0);
    assert!(medium.deserialize::<u8>().is_err(), "300 does not fit a u8");

    let negative = msgpack(&[0xfb]);
    assert_eq!(negative.deserialize::<i64>().unwrap(), -5);
    assert_eq!(negative.deserialize::<i8>().unwrap(), -5);
    assert!(negative.deserialize::<u64>().is_err());

    let float = msgpack(&[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
    assert_eq!(float.deserialize::<f64>().unwrap(), 1.5);
    assert!(
        float.deserialize::<i64>().is_err(),
        "a float is not an integer"
    );
}

#[test]
fn javascript_objects_bind_to_structs() {
    // { name: "Ann", age: 7 } as @msgpack/msgpack encodes it: a map with string keys.
    let mut bytes = vec![0x82, 0xa4];
    bytes.extend_from_slice(b"name");
    bytes.extend_from_slice(&[0xa3, b'A', b'n', b'n', 0xa3]);
    bytes.extend_from_slice(b"age");
    bytes.push(0x07);
    let person: Person = msgpack(&bytes).deserialize().unwrap();
    assert_eq!(
        person,
        Person {
            name: "Ann".into(),
            age: 7
        }
    );

    // And we encode structs the same way, so JavaScript gets an object back.
    let encoded = EncodedValue::encode(Protocol::MessagePack, &person).unwrap();
    assert_eq!(encoded.as_bytes(), bytes);

    let json = EncodedValue::encode(Protocol::Json, &person).unwrap();
    assert_eq!(json.as_bytes(), br#"{"name":"Ann","age":7}"#);
}

#[test]
fn enums_and_human_readable_types_look_the_same_in_both_protocols() {
    for protocol in Protocol::ALL {
        let happy = EncodedValue::encode(protocol, &Mood::Happy).unwrap();
        let tired = EncodedValue::encode(protocol, &Mood::Tired { hours: 3 }).unwrap();
        assert_eq!(happy.deserialize::<String>().unwrap(), "Happy");
        assert_eq!(happy.deserialize::<Mood>().unwrap(), Mood::Happy);
        assert_eq!(
            tired.deserialize::<Mood>().unwrap(),
            Mood::Tired { hours: 3 }
        );

        let address: IpAddr = "127.0.0.1".parse().unwrap();
        let encoded = EncodedValue::encode(protocol, &address).unwrap();
        assert_eq!(encoded.deserialize::<String>().unwrap(), "127.0.0.1");
        assert_eq!(encoded.deserialize::<IpAddr>().unwrap(), address);
    }
}

#[test]
fn argument_errors_say_which_argument_and_why() {
    for protocol in Protocol::ALL {
        let args = Arguments::encode(protocol, &("alice", 7)).unwrap();
        assert!(args.check_count(2).is_ok());
        let count = args.check_count(3).unwrap_err();
        assert_eq!(
            count.to_string(),
            "invocation provides 2 argument(s) but target expects 3"
        );

        let missing = args.deserialize::<String>(2).unwrap_err();
        assert!(matches!(
            missing,
            ArgumentError::Missing { index: 2, count: 2 }
        ));
        assert_eq!(
            missing.to_string(),
            "no argument at index 2: invocation provides 2 argument(s)"
        );

        let invalid = args.deserialize::<u32>(0).unwrap_err();
        assert!(matches!(invalid, ArgumentError::Invalid { index: 0, .. }));
        let text = invalid.to_string();
        let expected = match protocol {
            Protocol::Json => {
                "argument at index 0 is invalid: invalid type: string \"alice\", expected u32"
            }
            Protocol::MessagePack => {
                "argument at index 0 is invalid: invalid type: found a string while deserializing `u32`"
            }
        };
        assert!(text.starts_with(expected), "{protocol}: {text}");

        let invalid = args.deserialize::<Person>(1).unwrap_err().to_string();
        assert!(invalid.contains("index 1"), "{invalid}");
        assert!(invalid.contains("struct Person"), "{invalid}");
    }
}

#[test]
fn arguments_must_be_a_sequence_and_unit_means_none() {
    for protocol in Protocol::ALL {
        assert!(Arguments::encode(protocol, &()).unwrap().is_empty());
        assert!(
            Arguments::encode(protocol, &Vec::<u8>::new())
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            Arguments::encode(protocol, &["a", "b", "c"]).unwrap().len(),
            3
        );

        let mut buf = BytesMut::from(&b"already here"[..]);
        encode_invocation(protocol, &mut buf, None, "Go", &()).unwrap();
        let mut tail = buf.split_off(12);
        assert_eq!(&buf[..], b"already here");
        let Some(HubMessage::Invocation(invocation)) =
            Decoder::new(protocol, 1024).decode(&mut tail).unwrap()
        else {
            panic!("not an invocation");
        };
        assert!(invocation.arguments.is_empty());

        let mut buf = BytesMut::from(&b"kept"[..]);
        let error = encode_invocation(
            protocol,
            &mut buf,
            Some("1"),
            "Go",
            &Person {
                name: "x".into(),
                age: 1,
            },
        )
        .unwrap_err();
        assert!(matches!(error, EncodeError::ArgumentsNotSequence));
        assert_eq!(
            &buf[..],
            b"kept",
            "a failed encode leaves the buffer as it was"
        );
    }
}

#[test]
fn serialization_errors_leave_the_buffer_untouched() {
    // JSON object keys must be strings.
    let mut map = BTreeMap::new();
    map.insert(vec![1u8], 1u8);
    let mut buf = BytesMut::from(&b"kept"[..]);
    let error = encode_completion_value(Protocol::Json, &mut buf, "1", &map).unwrap_err();
    assert!(matches!(error, EncodeError::Json(_)), "{error}");
    assert_eq!(&buf[..], b"kept");
}

#[test]
fn values_are_transcoded_between_protocols() {
    let mut json = BytesMut::new();
    encode_invocation(
        Protocol::Json,
        &mut json,
        Some("9"),
        "Send",
        &(
            "alice",
            -3,
            u64::MAX,
            2.5,
            Person {
                name: "Bo".into(),
                age: 70_000,
            },
            vec![Some(true), None],
        ),
    )
    .unwrap();
    let message = Decoder::new(Protocol::Json, 4096)
        .decode(&mut json)
        .unwrap()
        .unwrap();

    let mut packed = BytesMut::new();
    encode_message(Protocol::MessagePack, &mut packed, &message).unwrap();
    let Some(HubMessage::Invocation(invocation)) = Decoder::new(Protocol::MessagePack, 4096)
        .decode(&mut packed)
        .unwrap()
    else {
        panic!("not an invocation");
    };
    let args = &invocation.arguments;
    assert_eq!(args.protocol(), Protocol::MessagePack);
    assert_eq!(args.deserialize::<String>(0).unwrap(), "alice");
    assert_eq!(args.deserialize::<i64>(1).unwrap(), -3);
    assert_eq!(args.deserialize::<u64>(2).unwrap(), u64::MAX);
    assert_eq!(args.deserialize::<f64>(3).unwrap(), 2.5);
    assert_eq!(
        args.deserialize::<Person>(4).unwrap(),
        Person {
            name: "Bo".into(),
            age: 70_000
        }
    );
    assert_eq!(
        args.deserialize::<Vec<Option<bool>>>(5).unwrap(),
        vec![Some(true), None]
    );
    // The struct arrived as a JSON object and leaves as a map with field names.
    assert_eq!(args.get(4).unwrap().as_bytes()[0], 0x82);

    // And back to JSON, byte for byte.
    let mut back = BytesMut::new();
    encode_message(
        Protocol::Json,
        &mut back,
        &HubMessage::Invocation(invocation),
    )
    .unwrap();
    let mut original = BytesMut::new();
    encode_message(Protocol::Json, &mut original, &message).unwrap();
    assert_eq!(back, original);
}

#[test]
fn messagepack_binary_and_extensions_in_json() {
    let binary = msgpack(&[0xc4, 0x03, 0x01, 0x02, 0xff]);
    assert_eq!(binary.deserialize::<Vec<u8>>().unwrap(), [1, 2, 255]);
    let mut buf = BytesMut::new();
    encode_completion_value(Protocol::Json, &mut buf, "1", &binary).unwrap();
    assert_eq!(
        &buf[..],
        b"{\"type\":3,\"invocationId\":\"1\",\"result\":[1,2,255]}\x1e"
    );

    // A JavaScript Date: the timestamp extension, type -1. JSON has no extension type.
    let timestamp = msgpack(&[0xd6, 0xff, 0, 0, 0, 1]);
    let mut buf = BytesMut::new();
    encode_completion_value(Protocol::Json, &mut buf, "1", &timestamp).unwrap();
    assert_eq!(
        &buf[..],
        b"{\"type\":3,\"invocationId\":\"1\",\"result\":[-1,[0,0,0,1]]}\x1e"
    );
}

#[test]
fn messagepack_values_survive_serialization_into_messagepack() {
    // Binary stays binary and extensions stay extensions when an encoded value is passed
    // to an encode function as a serializable value.
    for bytes in [
        &[0xc4, 0x03, 0x01, 0x02, 0xff][..],
        &[0xd6, 0xff, 0, 0, 0, 1],
        &[0xc7, 0x03, 0x05, 0xaa, 0xbb, 0xcc],
        &[0x82, 0xa1, b'a', 0xc4, 0x00, 0x01, 0xd4, 0x01, 0x02],
        &[0xca, 0x3f, 0xc0, 0, 0],
    ] {
        let value = msgpack(bytes);
        let mut buf = BytesMut::new();
        encode_completion_value(Protocol::MessagePack, &mut buf, "1", &value).unwrap();
        let Some(HubMessage::Completion(completion)) = Decoder::new(Protocol::MessagePack, 64)
            .decode(&mut buf)
            .unwrap()
        else {
            panic!("not a completion");
        };
        assert_eq!(completion.result, CompletionResult::Value(value));
    }
}

#[test]
fn borrowed_and_owned_strings() {
    let json = EncodedValue::encode(Protocol::Json, "plain").unwrap();
    assert_eq!(json.deserialize::<&str>().unwrap(), "plain");
    let escaped = EncodedValue::encode(Protocol::Json, "tab\there").unwrap();
    assert!(
        escaped.deserialize::<&str>().is_err(),
        "escapes cannot be borrowed"
    );
    assert_eq!(escaped.deserialize::<String>().unwrap(), "tab\there");
    let packed = EncodedValue::encode(Protocol::MessagePack, "tab\there").unwrap();
    assert_eq!(packed.deserialize::<&str>().unwrap(), "tab\there");
}

#[test]
fn debug_output_is_readable() {
    let args = Arguments::encode(Protocol::Json, &("a", 1)).unwrap();
    assert_eq!(format!("{args:?}"), r#"[json:"a", json:1]"#);
    let value = EncodedValue::encode(Protocol::MessagePack, &[1, 2]).unwrap();
    assert_eq!(format!("{value:?}"), "messagepack:920102");
}

#[test]
fn hostile_nesting_fails_cleanly() {
    let depth = 100_000;
    for protocol in Protocol::ALL {
        // An invocation whose only argument is an array nested 100,000 deep.
        let mut buf = BytesMut::new();
        match protocol {
            Protocol::Json => {
                buf.extend_from_slice(b"{\"type\":1,\"target\":\"x\",\"arguments\":[");
                buf.extend_from_slice(&vec![b'['; depth]);
                buf.extend_from_slice(&vec![b']'; depth]);
                buf.extend_from_slice(b"]}\x1e");
            }
            Protocol::MessagePack => {
                let mut body = vec![0x95, 0x01, 0x80, 0xc0, 0xa1, b'x', 0x91];
                body.extend_from_slice(&vec![0x91; depth - 1]);
                body.push(0x90);
                // VarInt prefix for a body of 100,007 bytes.
                let mut len = body.len();
                while len >= 0x80 {
                    buf.extend_from_slice(&[(len as u8) | 0x80]);
                    len >>= 7;
                }
                buf.extend_from_slice(&[len as u8]);
                buf.extend_from_slice(&body);
            }
        }
        // The frame scanners are iterative: the message decodes.
        let Ok(Some(message)) = Decoder::new(protocol, 1 << 20).decode(&mut buf) else {
            panic!("{protocol}: the message does not decode");
        };
        let HubMessage::Invocation(invocation) = &message else {
            panic!("not an invocation");
        };
        // Typed access stops at 128 levels in both protocols.
        let Err(error) = invocation.arguments.deserialize::<serde_json::Value>(0) else {
            panic!("{protocol}: 100,000 levels deserialized");
        };
        let text = error.to_string();
        assert!(
            text.contains("recursion limit") || text.contains("depth"),
            "{protocol}: {text}"
        );
        // So does converting it to the other protocol, and the buffer is left clean.
        for target in Protocol::ALL.into_iter().filter(|&other| other != protocol) {
            let mut out = BytesMut::new();
            assert!(encode_message(target, &mut out, &message).is_err());
            assert!(out.is_empty());
        }
        // Within the same protocol the bytes are copied as they are.
        let mut out = BytesMut::new();
        encode_message(protocol, &mut out, &message).unwrap();
        assert!(out.len() > depth);
    }
}

#[test]
fn encode_completion_copies_values_already_in_the_protocol() {
    use hub_protocol::encode_completion;

    // An ext 8 of two bytes: a re-encoding would shorten it to a fixext 2, a copy does not.
    let value = msgpack(&[0xc7, 0x02, 0x05, 0xaa, 0xbb]);
    let mut buf = BytesMut::new();
    encode_completion(
        Protocol::MessagePack,
        &mut buf,
        "1",
        &CompletionResult::Value(value),
    )
    .unwrap();
    assert_eq!(
        &buf[..],
        [
            0x0b, 0x95, 0x03, 0x80, 0xa1, b'1', 0x03, 0xc7, 0x02, 0x05, 0xaa, 0xbb
        ]
    );

    // Void, error, and a value converted to the other protocol.
    let person = EncodedValue::encode(
        Protocol::MessagePack,
        &Person {
            name: "Ann".into(),
            age: 7,
        },
    )
    .unwrap();
    let mut buf = BytesMut::new();
    for result in [
        CompletionResult::Void,
        CompletionResult::Error("boom".into()),
        CompletionResult::Value(person),
    ] {
        encode_completion(Protocol::Json, &mut buf, "1", &result).unwrap();
    }
    assert_eq!(
        &buf[..],
        &b"{\"type\":3,\"invocationId\":\"1\"}\x1e\
           {\"type\":3,\"invocationId\":\"1\",\"error\":\"boom\"}\x1e\
           {\"type\":3,\"invocationId\":\"1\",\"result\":{\"name\":\"Ann\",\"age\":7}}\x1e"[..]
    );
}

#[test]
fn values_from_the_wire_are_one_well_formed_value() {
    use bytes::Bytes;
    let json =
        |text: &'static [u8]| EncodedValue::from_wire(Protocol::Json, Bytes::from_static(text));
    assert_eq!(
        json(b"{\"a\":[1,\"\xc3\xa9\"]}")
            .unwrap()
            .deserialize::<BTreeMap<String, (u8, String)>>()
            .unwrap()["a"],
        (1, "\u{e9}".to_owned())
    );
    // Not UTF-8 inside a string (serde_json alone would skip it unchecked), two values,
    // half a value.
    for bad in [&b"\"\xff\""[..], b"\"\xc3\"", b"1 2", b"[1,"] {
        assert!(
            EncodedValue::from_wire(Protocol::Json, Bytes::from_static(bad)).is_err(),
            "{bad:?} is refused"
        );
    }
    assert!(
        EncodedValue::from_wire(Protocol::MessagePack, Bytes::from_static(&[0x92, 0x01])).is_err()
    );
    assert!(
        EncodedValue::from_wire(Protocol::MessagePack, Bytes::from_static(&[0x01, 0x02])).is_err()
    );
    assert!(
        EncodedValue::from_wire(Protocol::MessagePack, Bytes::from_static(&[0x91, 0x01])).is_ok()
    );
}

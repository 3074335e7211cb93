//! Exact frames: the examples of the normative spec (HubProtocol.md in dotnet/aspnetcore) and
//! the frames the official JavaScript clients (`@microsoft/signalr`,
//! `@microsoft/signalr-protocol-msgpack`) put on the wire.

use bytes::BytesMut;
use hub_protocol::{
    Ack, CancelInvocation, Close, Completion, CompletionResult, Decoder, HubMessage, Protocol,
    Sequence, encode_ack, encode_cancel_invocation, encode_close, encode_completion_error,
    encode_completion_value, encode_completion_void, encode_invocation, encode_message,
    encode_ping, encode_sequence, encode_stream_invocation, encode_stream_item,
};

const MAX: usize = 32 * 1024;

/// Prefixes a MessagePack body with its VarInt length (bodies here are under 128 bytes).
fn framed(body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut frame = vec![body.len() as u8];
    frame.extend_from_slice(body);
    frame
}

fn decode_one(protocol: Protocol, bytes: &[u8]) -> HubMessage {
    let mut buf = BytesMut::from(bytes);
    let message = Decoder::new(protocol, MAX)
        .decode(&mut buf)
        .expect("valid frame")
        .expect("complete frame");
    assert!(buf.is_empty(), "the whole frame is consumed");
    message
}

fn reencode(protocol: Protocol, message: &HubMessage) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_message(protocol, &mut buf, message).unwrap();
    buf.to_vec()
}

mod messagepack_spec_examples {
    use super::*;

    const P: Protocol = Protocol::MessagePack;

    #[test]
    fn invocation() {
        let body = [
            0x96, 0x01, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64,
            0x91, 0x2a, 0x90,
        ];
        let HubMessage::Invocation(invocation) = decode_one(P, &framed(&body)) else {
            panic!("not an invocation");
        };
        assert!(invocation.headers.is_empty());
        assert_eq!(invocation.invocation_id.as_deref(), Some("xyz"));
        assert_eq!(invocation.target, "method");
        assert_eq!(invocation.arguments.len(), 1);
        assert_eq!(invocation.arguments.deserialize::<i32>(0).unwrap(), 42);
        assert!(invocation.stream_ids.is_empty());

        let mut buf = BytesMut::new();
        encode_invocation(P, &mut buf, Some("xyz"), "method", &(42,)).unwrap();
        assert_eq!(&buf[..], framed(&body));
        assert_eq!(
            reencode(P, &HubMessage::Invocation(invocation)),
            framed(&body)
        );
    }

    #[test]
    fn non_blocking_invocation() {
        let body = [
            0x96, 0x01, 0x80, 0xc0, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x91, 0x2a, 0x90,
        ];
        let HubMessage::Invocation(invocation) = decode_one(P, &framed(&body)) else {
            panic!("not an invocation");
        };
        assert_eq!(invocation.invocation_id, None);
        assert_eq!(invocation.arguments.deserialize::<u8>(0).unwrap(), 42);

        let mut buf = BytesMut::new();
        encode_invocation(P, &mut buf, None, "method", &[42]).unwrap();
        assert_eq!(&buf[..], framed(&body));
    }

    #[test]
    fn stream_invocation() {
        let body = [
            0x96, 0x04, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64,
            0x91, 0x2a, 0x90,
        ];
        let HubMessage::StreamInvocation(invocation) = decode_one(P, &framed(&body)) else {
            panic!("not a stream invocation");
        };
        assert_eq!(invocation.invocation_id, "xyz");
        assert_eq!(invocation.target, "method");
        assert_eq!(invocation.arguments.deserialize::<i64>(0).unwrap(), 42);

        let mut buf = BytesMut::new();
        encode_stream_invocation(P, &mut buf, "xyz", "method", &vec![42u64]).unwrap();
        assert_eq!(&buf[..], framed(&body));
    }

    #[test]
    fn stream_item() {
        let body = [0x94, 0x02, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x2a];
        let HubMessage::StreamItem(item) = decode_one(P, &framed(&body)) else {
            panic!("not a stream item");
        };
        assert_eq!(item.invocation_id, "xyz");
        assert_eq!(item.item.deserialize::<f64>().unwrap(), 42.0);

        let mut buf = BytesMut::new();
        encode_stream_item(P, &mut buf, "xyz", &42).unwrap();
        assert_eq!(&buf[..], framed(&body));
    }

    #[test]
    fn completions() {
        let error = [
            0x95, 0x03, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x01, 0xa5, 0x45, 0x72, 0x72, 0x6f, 0x72,
        ];
        let void = [0x94, 0x03, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x02];
        let value = [0x95, 0x03, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x03, 0x2a];

        assert_eq!(
            decode_one(P, &framed(&error)),
            HubMessage::Completion(Completion {
                headers: Default::default(),
                invocation_id: "xyz".into(),
                result: CompletionResult::Error("Error".into()),
            })
        );
        assert_eq!(
            decode_one(P, &framed(&void)),
            HubMessage::Completion(Completion {
                headers: Default::default(),
                invocation_id: "xyz".into(),
                result: CompletionResult::Void,
            })
        );
        let HubMessage::Completion(Completion {
            result: CompletionResult::Value(result),
            ..
        }) = decode_one(P, &framed(&value))
        else {
            panic!("not a completion with a value");
        };
        assert_eq!(result.deserialize::<i16>().unwrap(), 42);

        let mut buf = BytesMut::new();
        encode_completion_error(P, &mut buf, "xyz", "Error").unwrap();
        assert_eq!(&buf.split()[..], framed(&error));
        encode_completion_void(P, &mut buf, "xyz").unwrap();
        assert_eq!(&buf.split()[..], framed(&void));
        encode_completion_value(P, &mut buf, "xyz", &42).unwrap();
        assert_eq!(&buf.split()[..], framed(&value));
    }

    #[test]
    fn cancel_invocation() {
        let body = [0x93, 0x05, 0x80, 0xa3, 0x78, 0x79, 0x7a];
        assert_eq!(
            decode_one(P, &framed(&body)),
            HubMessage::CancelInvocation(CancelInvocation {
                headers: Default::default(),
                invocation_id: "xyz".into(),
            })
        );
        let mut buf = BytesMut::new();
        encode_cancel_invocation(P, &mut buf, "xyz").unwrap();
        assert_eq!(&buf[..], framed(&body));
    }

    #[test]
    fn ping_is_exactly_0x91_0x06() {
        assert_eq!(decode_one(P, &[0x02, 0x91, 0x06]), HubMessage::Ping);
        let mut buf = BytesMut::new();
        encode_ping(P, &mut buf);
        assert_eq!(&buf[..], [0x02, 0x91, 0x06]);
        assert_eq!(reencode(P, &HubMessage::Ping), [0x02, 0x91, 0x06]);
    }

    #[test]
    fn close() {
        // Two elements (the spec's first example) and three.
        assert_eq!(
            decode_one(P, &framed(&[0x92, 0x07, 0xa3, 0x78, 0x79, 0x7a])),
            HubMessage::Close(Close {
                error: Some("xyz".into()),
                allow_reconnect: false,
            })
        );
        let with_reconnect = [0x93, 0x07, 0xa3, 0x78, 0x79, 0x7a, 0xc3];
        assert_eq!(
            decode_one(P, &framed(&with_reconnect)),
            HubMessage::Close(Close {
                error: Some("xyz".into()),
                allow_reconnect: true,
            })
        );
        // What the JavaScript client sends when it stops: [7, null].
        assert_eq!(
            decode_one(P, &framed(&[0x92, 0x07, 0xc0])),
            HubMessage::Close(Close::default())
        );

        let mut buf = BytesMut::new();
        encode_close(P, &mut buf, Some("xyz"), true).unwrap();
        assert_eq!(&buf.split()[..], framed(&with_reconnect));
        // Like ASP.NET Core, always three elements, nil for no error.
        encode_close(P, &mut buf, None, false).unwrap();
        assert_eq!(&buf.split()[..], framed(&[0x93, 0x07, 0xc0, 0xc2]));
    }

    #[test]
    fn ack_and_sequence() {
        assert_eq!(
            decode_one(P, &framed(&[0x92, 0x08, 0xcc, 0x24])),
            HubMessage::Ack(Ack { sequence_id: 36 })
        );
        assert_eq!(
            decode_one(P, &framed(&[0x92, 0x09, 0xcc, 0x13])),
            HubMessage::Sequence(Sequence { sequence_id: 19 })
        );
        // Any unsigned size is fine on input; output uses the smallest.
        let mut buf = BytesMut::new();
        encode_ack(P, &mut buf, 36);
        assert_eq!(&buf.split()[..], framed(&[0x92, 0x08, 0x24]));
        encode_sequence(P, &mut buf, 19);
        assert_eq!(&buf.split()[..], framed(&[0x92, 0x09, 0x13]));
        encode_ack(P, &mut buf, u64::MAX);
        assert_eq!(
            &buf.split()[..],
            framed(&[
                0x92, 0x08, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ])
        );
        encode_sequence(P, &mut buf, 1394);
        assert_eq!(&buf.split()[..], framed(&[0x92, 0x09, 0xcd, 0x05, 0x72]));
    }

    #[test]
    fn headers() {
        let body = [
            0x96, 0x01, 0x82, 0xa1, 0x78, 0xa1, 0x79, 0xa1, 0x7a, 0xa1, 0x7a, 0xa3, 0x78, 0x79,
            0x7a, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x91, 0x2a, 0x90,
        ];
        let message = decode_one(P, &framed(&body));
        let HubMessage::Invocation(invocation) = &message else {
            panic!("not an invocation");
        };
        assert_eq!(invocation.headers.len(), 2);
        assert_eq!(invocation.headers["x"], "y");
        assert_eq!(invocation.headers["z"], "z");
        assert_eq!(reencode(P, &message), framed(&body));
    }
}

mod messagepack_javascript_client {
    use super::*;

    const P: Protocol = Protocol::MessagePack;

    #[test]
    fn invoke_without_stream_ids_has_five_elements() {
        // connection.invoke("SendMessage", "u", "m"): [1, {}, "0", "SendMessage", ["u", "m"]]
        let mut body = vec![0x95, 0x01, 0x80, 0xa1, b'0', 0xab];
        body.extend_from_slice(b"SendMessage");
        body.extend_from_slice(&[0x92, 0xa1, b'u', 0xa1, b'm']);
        let HubMessage::Invocation(invocation) = decode_one(P, &framed(&body)) else {
            panic!("not an invocation");
        };
        assert_eq!(invocation.invocation_id.as_deref(), Some("0"));
        assert_eq!(invocation.target, "SendMessage");
        assert_eq!(invocation.arguments.deserialize::<String>(0).unwrap(), "u");
        assert_eq!(invocation.arguments.deserialize::<&str>(1).unwrap(), "m");
        assert!(invocation.stream_ids.is_empty());
    }

    #[test]
    fn send_with_stream_ids() {
        // connection.send("Upload", subject): [1, {}, null, "Upload", [], ["1"]]
        let mut body = vec![0x96, 0x01, 0x80, 0xc0, 0xa6];
        body.extend_from_slice(b"Upload");
        body.extend_from_slice(&[0x90, 0x91, 0xa1, b'1']);
        let message = decode_one(P, &framed(&body));
        let HubMessage::Invocation(invocation) = &message else {
            panic!("not an invocation");
        };
        assert_eq!(invocation.invocation_id, None);
        assert!(invocation.arguments.is_empty());
        assert_eq!(invocation.stream_ids, ["1"]);
        assert_eq!(reencode(P, &message), framed(&body));
    }

    #[test]
    fn later_versions_may_append_elements() {
        // A StreamItem with an extra trailing element a future version might add.
        let body = [0x95, 0x02, 0x80, 0xa1, b'1', 0x2a, 0xc3];
        let HubMessage::StreamItem(item) = decode_one(P, &framed(&body)) else {
            panic!("not a stream item");
        };
        assert_eq!(item.item.deserialize::<u8>().unwrap(), 42);
    }
}

mod json_spec_examples {
    use super::*;

    const P: Protocol = Protocol::Json;

    fn decode_text(text: &str) -> HubMessage {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0x1e);
        decode_one(P, &bytes)
    }

    #[test]
    fn invocations() {
        let HubMessage::Invocation(invocation) = decode_text(
            r#"{
                "type": 1,
                "invocationId": "123",
                "target": "Send",
                "arguments": [
                    42,
                    "Test Message"
                ]
            }"#,
        ) else {
            panic!("not an invocation");
        };
        assert_eq!(invocation.invocation_id.as_deref(), Some("123"));
        assert_eq!(invocation.target, "Send");
        assert_eq!(invocation.arguments.deserialize::<u32>(0).unwrap(), 42);
        assert_eq!(
            invocation.arguments.deserialize::<String>(1).unwrap(),
            "Test Message"
        );
        assert_eq!(
            invocation.arguments.get(1).unwrap().as_bytes(),
            br#""Test Message""#
        );

        let HubMessage::Invocation(non_blocking) =
            decode_text(r#"{"type": 1, "target": "Send", "arguments": [42, "Test Message"]}"#)
        else {
            panic!("not an invocation");
        };
        assert_eq!(non_blocking.invocation_id, None);

        let HubMessage::Invocation(with_stream) = decode_text(
            r#"{"type": 1, "invocationId": "123", "target": "Send", "arguments": [42], "streamIds": ["1"]}"#,
        ) else {
            panic!("not an invocation");
        };
        assert_eq!(with_stream.stream_ids, ["1"]);

        let HubMessage::Invocation(with_headers) = decode_text(
            r#"{"type": 1, "headers": {"Foo": "Bar"}, "invocationId": "123", "target": "Send", "arguments": [42, "Test Message"]}"#,
        ) else {
            panic!("not an invocation");
        };
        assert_eq!(with_headers.headers["Foo"], "Bar");

        let mut buf = BytesMut::new();
        encode_invocation(P, &mut buf, Some("123"), "Send", &(42, "Test Message")).unwrap();
        assert_eq!(
            &buf[..],
            b"{\"type\":1,\"invocationId\":\"123\",\"target\":\"Send\",\"arguments\":[42,\"Test Message\"]}\x1e"
        );
        let mut buf = BytesMut::new();
        encode_message(P, &mut buf, &HubMessage::Invocation(with_headers)).unwrap();
        assert_eq!(
            &buf[..],
            b"{\"type\":1,\"headers\":{\"Foo\":\"Bar\"},\"invocationId\":\"123\",\"target\":\"Send\",\"arguments\":[42,\"Test Message\"]}\x1e"
        );
    }

    #[test]
    fn stream_invocation_and_item() {
        let HubMessage::StreamInvocation(invocation) = decode_text(
            r#"{"type": 4, "invocationId": "123", "target": "Send", "arguments": [42, "Test Message"]}"#,
        ) else {
            panic!("not a stream invocation");
        };
        assert_eq!(invocation.invocation_id, "123");

        let HubMessage::StreamItem(item) =
            decode_text(r#"{"type": 2, "invocationId": "123", "item": 42}"#)
        else {
            panic!("not a stream item");
        };
        assert_eq!(item.item.deserialize::<i8>().unwrap(), 42);

        let mut buf = BytesMut::new();
        encode_stream_invocation(P, &mut buf, "123", "Send", &(42, "Test Message")).unwrap();
        encode_stream_item(P, &mut buf, "123", &42).unwrap();
        assert_eq!(
            &buf[..],
            &b"{\"type\":4,\"invocationId\":\"123\",\"target\":\"Send\",\"arguments\":[42,\"Test Message\"]}\x1e\
               {\"type\":2,\"invocationId\":\"123\",\"item\":42}\x1e"[..]
        );
    }

    #[test]
    fn completions() {
        assert_eq!(
            decode_text(r#"{"type": 3, "invocationId": "123"}"#),
            HubMessage::Completion(Completion {
                headers: Default::default(),
                invocation_id: "123".into(),
                result: CompletionResult::Void,
            })
        );
        let HubMessage::Completion(Completion {
            result: CompletionResult::Value(value),
            ..
        }) = decode_text(r#"{"type": 3, "invocationId": "123", "result": 42}"#)
        else {
            panic!("not a completion with a value");
        };
        assert_eq!(value.deserialize::<u64>().unwrap(), 42);
        // A null result is a value, not void.
        let HubMessage::Completion(Completion {
            result: CompletionResult::Value(null),
            ..
        }) = decode_text(r#"{"type": 3, "invocationId": "123", "result": null}"#)
        else {
            panic!("not a completion with a value");
        };
        assert!(null.is_null());
        assert_eq!(null.deserialize::<Option<u8>>().unwrap(), None);
        assert_eq!(
            decode_text(r#"{"type": 3, "invocationId": "123", "error": "It didn't work!"}"#),
            HubMessage::Completion(Completion {
                headers: Default::default(),
                invocation_id: "123".into(),
                result: CompletionResult::Error("It didn't work!".into()),
            })
        );

        let mut buf = BytesMut::new();
        encode_completion_void(P, &mut buf, "123").unwrap();
        encode_completion_value(P, &mut buf, "123", &42).unwrap();
        encode_completion_value(P, &mut buf, "123", &None::<u8>).unwrap();
        encode_completion_error(P, &mut buf, "123", "It didn't work!").unwrap();
        assert_eq!(
            &buf[..],
            &b"{\"type\":3,\"invocationId\":\"123\"}\x1e\
               {\"type\":3,\"invocationId\":\"123\",\"result\":42}\x1e\
               {\"type\":3,\"invocationId\":\"123\",\"result\":null}\x1e\
               {\"type\":3,\"invocationId\":\"123\",\"error\":\"It didn't work!\"}\x1e"[..]
        );
    }

    #[test]
    fn control_messages() {
        assert_eq!(
            decode_text(r#"{"type": 5, "invocationId": "123"}"#),
            HubMessage::CancelInvocation(CancelInvocation {
                headers: Default::default(),
                invocation_id: "123".into(),
            })
        );
        assert_eq!(decode_text(r#"{"type": 6}"#), HubMessage::Ping);
        assert_eq!(
            decode_text(r#"{"type": 7}"#),
            HubMessage::Close(Close::default())
        );
        assert_eq!(
            decode_text(
                r#"{"type": 7, "error": "Connection closed because of an error!", "allowReconnect": true}"#
            ),
            HubMessage::Close(Close {
                error: Some("Connection closed because of an error!".into()),
                allow_reconnect: true,
            })
        );
        assert_eq!(
            decode_text(r#"{"type": 8, "sequenceId": 1394}"#),
            HubMessage::Ack(Ack { sequence_id: 1394 })
        );
        assert_eq!(
            decode_text(r#"{"type": 9, "sequenceId": 1234}"#),
            HubMessage::Sequence(Sequence { sequence_id: 1234 })
        );

        let mut buf = BytesMut::new();
        encode_cancel_invocation(P, &mut buf, "123").unwrap();
        encode_ping(P, &mut buf);
        encode_close(P, &mut buf, None, false).unwrap();
        encode_close(
            P,
            &mut buf,
            Some("Connection closed because of an error!"),
            true,
        )
        .unwrap();
        encode_ack(P, &mut buf, 1394);
        encode_sequence(P, &mut buf, 1234);
        assert_eq!(
            &buf[..],
            &b"{\"type\":5,\"invocationId\":\"123\"}\x1e\
               {\"type\":6}\x1e\
               {\"type\":7}\x1e\
               {\"type\":7,\"error\":\"Connection closed because of an error!\",\"allowReconnect\":true}\x1e\
               {\"type\":8,\"sequenceId\":1394}\x1e\
               {\"type\":9,\"sequenceId\":1234}\x1e"[..]
        );
    }
}

mod json_javascript_client {
    use super::*;

    const P: Protocol = Protocol::Json;

    #[test]
    fn frames_as_json_stringify_writes_them() {
        // JSON.stringify keeps the property order of the message objects HubConnection
        // builds: "type" comes last.
        let frames: &[u8] = b"{\"target\":\"SendMessage\",\"arguments\":[\"alice\",\"hi \\\"there\\\"\"],\"invocationId\":\"0\",\"type\":1}\x1e\
            {\"target\":\"JoinGroup\",\"arguments\":[\"room\"],\"type\":1}\x1e\
            {\"target\":\"Counter\",\"arguments\":[10,500],\"invocationId\":\"1\",\"type\":4}\x1e\
            {\"invocationId\":\"1\",\"type\":5}\x1e\
            {\"type\":3,\"invocationId\":\"2\",\"result\":{\"answer\":42}}\x1e\
            {\"type\":6}\x1e";
        let mut buf = BytesMut::from(frames);
        let mut decoder = Decoder::new(P, MAX);
        let mut messages = Vec::new();
        while let Some(message) = decoder.decode(&mut buf).unwrap() {
            messages.push(message);
        }
        assert_eq!(messages.len(), 6);

        let HubMessage::Invocation(send) = &messages[0] else {
            panic!("not an invocation");
        };
        assert_eq!(send.invocation_id.as_deref(), Some("0"));
        assert_eq!(
            send.arguments.deserialize::<String>(1).unwrap(),
            "hi \"there\""
        );

        let HubMessage::Invocation(join) = &messages[1] else {
            panic!("not an invocation");
        };
        assert_eq!(join.invocation_id, None);

        assert!(matches!(&messages[2], HubMessage::StreamInvocation(s) if s.target == "Counter"));
        assert!(matches!(&messages[3], HubMessage::CancelInvocation(c) if c.invocation_id == "1"));
        let HubMessage::Completion(Completion {
            result: CompletionResult::Value(value),
            ..
        }) = &messages[4]
        else {
            panic!("not a completion with a value");
        };
        #[derive(serde::Deserialize)]
        struct Answer {
            answer: u8,
        }
        assert_eq!(value.deserialize::<Answer>().unwrap().answer, 42);
        assert_eq!(messages[5], HubMessage::Ping);
    }
}

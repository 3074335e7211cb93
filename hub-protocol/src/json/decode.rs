//! Parsing one JSON hub message.
//!
//! serde_json walks the object once; application values are captured as borrowed raw JSON
//! (their exact text inside the frame) and turned into spans of the shared frame, so nothing
//! is copied or interpreted until the receiver asks for a type.

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::Protocol;
use crate::decode::DecodeError;
use crate::message::{
    Ack, CancelInvocation, Close, Completion, CompletionResult, Headers, HubMessage, Invocation,
    Sequence, StreamInvocation, StreamItem,
};
use crate::value::{Arguments, EncodedValue};

/// Every field any message type may carry. Unknown fields are ignored; a field of the wrong
/// JSON type is an error, and so is a repeated field.
#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(rename = "type")]
    message_type: Option<i64>,
    #[serde(rename = "invocationId")]
    invocation_id: Option<String>,
    target: Option<String>,
    #[serde(borrow)]
    arguments: Option<Vec<&'a RawValue>>,
    #[serde(rename = "streamIds")]
    stream_ids: Option<Vec<String>>,
    headers: Option<Headers>,
    #[serde(borrow, default, deserialize_with = "present")]
    item: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    error: Option<String>,
    #[serde(rename = "allowReconnect")]
    allow_reconnect: Option<bool>,
    #[serde(rename = "sequenceId")]
    sequence_id: Option<u64>,
}

/// Keeps a present `null` as a value: `"result": null` is a null result, not a missing one.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

fn invalid(reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidMessage {
        protocol: Protocol::Json,
        reason: reason.into(),
    }
}

fn missing(field: &str, message: &str) -> DecodeError {
    invalid(format!(
        "missing required property '{field}' in {message} message"
    ))
}

/// Parses the frame body (without its separator) as one hub message.
pub(crate) fn parse(frame: &Bytes) -> Result<HubMessage, DecodeError> {
    let first = frame.iter().find(|byte| !byte.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(invalid("a message must be a JSON object"));
    }
    // One validation of the whole frame, then serde_json reads it as text: read as bytes,
    // it validates each string and each raw value on its own, a call per piece.
    let text = std::str::from_utf8(frame).map_err(|error| invalid(error.to_string()))?;
    let raw: RawMessage<'_> =
        serde_json::from_str(text).map_err(|error| invalid(error.to_string()))?;
    let message_type = raw
        .message_type
        .ok_or_else(|| invalid("missing required property 'type'"))?;
    let headers = raw.headers.unwrap_or_default();
    Ok(match message_type {
        1 => HubMessage::Invocation(Invocation {
            headers,
            invocation_id: raw.invocation_id.filter(|id| !id.is_empty()),
            target: required_target(raw.target, "Invocation")?,
            arguments: arguments(frame, raw.arguments, "Invocation")?,
            stream_ids: raw.stream_ids.unwrap_or_default(),
        }),
        2 => HubMessage::StreamItem(StreamItem {
            headers,
            invocation_id: required_id(raw.invocation_id, "StreamItem")?,
            item: value(
                frame,
                raw.item.ok_or_else(|| missing("item", "StreamItem"))?,
            )?,
        }),
        3 => {
            let invocation_id = required_id(raw.invocation_id, "Completion")?;
            let result = match (raw.error, raw.result) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "the 'error' and 'result' properties are mutually exclusive",
                    ));
                }
                (Some(error), None) => CompletionResult::Error(error),
                (None, Some(result)) => CompletionResult::Value(value(frame, result)?),
                (None, None) => CompletionResult::Void,
            };
            HubMessage::Completion(Completion {
                headers,
                invocation_id,
                result,
            })
        }
        4 => HubMessage::StreamInvocation(StreamInvocation {
            headers,
            invocation_id: required_id(raw.invocation_id, "StreamInvocation")?,
            target: required_target(raw.target, "StreamInvocation")?,
            arguments: arguments(frame, raw.arguments, "StreamInvocation")?,
            stream_ids: raw.stream_ids.unwrap_or_default(),
        }),
        5 => HubMessage::CancelInvocation(CancelInvocation {
            headers,
            invocation_id: required_id(raw.invocation_id, "CancelInvocation")?,
        }),
        6 => HubMessage::Ping,
        7 => HubMessage::Close(Close {
            error: raw.error,
            allow_reconnect: raw.allow_reconnect.unwrap_or(false),
        }),
        8 => HubMessage::Ack(Ack {
            sequence_id: raw
                .sequence_id
                .ok_or_else(|| missing("sequenceId", "Ack"))?,
        }),
        9 => HubMessage::Sequence(Sequence {
            sequence_id: raw
                .sequence_id
                .ok_or_else(|| missing("sequenceId", "Sequence"))?,
        }),
        other => {
            return Err(DecodeError::UnknownMessageType {
                message_type: other,
            });
        }
    })
}

/// Splits a JSON array into the spans of its elements.
pub(crate) fn array_spans(array: &Bytes) -> Result<Vec<(usize, usize)>, DecodeError> {
    let elements: Vec<&RawValue> =
        serde_json::from_slice(array).map_err(|error| invalid(error.to_string()))?;
    elements
        .into_iter()
        .map(|element| span_in(array, element))
        .collect()
}

fn required_id(id: Option<String>, message: &str) -> Result<String, DecodeError> {
    match id {
        Some(id) if !id.is_empty() => Ok(id),
        Some(_) => Err(invalid(format!(
            "empty 'invocationId' in {message} message"
        ))),
        None => Err(missing("invocationId", message)),
    }
}

fn required_target(target: Option<String>, message: &str) -> Result<String, DecodeError> {
    match target {
        Some(target) if !target.is_empty() => Ok(target),
        Some(_) => Err(invalid(format!("empty 'target' in {message} message"))),
        None => Err(missing("target", message)),
    }
}

fn arguments(
    frame: &Bytes,
    raw: Option<Vec<&RawValue>>,
    message: &str,
) -> Result<Arguments, DecodeError> {
    let raw = raw.ok_or_else(|| missing("arguments", message))?;
    let spans = raw
        .into_iter()
        .map(|element| span_in(frame, element))
        .collect::<Result<_, _>>()?;
    Ok(Arguments::from_parts(Protocol::Json, frame.clone(), spans))
}

fn value(frame: &Bytes, raw: &RawValue) -> Result<EncodedValue, DecodeError> {
    let (start, end) = span_in(frame, raw)?;
    Ok(EncodedValue::from_parts(
        Protocol::Json,
        frame.slice(start..end),
    ))
}

/// Where a raw value borrowed from `frame` lies inside it.
fn span_in(frame: &[u8], raw: &RawValue) -> Result<(usize, usize), DecodeError> {
    let text = raw.get();
    // serde_json borrows raw values from the input slice, so the text lies inside the frame;
    // the checks only guard against that ever changing.
    let start = (text.as_ptr() as usize).checked_sub(frame.as_ptr() as usize);
    match start {
        Some(start) if start + text.len() <= frame.len() => Ok((start, start + text.len())),
        _ => Err(invalid("raw JSON value was not borrowed from the frame")),
    }
}

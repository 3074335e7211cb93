//! Parsing one MessagePack hub message: `[type, ...fields]`.
//!
//! Like the official implementations, a message may carry more elements than this version
//! knows (later protocol versions append fields); the extra ones are ignored.

use bytes::Bytes;

use super::reader::{ReadError, Reader};
use crate::Protocol;
use crate::decode::DecodeError;
use crate::message::{
    Ack, CancelInvocation, Close, Completion, CompletionResult, Headers, HubMessage, Invocation,
    Sequence, StreamInvocation, StreamItem,
};
use crate::value::{Arguments, EncodedValue};

const ERROR_RESULT: i64 = 1;
const VOID_RESULT: i64 = 2;
const NON_VOID_RESULT: i64 = 3;

fn invalid(reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidMessage {
        protocol: Protocol::MessagePack,
        reason: reason.into(),
    }
}

/// Names the envelope field being read when a read fails.
trait Field<T> {
    fn field(self, name: &str) -> Result<T, DecodeError>;
}

impl<T> Field<T> for Result<T, ReadError> {
    fn field(self, name: &str) -> Result<T, DecodeError> {
        self.map_err(|error| invalid(format!("reading '{name}' failed: {error}")))
    }
}

fn require_len(len: u64, min: u64, message: &str) -> Result<(), DecodeError> {
    if len < min {
        Err(invalid(format!(
            "{message} message has {len} element(s), expected at least {min}"
        )))
    } else {
        Ok(())
    }
}

/// Parses the frame body (without its length prefix) as one hub message.
pub(crate) fn parse(frame: &Bytes) -> Result<HubMessage, DecodeError> {
    let mut reader = Reader::new(frame);
    let len = reader.array_len().field("message")?;
    require_len(len, 1, "a")?;
    let message_type = reader.int().field("message type")?;
    Ok(match message_type {
        1 => {
            require_len(len, 5, "Invocation")?;
            let headers = read_headers(&mut reader)?;
            let invocation_id = reader.str_or_nil().field("invocationId")?;
            HubMessage::Invocation(Invocation {
                headers,
                // ASP.NET Core reads an empty id as "no id" (a non-blocking call).
                invocation_id: invocation_id.filter(|id| !id.is_empty()).map(str::to_owned),
                target: read_target(&mut reader, "Invocation")?,
                arguments: read_arguments(&mut reader, frame)?,
                stream_ids: read_stream_ids(&mut reader, len)?,
            })
        }
        2 => {
            require_len(len, 4, "StreamItem")?;
            HubMessage::StreamItem(StreamItem {
                headers: read_headers(&mut reader)?,
                invocation_id: read_invocation_id(&mut reader, "StreamItem")?,
                item: read_value(&mut reader, frame, "item")?,
            })
        }
        3 => {
            require_len(len, 4, "Completion")?;
            let headers = read_headers(&mut reader)?;
            let invocation_id = read_invocation_id(&mut reader, "Completion")?;
            let result = match reader.int().field("resultKind")? {
                ERROR_RESULT => {
                    require_len(len, 5, "error Completion")?;
                    CompletionResult::Error(reader.str().field("error")?.to_owned())
                }
                VOID_RESULT => CompletionResult::Void,
                NON_VOID_RESULT => {
                    require_len(len, 5, "non-void Completion")?;
                    CompletionResult::Value(read_value(&mut reader, frame, "result")?)
                }
                other => return Err(invalid(format!("invalid completion result kind {other}"))),
            };
            HubMessage::Completion(Completion {
                headers,
                invocation_id,
                result,
            })
        }
        4 => {
            require_len(len, 5, "StreamInvocation")?;
            HubMessage::StreamInvocation(StreamInvocation {
                headers: read_headers(&mut reader)?,
                invocation_id: read_invocation_id(&mut reader, "StreamInvocation")?,
                target: read_target(&mut reader, "StreamInvocation")?,
                arguments: read_arguments(&mut reader, frame)?,
                stream_ids: read_stream_ids(&mut reader, len)?,
            })
        }
        5 => {
            require_len(len, 3, "CancelInvocation")?;
            HubMessage::CancelInvocation(CancelInvocation {
                headers: read_headers(&mut reader)?,
                invocation_id: read_invocation_id(&mut reader, "CancelInvocation")?,
            })
        }
        6 => HubMessage::Ping,
        7 => {
            require_len(len, 2, "Close")?;
            let error = reader.str_or_nil().field("error")?.map(str::to_owned);
            let allow_reconnect = if len > 2 {
                reader.bool().field("allowReconnect")?
            } else {
                false
            };
            HubMessage::Close(Close {
                error,
                allow_reconnect,
            })
        }
        8 => {
            require_len(len, 2, "Ack")?;
            HubMessage::Ack(Ack {
                sequence_id: reader.uint().field("sequenceId")?,
            })
        }
        9 => {
            require_len(len, 2, "Sequence")?;
            HubMessage::Sequence(Sequence {
                sequence_id: reader.uint().field("sequenceId")?,
            })
        }
        other => {
            return Err(DecodeError::UnknownMessageType {
                message_type: other,
            });
        }
    })
}

/// Splits a MessagePack array into the spans of its elements.
pub(crate) fn array_spans(array: &Bytes) -> Result<Vec<(usize, usize)>, DecodeError> {
    let mut reader = Reader::new(array);
    read_spans(&mut reader)
}

fn read_headers(reader: &mut Reader<'_>) -> Result<Headers, DecodeError> {
    let count = reader.map_len().field("headers")?;
    let mut headers = Headers::new();
    for _ in 0..count {
        let key = reader.str().field("header name")?;
        let value = reader.str().field("header value")?;
        headers.insert(key.to_owned(), value.to_owned());
    }
    Ok(headers)
}

fn read_invocation_id(reader: &mut Reader<'_>, message: &str) -> Result<String, DecodeError> {
    match reader.str_or_nil().field("invocationId")? {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(invalid(format!(
            "null or empty invocation id in {message} message"
        ))),
    }
}

fn read_target(reader: &mut Reader<'_>, message: &str) -> Result<String, DecodeError> {
    match reader.str().field("target")? {
        "" => Err(invalid(format!("empty target in {message} message"))),
        target => Ok(target.to_owned()),
    }
}

fn read_arguments(reader: &mut Reader<'_>, frame: &Bytes) -> Result<Arguments, DecodeError> {
    let spans = read_spans(reader)?;
    Ok(Arguments::from_parts(
        Protocol::MessagePack,
        frame.clone(),
        spans,
    ))
}

fn read_spans(reader: &mut Reader<'_>) -> Result<Vec<(usize, usize)>, DecodeError> {
    let count = reader.array_len().field("arguments")?;
    // Each element takes at least one byte: never reserve more than the bytes left, whatever
    // the header claims.
    let capacity = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(reader.remaining());
    let mut spans = Vec::with_capacity(capacity);
    for _ in 0..count {
        spans.push(reader.value_span().field("arguments")?);
    }
    Ok(spans)
}

fn read_value(
    reader: &mut Reader<'_>,
    frame: &Bytes,
    name: &str,
) -> Result<EncodedValue, DecodeError> {
    let (start, end) = reader.value_span().field(name)?;
    Ok(EncodedValue::from_parts(
        Protocol::MessagePack,
        frame.slice(start..end),
    ))
}

fn read_stream_ids(reader: &mut Reader<'_>, len: u64) -> Result<Vec<String>, DecodeError> {
    // Older clients send five elements and no stream ids.
    if len < 6 {
        return Ok(Vec::new());
    }
    let count = reader.array_len().field("streamIds")?;
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(reader.str().field("streamIds")?.to_owned());
    }
    Ok(ids)
}

//! Hub messages as they are decoded: one type per message of the SignalR hub protocol.

use std::collections::BTreeMap;

use crate::value::{Arguments, EncodedValue};

/// Message headers: string keys and values carried by invocation-related messages.
///
/// No header is defined by the protocol; peers must accept and may ignore them. A sorted map
/// keeps encoding deterministic.
pub type Headers = BTreeMap<String, String>;

/// A decoded hub message.
///
/// Values chosen by the application (arguments, stream items, completion results) stay in
/// their wire encoding as [`EncodedValue`]s until the receiver asks for a typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage {
    /// Type 1: call a method on the other side.
    Invocation(Invocation),
    /// Type 2: one item of a stream.
    StreamItem(StreamItem),
    /// Type 3: the end of an invocation or of a stream.
    Completion(Completion),
    /// Type 4: call a streaming method on the other side.
    StreamInvocation(StreamInvocation),
    /// Type 5: ask the other side to cancel an invocation.
    CancelInvocation(CancelInvocation),
    /// Type 6: keep-alive, no content.
    Ping,
    /// Type 7: the sender is closing the connection.
    Close(Close),
    /// Type 8: stateful reconnect acknowledgement.
    Ack(Ack),
    /// Type 9: stateful reconnect resynchronisation.
    Sequence(Sequence),
}

impl HubMessage {
    /// The numeric message type used on the wire (1 to 9).
    pub const fn message_type(&self) -> u8 {
        match self {
            HubMessage::Invocation(_) => 1,
            HubMessage::StreamItem(_) => 2,
            HubMessage::Completion(_) => 3,
            HubMessage::StreamInvocation(_) => 4,
            HubMessage::CancelInvocation(_) => 5,
            HubMessage::Ping => 6,
            HubMessage::Close(_) => 7,
            HubMessage::Ack(_) => 8,
            HubMessage::Sequence(_) => 9,
        }
    }
}

/// A request to run the method `target` with `arguments` (message type 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// Headers sent with the message; usually empty.
    pub headers: Headers,
    /// Present when the caller wants a [`Completion`]; absent for fire-and-forget calls, which
    /// must get no reply. An empty id is treated as absent, as ASP.NET Core does.
    pub invocation_id: Option<String>,
    /// The method name, matched case-sensitively by the receiver.
    pub target: String,
    /// The arguments, decoded one by one when the receiver knows their types.
    pub arguments: Arguments,
    /// Ids of upload streams the caller will feed with [`StreamItem`]s; usually empty.
    pub stream_ids: Vec<String>,
}

/// A request to run the streaming method `target` (message type 4), answered by
/// [`StreamItem`]s and a final [`Completion`].
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInvocation {
    /// Headers sent with the message; usually empty.
    pub headers: Headers,
    /// Identifies the stream in the items and completion that answer it.
    pub invocation_id: String,
    /// The method name, matched case-sensitively by the receiver.
    pub target: String,
    /// The arguments, decoded one by one when the receiver knows their types.
    pub arguments: Arguments,
    /// Ids of upload streams the caller will feed with [`StreamItem`]s; usually empty.
    pub stream_ids: Vec<String>,
}

/// One item of a stream (message type 2).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamItem {
    /// Headers sent with the message; usually empty.
    pub headers: Headers,
    /// The stream this item belongs to.
    pub invocation_id: String,
    /// The item, decoded when the receiver knows its type.
    pub item: EncodedValue,
}

/// The end of an invocation or stream (message type 3).
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Headers sent with the message; usually empty.
    pub headers: Headers,
    /// The invocation or stream that ended.
    pub invocation_id: String,
    /// How it ended.
    pub result: CompletionResult,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionResult {
    /// It returned nothing (a void method, or the end of a stream).
    Void,
    /// It returned this value. A returned null is a value, not [`Void`](Self::Void).
    Value(EncodedValue),
    /// It failed with this message.
    Error(String),
}

/// A request to cancel a running invocation or stream (message type 5).
#[derive(Debug, Clone, PartialEq)]
pub struct CancelInvocation {
    /// Headers sent with the message; usually empty.
    pub headers: Headers,
    /// The invocation to cancel.
    pub invocation_id: String,
}

/// The sender is closing the connection (message type 7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Close {
    /// Why, when the connection closes because of an error.
    pub error: Option<String>,
    /// Whether a client with automatic reconnect enabled should reconnect.
    pub allow_reconnect: bool,
}

/// Stateful reconnect: every trackable message up to `sequence_id` arrived (message type 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The highest sequence id received.
    pub sequence_id: u64,
}

/// Stateful reconnect: the next trackable message will carry `sequence_id` (message type 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    /// The sequence id of the next trackable message.
    pub sequence_id: u64,
}

//! Client results: a server asks one connection to run a client method and waits for its
//! answer (ASP.NET Core's `Clients.Client(id).InvokeAsync<T>`), wherever the connection
//! lives.
//!
//! # How a call travels
//!
//! - The connection is on this node: the invocation (with an invocation id) is queued for
//!   it, and the client's Completion, which the server hands to
//!   [`HubLifetimeManager::set_connection_result`](crate::HubLifetimeManager::set_connection_result),
//!   resolves the call.
//! - Elsewhere: the asking node publishes a [`ClientInvocation`] to every node. Only the
//!   owner acts on it: it answers at once with [`ClientOutcome::Accepted`], queues the
//!   invocation for its connection, and when the client answers (or disconnects) it sends
//!   the outcome back as a [`ClientResult`]. Both answers go to the asking node only
//!   (`send_to` the envelope's origin): that is the return route, one per node, with no
//!   extra channel or subscription.
//!
//! # Unknown connections, dead owners, partitions
//!
//! A connection is *unknown* when no node has it. Connection ids a server issues carry
//! the tag of their node ([`ConnectionId::tagged`](crate::ConnectionId::tagged),
//! [`HubLifetimeManager::node_tag`](crate::HubLifetimeManager::node_tag)), so most unknown
//! connections are found out without waiting:
//!
//! - the id names this node, which does not have it: the call fails at once with
//!   [`ClientResultError::UnknownConnection`], and nothing is published;
//! - the id names another node: that node answers [`ClientOutcome::Disconnected`] without
//!   accepting, and the call fails with `UnknownConnection` after one round trip (ASP.NET
//!   Core's Redis backplane fails at once too, from the number of subscribers a Redis
//!   `PUBLISH` reports, which PostgreSQL's `NOTIFY` cannot tell);
//! - the id has no tag, or names a node that is gone or cut off: no node accepts within
//!   [`ManagerOptions::client_result_owner_timeout`](crate::ManagerOptions) (5 s by
//!   default), and the call fails with `UnknownConnection` then, long before the result
//!   timeout. Without a cluster-wide directory of connections, an owner that is alive but
//!   cut off from the backplane looks the same as no owner at all.
//!
//! An owner that accepted and then died, or was cut off, fails the call when
//! [`ManagerOptions::client_result_timeout`](crate::ManagerOptions) (30 s by default) has
//! passed since the call began: [`ClientResultError::Timeout`].
//!
//! The owner also forgets a request it accepted once that timeout has passed (the asking
//! node has given up by then), so a client that never answers cannot make it hold
//! requests for ever.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use hub_protocol::{CompletionResult, EncodedValue, Protocol};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::backplane::BackplaneError;
use crate::id::{ConnectionId, NodeId};
use crate::message::SerializedMessage;

/// A request to the node that owns `connection_id` to invoke a client method there and
/// send the client's answer back to the envelope's origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInvocation {
    /// Identifies the request among the origin's outstanding ones; echoed in every
    /// [`ClientResult`].
    pub request_id: u64,
    /// The connection that must answer.
    pub connection_id: ConnectionId,
    /// The invocation id the `message` frames carry, which the client's Completion echoes.
    pub invocation_id: String,
    /// The Invocation frame, with `invocation_id`, encoded once per hub protocol.
    pub message: SerializedMessage,
    /// How long the origin waits, in milliseconds: the owner forgets the request after it.
    pub timeout_ms: u64,
}

/// The owning node's answer to a [`ClientInvocation`]; sent only to the node that asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResult {
    /// The `request_id` of the request this answers.
    pub request_id: u64,
    /// What happened.
    pub outcome: ClientOutcome,
}

/// What the owner of a connection reports about a client-result request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientOutcome {
    /// The owner has the connection and queued the invocation; the result follows.
    Accepted,
    /// The client completed without a value.
    Void,
    /// The client's value, in the hub protocol the client speaks.
    Value {
        /// Whether `bytes` is MessagePack (else JSON).
        messagepack: bool,
        /// Exactly one encoded value.
        bytes: Bytes,
    },
    /// The client answered with an error.
    Error(String),
    /// The connection ended (or could not take the invocation) before it answered.
    Disconnected,
}

impl ClientOutcome {
    /// The outcome of a client's Completion.
    pub fn from_completion(result: CompletionResult) -> Self {
        match result {
            CompletionResult::Void => ClientOutcome::Void,
            CompletionResult::Error(error) => ClientOutcome::Error(error),
            CompletionResult::Value(value) => ClientOutcome::Value {
                messagepack: value.protocol() == Protocol::MessagePack,
                bytes: Bytes::copy_from_slice(value.as_bytes()),
            },
        }
    }

    /// Bytes this outcome takes in an envelope, at most.
    pub(crate) fn size_hint(&self) -> usize {
        match self {
            ClientOutcome::Value { bytes, .. } => 8 + bytes.len(),
            ClientOutcome::Error(error) => 8 + error.len(),
            _ => 2,
        }
    }

    /// The final answer this outcome gives the caller (`None` for `Accepted`).
    pub(crate) fn into_answer(self, connection_id: &ConnectionId) -> Option<ClientAnswer> {
        Some(match self {
            ClientOutcome::Accepted => return None,
            ClientOutcome::Void => Ok(None),
            ClientOutcome::Value { messagepack, bytes } => {
                let protocol = if messagepack {
                    Protocol::MessagePack
                } else {
                    Protocol::Json
                };
                EncodedValue::from_wire(protocol, bytes)
                    .map(Some)
                    .map_err(|error| ClientResultError::InvalidResult(error.to_string()))
            }
            ClientOutcome::Error(error) => Err(ClientResultError::Client(error)),
            ClientOutcome::Disconnected => {
                Err(ClientResultError::Disconnected(connection_id.clone()))
            }
        })
    }
}

/// How a client-result call ends: the client's value (`None` for a void completion).
pub type ClientAnswer = Result<Option<EncodedValue>, ClientResultError>;

/// Why a client-result call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientResultError {
    /// No node has the connection (see the module documentation for how that is
    /// decided across nodes).
    #[error("connection {0} does not exist")]
    UnknownConnection(ConnectionId),
    /// The connection ended before it answered (ASP.NET Core: "Connection disconnected.").
    #[error("connection {0} disconnected before it answered")]
    Disconnected(ConnectionId),
    /// The client answered with an error (its handler threw, or it has no handler).
    #[error("the client answered with an error: {0}")]
    Client(String),
    /// No answer within the timeout: the client is slow, or the node that owns it died
    /// or was cut off.
    #[error("connection {connection_id} did not answer within {timeout:?}")]
    Timeout {
        /// The connection asked.
        connection_id: ConnectionId,
        /// How long the call waited.
        timeout: Duration,
    },
    /// The client's value was not one well-formed value of its protocol.
    #[error("the client's result is malformed: {0}")]
    InvalidResult(String),
    /// The request could not be sent to the other nodes.
    #[error(transparent)]
    Backplane(#[from] BackplaneError),
}

/// Who waits for a local connection's answer.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// A call on this node.
    Local(oneshot::Sender<ClientAnswer>),
    /// A call from another node: the answer goes back to it.
    Remote {
        /// The asking node.
        origin: NodeId,
        /// Its request id.
        request_id: u64,
        /// Resolves (or drops) once the acceptance was sent: the outcome goes after it.
        accepted: oneshot::Receiver<()>,
    },
}

/// The client-result calls a node has in flight.
#[derive(Debug, Default)]
pub(crate) struct ClientCalls {
    /// Invocations queued for this node's connections, waiting for the client's
    /// Completion, by connection and invocation id (a client can only answer its own).
    pub(crate) waiting: Mutex<HashMap<(ConnectionId, String), Waiter>>,
    /// Requests this node sent to other nodes, by request id: the owner's answers
    /// (acceptance, then the outcome) go here.
    pub(crate) asked: Mutex<HashMap<u64, mpsc::Sender<ClientOutcome>>>,
}

impl ClientCalls {
    /// Hand an owner's answer to the call that asked; false when nobody waits for it.
    pub(crate) fn answer_from_owner(&self, result: ClientResult) -> bool {
        let sender = lock(&self.asked).get(&result.request_id).cloned();
        match sender {
            // At most two answers come per request; a full queue means a misbehaving
            // node sent more, and they are dropped.
            Some(sender) => sender.try_send(result.outcome).is_ok(),
            None => false,
        }
    }

    /// Every call waiting for `connection_id`, removed (it disconnected).
    pub(crate) fn take_connection(&self, connection_id: &ConnectionId) -> Vec<Waiter> {
        let mut waiting = lock(&self.waiting);
        let keys: Vec<_> = waiting
            .keys()
            .filter(|(id, _)| id == connection_id)
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|key| waiting.remove(&key))
            .collect()
    }
}

/// Wait for the owner's answers to a remote call: acceptance within `owner_timeout`,
/// the outcome within `timeout` of the start.
pub(crate) async fn await_remote(
    mut answers: mpsc::Receiver<ClientOutcome>,
    connection_id: &ConnectionId,
    owner_timeout: Duration,
    timeout: Duration,
) -> ClientAnswer {
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut accepted = false;
    loop {
        let until = if accepted {
            deadline
        } else {
            deadline.min(start + owner_timeout)
        };
        match tokio::time::timeout_at(until, answers.recv()).await {
            Ok(Some(ClientOutcome::Accepted)) => accepted = true,
            // The node named by the connection id's tag does not have it.
            Ok(Some(ClientOutcome::Disconnected)) if !accepted => {
                return Err(ClientResultError::UnknownConnection(connection_id.clone()));
            }
            Ok(Some(outcome)) => {
                return outcome
                    .into_answer(connection_id)
                    .expect("acceptance is handled above");
            }
            // The receive task ended: the backplane shut down.
            Ok(None) => return Err(ClientResultError::Backplane(BackplaneError::Shutdown)),
            Err(_) if !accepted && until < deadline => {
                return Err(ClientResultError::UnknownConnection(connection_id.clone()));
            }
            Err(_) => {
                return Err(ClientResultError::Timeout {
                    connection_id: connection_id.clone(),
                    timeout,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_become_answers() {
        let id = ConnectionId::from("c");
        let value = EncodedValue::encode(Protocol::MessagePack, &42u32).unwrap();
        let outcome = ClientOutcome::from_completion(CompletionResult::Value(value));
        let answer = outcome.into_answer(&id).unwrap().unwrap().unwrap();
        assert_eq!(answer.deserialize::<u32>().unwrap(), 42);
        let malformed = ClientOutcome::Value {
            messagepack: false,
            bytes: Bytes::from_static(b"{\"a\":"),
        };
        assert!(matches!(
            malformed.into_answer(&id),
            Some(Err(ClientResultError::InvalidResult(_)))
        ));
        assert!(ClientOutcome::Accepted.into_answer(&id).is_none());
        assert!(matches!(
            ClientOutcome::Disconnected.into_answer(&id),
            Some(Err(ClientResultError::Disconnected(_)))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn no_acceptance_means_unknown_and_acceptance_waits_for_the_timeout() {
        let id = ConnectionId::from("c");
        let (_tx, rx) = mpsc::channel(2);
        let answer = await_remote(rx, &id, Duration::from_secs(2), Duration::from_secs(30)).await;
        assert!(matches!(
            answer,
            Err(ClientResultError::UnknownConnection(_))
        ));

        let (tx, rx) = mpsc::channel(2);
        tx.try_send(ClientOutcome::Accepted).unwrap();
        let start = tokio::time::Instant::now();
        let answer = await_remote(rx, &id, Duration::from_secs(2), Duration::from_secs(30)).await;
        assert!(matches!(answer, Err(ClientResultError::Timeout { .. })));
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn disconnected_before_acceptance_means_unknown_at_once() {
        let id = ConnectionId::from("c");
        let (tx, rx) = mpsc::channel(2);
        tx.try_send(ClientOutcome::Disconnected).unwrap();
        let start = tokio::time::Instant::now();
        let answer = await_remote(rx, &id, Duration::from_secs(5), Duration::from_secs(30)).await;
        assert!(matches!(
            answer,
            Err(ClientResultError::UnknownConnection(_))
        ));
        assert_eq!(start.elapsed(), Duration::ZERO);

        let (tx, rx) = mpsc::channel(2);
        tx.try_send(ClientOutcome::Accepted).unwrap();
        tx.try_send(ClientOutcome::Disconnected).unwrap();
        let answer = await_remote(rx, &id, Duration::from_secs(5), Duration::from_secs(30)).await;
        assert!(matches!(answer, Err(ClientResultError::Disconnected(_))));
    }
}

//! The long-polling transport: `GET {hub}?id=` in a loop. The first poll is answered at
//! once (it opens the connection); each later one when frames are pending or after the
//! server's poll timeout (empty); `204` means the server closed the connection. Sends are
//! `POST`s; `DELETE` ends the connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio::sync::mpsc;

use super::TransportType;
use super::http_transport::{CHUNK_QUEUE, Chunk, HttpTransport, request_failed};
use crate::config::Config;
use crate::error::ConnectError;
use crate::http::HttpClient;
use crate::url::HubUrl;

/// How long one poll may take: longer than servers hold a poll (90 s on ASP.NET Core), as
/// the official clients' 100 s, so a poll ends on the server's side.
const POLL_TIMEOUT: Duration = Duration::from_secs(100);

/// The smallest bound on one poll's answer; the server may answer with many frames.
const MIN_POLL_ANSWER: usize = 1024 * 1024;

/// Sends the first poll; returns once the server answered it `200`, with the poll loop
/// running.
///
/// # Errors
///
/// [`ConnectError::TransportFailed`] when the server answers anything else, and what
/// dialing and the request can fail with.
pub(super) async fn open(
    url: &HubUrl,
    connection_token: &str,
    access_token: Option<&str>,
    config: &Config,
) -> Result<HttpTransport, ConnectError> {
    let target = url.connection_target(connection_token, None);
    let limit = config.max_message_size.max(MIN_POLL_ANSWER);
    let mut polls = HttpClient::new(url, access_token)?;
    let first = polls
        .exchange(Method::GET, &poll_target(&target), &[], Bytes::new(), limit)
        .await?;
    if first.status != StatusCode::OK {
        return Err(ConnectError::TransportFailed {
            transport: TransportType::LongPolling,
            reason: format!(
                "the first poll was answered {}: {}",
                first.status,
                String::from_utf8_lossy(&first.body)
            ),
        });
    }
    let (chunks, receiver) = mpsc::channel(CHUNK_QUEUE);
    let poll_loop_target = target.clone();
    let reader = tokio::spawn(async move {
        poll(polls, poll_loop_target, limit, chunks).await;
    });
    Ok(HttpTransport::new(
        TransportType::LongPolling,
        HttpClient::new(url, access_token)?,
        target,
        receiver,
        reader,
    ))
}

/// Polls until the server closes the connection, a poll fails, or the transport is
/// closed (the channel's receiver is gone).
async fn poll(mut polls: HttpClient, target: String, limit: usize, chunks: mpsc::Sender<Chunk>) {
    while !chunks.is_closed() {
        let poll = poll_target(&target);
        let request = polls.exchange(Method::GET, &poll, &[], Bytes::new(), limit);
        let answer = match tokio::time::timeout(POLL_TIMEOUT, request).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                let _ = chunks.send(request_failed("a poll", &error)).await;
                return;
            }
            // A poll the server did not answer in time: poll again, as the official
            // clients do.
            Err(_) => continue,
        };
        match answer.status {
            StatusCode::OK if answer.body.is_empty() => {}
            StatusCode::OK => {
                if chunks.send(Ok(answer.body)).await.is_err() {
                    return;
                }
            }
            // The server ended the connection.
            StatusCode::NO_CONTENT => return,
            status => {
                let reason = format!(
                    "a poll was answered {status}: {}",
                    String::from_utf8_lossy(&answer.body)
                );
                let _ = chunks.send(Err(reason)).await;
                return;
            }
        }
    }
}

/// The poll URL with a cache buster, as the official clients add (`_=` milliseconds), so
/// no cache in between answers a poll.
fn poll_target(target: &str) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    format!("{target}&_={millis}")
}

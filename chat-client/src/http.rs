//! A minimal HTTP/1.1 client for the negotiate request, over the hyper already in the tree.
//!
//! Negotiate is one POST per connection attempt, so each request gets its own TCP
//! connection: no pool to manage, and nothing lingers after the answer.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::ConnectError;
use crate::url::HubUrl;

/// The largest negotiate response accepted; real ones are a few hundred bytes.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// What the server answered.
#[derive(Debug)]
pub(crate) struct Response {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The whole body.
    pub(crate) body: Bytes,
}

/// Opens a TCP connection to the hub's server, with Nagle off: SignalR frames are small and
/// latency matters more than packet count.
///
/// # Errors
///
/// [`ConnectError::Unreachable`] when the address does not resolve or refuses.
pub(crate) async fn dial(url: &HubUrl) -> Result<TcpStream, ConnectError> {
    let stream =
        TcpStream::connect(&url.address)
            .await
            .map_err(|source| ConnectError::Unreachable {
                address: url.address.clone(),
                source,
            })?;
    // Failing to set an option is harmless: the connection still works.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Sends `POST {target}` with an empty body (and the bearer token, if any) and reads the
/// whole answer.
///
/// # Errors
///
/// [`ConnectError::Unreachable`] when no connection can be made, [`ConnectError::Http`] when
/// the exchange fails, [`ConnectError::InvalidNegotiateResponse`] when the body is too large.
pub(crate) async fn post(
    url: &HubUrl,
    target: &str,
    bearer: Option<&str>,
) -> Result<Response, ConnectError> {
    let http_error = |source| ConnectError::Http {
        url: url.display(),
        source,
    };
    let stream = dial(url).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error)?;
    // The connection future drives the socket; it ends when the response is read and the
    // sender is dropped. Its own error, if any, also surfaces through `send_request`.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "negotiate connection ended with an error");
        }
    });

    let mut request = Request::builder()
        .method(Method::POST)
        .uri(target)
        .header(CONTENT_LENGTH, "0")
        // The JavaScript client sends this; some proxies use it to tell XHR from navigation.
        .header("X-Requested-With", "XMLHttpRequest");
    if let Ok(host) = HeaderValue::from_str(&url.host_header) {
        request = request.header(HOST, host);
    }
    if let Some(token) = bearer {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ConnectError::AccessToken(
                "the access token contains characters not allowed in a header".into(),
            )
        })?;
        request = request.header(AUTHORIZATION, value);
    }
    let request =
        request
            .body(Empty::<Bytes>::new())
            .map_err(|error| ConnectError::InvalidUrl {
                url: url.display(),
                reason: error.to_string(),
            })?;

    let response = sender.send_request(request).await.map_err(http_error)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
        .collect()
        .await
        .map_err(|error| match error.downcast::<hyper::Error>() {
            Ok(error) => http_error(*error),
            Err(error) => ConnectError::InvalidNegotiateResponse {
                url: url.display(),
                reason: error.to_string(),
            },
        })?
        .to_bytes();
    Ok(Response { status, body })
}

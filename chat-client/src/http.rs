//! A minimal HTTP/1.1 client over the hyper already in the tree: negotiate, and the
//! requests of the Server-Sent Events and long-polling transports.
//!
//! Negotiate is one POST per connection attempt on a TCP connection of its own. The HTTP
//! transports keep one [`HttpClient`] per concurrent request stream (the event stream or
//! the poll loop, and the sends), each a single kept-alive connection: no pool to manage,
//! and nothing lingers after the transport is closed.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, HeaderName, HeaderValue};
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

/// An HTTP/1.1 connection to the hub's server, kept open between requests (the HTTP
/// transports send many) and opened again when the server closed it.
#[derive(Debug)]
pub(crate) struct HttpClient {
    /// Where requests go.
    url: HubUrl,
    /// Sent as `Authorization: Bearer` with every request.
    bearer: Option<HeaderValue>,
    /// The open connection, if any.
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpClient {
    /// A client for the server of `url`; nothing is dialed until the first request.
    ///
    /// # Errors
    ///
    /// [`ConnectError::AccessToken`] when the token cannot go in a header.
    pub(crate) fn new(url: &HubUrl, bearer: Option<&str>) -> Result<Self, ConnectError> {
        let bearer = bearer
            .map(|token| {
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    ConnectError::AccessToken(
                        "the access token contains characters not allowed in a header".into(),
                    )
                })
            })
            .transpose()?;
        Ok(HttpClient {
            url: url.clone(),
            bearer,
            sender: None,
        })
    }

    /// The error for a failed exchange.
    fn http_error(&self, source: hyper::Error) -> ConnectError {
        ConnectError::Http {
            url: self.url.display(),
            source,
        }
    }

    /// Sends one request and returns the response with its body still to read.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Unreachable`] when no connection can be made, [`ConnectError::Http`]
    /// when the exchange fails.
    pub(crate) async fn request(
        &mut self,
        method: Method,
        target: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, ConnectError> {
        let reusable = match &mut self.sender {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            self.sender = None;
            let stream = dial(&self.url).await?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|error| self.http_error(error))?;
            // The connection future drives the socket; it ends when the sender is dropped
            // and the last response is read. Its own error, if any, also surfaces through
            // `send_request`.
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "http connection ended with an error");
                }
            });
            self.sender = Some(sender);
        }
        let mut request = Request::builder()
            .method(method.clone())
            .uri(target)
            // The JavaScript client sends this; some proxies use it to tell XHR from
            // navigation.
            .header("X-Requested-With", "XMLHttpRequest");
        if method != Method::GET {
            request = request.header(CONTENT_LENGTH, body.len());
        }
        if let Ok(host) = HeaderValue::from_str(&self.url.host_header) {
            request = request.header(HOST, host);
        }
        if let Some(bearer) = &self.bearer {
            request = request.header(AUTHORIZATION, bearer.clone());
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|error| ConnectError::InvalidUrl {
                url: self.url.display(),
                reason: error.to_string(),
            })?;
        let Some(sender) = self.sender.as_mut() else {
            unreachable!("a sender was set above");
        };
        match sender.send_request(request).await {
            Ok(response) => Ok(response),
            Err(error) => {
                self.sender = None;
                Err(self.http_error(error))
            }
        }
    }

    /// Sends one request and reads the whole answer, refusing bodies over `limit` bytes.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), and [`ConnectError::ResponseTooLarge`] past `limit`.
    pub(crate) async fn exchange(
        &mut self,
        method: Method,
        target: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        limit: usize,
    ) -> Result<Response, ConnectError> {
        let response = self.request(method, target, headers, body).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|error| match error.downcast::<hyper::Error>() {
                Ok(error) => self.http_error(*error),
                Err(_) => ConnectError::ResponseTooLarge {
                    url: self.url.display(),
                    limit,
                },
            })?
            .to_bytes();
        Ok(Response { status, body })
    }
}

/// Sends `POST {target}` with an empty body (and the bearer token, if any) and reads the
/// whole answer, on a connection of its own.
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
    let mut client = HttpClient::new(url, bearer)?;
    client
        .exchange(Method::POST, target, &[], Bytes::new(), MAX_RESPONSE_BODY)
        .await
        .map_err(|error| match error {
            ConnectError::ResponseTooLarge { url, limit } => {
                ConnectError::InvalidNegotiateResponse {
                    url,
                    reason: format!("the answer is larger than {limit} bytes"),
                }
            }
            other => other,
        })
}

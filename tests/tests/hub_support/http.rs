//! Plain HTTP/1.1 requests written out by hand (negotiate, long polling, Server-Sent
//! Events, error statuses), with the whole response read back as the client saw it.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::RECV_TIMEOUT;

/// A plain HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Send one HTTP/1.1 request (`request_line` such as `"GET / HTTP/1.1"`, extra header
/// lines) with an empty body, and read the whole response.
pub async fn http(addr: SocketAddr, request_line: &str, headers: &[&str]) -> HttpResponse {
    // POST with `Content-Length: 0`; GET and DELETE without, as clients send them.
    let body = request_line.starts_with("POST").then_some(&b""[..]);
    http_with_body(addr, request_line, headers, body).await
}

/// `GET /health` of the server at `addr`: its status code and JSON body.
pub async fn health(addr: SocketAddr) -> (u16, serde_json::Value) {
    let response = http(addr, "GET /health HTTP/1.1", &[]).await;
    let body = serde_json::from_str(&response.body).expect("JSON health");
    (response.status, body)
}

/// Send one HTTP/1.1 request with `body` (and its `Content-Length`, when `Some`), and
/// read the whole response.
pub async fn http_with_body(
    addr: SocketAddr,
    request_line: &str,
    headers: &[&str],
    body: Option<&[u8]>,
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{request_line}\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&request).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(RECV_TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

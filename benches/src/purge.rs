//! Removing what a run left in Redis or NATS: the streams of the key prefix or stream
//! name `hub-load` gave its instances (as it drops its PostgreSQL schema). Spoken over
//! the two servers' plain-text protocols, so the load tool links no client of either.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long removing a run's streams may take.
const PURGE_TIMEOUT: Duration = Duration::from_secs(10);

/// `host:port` of a `redis://` or `nats://` URL (user, password, database and a second
/// server of a NATS list ignored); the protocol's port when none is given.
fn address(url: &str, default_port: u16) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let rest = rest.split([',', '/', '?']).next()?;
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    if host_port.is_empty() {
        return None;
    }
    Some(if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    })
}

/// One RESP command.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Delete every Redis key of `prefix` (`{prefix:hub}` per hub). A URL with credentials
/// or TLS is not handled: the keys then stay (bounded by the streams' own retention).
pub async fn redis(url: &str, prefix: &str) -> Result<u64, String> {
    let work = async {
        let addr = address(url, 6379).ok_or("unreadable Redis URL")?;
        if url.starts_with("rediss://") || url.contains('@') {
            return Err("TLS or credentials: not purged".to_owned());
        }
        let mut stream = TcpStream::connect(&addr)
            .await
            .map_err(|error| format!("connecting to {addr}: {error}"))?;
        // One script: KEYS is fine here (a test server, a few keys).
        let script = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
                      n = n + redis.call('DEL', k) end return n";
        let pattern = format!("{{{prefix}:*");
        stream
            .write_all(&resp(&["EVAL", script, "0", &pattern]))
            .await
            .map_err(|error| error.to_string())?;
        let mut reply = vec![0u8; 512];
        let n = stream
            .read(&mut reply)
            .await
            .map_err(|error| error.to_string())?;
        let reply = String::from_utf8_lossy(&reply[..n]);
        reply
            .strip_prefix(':')
            .and_then(|rest| rest.trim_end().parse().ok())
            .ok_or_else(|| format!("Redis answered {:?}", reply.trim_end()))
    };
    tokio::time::timeout(PURGE_TIMEOUT, work)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// Delete the JetStream stream `name`. A URL with credentials is not handled.
pub async fn nats(url: &str, name: &str) -> Result<(), String> {
    let work = async {
        let addr = address(url, 4222).ok_or("unreadable NATS URL")?;
        if url.contains('@') || url.starts_with("tls://") {
            return Err("TLS or credentials: not purged".to_owned());
        }
        let mut stream = TcpStream::connect(&addr)
            .await
            .map_err(|error| format!("connecting to {addr}: {error}"))?;
        let inbox = format!("_INBOX.hubload{}", std::process::id());
        let commands = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"hub-load\"}}\r\n\
             SUB {inbox} 1\r\nPUB $JS.API.STREAM.DELETE.{name} {inbox} 0\r\n\r\n"
        );
        stream
            .write_all(commands.as_bytes())
            .await
            .map_err(|error| error.to_string())?;
        // The server's INFO, then the API's answer on the inbox.
        let mut seen = Vec::new();
        let mut chunk = [0u8; 2048];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|error| error.to_string())?;
            if n == 0 {
                return Err("NATS closed the connection".to_owned());
            }
            seen.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&seen);
            if let Some(at) = text.find("MSG ") {
                let answer = &text[at..];
                if answer.contains("\"success\":true") {
                    return Ok(());
                }
                if answer.contains('}') {
                    return Err(format!(
                        "NATS answered {}",
                        answer.lines().nth(1).unwrap_or_default()
                    ));
                }
            }
            if text.contains("-ERR") {
                return Err(text.trim_end().to_owned());
            }
        }
    };
    tokio::time::timeout(PURGE_TIMEOUT, work)
        .await
        .map_err(|_| "timed out".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_urls() {
        assert_eq!(
            address("redis://127.0.0.1:6380/0", 6379).as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(address("redis://u:p@db", 6379).as_deref(), Some("db:6379"));
        assert_eq!(
            address("nats://a:4223,nats://b:4224", 4222).as_deref(),
            Some("a:4223")
        );
        assert_eq!(address("nats://", 4222), None);
    }

    #[test]
    fn resp_encoding() {
        assert_eq!(
            resp(&["DEL", "k"]),
            b"*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n".to_vec()
        );
    }
}

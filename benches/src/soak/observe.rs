//! What the soak does to and reads from the instances besides driving clients: their
//! memory over time, killing one's LISTEN connection on PostgreSQL, and what their
//! `/health` and `/metrics` say about the backplane at the end.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::header::HOST;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::servers::rss_bytes;

/// Largest `/health` or `/metrics` answer read.
const MAX_BODY: usize = 1024 * 1024;

/// Memory readings of one instance.
#[derive(Debug, Clone, Default)]
pub(crate) struct RssSamples {
    /// (seconds since the soak started, resident bytes).
    pub(crate) samples: Vec<(f64, u64)>,
}

/// What the report says about one instance's memory.
#[derive(Debug, Clone, Serialize)]
pub struct RssSummary {
    /// Resident memory at the first reading after the warm-up, in MiB.
    pub after_warmup_mib: f64,
    /// When that reading was taken, in seconds from the start.
    pub after_warmup_at_s: f64,
    /// Resident memory at the last reading before the clients stopped, in MiB.
    pub end_mib: f64,
    /// Growth from the warm-up reading to the end one, in percent.
    pub growth_pct: f64,
    /// The largest reading, in MiB.
    pub max_mib: f64,
    /// Readings taken.
    pub samples: usize,
    /// Every reading in MiB (one decimal), in order: a steady climb is a leak, a level
    /// with bumps is the allocator.
    pub readings_mib: Vec<f64>,
}

impl RssSamples {
    /// Read `pid`'s memory now, `at` seconds into the soak.
    pub(crate) fn take(&mut self, pid: u32, at: f64) {
        if let Some(bytes) = rss_bytes(pid) {
            self.samples.push((at, bytes));
        }
    }

    /// Summary, with the warm-up ending `warmup` seconds in; `None` without readings.
    pub(crate) fn summary(&self, warmup: f64) -> Option<RssSummary> {
        let mib = |bytes: u64| crate::report::round3(bytes as f64 / 1024.0 / 1024.0);
        let &(end_at, end) = self.samples.last()?;
        let &(warm_at, warm) = self
            .samples
            .iter()
            .find(|(at, _)| *at >= warmup)
            .unwrap_or(&(end_at, end));
        let max = self.samples.iter().map(|&(_, bytes)| bytes).max()?;
        Some(RssSummary {
            after_warmup_mib: mib(warm),
            after_warmup_at_s: crate::report::round3(warm_at),
            end_mib: mib(end),
            growth_pct: crate::report::round3((end as f64 / warm.max(1) as f64 - 1.0) * 100.0),
            max_mib: mib(max),
            samples: self.samples.len(),
            readings_mib: self
                .samples
                .iter()
                .map(|&(_, bytes)| (bytes as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0)
                .collect(),
        })
    }
}

/// Terminate the LISTEN connection of backplane node `node` (its `application_name`
/// is `signalr-backplane listener <node>`, see backplane-postgres `connect.rs`); how many
/// backends were terminated (0 while it is reconnecting).
///
/// # Errors
///
/// The database's error.
pub(crate) async fn kill_listener(database_url: &str, node: &str) -> Result<u64, String> {
    let client = test_services::connect(database_url).await?;
    test_services::terminate_backplane_connection(&client, "listener", node)
        .await
        .map_err(|error| format!("terminating the listener of {node}: {error}"))
}

/// GET `path` of `server` (`http://host:port`): the status and the body.
pub(crate) async fn get(server: &str, path: &str) -> Result<(u16, String), String> {
    let address = server.trim_start_matches("http://").trim_end_matches('/');
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|error| error.to_string())?;
        let request = Request::get(path)
            .header(HOST, address)
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
        let (status, body) = exchange(stream, request, MAX_BODY).await?;
        Ok::<_, String>((status.as_u16(), String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| format!("GET {server}{path} timed out"))?
        .map_err(|error| format!("GET {server}{path}: {error}"))
}

/// Whether `server`'s backplane is connected (`/health` answers 200).
pub(crate) async fn healthy(server: &str) -> bool {
    matches!(get(server, "/health").await, Ok((200, _)))
}

/// What one instance reports about its backplane at the end.
pub(crate) async fn backplane_figures(server: &str) -> Value {
    let health = match get(server, "/health").await {
        Ok((_, body)) => serde_json::from_str::<Value>(&body)
            .map(|health| health["backplane"].clone())
            .unwrap_or_else(|error| Value::String(format!("unreadable /health: {error}"))),
        Err(error) => Value::String(error),
    };
    let metrics = match get(server, "/metrics").await {
        Ok((200, body)) => {
            let mut counters = serde_json::Map::new();
            for name in [
                "backplane_gaps_repaired_total",
                "backplane_envelopes_lost_total",
                "backplane_reconnects_total",
                "backplane_envelopes_received_total",
                "backplane_envelopes_published_total",
            ] {
                counters.insert(name.into(), counter_sum(&body, name).into());
            }
            Value::Object(counters)
        }
        Ok((status, _)) => Value::String(format!("/metrics answered {status}")),
        Err(error) => Value::String(error),
    };
    serde_json::json!({"health": health, "metrics": metrics})
}

/// The sum of every sample of counter `name` in a Prometheus text exposition.
fn counter_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One HTTP/1.1 request on `stream`: the answer's status and body (an error past
/// `max_body` bytes).
async fn exchange(
    stream: TcpStream,
    request: Request<Empty<Bytes>>,
    max_body: usize,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    // Drives the HTTP connection; it ends when the answer is read and `sender` dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let body = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_labels_and_others_ignored() {
        let text = "# TYPE backplane_gaps_repaired_total counter\n\
                    backplane_gaps_repaired_total{origin=\"a\"} 2\n\
                    backplane_gaps_repaired_total{origin=\"b\"} 3\n\
                    backplane_gaps_repaired_total_extra 9\n";
        assert_eq!(counter_sum(text, "backplane_gaps_repaired_total"), 5.0);
    }

    #[test]
    fn growth_is_measured_from_the_first_reading_after_the_warmup() {
        let mib = 1024 * 1024;
        let rss = RssSamples {
            samples: vec![(0.0, 50 * mib), (10.0, 100 * mib), (20.0, 104 * mib)],
        };
        let summary = rss.summary(5.0).unwrap();
        assert_eq!(summary.after_warmup_mib, 100.0);
        assert_eq!(summary.end_mib, 104.0);
        assert_eq!(summary.growth_pct, 4.0);
        assert_eq!(summary.max_mib, 104.0);
    }
}

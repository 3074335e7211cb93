//! Support code for the benchmarks, and the `hub-load` end-to-end load tool.
//!
//! `hub-load` starts (or connects to) two `hub-server` processes that share one PostgreSQL
//! database, drives real SignalR clients against their chat hub (`/chathub`) over
//! WebSockets, and prints one JSON line per scenario. See `BENCHMARKS.md` at the root of
//! the repository for the scenarios, the commands and the recorded numbers.
//!
//! # Layout
//!
//! - [`client`]: how the tool's clients connect: `chat-client` connections (negotiate,
//!   WebSocket, JSON), with pipelined invocations, arrival times read as messages are
//!   decoded, and small read buffers for thousands of idle connections.
//! - [`probe`]: what every benchmark message carries (sender, sequence number, send
//!   time) and [`check`]: what receivers verify (loss, duplicates, per-sender order).
//! - [`latency`]: latency samples and percentiles.
//! - [`servers`]: starting, finding and measuring `hub-server` processes.
//! - [`scenario`]: the message scenarios (S1 to S3, the burst) driven by the Rust client;
//!   [`js_driver`]: the same scenarios driven by the official `@microsoft/signalr`
//!   client in Node; both turn what they observed into a report the same way (`tally`).
//!   [`idle`]: S4, idle connections and server memory; [`soak`]: a long churn of many
//!   clients with listener kills, checked for loss and memory growth; [`baseline`]: the original .NET
//!   backplane design.
//! - [`server_flags`]: which `hub-server` flags a run passed (none by default: the
//!   binary's defaults are measured) and what the binary's defaults are.
//! - [`cpu`]: where the CPU went during a scenario (instances, this program, PostgreSQL,
//!   anything else).
//! - [`database`]: the database settings a report records, and the check that a run
//!   only claims a schema that does not exist yet (connecting, dropping schemas and
//!   where the servers are: the `test-services` crate, shared with the tests).
//! - [`purge`]: removing the Redis keys or the NATS stream of a run on those backplanes.
//! - [`report`]: the JSON lines; [`medians`]: with `--runs N`, the medians over the runs.
//!
//! # Example
//!
//! What one message looks like on the wire, and what a receiver reads back:
//!
//! ```
//! use benches::probe::Probe;
//!
//! let probe = Probe { sender: 0, seq: 41, sent_micros: 1_250, written_micros: 1_310 };
//! let text = probe.to_text(48);
//! assert_eq!(text.len(), 48);
//! assert_eq!(Probe::parse(&text), Some(probe));
//! ```

pub mod baseline;
pub mod check;
pub mod client;
pub mod cpu;
pub mod database;
pub mod envelope_run;
pub mod idle;
pub mod js_driver;
pub mod latency;
pub mod medians;
pub mod probe;
pub mod purge;
pub mod report;
pub mod scenario;
pub mod server_flags;
pub mod servers;
pub mod soak;
mod tally;

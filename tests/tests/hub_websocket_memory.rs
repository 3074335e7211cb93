//! A 50 MiB WebSocket message streams through the server in bounded memory. Alone in its
//! test binary, because it reads the resident memory of the whole process (the server
//! runs in-process), which other tests running beside it would disturb.

mod hub_support;

use hub_server::HubOptions;
use hub_support::TestServer;
use hub_support::raw_socket::{CONTINUATION, RawSocket, ServerFrame, TEXT};
use tokio::net::TcpStream;

const FIN: u8 = 0x80;

/// The server process's resident memory, in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// 50 MiB in one WebSocket message, in 64 KiB frames whose boundaries fall anywhere
/// inside the ~1 KiB hub messages it carries: all of them are served, and the server's
/// memory does not grow with the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mib_websocket_message_streams_through_in_bounded_memory() {
    const TOTAL: usize = 50 * 1024 * 1024;
    const FRAME: usize = 64 * 1024;
    const WARM_UP: usize = 4 * 1024 * 1024;
    let server = TestServer::start(HubOptions::default()).await;
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    let mut socket = RawSocket::upgrade(tcp).await;
    socket.handshake_json().await;

    // Fire-and-forget invocations (no id, so no answer): only the final one answers.
    let message = format!(
        "{{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"{}\"]}}\u{1e}",
        "m".repeat(1000)
    );
    let count = TOTAL / message.len();
    let stream_len = count * message.len();
    let pattern = message.repeat(FRAME / message.len() + 2);
    let last =
        "{\"type\":1,\"invocationId\":\"done\",\"target\":\"Add\",\"arguments\":[20,22]}\u{1e}";

    let mut sent = 0;
    let mut baseline = None;
    let mut peak = 0;
    while sent < stream_len {
        let offset = sent % message.len();
        let len = FRAME.min(stream_len - sent);
        let payload = &pattern.as_bytes()[offset..offset + len];
        let first = if sent == 0 { TEXT } else { CONTINUATION };
        socket.send(first, payload).await;
        sent += len;
        if sent >= WARM_UP {
            let now = resident_bytes();
            baseline.get_or_insert(now);
            peak = peak.max(now);
        }
    }
    socket.send(FIN | CONTINUATION, last.as_bytes()).await;
    assert_eq!(
        socket.recv_skipping_pings().await,
        ServerFrame::completion("done", "42"),
        "all {count} hub messages were read, then the last one answered"
    );
    let baseline = baseline.expect("measured");
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "resident memory while streaming: baseline {} KiB, peak {} KiB, growth {} KiB",
        baseline / 1024,
        peak / 1024,
        growth / 1024
    );
    assert!(
        growth < 8 * 1024 * 1024,
        "memory grew by {growth} bytes while a 50 MiB message streamed in"
    );
}

//! Reading the output of processes the tests start.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// Every line of `stream` (a child's stdout or stderr), forwarded to a channel as it
/// arrives, so a test can wait for a line with a timeout while the process runs.
/// The channel ends when the stream does.
pub fn lines_of(
    stream: impl AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

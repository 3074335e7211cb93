//! Reading the output of processes the tests start.

use test_services::forward_lines;
use tokio::io::AsyncRead;
use tokio::process::Child;
use tokio::sync::mpsc;

/// Every line of `stream` (a child's stdout or stderr), forwarded to a channel as it
/// arrives, so a test can wait for a line with a timeout while the process runs.
/// The channel ends when the stream does.
pub fn lines_of(
    stream: impl AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    forward_lines(stream, tx);
    rx
}

/// Every line of `child`'s piped stdout and stderr, in one channel in the order they
/// arrive (for a log, whichever stream it goes to). The channel ends when both streams
/// do.
///
/// # Panics
///
/// Panics if stdout or stderr is not piped, or was taken already.
pub fn output_lines(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    forward_lines(child.stdout.take().expect("piped stdout"), tx.clone());
    forward_lines(child.stderr.take().expect("piped stderr"), tx);
    rx
}

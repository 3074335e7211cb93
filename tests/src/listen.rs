//! A plain PostgreSQL client listening on a channel beside the backplane's nodes, so a
//! test sees the notifications exactly as they go over the wire.

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

/// Connect to `url` as a plain client, `LISTEN` on `channel` (quoted here), and return
/// the client (keep it: dropping it ends the connection) with the notifications that
/// arrive, in order, until the connection ends.
///
/// # Panics
///
/// When the connection or the `LISTEN` fails.
pub async fn listen(url: &str, channel: &str) -> (Client, mpsc::UnboundedReceiver<Notification>) {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connecting a plain listening client");
    let (notifications, heard) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) =
            futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await
        {
            if let AsyncMessage::Notification(notification) = message {
                let _ = notifications.send(notification);
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "\"\"")))
        .await
        .expect("LISTEN");
    (client, heard)
}

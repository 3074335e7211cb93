//! A SignalR client (in progress).

mod config;
mod connection;
mod driver;
mod error;
mod events;
mod handlers;
mod http;
mod negotiate;
mod reconnect;
mod token;
mod transport;
mod url;

pub use config::HubConnectionBuilder;
pub use connection::{HubConnection, HubConnectionState};
pub use error::{BoxError, ConnectError, DisconnectReason, InvokeError};
pub use handlers::FromArguments;
pub use hub_protocol::{ArgumentError, Arguments, Protocol};
pub use reconnect::{ReconnectDelays, ReconnectPolicy, RetryContext};

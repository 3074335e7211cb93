//! The chat server of the `hub-server` binary, as a library so tests and other programs can
//! run the very same thing in-process.
//!
//! The hub follows the contract of ASP.NET Core's classic chat sample, so existing chat
//! clients work against it:
//!
//! | client invokes | server sends |
//! |---|---|
//! | `SendMessage(user, message)` | `ReceiveMessage(user, message)` to all |
//! | `JoinGroup(group)` | adds the caller, then `UserJoinedGroup(user, group)` to the group (the caller included); fails with a message saying why when the caller is already in [`MAX_GROUPS_PER_CONNECTION`] groups |
//! | `LeaveGroup(group)` | removes the caller, then `UserLeftGroup(user, group)` to the group (so the leaver does not get it, as in the original sample) |
//! | `SendMessageToGroup(group, user, message)` | `ReceiveGroupMessage(group, user, message)` to the group |
//! | (on connect) | `UserConnected(connectionId)` to all |
//! | (on disconnect) | `UserDisconnected(connectionId)` to all |
//!
//! `user` in `UserJoinedGroup` / `UserLeftGroup` is the connection's user id, or null for
//! an anonymous connection. Without an authenticator the chat hub is anonymous with a
//! name: the user id is the *name* the client sends as its access token
//! (`accessTokenFactory`), which proves nothing and is documented as such; it is a display
//! name, not an identity. A token that looks like a JWT is never taken as a name (the
//! connection is anonymous and a warning is logged, without the token), so a deployment
//! that forgot to configure validation does not silently trust its users' tokens. With
//! [`HubBuilder::authenticator`] (the binary's `--jwt-*` flags) the user id is the
//! validated token's claim instead, and unauthenticated clients are refused.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hub_server::chat;
//!
//! let hub = chat::hub_builder().build().await?;
//! let app = chat::router(&hub, chat::ServerInfo::new("node-a", "memory"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The module's parts: `methods` (the hub: its methods, hooks and names), `app` (the
//! router: the page, `/health`, CORS and path canonicalization), `page` (the browser
//! page and its files) and `state_log` (the backplane state in the log).

mod app;
mod methods;
mod page;
mod state_log;

pub use app::{ServerInfo, router};
pub use methods::{hub_builder, unverified_name};
pub use page::SIGNALR_CLIENT_VERSION;
pub use state_log::log_backplane_state;

/// Where the chat hub is mounted.
pub const HUB_PATH: &str = "/chathub";

/// The chat hub's name on the backplane.
pub const HUB_NAME: &str = "ChatHub";

/// Longest group name the chat hub accepts, in characters, so a client cannot make every
/// node hold arbitrarily large group keys.
pub const MAX_GROUP_NAME_CHARS: usize = 256;

/// How many groups one connection may be in at once, by default: a client choosing group
/// names could otherwise make every node hold as many as it likes. The `hub-server`
/// binary's `--max-groups-per-connection` changes it; for the library, pass
/// [`ManagerOptions::max_groups_per_connection`] to [`HubBuilder::manager_options`].
pub const MAX_GROUPS_PER_CONNECTION: usize = 100;

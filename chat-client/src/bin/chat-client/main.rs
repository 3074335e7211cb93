//! `chat-client`: a terminal client for the chat hub (`/chathub`) of `hub-server`, or of any
//! server with the same hub contract (ASP.NET Core's classic chat sample).
//!
//! ```text
//! chat-client --url http://localhost:5000 --user alice
//! ```
//!
//! Without `--url` and `--user` it asks for them. Type `/help` for commands; anything else
//! is sent to everyone. With a terminal it offers line editing and history; with piped
//! input and output it reads and prints plain lines, so scripts can drive it, and exits at
//! the end of input (with status 1 if a line could not be sent).

mod chat;
mod commands;
mod console;

use std::process::ExitCode;

use chat_client::{HubConnectionBuilder, Protocol, TransportType};
use clap::{Parser, ValueEnum};

/// The server the questions propose.
const DEFAULT_URL: &str = "http://localhost:5000";
/// Where the chat hub lives on the server.
const HUB_PATH: &str = "/chathub";

/// Terminal chat client for the SignalR chat hub.
#[derive(Debug, Parser)]
#[command(name = "chat-client", version, about)]
struct Args {
    /// Server URL, e.g. http://localhost:5000; the hub is at <URL>/chathub. Asked for when
    /// missing.
    #[arg(long)]
    url: Option<String>,
    /// Your name in the chat. Asked for when missing.
    #[arg(long)]
    user: Option<String>,
    /// Hub protocol to speak.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Json)]
    protocol: ProtocolArg,
    /// Access token sent to the server as a bearer token. Defaults to the user name, which
    /// the demo chat server (hub-server) takes as the user id shown in join and leave
    /// notices; servers without authentication ignore it.
    #[arg(long, env = "CHAT_ACCESS_TOKEN", hide_env_values = true)]
    access_token: Option<String>,
    /// Transport(s) the client may use, comma-separated; tried in the official order
    /// (websockets, then server-sent-events, then long-polling) among those the server
    /// offers. Default: all three. Server-Sent Events carry JSON only.
    #[arg(long, value_enum, value_delimiter = ',')]
    transport: Vec<TransportArg>,
    /// Ask for stateful reconnect: a dropped WebSocket is replaced without losing or
    /// repeating messages, and without a reconnect notice.
    #[arg(long)]
    stateful_reconnect: bool,
}

/// The transports, as command-line values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum TransportArg {
    /// WebSockets.
    Websockets,
    /// Server-Sent Events (JSON only).
    ServerSentEvents,
    /// Long polling.
    LongPolling,
}

impl From<TransportArg> for TransportType {
    fn from(transport: TransportArg) -> Self {
        match transport {
            TransportArg::Websockets => TransportType::WebSockets,
            TransportArg::ServerSentEvents => TransportType::ServerSentEvents,
            TransportArg::LongPolling => TransportType::LongPolling,
        }
    }
}

/// The hub protocols, as command-line values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProtocolArg {
    /// JSON text frames.
    Json,
    /// MessagePack binary frames.
    Messagepack,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (mut input, printer) = match console::open() {
        Ok(console) => console,
        Err(error) => return fail(format_args!("cannot open the terminal: {error}")),
    };
    let interactive = matches!(input, console::Input::Terminal(_));
    let url = match args.url {
        Some(url) => url,
        None => match input.ask("Server URL", DEFAULT_URL) {
            Ok(url) => url,
            Err(error) => return fail(format_args!("cannot read the server URL: {error}")),
        },
    };
    let user = match args.user {
        Some(user) => user,
        None => match input.ask("User name", &default_user()) {
            Ok(user) => user,
            Err(error) => return fail(format_args!("cannot read the user name: {error}")),
        },
    };
    let user = user.trim().to_owned();
    if user.is_empty() {
        return fail("the user name must not be empty (it is shown with every message you send)");
    }
    let hub_url = hub_url(&url);
    let mut builder = HubConnectionBuilder::new(&hub_url)
        .protocol(match args.protocol {
            ProtocolArg::Json => Protocol::Json,
            ProtocolArg::Messagepack => Protocol::MessagePack,
        })
        .with_automatic_reconnect();
    if !args.transport.is_empty() {
        builder = builder.transports(args.transport.iter().copied().map(TransportType::from));
    }
    if args.stateful_reconnect {
        builder = builder.with_stateful_reconnect();
    }
    let token = args.access_token.unwrap_or_else(|| user.clone());
    builder = builder.access_token_provider(move || {
        let token = token.clone();
        async move { Ok(token) }
    });
    let connection = match builder.build() {
        Ok(connection) => connection,
        Err(error) => return fail(error),
    };

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(format_args!("cannot start the async runtime: {error}")),
    };
    runtime.block_on(async move {
        let lifecycle = chat::register_handlers(&connection, &printer, interactive);
        printer.line(format_args!("Connecting to {hub_url} as {user}..."));
        if let Err(error) = connection.start().await {
            return fail(error);
        }
        match connection.connection_id() {
            Some(id) => printer.line(format_args!("Connected. Connection id: {id}")),
            None => printer.line("Connected."),
        }
        printer.line("Type /help for commands; anything else is sent to everyone.");
        let events = input.spawn_reader();
        chat::run(&connection, &user, &printer, events, lifecycle, interactive).await
    })
}

/// The hub URL for a server URL: `{url}/chathub`, unless the user already named the hub;
/// `http://` is assumed when the scheme is missing (`localhost:5000`).
fn hub_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let scheme = if url.contains("://") { "" } else { "http://" };
    let hub = if url.ends_with(HUB_PATH) {
        ""
    } else {
        HUB_PATH
    };
    format!("{scheme}{url}{hub}")
}

/// `User_` and four random digits, like the original sample.
fn default_user() -> String {
    let mut bytes = [0u8; 2];
    // Without randomness every user is User_0000: still usable, just not unique.
    let _ = getrandom::fill(&mut bytes);
    format!("User_{:04}", u16::from_le_bytes(bytes) % 10_000)
}

/// Prints one error line and returns the failure exit code.
fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_url_appends_the_hub_path_once() {
        assert_eq!(
            hub_url("http://localhost:5000"),
            "http://localhost:5000/chathub"
        );
        assert_eq!(hub_url(" http://h:1/ "), "http://h:1/chathub");
        assert_eq!(hub_url("http://h:1/chathub"), "http://h:1/chathub");
        assert_eq!(hub_url("http://h:1/app"), "http://h:1/app/chathub");
        assert_eq!(hub_url("localhost:5000"), "http://localhost:5000/chathub");
    }

    #[test]
    fn default_user_is_user_and_four_digits() {
        let user = default_user();
        assert_eq!(user.len(), 9, "{user}");
        assert!(user.starts_with("User_"));
        assert!(user[5..].chars().all(|c| c.is_ascii_digit()), "{user}");
    }

    #[test]
    fn arguments_parse() {
        let args = Args::try_parse_from([
            "chat-client",
            "--url",
            "http://x:1",
            "--user",
            "bob",
            "--protocol",
            "messagepack",
        ])
        .unwrap();
        assert_eq!(args.url.as_deref(), Some("http://x:1"));
        assert_eq!(args.user.as_deref(), Some("bob"));
        assert!(matches!(args.protocol, ProtocolArg::Messagepack));
        assert!(Args::try_parse_from(["chat-client", "--protocol", "xml"]).is_err());
        assert!(args.transport.is_empty() && !args.stateful_reconnect);

        let args = Args::try_parse_from([
            "chat-client",
            "--transport",
            "server-sent-events,long-polling",
            "--stateful-reconnect",
        ])
        .unwrap();
        let transports: Vec<TransportType> = args
            .transport
            .iter()
            .copied()
            .map(TransportType::from)
            .collect();
        assert_eq!(
            transports,
            [TransportType::ServerSentEvents, TransportType::LongPolling]
        );
        assert!(args.stateful_reconnect);
        assert!(Args::try_parse_from(["chat-client", "--transport", "pigeon"]).is_err());
    }
}

//! The chat itself: what arrives is printed, what is typed is sent.

use std::borrow::Cow;
use std::process::ExitCode;
use std::sync::mpsc as std_mpsc;

use chat_client::{HubConnection, InvokeError};
use tokio::sync::{mpsc, watch};

use crate::commands::{self, Command};
use crate::console::{InputEvent, Next, Printer};

/// Prints what the chat hub sends, and the connection's lifecycle.
///
/// Returns a receiver that turns true when the connection closed for good on its own (not
/// because we stopped it).
pub(crate) fn register_handlers(
    connection: &HubConnection,
    printer: &Printer,
    interactive: bool,
) -> watch::Receiver<bool> {
    let out = printer.clone();
    connection.on(
        "ReceiveMessage",
        move |(user, message): (String, String)| {
            out.line(format_args!("[ALL] {}: {}", clean(&user), clean(&message)));
        },
    );
    let out = printer.clone();
    connection.on(
        "ReceiveGroupMessage",
        move |(group, user, message): (String, String, String)| {
            out.line(format_args!(
                "[{}] {}: {}",
                clean(&group),
                clean(&user),
                clean(&message)
            ));
        },
    );
    let out = printer.clone();
    connection.on("UserConnected", move |(connection_id,): (String,)| {
        out.line(format_args!("[SYSTEM] {} connected", clean(&connection_id)));
    });
    let out = printer.clone();
    connection.on("UserDisconnected", move |(connection_id,): (String,)| {
        out.line(format_args!(
            "[SYSTEM] {} disconnected",
            clean(&connection_id)
        ));
    });
    let out = printer.clone();
    connection.on(
        "UserJoinedGroup",
        move |(user, group): (Option<String>, String)| {
            out.line(format_args!(
                "[SYSTEM] {} joined group {}",
                who(user.as_deref()),
                clean(&group)
            ));
        },
    );
    let out = printer.clone();
    connection.on(
        "UserLeftGroup",
        move |(user, group): (Option<String>, String)| {
            out.line(format_args!(
                "[SYSTEM] {} left group {}",
                who(user.as_deref()),
                clean(&group)
            ));
        },
    );

    let out = printer.clone();
    connection.on_reconnecting(move |reason| {
        out.line(format_args!(
            "[SYSTEM] Connection lost ({reason}); reconnecting..."
        ));
    });
    let out = printer.clone();
    connection.on_reconnected(move |connection_id| match connection_id {
        Some(id) => out.line(format_args!("[SYSTEM] Reconnected. Connection id: {id}")),
        None => out.line("[SYSTEM] Reconnected."),
    });
    let out = printer.clone();
    let (closed_tx, closed_rx) = watch::channel(false);
    connection.on_closed(move |reason| {
        if let Some(reason) = reason {
            // A terminal user is blocked in the line editor: tell them how to get out.
            let hint = if interactive {
                " Press Enter to exit."
            } else {
                ""
            };
            out.line(format_args!("[SYSTEM] Connection closed: {reason}.{hint}"));
            closed_tx.send_replace(true);
        }
    });
    closed_rx
}

/// Reads and handles input until the user quits, input ends, or the connection closes.
///
/// Returns success unless the connection closed on its own.
pub(crate) async fn run(
    connection: &HubConnection,
    user: &str,
    printer: &Printer,
    mut input: mpsc::Receiver<(InputEvent, std_mpsc::Sender<Next>)>,
    mut closed: watch::Receiver<bool>,
    interactive: bool,
) -> ExitCode {
    loop {
        let (event, next) = tokio::select! {
            event = input.recv() => match event {
                Some(event) => event,
                None => break,
            },
            // Without a terminal nobody can react, so end now; with one, the user sees why
            // on the next line they enter (the line editor cannot be interrupted cleanly).
            _ = closed.wait_for(|closed| *closed), if !interactive => break,
        };
        let line = match event {
            InputEvent::Line(line) => line,
            InputEvent::Eof | InputEvent::Interrupted => break,
        };
        if *closed.borrow() {
            printer.line("[SYSTEM] The connection is closed; exiting.");
            let _ = next.send(Next::Stop);
            break;
        }
        let quit = handle(connection, user, printer, &line).await;
        let _ = next.send(if quit { Next::Stop } else { Next::Continue });
        if quit {
            break;
        }
    }
    connection.stop().await;
    if *closed.borrow() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Handles one line; returns true to quit.
async fn handle(connection: &HubConnection, user: &str, printer: &Printer, line: &str) -> bool {
    let (result, action) = match commands::parse(line) {
        Command::Nothing => return false,
        Command::Quit => return true,
        Command::Help => {
            for line in commands::HELP {
                printer.line(line);
            }
            return false;
        }
        Command::Usage(usage) => {
            printer.line(usage);
            return false;
        }
        Command::Unknown(command) => {
            printer.line(format_args!(
                "Unknown command: {command}. Type /help for the list of commands."
            ));
            return false;
        }
        Command::Join(group) => (
            connection.invoke::<(), _>("JoinGroup", (group,)).await,
            format!("join group {group}"),
        ),
        Command::Leave(group) => (
            connection.invoke::<(), _>("LeaveGroup", (group,)).await,
            format!("leave group {group}"),
        ),
        Command::Group { group, message } => (
            connection
                .invoke::<(), _>("SendMessageToGroup", (group, user, message))
                .await,
            format!("send to group {group}"),
        ),
        Command::Broadcast(message) => (
            connection
                .invoke::<(), _>("SendMessage", (user, message))
                .await,
            "send the message".to_owned(),
        ),
    };
    if let Err(error) = result {
        report(printer, &action, &error);
    }
    false
}

/// Prints why a command failed.
fn report(printer: &Printer, action: &str, error: &InvokeError) {
    printer.line(format_args!("[SYSTEM] Could not {action}: {error}"));
}

/// The name to show for a user that may be anonymous.
fn who(user: Option<&str>) -> Cow<'_, str> {
    match user {
        Some(user) if !user.is_empty() => clean(user),
        _ => Cow::Borrowed("A user"),
    }
}

/// Makes text from other users safe to print: control characters (which could move the
/// cursor, clear the screen or retitle the terminal) are shown escaped instead.
fn clean(text: &str) -> Cow<'_, str> {
    if !text.contains(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(clean("red\u{1b}[31m"), "red\\u{1b}[31m");
        assert_eq!(clean("two\nlines"), "two\\nlines");
        assert_eq!(who(None), "A user");
        assert_eq!(who(Some("")), "A user");
        assert_eq!(who(Some("bob")), "bob");
    }
}

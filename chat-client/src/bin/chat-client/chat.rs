//! The chat itself: what arrives is printed, what is typed is sent.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::mpsc as std_mpsc;

use chat_client::{HubConnection, InvokeError};
use tokio::sync::{mpsc, watch};

use crate::commands::{self, Command};
use crate::console::{InputEvent, Next, Printer};

/// The largest message the client sends, in bytes of its JSON invocation frame: the demo
/// chat server (hub-server) refuses frames over 32 KiB by closing the connection, so a
/// longer line is refused here instead, with the connection kept.
const MAX_FRAME_BYTES: usize = 32 * 1024;

/// What the handlers report to the input loop.
pub(crate) struct Lifecycle {
    /// Turns true when the connection closed for good on its own (not because we stopped
    /// it).
    closed: watch::Receiver<bool>,
    /// One item per automatic reconnection: the groups must be joined again, since the
    /// server forgets a connection's groups when it ends.
    reconnected: mpsc::UnboundedReceiver<()>,
}

/// Prints what the chat hub sends, and the connection's lifecycle.
pub(crate) fn register_handlers(
    connection: &HubConnection,
    printer: &Printer,
    interactive: bool,
) -> Lifecycle {
    let out = printer.clone();
    connection.on(
        "ReceiveMessage",
        // Either may be null: other clients may send null, as .NET's `string` allows.
        move |(user, message): (Option<String>, Option<String>)| {
            out.line(format_args!(
                "[ALL] {}: {}",
                clean(user.as_deref().unwrap_or_default()),
                clean(message.as_deref().unwrap_or_default())
            ));
        },
    );
    let out = printer.clone();
    connection.on(
        "ReceiveGroupMessage",
        move |(group, user, message): (String, Option<String>, Option<String>)| {
            out.line(format_args!(
                "[{}] {}: {}",
                clean(&group),
                clean(user.as_deref().unwrap_or_default()),
                clean(message.as_deref().unwrap_or_default())
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
    let (reconnected_tx, reconnected) = mpsc::unbounded_channel();
    connection.on_reconnected(move |connection_id| {
        match connection_id {
            Some(id) => out.line(format_args!("[SYSTEM] Reconnected. Connection id: {id}")),
            None => out.line("[SYSTEM] Reconnected."),
        }
        let _ = reconnected_tx.send(());
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
    Lifecycle {
        closed: closed_rx,
        reconnected,
    }
}

/// Reads and handles input until the user quits, input ends, or the connection closes.
///
/// Returns success unless the connection closed on its own.
pub(crate) async fn run(
    connection: &HubConnection,
    user: &str,
    printer: &Printer,
    mut input: mpsc::Receiver<(InputEvent, std_mpsc::Sender<Next>)>,
    lifecycle: Lifecycle,
    interactive: bool,
) -> ExitCode {
    let Lifecycle {
        mut closed,
        mut reconnected,
    } = lifecycle;
    // The groups joined and not left, to join again after a reconnection.
    let mut groups = BTreeSet::new();
    // Lines that asked for something the client could not do (a message not sent, a group
    // not joined): a script (input not a terminal) learns of them from the exit status.
    let mut failed = 0usize;
    loop {
        let (event, next) = tokio::select! {
            event = input.recv() => match event {
                Some(event) => event,
                None => break,
            },
            Some(()) = reconnected.recv() => {
                rejoin(connection, printer, &mut groups).await;
                continue;
            }
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
        let handled = handle(connection, user, printer, &mut groups, &line).await;
        // Counted for scripts; a person at the terminal has seen each [SYSTEM] line.
        if handled == Handled::Failed && !interactive {
            failed += 1;
        }
        let quit = handled == Handled::Quit;
        let _ = next.send(if quit { Next::Stop } else { Next::Continue });
        if quit {
            break;
        }
    }
    connection.stop().await;
    if failed > 0 {
        eprintln!(
            "error: {failed} line{} could not be sent or done (see the [SYSTEM] lines)",
            if failed == 1 { "" } else { "s" }
        );
    }
    if *closed.borrow() || failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What became of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Done, or nothing to do (help, a usage line).
    Done,
    /// A message, join or leave that did not happen.
    Failed,
    /// `/quit`.
    Quit,
}

/// Joins `groups` again on a new connection; a group that cannot be joined is reported
/// and forgotten.
async fn rejoin(connection: &HubConnection, printer: &Printer, groups: &mut BTreeSet<String>) {
    let mut failed = Vec::new();
    for group in groups.iter() {
        match connection
            .invoke::<(), _>("JoinGroup", (group.as_str(),))
            .await
        {
            Ok(()) => printer.line(format_args!("[SYSTEM] Rejoined group {}", clean(group))),
            Err(error) => {
                report(printer, &format!("rejoin group {}", clean(group)), &error);
                failed.push(group.clone());
            }
        }
    }
    for group in failed {
        groups.remove(&group);
    }
}

/// Why a message cannot be sent: its invocation frame would be larger than the server
/// accepts. `arguments` are the invocation's arguments.
fn too_long(arguments: &impl serde::Serialize) -> Option<String> {
    // The JSON frame around the arguments: type, invocation id and target take well under
    // 100 bytes.
    let size = serde_json::to_string(arguments).map_or(usize::MAX, |json| json.len() + 100);
    (size > MAX_FRAME_BYTES).then(|| {
        format!(
            "[SYSTEM] Message not sent: it is too long ({size} bytes encoded; the server \
             accepts messages up to {MAX_FRAME_BYTES} bytes)."
        )
    })
}

/// Handles one line.
async fn handle(
    connection: &HubConnection,
    user: &str,
    printer: &Printer,
    groups: &mut BTreeSet<String>,
    line: &str,
) -> Handled {
    let (result, action) = match commands::parse(line) {
        Command::Nothing => return Handled::Done,
        Command::Quit => return Handled::Quit,
        Command::Help => {
            for line in commands::HELP {
                printer.line(line);
            }
            return Handled::Done;
        }
        Command::Usage(usage) => {
            printer.line(usage);
            return Handled::Done;
        }
        Command::Unknown(command) => {
            printer.line(format_args!(
                "Unknown command: {command}. Type /help for the list of commands."
            ));
            return Handled::Done;
        }
        Command::Join(group) => {
            let result = connection.invoke::<(), _>("JoinGroup", (group,)).await;
            if result.is_ok() {
                groups.insert(group.to_owned());
            }
            (result, format!("join group {group}"))
        }
        Command::Leave(group) => {
            let result = connection.invoke::<(), _>("LeaveGroup", (group,)).await;
            if result.is_ok() {
                // The server tells the group's remaining members, not the one who left.
                groups.remove(group);
                printer.line(format_args!("[SYSTEM] You left group {}", clean(group)));
            }
            (result, format!("leave group {group}"))
        }
        Command::Group { group, message } => {
            let arguments = (group, user, message);
            if let Some(refusal) = too_long(&arguments) {
                printer.line(refusal);
                return Handled::Failed;
            }
            (
                connection
                    .invoke::<(), _>("SendMessageToGroup", arguments)
                    .await,
                format!("send to group {group}"),
            )
        }
        Command::Broadcast(message) => {
            let arguments = (user, message);
            if let Some(refusal) = too_long(&arguments) {
                printer.line(refusal);
                return Handled::Failed;
            }
            (
                connection.invoke::<(), _>("SendMessage", arguments).await,
                "send the message".to_owned(),
            )
        }
    };
    match result {
        Ok(()) => Handled::Done,
        Err(error) => {
            report(printer, &action, &error);
            Handled::Failed
        }
    }
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

    #[test]
    fn messages_over_the_frame_limit_are_refused_with_their_size() {
        assert_eq!(too_long(&("alice", "hello")), None);
        assert_eq!(too_long(&("alice", "x".repeat(32_000))), None);
        let refusal = too_long(&("alice", "x".repeat(33_000))).expect("refused");
        assert!(refusal.contains("33112 bytes"), "{refusal}");
        // Escaping counts: 6,000 control characters are 36,000 bytes of JSON.
        assert!(too_long(&("alice", "\u{1}".repeat(6_000))).is_some());
    }
}

//! What the user types: commands and messages.

/// The help text `/help` prints.
pub(crate) const HELP: &[&str] = &[
    "Commands:",
    "  /help, /h                  show this help",
    "  /join <group>              join a group",
    "  /leave <group>             leave a group",
    "  /group <group> <message>   send a message to a group",
    "  /quit, /exit               leave the chat",
    "Anything else is sent to everyone.",
];

/// One line of input, understood.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command<'a> {
    /// Blank line: nothing to do.
    Nothing,
    /// `/help` or `/h`.
    Help,
    /// `/join <group>`.
    Join(&'a str),
    /// `/leave <group>`.
    Leave(&'a str),
    /// `/group <group> <message>`.
    Group {
        /// The group to send to.
        group: &'a str,
        /// The message, as typed.
        message: &'a str,
    },
    /// `/quit` or `/exit`.
    Quit,
    /// Text for everyone.
    Broadcast(&'a str),
    /// A command with missing or extra arguments: print this usage line.
    Usage(&'static str),
    /// A `/command` that does not exist.
    Unknown(&'a str),
}

/// Parses one line of input.
pub(crate) fn parse(line: &str) -> Command<'_> {
    let line = line.trim();
    if line.is_empty() {
        return Command::Nothing;
    }
    let Some(command) = line.strip_prefix('/') else {
        return Command::Broadcast(line);
    };
    let (name, rest) = match command.split_once(char::is_whitespace) {
        Some((name, rest)) => (name, rest.trim()),
        None => (command, ""),
    };
    match name.to_ascii_lowercase().as_str() {
        "help" | "h" => Command::Help,
        "quit" | "exit" => Command::Quit,
        "join" => {
            one_group(rest, "Usage: /join <group>").map_or_else(Command::Usage, Command::Join)
        }
        "leave" => {
            one_group(rest, "Usage: /leave <group>").map_or_else(Command::Usage, Command::Leave)
        }
        "group" => match rest.split_once(char::is_whitespace) {
            Some((group, message)) if !message.trim().is_empty() => Command::Group {
                group,
                message: message.trim(),
            },
            _ => Command::Usage("Usage: /group <group> <message>"),
        },
        _ => Command::Unknown(line.split_whitespace().next().unwrap_or(line)),
    }
}

/// A group name: exactly one word.
fn one_group<'a>(rest: &'a str, usage: &'static str) -> Result<&'a str, &'static str> {
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        Err(usage)
    } else {
        Ok(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_aliases() {
        assert_eq!(parse("/help"), Command::Help);
        assert_eq!(parse("  /h  "), Command::Help);
        assert_eq!(parse("/quit"), Command::Quit);
        assert_eq!(parse("/EXIT"), Command::Quit);
        assert_eq!(parse("/join room"), Command::Join("room"));
        assert_eq!(parse("/leave  room "), Command::Leave("room"));
        assert_eq!(
            parse("/group room hello  there "),
            Command::Group {
                group: "room",
                message: "hello  there"
            }
        );
    }

    #[test]
    fn missing_arguments_give_the_usage_line() {
        assert_eq!(parse("/join"), Command::Usage("Usage: /join <group>"));
        assert_eq!(parse("/join a b"), Command::Usage("Usage: /join <group>"));
        assert_eq!(parse("/leave "), Command::Usage("Usage: /leave <group>"));
        assert_eq!(
            parse("/group"),
            Command::Usage("Usage: /group <group> <message>")
        );
        assert_eq!(
            parse("/group room"),
            Command::Usage("Usage: /group <group> <message>")
        );
        assert_eq!(
            parse("/group room   "),
            Command::Usage("Usage: /group <group> <message>")
        );
    }

    #[test]
    fn text_and_unknown_commands() {
        assert_eq!(parse("hello world"), Command::Broadcast("hello world"));
        assert_eq!(parse("  spaced  "), Command::Broadcast("spaced"));
        assert_eq!(parse(""), Command::Nothing);
        assert_eq!(parse("   "), Command::Nothing);
        assert_eq!(parse("/dance now"), Command::Unknown("/dance"));
        assert_eq!(parse("/"), Command::Unknown("/"));
    }
}

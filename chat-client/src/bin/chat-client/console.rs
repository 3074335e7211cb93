//! The terminal, or plain standard input and output when there is none.
//!
//! With a terminal, input goes through rustyline (line editing, history) and every line
//! printed while the user types goes through its external printer, which redraws the line
//! being typed below the new output instead of garbling it. Without one (pipes, scripts,
//! tests), input is read line by line and output is plain lines.

use std::fmt::Display;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc};

use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor, ExternalPrinter};
use tokio::sync::mpsc;

/// The prompt shown while reading chat input in a terminal.
const PROMPT: &str = "> ";

/// Reads input: a line editor on a terminal, plain lines otherwise.
pub(crate) enum Input {
    /// A terminal on both ends.
    Terminal(DefaultEditor),
    /// Anything else.
    Plain(std::io::Stdin),
}

/// One thing the user did.
#[derive(Debug)]
pub(crate) enum InputEvent {
    /// A line, without its line ending.
    Line(String),
    /// End of input (Ctrl-D, or the end of a pipe).
    Eof,
    /// Ctrl-C at the prompt.
    Interrupted,
}

/// Whether the reader should read another line after the caller handled the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Read the next line.
    Continue,
    /// Stop reading: the program is ending.
    Stop,
}

/// Prints lines so that they never garble what is being typed. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Printer(Option<Arc<Mutex<Box<dyn ExternalPrinter + Send>>>>);

impl Printer {
    /// Prints one line.
    pub(crate) fn line(&self, text: impl Display) {
        match &self.0 {
            Some(printer) => {
                let mut printer = printer.lock().unwrap_or_else(PoisonError::into_inner);
                // Nothing sensible to do if the terminal is gone.
                let _ = printer.print(format!("{text}\n"));
            }
            None => {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{text}");
                let _ = stdout.flush();
            }
        }
    }
}

/// Opens the console: the line editor when both standard input and output are terminals.
///
/// # Errors
///
/// When the terminal cannot be set up.
pub(crate) fn open() -> Result<(Input, Printer), ReadlineError> {
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        let config = Config::builder().auto_add_history(true).build();
        let mut editor = DefaultEditor::with_config(config)?;
        let printer = editor.create_external_printer()?;
        let printer: Box<dyn ExternalPrinter + Send> = Box::new(printer);
        Ok((
            Input::Terminal(editor),
            Printer(Some(Arc::new(Mutex::new(printer)))),
        ))
    } else {
        Ok((Input::Plain(std::io::stdin()), Printer(None)))
    }
}

impl Input {
    /// Asks a question and returns the answer, or `default` when the answer is empty or
    /// input has ended.
    ///
    /// # Errors
    ///
    /// When reading fails, or the user pressed Ctrl-C.
    pub(crate) fn ask(&mut self, question: &str, default: &str) -> Result<String, ReadlineError> {
        let prompt = format!("{question} (default: {default}): ");
        let answer = match self {
            Input::Terminal(editor) => match editor.readline(&prompt) {
                Ok(answer) => answer,
                Err(ReadlineError::Eof) => String::new(),
                Err(error) => return Err(error),
            },
            Input::Plain(stdin) => {
                // The question goes to standard error: standard output carries only the chat.
                eprintln!("{prompt}");
                let mut answer = String::new();
                stdin.lock().read_line(&mut answer)?;
                answer
            }
        };
        let answer = answer.trim();
        Ok(if answer.is_empty() { default } else { answer }.to_owned())
    }

    /// Reads one event.
    fn read(&mut self) -> InputEvent {
        match self {
            Input::Terminal(editor) => match editor.readline(PROMPT) {
                Ok(line) => InputEvent::Line(line),
                Err(ReadlineError::Interrupted) => InputEvent::Interrupted,
                Err(ReadlineError::Eof) => InputEvent::Eof,
                Err(error) => {
                    eprintln!("error: cannot read input: {error}");
                    InputEvent::Eof
                }
            },
            Input::Plain(stdin) => {
                let mut line = String::new();
                match stdin.lock().read_line(&mut line) {
                    Ok(0) => InputEvent::Eof,
                    Ok(_) => {
                        let trimmed = line.trim_end_matches(['\n', '\r']).len();
                        line.truncate(trimmed);
                        InputEvent::Line(line)
                    }
                    Err(error) => {
                        eprintln!("error: cannot read input: {error}");
                        InputEvent::Eof
                    }
                }
            }
        }
    }

    /// Reads input on its own thread (reading blocks, and a terminal must be read from one
    /// place). Each event waits for the caller's [`Next`] before the next read, so the prompt
    /// reappears only after a command is handled and the editor leaves raw mode before the
    /// program exits.
    pub(crate) fn spawn_reader(mut self) -> mpsc::Receiver<(InputEvent, std_mpsc::Sender<Next>)> {
        let (events, receiver) = mpsc::channel(1);
        std::thread::spawn(move || {
            loop {
                let event = self.read();
                let last = !matches!(event, InputEvent::Line(_));
                let (next_tx, next_rx) = std_mpsc::channel();
                if events.blocking_send((event, next_tx)).is_err() || last {
                    return;
                }
                if next_rx.recv() != Ok(Next::Continue) {
                    return;
                }
            }
        });
        receiver
    }
}

//! What the tool prints: with `--json` one JSON object on stdout, else the
//! command's text; the error's message on stderr either way.

use credential_store::Error;
use serde_json::{json, Value};

/// An error as printed: `error` in the JSON, `error: …` on stderr.
pub struct Problem {
    /// `error.kind`: a library error's [`ErrorKind`](credential_store::error::ErrorKind)
    /// name, or one of the tool's own (`usage`, `interrupted`, `unreadable_rows`,
    /// `copy_not_verified`).
    kind: &'static str,
    /// The message, with its causes.
    message: String,
    /// `error.details`, for the errors that carry a list or counts.
    details: Option<Value>,
}

impl Problem {
    /// A problem of the tool's own, without details.
    pub fn new(kind: &'static str, message: String) -> Problem {
        Problem {
            kind,
            message,
            details: None,
        }
    }

    /// A library error: its kind's name, its message followed by its causes, and
    /// its details.
    pub fn from_error(err: &Error) -> Problem {
        Problem {
            kind: err.kind().as_str(),
            message: describe(err),
            details: details(err),
        }
    }
}

/// Prints a command's outcome: the JSON object (`--json`) or the text, and the
/// error's message on stderr.
pub fn print(
    json: bool,
    command: &str,
    code: u8,
    result: Value,
    problem: Option<&Problem>,
    text: Option<&str>,
) {
    if json {
        print_json(Some(command), code, result, problem);
    } else if let Some(text) = text {
        print!("{text}");
    }
    if let Some(problem) = problem {
        eprintln!("error: {}", problem.message);
    }
}

/// The one JSON object on stdout.
pub fn print_json(command: Option<&str>, code: u8, result: Value, problem: Option<&Problem>) {
    let error = problem.map(|problem| {
        let mut error = json!({ "kind": problem.kind, "message": problem.message });
        if let Some(details) = &problem.details {
            error["details"] = details.clone();
        }
        error
    });
    let object = json!({
        "command": command,
        "ok": code == crate::OK,
        "exit_code": code,
        "result": result,
        "error": error,
    });
    println!("{object}");
}

/// Structured details of the errors that carry a list or counts.
fn details(err: &Error) -> Option<Value> {
    match err {
        Error::RotationIncomplete {
            rewritten,
            failures,
        } => Some(json!({
            "rewritten": rewritten,
            "failures": failures.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })),
        Error::RevertRefused { version, conflicts } => {
            Some(json!({ "version": version, "conflicts": conflicts }))
        }
        Error::RevertWouldExpose {
            version,
            accounts,
            credentials,
        } => Some(json!({ "version": version, "accounts": accounts, "credentials": credentials })),
        Error::RevertWouldDropNicknames { version, nicknames } => {
            Some(json!({ "version": version, "nicknames": nicknames }))
        }
        Error::TargetNotEmpty {
            accounts,
            credentials,
        } => Some(json!({ "accounts": accounts, "credentials": credentials })),
        _ => None,
    }
}

/// The error's message followed by its causes.
fn describe(err: &Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

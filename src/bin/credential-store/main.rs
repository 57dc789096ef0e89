//! `credential-store`: the operator command-line tool (cargo feature `cli`).
//!
//! A thin layer over the library: it parses arguments, opens the database and the
//! keyring, calls one library operation and prints what it returns, as text or,
//! with `--json`, as one JSON object on stdout. Progress goes to stderr. See the
//! README's "Operators" section for the commands, exit codes and JSON shapes.
//!
//! Laid out like cargo's own binary: this file holds the parser, the global
//! arguments, the dispatch and the exit codes; `commands/` one file per command
//! (its arguments and its `exec`, with what they share in `commands/mod.rs`);
//! `output.rs` what is printed; `progress.rs` the progress display.

mod commands;
mod output;
mod progress;

use clap::{Args, Parser, Subcommand};
use commands::{Failure, Run};
use credential_store::error::ErrorKind;
use output::Problem;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes.
const OK: u8 = 0;
const FOUND_OR_REFUSED: u8 = 1;
const USAGE: u8 = 2;
const DATABASE: u8 = 3;
const INTERRUPTED: u8 = 130;

/// Operate a credential store: migrate, inspect, backfill, rotate, verify, copy.
#[derive(Parser)]
#[command(name = "credential-store", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// The arguments every command takes.
#[derive(Args)]
struct Global {
    /// The database: postgres://…, sqlite://… or a file path.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
    /// A file of keys (`key` or `id:key`, primary first, one per line or
    /// comma-separated), readable by its owner only. Without it the keys come from
    /// CREDENTIAL_STORE_KEYS.
    #[arg(long, env = "CREDENTIAL_STORE_KEYS_FILE", global = true)]
    keys_file: Option<PathBuf>,
    /// The oldest ciphertext format to accept as readable (fernet, sealed-v1,
    /// sealed-v2, sealed-v3): `verify` reports older values as unreadable
    /// (`format_refused`). Rotation reads every format, to convert it.
    #[arg(long, env = "CREDENTIAL_STORE_MINIMUM_FORMAT", global = true, value_parser = commands::parse_format)]
    minimum_format: Option<credential_store::FormatVersion>,
    /// The AWS KMS key (id, ARN or alias) that wraps the accounts' data keys;
    /// without it the keyring wraps them. `rotate` re-wraps every data key under it.
    /// Credentials come from the AWS SDK's default chain, the region from the ARN or
    /// AWS_REGION.
    #[cfg(feature = "aws-kms")]
    #[arg(long, env = "CREDENTIAL_STORE_KMS_KEY_ID", global = true)]
    kms_key_id: Option<String>,
    /// Another endpoint for AWS KMS (LocalStack, moto, a VPC endpoint).
    #[cfg(feature = "aws-kms")]
    #[arg(long, env = "CREDENTIAL_STORE_KMS_ENDPOINT", global = true)]
    kms_endpoint: Option<String>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// No progress output on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
}

// The commands, in the order of `--help`. Each one's help text is the doc comment
// of its `Args`, in its own file.
#[derive(Subcommand)]
enum Command {
    Migrate(commands::migrate::Args),
    Revert(commands::revert::Args),
    Status(commands::status::Args),
    Backfill(commands::backfill::Args),
    Rotate(commands::rotate::Args),
    Verify(commands::verify::Args),
    Copy(commands::copy::Args),
    Keygen(commands::keygen::Args),
}

impl Command {
    /// The command's name, for `command` in the JSON.
    fn name(&self) -> &'static str {
        match self {
            Command::Migrate(_) => "migrate",
            Command::Revert(_) => "revert",
            Command::Status(_) => "status",
            Command::Backfill(_) => "backfill",
            Command::Rotate(_) => "rotate",
            Command::Verify(_) => "verify",
            Command::Copy(_) => "copy",
            Command::Keygen(_) => "keygen",
        }
    }

    /// Runs the command.
    fn exec(&self, global: &Global) -> Run {
        match self {
            Command::Migrate(args) => commands::migrate::exec(global, args),
            Command::Revert(args) => commands::revert::exec(global, args),
            Command::Status(args) => commands::status::exec(global, args),
            Command::Backfill(args) => commands::backfill::exec(global, args),
            Command::Rotate(args) => commands::rotate::exec(global, args),
            Command::Verify(args) => commands::verify::exec(global, args),
            Command::Copy(args) => commands::copy::exec(global, args),
            Command::Keygen(args) => commands::keygen::exec(global, args),
        }
    }
}

fn main() -> ExitCode {
    let json = std::env::args_os().any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind as ClapErrorKind;
            if matches!(
                err.kind(),
                ClapErrorKind::DisplayHelp
                    | ClapErrorKind::DisplayVersion
                    | ClapErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) || !json
            {
                let _ = err.print();
                return ExitCode::from(if err.use_stderr() { USAGE } else { OK });
            }
            let _ = err.print();
            let problem = Problem::new("usage", err.kind().to_string());
            output::print_json(None, USAGE, Value::Null, Some(&problem));
            return ExitCode::from(USAGE);
        }
    };
    let (code, result, problem, text) = match cli.command.exec(&cli.global) {
        Ok(done) => (OK, done.result, None, Some(done.text)),
        Err(Failure::Usage(message)) => (
            USAGE,
            Value::Null,
            Some(Problem::new("usage", message)),
            None,
        ),
        Err(Failure::Library(err, partial)) => (
            exit_code(err.kind()),
            partial.unwrap_or(Value::Null),
            Some(Problem::from_error(&err)),
            None,
        ),
        Err(Failure::Found(kind, result, text, summary)) => (
            FOUND_OR_REFUSED,
            result,
            Some(Problem::new(kind, summary)),
            Some(text),
        ),
        Err(Failure::Interrupted(result, summary)) => (
            INTERRUPTED,
            result,
            Some(Problem::new("interrupted", summary)),
            None,
        ),
    };
    output::print(
        cli.global.json,
        cli.command.name(),
        code,
        result,
        problem.as_ref(),
        text.as_deref(),
    );
    ExitCode::from(code)
}

/// The exit code of a library error, by its kind.
fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::RevertRefused
        | ErrorKind::RevertWouldExpose
        | ErrorKind::RevertWouldDropNicknames
        | ErrorKind::MigrationNotApplied
        | ErrorKind::TargetNotEmpty
        | ErrorKind::RotationIncomplete => FOUND_OR_REFUSED,
        ErrorKind::UnsupportedUrl
        | ErrorKind::NoKeyConfigured
        | ErrorKind::InvalidKey
        | ErrorKind::InvalidKeyId
        | ErrorKind::DuplicateKeyId
        | ErrorKind::KeysFile
        | ErrorKind::KeysFileExposed
        | ErrorKind::KeysFileUntrusted
        | ErrorKind::InvalidArgument
        | ErrorKind::RowSecurityActive => USAGE,
        ErrorKind::Connection
        | ErrorKind::Pool
        | ErrorKind::Busy
        | ErrorKind::ConnectionLost
        | ErrorKind::Migration
        | ErrorKind::Database => DATABASE,
        // The kinds of the store's own lookups and checks (unknown account,
        // inactive credential, …), which no command meets, and kinds the library
        // adds later: a failure the operator cannot fix with other arguments.
        _ => DATABASE,
    }
}

//! `credential-store`: the operator command-line tool (cargo feature `cli`).
//!
//! A thin layer over the library: it parses arguments, opens the database and the
//! keyring, calls one library operation and prints what it returns, as text or,
//! with `--json`, as one JSON object on stdout. Progress goes to stderr. See the
//! README's "Operators" section for the commands, exit codes and JSON shapes.

#[path = "credential-store/progress.rs"]
mod progress;

use clap::{Args, Parser, Subcommand, ValueEnum};
use credential_store::error::ErrorKind;
use credential_store::maintenance::{CopyOptions, CopyReport, VerifyReport};
use credential_store::{
    CipherFormat, Database, Error, Keyring, Maintenance, Outcome, KEYS_ENV_VAR,
};
use progress::Progress;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// No progress output on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the pending migrations.
    Migrate {
        /// Only list the pending migrations.
        #[arg(long)]
        dry_run: bool,
    },
    /// Revert the most recent migrations, one at a time, down to and including VERSION.
    Revert {
        /// `20240601000003` or `2024-06-01-000003_multiple_credentials_support`.
        version: String,
    },
    /// Migrations, row counts, key usage and row-level security.
    Status,
    /// Give every credential without a nickname its type as nickname.
    Backfill(Batch),
    /// Re-encrypt every credential not under the primary key in the format.
    Rotate {
        #[command(flatten)]
        batch: Batch,
        /// The format to write.
        #[arg(long, value_enum, default_value_t = Format::Sealed)]
        format: Format,
    },
    /// Decrypt every credential and list those that do not decrypt (read-only).
    Verify(Batch),
    /// Copy every account and credential into another database, ciphertexts as they are.
    Copy {
        /// The source database.
        #[arg(long)]
        from: String,
        /// The target database (migrated first; must be empty unless --resume).
        #[arg(long)]
        to: String,
        /// Continue an interrupted copy: skip the rows the target already has.
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        batch: Batch,
    },
    /// Print a new random key.
    Keygen {
        /// A key id to prefix the key with (`ID:KEY`), 1 to 32 of A-Z a-z 0-9 _ . -
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Args)]
struct Batch {
    /// Rows per batch (one short transaction each).
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Sealed,
    Fernet,
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Migrate { .. } => "migrate",
            Command::Revert { .. } => "revert",
            Command::Status => "status",
            Command::Backfill(_) => "backfill",
            Command::Rotate { .. } => "rotate",
            Command::Verify(_) => "verify",
            Command::Copy { .. } => "copy",
            Command::Keygen { .. } => "keygen",
        }
    }
}

/// Why a command did not end with exit code 0.
enum Failure {
    /// Bad arguments or configuration, found before the library was called.
    Usage(String),
    /// The library's error, with whatever the command had done before it.
    Library(Error, Option<Value>),
    /// The command ran and found problems (unreadable rows): the error kind, its
    /// result, its text, a summary.
    Found(&'static str, Value, String, String),
    /// Ctrl-C: the command stopped after a batch; its result, what remains.
    Interrupted(Value, String),
}

/// What a command prints on success: its JSON result and its text.
struct Done {
    result: Value,
    text: String,
}

type Run = Result<Done, Failure>;

static STOP: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let json = std::env::args_os().any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) || !json
            {
                let _ = err.print();
                return ExitCode::from(if err.use_stderr() { USAGE } else { OK });
            }
            let _ = err.print();
            let message = err.kind().to_string();
            print_json(None, USAGE, Value::Null, Some(("usage", message, None)));
            return ExitCode::from(USAGE);
        }
    };
    let name = cli.command.name();
    let outcome = run(&cli);
    let (code, result, error, text) = match outcome {
        Ok(done) => (OK, done.result, None, Some(done.text)),
        Err(Failure::Usage(message)) => (USAGE, Value::Null, Some(("usage", message, None)), None),
        Err(Failure::Library(err, partial)) => {
            let kind = err.kind();
            let details = error_details(&err);
            (
                exit_code(kind),
                partial.unwrap_or(Value::Null),
                Some((kind.as_str(), describe(&err), details)),
                None,
            )
        }
        Err(Failure::Found(kind, result, text, summary)) => (
            FOUND_OR_REFUSED,
            result,
            Some((kind, summary, None)),
            Some(text),
        ),
        Err(Failure::Interrupted(result, summary)) => (
            INTERRUPTED,
            result,
            Some(("interrupted", summary, None)),
            None,
        ),
    };
    if cli.global.json {
        print_json(
            Some(name),
            code,
            result,
            error.as_ref().map(|(k, m, d)| (*k, m.clone(), d.clone())),
        );
    } else if let Some(text) = text {
        print!("{text}");
    }
    if let Some((_, message, _)) = &error {
        eprintln!("error: {message}");
    }
    ExitCode::from(code)
}

/// The one JSON object on stdout.
fn print_json(
    command: Option<&str>,
    code: u8,
    result: Value,
    error: Option<(&str, String, Option<Value>)>,
) {
    let error = error.map(|(kind, message, details)| {
        let mut error = json!({ "kind": kind, "message": message });
        if let Some(details) = details {
            error["details"] = details;
        }
        error
    });
    let object = json!({
        "command": command,
        "ok": code == OK,
        "exit_code": code,
        "result": result,
        "error": error,
    });
    println!("{object}");
}

fn run(cli: &Cli) -> Run {
    let g = &cli.global;
    match &cli.command {
        Command::Keygen { id } => keygen(id.as_deref()),
        Command::Migrate { dry_run } => migrate(&open(g)?, *dry_run),
        Command::Revert { version } => revert(&open(g)?, version, g.json),
        Command::Status => status(g),
        Command::Backfill(batch) => backfill(g, batch.batch_size),
        Command::Rotate { batch, format } => rotate(g, batch.batch_size, *format),
        Command::Verify(batch) => verify(g, batch.batch_size),
        Command::Copy {
            from,
            to,
            resume,
            batch,
        } => copy(g, from, to, *resume, batch.batch_size),
    }
}

fn lib(err: Error) -> Failure {
    Failure::Library(err, None)
}

fn open_url(url: &str) -> Result<Database, Failure> {
    Database::open(url).map_err(lib)
}

fn open(g: &Global) -> Result<Database, Failure> {
    match &g.database_url {
        Some(url) => open_url(url),
        None => Err(Failure::Usage(
            "no database given: pass --database-url or set DATABASE_URL".into(),
        )),
    }
}

/// The keyring: `--keys-file` if given, else CREDENTIAL_STORE_KEYS.
fn keyring(g: &Global) -> Result<Keyring, Failure> {
    match &g.keys_file {
        Some(path) => Keyring::from_file(path),
        None => Keyring::from_env(),
    }
    .map_err(lib)
}

/// Whether any keys are configured at all (for `status`, where they are optional).
fn keys_configured(g: &Global) -> bool {
    g.keys_file.is_some() || std::env::var_os(KEYS_ENV_VAR).is_some_and(|v| !v.is_empty())
}

/// Stops batch commands after the current batch on the first Ctrl-C; exits at once
/// on the second.
fn stop_on_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now (the current batch is rolled back)");
            std::process::exit(i32::from(INTERRUPTED));
        }
        eprintln!("\ninterrupted: finishing the current batch (Ctrl-C again to exit now)");
    });
}

/// The progress callback of a batch command: shows `(done, total)` and stops on Ctrl-C.
fn reporter<'a, P>(
    progress: &'a mut Progress,
    position: impl Fn(&P) -> (u64, u64) + 'a,
) -> impl FnMut(&P) -> ControlFlow<()> + 'a {
    move |p| {
        let (done, total) = position(p);
        progress.update(done, total);
        if STOP.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn lines(title: &str, items: &[String]) -> String {
    let mut text = format!("{title}\n");
    for item in items {
        text.push_str(&format!("  {item}\n"));
    }
    text
}

fn keygen(id: Option<&str>) -> Run {
    let key = Keyring::generate_key();
    let entry = match id {
        Some(id) => format!("{id}:{}", key.expose_secret()),
        None => key.expose_secret().to_owned(),
    };
    // Parsing it checks the id, and gives the id of a key without one.
    let key_id = Keyring::from_fernet_keys([entry.as_str()])
        .map_err(lib)?
        .primary_key_id()
        .to_owned();
    Ok(Done {
        result: json!({ "key": entry, "key_id": key_id }),
        text: format!("{entry}\n"),
    })
}

fn migrate(db: &Database, dry_run: bool) -> Run {
    if dry_run {
        let pending = db.pending_migrations().map_err(lib)?;
        let text = if pending.is_empty() {
            "no pending migrations\n".into()
        } else {
            lines(
                &format!("{} pending migration(s):", pending.len()),
                &pending,
            )
        };
        return Ok(Done {
            result: json!({ "dry_run": true, "pending": pending }),
            text,
        });
    }
    let applied = db.run_migrations().map_err(lib)?;
    let text = if applied.is_empty() {
        "nothing to apply: the database is up to date\n".into()
    } else {
        lines(
            &format!("applied {} migration(s):", applied.len()),
            &applied,
        )
    };
    Ok(Done {
        result: json!({ "dry_run": false, "applied": applied }),
        text,
    })
}

fn revert(db: &Database, version: &str, json: bool) -> Run {
    let mut reverted = Vec::new();
    let result = db.revert_through(version, &mut |done| {
        if !json {
            println!("reverted {done}");
        }
        reverted.push(done.to_owned());
    });
    let partial = json!({ "version": version, "reverted": reverted });
    match result {
        Ok(_) => Ok(Done {
            result: partial,
            text: format!("{version} and every migration after it are reverted\n"),
        }),
        Err(err) => Err(Failure::Library(err, Some(partial))),
    }
}

fn status(g: &Global) -> Run {
    let db = open(g)?;
    let status = if keys_configured(g) {
        Maintenance::new(db, keyring(g)?).status()
    } else {
        db.status()
    }
    .map_err(lib)?;
    let count = |n: Option<u64>| n.map_or("unknown".to_owned(), |n| n.to_string());
    let mut text = format!("backend: {}\n", status.backend);
    text.push_str(&format!(
        "applied migrations: {}\n",
        status.applied_migrations.len()
    ));
    for version in &status.applied_migrations {
        text.push_str(&format!("  {version}\n"));
    }
    text.push_str(&format!(
        "pending migrations: {}\n",
        status.pending_migrations.len()
    ));
    for version in &status.pending_migrations {
        text.push_str(&format!("  {version}\n"));
    }
    text.push_str(&format!("accounts: {}\n", count(status.accounts)));
    text.push_str(&format!("credentials: {}\n", count(status.credentials)));
    text.push_str(&format!(
        "credentials without a nickname: {}\n",
        count(status.null_nicknames)
    ));
    if let Some(legacy) = status.non_conforming_legacy_rows {
        text.push_str(&format!(
            "values outside today's rules (legacy): {legacy}\n"
        ));
    }
    match &status.key_usage {
        None if !keys_configured(g) => text
            .push_str("key usage: unknown (no keys: set CREDENTIAL_STORE_KEYS or --keys-file)\n"),
        None => text.push_str("key usage: unknown\n"),
        Some(usage) => {
            text.push_str("key usage:\n");
            for entry in usage {
                // Every field as the library gives it, so new fields show up here.
                let fields = match to_json(entry) {
                    Value::Object(map) => map
                        .iter()
                        .map(|(k, v)| {
                            format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_owned))
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                    other => other.to_string(),
                };
                text.push_str(&format!("  {fields}\n"));
            }
        }
    }
    if let Some(rls) = &status.row_security {
        text.push_str(&format!(
            "row-level security: role {} {} (superuser: {}, bypassrls: {})\n",
            rls.role,
            if rls.bypasses {
                "bypasses it"
            } else {
                "is subject to it"
            },
            rls.superuser,
            rls.bypass_rls
        ));
        for table in &rls.tables {
            text.push_str(&format!(
                "  {}: enabled {}, forced {}\n",
                table.table, table.enabled, table.forced
            ));
        }
    }
    Ok(Done {
        result: to_json(&status),
        text,
    })
}

/// A keyring for `backfill`, which never encrypts or decrypts: the configured keys,
/// or a throwaway one when none are configured.
fn backfill_keyring(g: &Global) -> Result<Keyring, Failure> {
    if keys_configured(g) {
        keyring(g)
    } else {
        Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()]).map_err(lib)
    }
}

/// The JSON of a batched run's outcome, with what remains.
fn outcome_json<P: serde::Serialize>(outcome: &Outcome<P>, remaining: u64) -> Value {
    let mut value = to_json(outcome);
    value["remaining"] = json!(remaining);
    value
}

fn backfill(g: &Global, batch_size: usize) -> Run {
    let maintenance = Maintenance::new(open(g)?, backfill_keyring(g)?);
    let mut progress = Progress::new("backfill", g.quiet);
    stop_on_ctrl_c();
    let outcome = maintenance.backfill_nicknames_with(
        batch_size,
        &mut reporter(&mut progress, |p: &credential_store::BackfillProgress| {
            (p.scanned, p.total)
        }),
    );
    progress.finish();
    let outcome = outcome.map_err(lib)?;
    let p = *outcome.progress();
    let result = outcome_json(&outcome, p.remaining());
    match outcome {
        Outcome::Completed(_) => Ok(Done {
            result,
            text: format!(
                "backfill completed: {} credential(s) without a nickname looked at, {} given their type as nickname\n",
                p.scanned, p.changed
            ),
        }),
        Outcome::Stopped(_) => Err(Failure::Interrupted(
            result,
            format!(
                "backfill interrupted after {} of {} credential(s) without a nickname ({} changed); about {} remain: run the same command again to finish",
                p.scanned, p.total, p.changed, p.remaining()
            ),
        )),
    }
}

fn rotate(g: &Global, batch_size: usize, format: Format) -> Run {
    let format = match format {
        Format::Sealed => CipherFormat::Sealed,
        Format::Fernet => CipherFormat::Fernet,
    };
    let keyring = keyring(g)?;
    let primary = keyring.primary_key_id().to_owned();
    let maintenance = Maintenance::new(open(g)?, keyring).with_format(format);
    let mut progress = Progress::new("rotate", g.quiet);
    stop_on_ctrl_c();
    let outcome = maintenance.rotate_keys_with(
        batch_size,
        &mut reporter(&mut progress, |p: &credential_store::RotationProgress| {
            (p.scanned, p.total)
        }),
    );
    progress.finish();
    let outcome = outcome.map_err(lib)?;
    let p = *outcome.progress();
    let mut result = outcome_json(&outcome, p.remaining());
    result["format"] = json!(format);
    result["primary_key_id"] = json!(primary);
    match outcome {
        Outcome::Completed(_) => Ok(Done {
            result,
            text: format!(
                "rotation completed: {} credential(s) looked at, {} re-encrypted under key {primary} ({format})\n",
                p.scanned, p.rewritten
            ),
        }),
        Outcome::Stopped(_) => Err(Failure::Interrupted(
            result,
            format!(
                "rotation interrupted after {} of {} credential(s) ({} re-encrypted); {} remain to look at: run the same command again to finish",
                p.scanned, p.total, p.rewritten, p.remaining()
            ),
        )),
    }
}

/// The text lines of unreadable credentials.
fn unreadable_text(report: &[credential_store::maintenance::UnreadableCredential]) -> String {
    report
        .iter()
        .map(|u| {
            let key = u
                .key_id
                .as_deref()
                .map(|k| format!(" (key `{k}`)"))
                .unwrap_or_default();
            format!("  {} {}: {}{key}\n", u.credential_id, u.field, u.reason)
        })
        .collect()
}

fn verify(g: &Global, batch_size: usize) -> Run {
    let maintenance = Maintenance::new(open(g)?, keyring(g)?);
    let mut progress = Progress::new("verify", g.quiet);
    stop_on_ctrl_c();
    let report = maintenance.verify(
        batch_size,
        &mut reporter(
            &mut progress,
            |p: &credential_store::maintenance::VerifyProgress| (p.scanned, p.total),
        ),
    );
    progress.finish();
    let report: VerifyReport = report.map_err(lib)?;
    let result = to_json(&report);
    let unreadable_ids = {
        let mut ids: Vec<_> = report.unreadable.iter().map(|u| u.credential_id).collect();
        ids.dedup();
        ids.len()
    };
    if !report.complete {
        return Err(Failure::Interrupted(
            result,
            format!(
                "verification interrupted after {} of {} credential(s) ({} unreadable so far); {} not checked",
                report.scanned,
                report.total,
                unreadable_ids,
                report.total.saturating_sub(report.scanned)
            ),
        ));
    }
    if !report.all_readable() {
        return Err(Failure::Found(
            "unreadable_rows",
            result,
            format!(
                "verified {} credential(s); these do not decrypt:\n{}",
                report.scanned,
                unreadable_text(&report.unreadable)
            ),
            format!(
                "{unreadable_ids} of {} credential(s) do not decrypt",
                report.scanned
            ),
        ));
    }
    Ok(Done {
        result,
        text: format!(
            "verified {} credential(s): every one decrypts\n",
            report.scanned
        ),
    })
}

fn copy(g: &Global, from: &str, to: &str, resume: bool, batch_size: usize) -> Run {
    let maintenance = Maintenance::new(open_url(from)?, keyring(g)?);
    let target = open_url(to)?;
    let mut progress = Progress::new("copy", g.quiet);
    stop_on_ctrl_c();
    let report = maintenance.copy_to(
        &target,
        &CopyOptions { batch_size, resume },
        &mut reporter(
            &mut progress,
            |p: &credential_store::maintenance::CopyProgress| (p.scanned, p.total),
        ),
    );
    progress.finish();
    let report: CopyReport = report.map_err(lib)?;
    let result = to_json(&report);
    let p = report.progress;
    let counts = format!(
        "{} account(s) copied, {} skipped; {} credential(s) copied, {} skipped, {} verified on the target",
        p.accounts_copied, p.accounts_skipped, p.credentials_copied, p.credentials_skipped, p.verified
    );
    if !report.complete {
        return Err(Failure::Interrupted(
            result,
            format!(
                "copy interrupted: {counts}; {} row(s) remain: run it again with --resume to finish",
                p.remaining()
            ),
        ));
    }
    if !report.verified() {
        let mismatched: String = report
            .mismatched
            .iter()
            .map(|id| format!("  {id}: differs from the source\n"))
            .collect();
        return Err(Failure::Found(
            "copy_not_verified",
            result,
            format!(
                "copy done: {counts}; these differ from the source or do not decrypt on the target:\n{mismatched}{}",
                unreadable_text(&report.unreadable)
            ),
            format!(
                "{} credential(s) differ from the source and {} field(s) do not decrypt on the target",
                report.mismatched.len(),
                report.unreadable.len(),
            ),
        ));
    }
    Ok(Done {
        result,
        text: format!("copy completed: {counts}\n"),
    })
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

/// Structured details of the errors that carry a list.
fn error_details(err: &Error) -> Option<Value> {
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

//! The commands, one file each: its arguments (a clap `Args` struct, whose doc
//! comment is the command's help) and its `exec`, which does the work and returns
//! what to print. What they share lives here: opening the database and the
//! keyring, the batch size, batched runs with progress and Ctrl-C, and the JSON
//! of their results.

pub mod backfill;
pub mod copy;
pub mod keygen;
pub mod migrate;
pub mod revert;
pub mod rotate;
pub mod status;
pub mod verify;

use crate::progress::Progress;
use crate::{Global, INTERRUPTED};
use credential_store::maintenance::UnreadableCredential;
use credential_store::{Database, Error, Keyring, Outcome, KEYS_ENV_VAR};
use serde_json::{json, Value};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a command did not end with exit code 0.
pub enum Failure {
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
pub struct Done {
    /// `result` in the JSON.
    pub result: Value,
    /// The text on stdout, without `--json`.
    pub text: String,
}

/// What a command's `exec` returns.
pub type Run = Result<Done, Failure>;

/// The batch size of the commands that work in batches.
#[derive(clap::Args)]
pub struct Batch {
    /// Rows per batch (one short transaction each).
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

/// Set by the first Ctrl-C: batched runs stop after the current batch.
static STOP: AtomicBool = AtomicBool::new(false);

/// A library error, before the command did anything worth reporting.
pub fn lib(err: Error) -> Failure {
    Failure::Library(err, None)
}

/// Opens the database at `url`.
pub fn open_url(url: &str) -> Result<Database, Failure> {
    Database::open(url).map_err(lib)
}

/// Opens the database of `--database-url` (or DATABASE_URL).
pub fn open(global: &Global) -> Result<Database, Failure> {
    match &global.database_url {
        Some(url) => open_url(url),
        None => Err(Failure::Usage(
            "no database given: pass --database-url or set DATABASE_URL".into(),
        )),
    }
}

/// `--minimum-format`'s value.
pub fn parse_format(text: &str) -> Result<credential_store::FormatVersion, String> {
    text.parse().map_err(|err: Error| err.to_string())
}

/// Maintenance on the database with the keyring, the minimum format and the key
/// provider.
pub fn maintenance(global: &Global) -> Result<credential_store::Maintenance, Failure> {
    configured(
        global,
        credential_store::Maintenance::new(open(global)?, keyring(global)?),
    )
}

/// `maintenance` with the global key options: the minimum format and, with
/// `--kms-key-id`, AWS KMS as the key provider.
pub fn configured(
    global: &Global,
    mut maintenance: credential_store::Maintenance,
) -> Result<credential_store::Maintenance, Failure> {
    if let Some(minimum) = global.minimum_format {
        maintenance = maintenance.with_minimum_format(minimum);
    }
    #[cfg(feature = "aws-kms")]
    if let Some(key_id) = &global.kms_key_id {
        let mut kms = credential_store::AwsKms::builder(key_id.as_str());
        if let Some(url) = &global.kms_endpoint {
            kms = kms.endpoint_url(url.as_str());
        }
        let kms = kms.build().map_err(lib)?;
        maintenance = maintenance.with_key_provider(std::sync::Arc::new(kms));
    }
    Ok(maintenance)
}

/// The keyring: `--keys-file` if given, else CREDENTIAL_STORE_KEYS.
pub fn keyring(global: &Global) -> Result<Keyring, Failure> {
    match &global.keys_file {
        Some(path) => Keyring::from_file(path),
        None => Keyring::from_env(),
    }
    .map_err(lib)
}

/// Whether any keys are configured at all (for the commands where they are optional).
pub fn keys_configured(global: &Global) -> bool {
    global.keys_file.is_some() || std::env::var_os(KEYS_ENV_VAR).is_some_and(|v| !v.is_empty())
}

/// Runs a batched library operation: progress on stderr labelled `label` (unless
/// `--quiet`), and a stop after the current batch on Ctrl-C. `position` gives the
/// `(done, total)` of a progress report; `operation` gets the callback to hand to
/// the library.
pub fn batched<P, T>(
    global: &Global,
    label: &'static str,
    position: impl Fn(&P) -> (u64, u64),
    operation: impl FnOnce(&mut dyn FnMut(&P) -> ControlFlow<()>) -> T,
) -> T {
    let mut progress = Progress::new(label, global.quiet);
    stop_on_ctrl_c();
    let result = operation(&mut |p: &P| {
        let (done, total) = position(p);
        progress.update(done, total);
        if STOP.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    progress.finish();
    result
}

/// Stops batched runs after the current batch on the first Ctrl-C (SIGINT), SIGTERM
/// or SIGHUP (ctrlc's `termination` feature), as a service manager or `kill` sends
/// them; exits at once on the second.
fn stop_on_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now (the current batch is rolled back)");
            std::process::exit(i32::from(INTERRUPTED));
        }
        eprintln!(
            "\ninterrupted: finishing the current batch (Ctrl-C or SIGTERM again to exit now)"
        );
    });
}

/// A library result as JSON.
pub fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The JSON of a batched run's outcome, with what remains.
pub fn outcome_json<P: serde::Serialize>(outcome: &Outcome<P>, remaining: u64) -> Value {
    let mut value = to_json(outcome);
    value["remaining"] = json!(remaining);
    value
}

/// The text lines of unreadable credentials.
pub fn unreadable_text(report: &[UnreadableCredential]) -> String {
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

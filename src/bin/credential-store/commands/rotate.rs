//! `rotate`: re-encrypts every credential not under the primary key in the format.

use super::{batched, keyring, lib, maintenance, outcome_json, Batch, Done, Failure, Run};
use crate::Global;
use credential_store::{CipherFormat, Outcome, RotationProgress};
use serde_json::json;

/// Re-wrap every account's data key under the primary key, then re-encrypt every
/// credential not in the format (sealed: v3 under its account's data key).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    batch: Batch,
    /// The format to write.
    #[arg(long, value_enum, default_value_t = Format::Sealed)]
    format: Format,
    /// Also give every account a new data key and re-encrypt its credentials
    /// under it (the old key is kept, retired, for the grace period).
    #[arg(long)]
    data_keys: bool,
    /// Replace only the data keys made before this time (RFC 3339): the time a
    /// stopped `--data-keys` run printed, to resume it. Implies `--data-keys`.
    #[arg(long, value_name = "TIME")]
    data_keys_made_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Seconds a replaced data key is kept before a rotation deletes it (once no
    /// credential is sealed under it); longer than any service caches data keys.
    #[arg(long, value_name = "SECONDS", default_value_t = credential_store::DEFAULT_RETIRED_KEY_GRACE.as_secs())]
    retired_key_grace: u64,
}

// No doc comments on the values: clap would show them as help for each value.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Sealed,
    Fernet,
}

/// Rotates in batches until done or stopped by Ctrl-C.
pub fn exec(global: &Global, args: &Args) -> Run {
    let format = match args.format {
        Format::Sealed => CipherFormat::Sealed,
        Format::Fernet => CipherFormat::Fernet,
    };
    let primary = keyring(global)?.primary_key_id().to_owned();
    let made_before = args
        .data_keys_made_before
        .or(args.data_keys.then(chrono::Utc::now));
    let mut maintenance = maintenance(global)?
        .with_format(format)
        .with_retired_key_grace(std::time::Duration::from_secs(args.retired_key_grace));
    if let Some(made_before) = made_before {
        maintenance = maintenance.replacing_data_keys(made_before);
    }
    let resume = made_before.map_or("run the same command again".to_owned(), |t| {
        format!(
            "run `rotate --data-keys-made-before {}` (the same cutoff)",
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    });
    let outcome = batched(
        global,
        "rotate",
        |p: &RotationProgress| (p.scanned, p.total),
        |progress| maintenance.rotate_keys_with(args.batch.batch_size, progress),
    )
    .map_err(lib)?;
    let p = *outcome.progress();
    let mut result = outcome_json(&outcome, p.remaining());
    result["format"] = json!(format);
    result["primary_key_id"] = json!(primary);
    if let Some(made_before) = made_before {
        result["data_keys_made_before"] = json!(made_before);
    }
    match outcome {
        Outcome::Completed(_) => Ok(Done {
            result,
            text: format!(
                "rotation completed: {} data key(s) re-wrapped under key {primary}, {} replaced by new ones, {} retired one(s) deleted; {} credential(s) looked at, {} re-encrypted ({format})\n",
                p.data_keys_rewrapped, p.data_keys_replaced, p.retired_keys_deleted, p.scanned, p.rewritten
            ),
        }),
        Outcome::Stopped(_) => Err(Failure::Interrupted(
            result,
            format!(
                "rotation interrupted after {} of {} credential(s) ({} re-encrypted, {} data key(s) replaced); {} remain to look at: {resume} to finish",
                p.scanned, p.total, p.rewritten, p.data_keys_replaced, p.remaining()
            ),
        )),
    }
}

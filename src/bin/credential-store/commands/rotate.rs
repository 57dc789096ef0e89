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
    let maintenance = maintenance(global)?.with_format(format);
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
    match outcome {
        Outcome::Completed(_) => Ok(Done {
            result,
            text: format!(
                "rotation completed: {} data key(s) re-wrapped under key {primary}; {} credential(s) looked at, {} re-encrypted ({format})\n",
                p.data_keys_rewrapped, p.scanned, p.rewritten
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

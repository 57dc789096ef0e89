//! `backfill`: gives every credential without a nickname its type as nickname.

use super::{
    batched, keyring, keys_configured, lib, open, outcome_json, Batch, Done, Failure, Run,
};
use crate::Global;
use credential_store::{BackfillProgress, Keyring, Maintenance, Outcome};
use secrecy::ExposeSecret;

/// Give every credential without a nickname its type as nickname.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    batch: Batch,
}

/// Backfills in batches until done or stopped by Ctrl-C.
pub fn exec(global: &Global, args: &Args) -> Run {
    let maintenance = Maintenance::new(open(global)?, backfill_keyring(global)?);
    let outcome = batched(
        global,
        "backfill",
        |p: &BackfillProgress| (p.scanned, p.total),
        |progress| maintenance.backfill_nicknames_with(args.batch.batch_size, progress),
    )
    .map_err(lib)?;
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

/// A keyring for `backfill`, which never encrypts or decrypts: the configured keys,
/// or a throwaway one when none are configured.
fn backfill_keyring(global: &Global) -> Result<Keyring, Failure> {
    if keys_configured(global) {
        keyring(global)
    } else {
        Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()]).map_err(lib)
    }
}

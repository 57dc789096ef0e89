//! `verify`: decrypts every credential and lists those that do not decrypt.

use super::{batched, keyring, lib, open, to_json, unreadable_text, Batch, Done, Failure, Run};
use crate::Global;
use credential_store::maintenance::{VerifyProgress, VerifyReport};
use credential_store::Maintenance;

/// Decrypt every credential and list those that do not decrypt (read-only).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    batch: Batch,
}

/// Verifies in batches; unreadable credentials are a failure of their own
/// (`unreadable_rows`).
pub fn exec(global: &Global, args: &Args) -> Run {
    let maintenance = Maintenance::new(open(global)?, keyring(global)?);
    let report: VerifyReport = batched(
        global,
        "verify",
        |p: &VerifyProgress| (p.scanned, p.total),
        |progress| maintenance.verify(args.batch.batch_size, progress),
    )
    .map_err(lib)?;
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

//! `verify`: decrypts every credential and lists those that do not decrypt.

use super::{batched, lib, maintenance, to_json, unreadable_text, Batch, Done, Failure, Run};
use crate::Global;
use credential_store::maintenance::{VerifyProgress, VerifyReport};

/// Decrypt every credential and list those that do not decrypt (read-only).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    batch: Batch,
}

/// Verifies in batches; unreadable credentials are a failure of their own
/// (`unreadable_rows`).
pub fn exec(global: &Global, args: &Args) -> Run {
    let maintenance = maintenance(global)?;
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
    let formats: Vec<String> = report
        .formats
        .iter()
        .map(|(format, fields)| format!("{format}={fields}"))
        .collect();
    Ok(Done {
        result,
        text: format!(
            "verified {} credential(s): every one decrypts\nfields per format: {}\n",
            report.scanned,
            formats.join(" ")
        ),
    })
}

//! `copy`: copies every account and credential into another database.

use super::{batched, keyring, lib, open_url, to_json, unreadable_text, Batch, Done, Failure, Run};
use crate::Global;
use credential_store::maintenance::{CopyOptions, CopyProgress, CopyReport};
use credential_store::Maintenance;

/// Copy every account and credential into another database, ciphertexts as they are.
#[derive(clap::Args)]
pub struct Args {
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
}

/// Copies in batches and verifies the target; rows that differ from the source
/// or do not decrypt there are a failure of their own (`copy_not_verified`).
pub fn exec(global: &Global, args: &Args) -> Run {
    let maintenance = Maintenance::new(open_url(&args.from)?, keyring(global)?);
    let target = open_url(&args.to)?;
    let options = CopyOptions {
        batch_size: args.batch.batch_size,
        resume: args.resume,
    };
    let report: CopyReport = batched(
        global,
        "copy",
        |p: &CopyProgress| (p.scanned, p.total),
        |progress| maintenance.copy_to(&target, &options, progress),
    )
    .map_err(lib)?;
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

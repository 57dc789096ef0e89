//! `copy`: copies every account and credential into another database.

use super::{
    batched, configured, keyring, lib, open_url, to_json, unreadable_text, Batch, Done, Failure,
    Run,
};
use crate::Global;
use credential_store::maintenance::{CopyOptions, CopyProgress, CopyReport};
use credential_store::Maintenance;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// A URL given as an argument or variable, or the first line of a file. A file
/// that cannot be read is a usage error naming the file, never its content.
fn url(given: Option<&str>, file: Option<&Path>, flag: &str) -> Result<Zeroizing<String>, Failure> {
    match (given, file) {
        (Some(url), _) => Ok(Zeroizing::new(url.to_owned())),
        (None, Some(path)) => {
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|err| {
                Failure::Usage(format!("cannot read {flag} `{}`: {err}", path.display()))
            })?);
            let first = text.lines().next().unwrap_or_default().trim();
            if first.is_empty() {
                return Err(Failure::Usage(format!(
                    "{flag} `{}` holds no URL on its first line",
                    path.display()
                )));
            }
            Ok(Zeroizing::new(first.to_owned()))
        }
        (None, None) => Err(Failure::Usage(format!(
            "no database given for copy: pass {} or {flag}",
            flag.trim_end_matches("-file")
        ))),
    }
}

/// Copy every account and credential into another database, ciphertexts as they are.
#[derive(clap::Args)]
pub struct Args {
    /// The source database URL. Also CREDENTIAL_STORE_COPY_FROM, or --from-file:
    /// an argument is visible to other users in `ps`, the variable and the file are
    /// not.
    #[arg(
        long,
        env = "CREDENTIAL_STORE_COPY_FROM",
        hide_env_values = true,
        conflicts_with = "from_file",
        required_unless_present = "from_file"
    )]
    from: Option<String>,
    /// A file holding the source database URL (its first line).
    #[arg(long, value_name = "PATH", env = "CREDENTIAL_STORE_COPY_FROM_FILE")]
    from_file: Option<PathBuf>,
    /// The target database URL (migrated first; must be empty unless --resume).
    /// Also CREDENTIAL_STORE_COPY_TO, or --to-file.
    #[arg(
        long,
        env = "CREDENTIAL_STORE_COPY_TO",
        hide_env_values = true,
        conflicts_with = "to_file",
        required_unless_present = "to_file"
    )]
    to: Option<String>,
    /// A file holding the target database URL (its first line).
    #[arg(long, value_name = "PATH", env = "CREDENTIAL_STORE_COPY_TO_FILE")]
    to_file: Option<PathBuf>,
    /// Continue an interrupted copy: skip the rows the target already has.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    batch: Batch,
}

/// Copies in batches and verifies the target; rows that differ from the source
/// or do not decrypt there are a failure of their own (`copy_not_verified`).
pub fn exec(global: &Global, args: &Args) -> Run {
    let from = url(
        args.from.as_deref(),
        args.from_file.as_deref(),
        "--from-file",
    )?;
    let to = url(args.to.as_deref(), args.to_file.as_deref(), "--to-file")?;
    let maintenance = configured(global, Maintenance::new(open_url(&from)?, keyring(global)?))?;
    let target = open_url(&to)?;
    let options = CopyOptions::default()
        .batch_size(args.batch.batch_size)
        .resume(args.resume);
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
            .mismatched_accounts
            .iter()
            .map(|id| format!("  account {id}: differs from the source\n"))
            .chain(
                report
                    .mismatched
                    .iter()
                    .map(|id| format!("  {id}: differs from the source\n")),
            )
            .collect();
        return Err(Failure::Found(
            "copy_not_verified",
            result,
            format!(
                "copy done: {counts}; these differ from the source or do not decrypt on the target:\n{mismatched}{}",
                unreadable_text(&report.unreadable)
            ),
            format!(
                "{} account(s) and {} credential(s) differ from the source and {} field(s) do not decrypt on the target",
                report.mismatched_accounts.len(),
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

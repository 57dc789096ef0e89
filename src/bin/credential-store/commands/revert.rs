//! `revert`: reverts the most recent migrations, down to and including a version.

use super::{open, Done, Failure, Run};
use crate::Global;
use serde_json::json;

/// Revert the most recent migrations, one at a time, down to and including VERSION.
#[derive(clap::Args)]
pub struct Args {
    /// `20240601000003` or `2024-06-01-000003_multiple_credentials_support`.
    version: String,
}

/// Reverts the migrations one at a time, printing each as it is reverted (as
/// text); a failure reports the ones already reverted.
pub fn exec(global: &Global, args: &Args) -> Run {
    let db = open(global)?;
    let version = &args.version;
    let mut reverted = Vec::new();
    let result = db.revert_through(version, &mut |done| {
        if !global.json {
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

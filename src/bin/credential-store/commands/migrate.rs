//! `migrate`: applies the pending migrations, or lists them.

use super::{lib, open, Done, Run};
use crate::Global;
use serde_json::json;

/// Apply the pending migrations.
#[derive(clap::Args)]
pub struct Args {
    /// Only list the pending migrations.
    #[arg(long)]
    dry_run: bool,
}

/// Applies (or, with `--dry-run`, lists) the pending migrations.
pub fn exec(global: &Global, args: &Args) -> Run {
    let db = open(global)?;
    if args.dry_run {
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

/// A title line and one indented line per item.
fn lines(title: &str, items: &[String]) -> String {
    let mut text = format!("{title}\n");
    for item in items {
        text.push_str(&format!("  {item}\n"));
    }
    text
}

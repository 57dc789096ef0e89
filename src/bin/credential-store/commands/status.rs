//! `status`: migrations, row counts, key usage and row-level security.

use super::{keys_configured, lib, maintenance, open, to_json, Done, Run};
use crate::Global;
use serde_json::Value;

/// Migrations, row counts, key usage and row-level security.
#[derive(clap::Args)]
pub struct Args {}

/// Reports the status; with keys configured, the key usage and legacy rows too.
pub fn exec(global: &Global, _: &Args) -> Run {
    let status = if keys_configured(global) {
        maintenance(global)?.status()
    } else {
        open(global)?.status()
    }
    .map_err(lib)?;
    let count = |n: Option<u64>| n.map_or("unknown".to_owned(), |n| n.to_string());
    let mut text = format!("backend: {}\n", status.backend);
    text.push_str(&format!(
        "applied migrations: {}\n",
        status.applied_migrations.len()
    ));
    for version in &status.applied_migrations {
        text.push_str(&format!("  {version}\n"));
    }
    text.push_str(&format!(
        "pending migrations: {}\n",
        status.pending_migrations.len()
    ));
    for version in &status.pending_migrations {
        text.push_str(&format!("  {version}\n"));
    }
    text.push_str(&format!("accounts: {}\n", count(status.accounts)));
    text.push_str(&format!("credentials: {}\n", count(status.credentials)));
    text.push_str(&format!(
        "credentials without a nickname: {}\n",
        count(status.null_nicknames)
    ));
    text.push_str(&format!(
        "retired data keys: {}\n",
        count(status.retired_data_keys)
    ));
    if let Some(legacy) = status.non_conforming_legacy_rows {
        text.push_str(&format!(
            "values outside today's rules (legacy): {legacy}\n"
        ));
    }
    match &status.key_usage {
        None if !keys_configured(global) => text
            .push_str("key usage: unknown (no keys: set CREDENTIAL_STORE_KEYS or --keys-file)\n"),
        None => text.push_str("key usage: unknown\n"),
        Some(usage) => {
            // Credentials per format, from the key usage (a credential whose two
            // fields differ in format counts under each).
            let mut formats = std::collections::BTreeMap::<String, u64>::new();
            for entry in usage {
                let format = match (entry.format, entry.version) {
                    (_, Some(version)) => format!("sealed-v{version}"),
                    (credential_store::CipherFormat::Fernet, None) => "fernet".to_owned(),
                    (_, None) => "unreadable".to_owned(),
                };
                *formats.entry(format).or_default() += entry.credentials;
            }
            let formats: Vec<String> = formats.iter().map(|(f, n)| format!("{f}={n}")).collect();
            text.push_str(&format!("credentials per format: {}\n", formats.join(" ")));
            text.push_str("key usage:\n");
            for entry in usage {
                // Every field as the library gives it, so new fields show up here.
                let fields = match to_json(entry) {
                    Value::Object(map) => map
                        .iter()
                        .map(|(k, v)| {
                            format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_owned))
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                    other => other.to_string(),
                };
                text.push_str(&format!("  {fields}\n"));
            }
        }
    }
    if let Some(rls) = &status.row_security {
        text.push_str(&format!(
            "row-level security: role {} {} (superuser: {}, bypassrls: {})\n",
            rls.role,
            if rls.bypasses {
                "bypasses it"
            } else {
                "is subject to it"
            },
            rls.superuser,
            rls.bypass_rls
        ));
        for table in &rls.tables {
            text.push_str(&format!(
                "  {}: enabled {}, forced {}\n",
                table.table, table.enabled, table.forced
            ));
        }
    }
    Ok(Done {
        result: to_json(&status),
        text,
    })
}

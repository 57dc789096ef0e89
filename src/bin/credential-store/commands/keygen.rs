//! `keygen`: prints a new random key.

use super::{lib, Done, Run};
use crate::Global;
use credential_store::Keyring;
use secrecy::ExposeSecret;
use serde_json::json;

/// Print a new random key.
#[derive(clap::Args)]
pub struct Args {
    /// A key id to prefix the key with (`ID:KEY`), 1 to 32 of A-Z a-z 0-9 _ . -
    #[arg(long)]
    id: Option<String>,
}

/// Generates the key, with its id if one is given.
pub fn exec(_: &Global, args: &Args) -> Run {
    let key = Keyring::generate_key();
    let entry = match &args.id {
        Some(id) => format!("{id}:{}", key.expose_secret()),
        None => key.expose_secret().to_owned(),
    };
    // Parsing it checks the id, and gives the id of a key without one.
    let key_id = Keyring::from_fernet_keys([entry.as_str()])
        .map_err(lib)?
        .primary_key_id()
        .to_owned();
    Ok(Done {
        result: json!({ "key": entry, "key_id": key_id }),
        text: format!("{entry}\n"),
    })
}

//! Re-encrypts every credential under the primary key, in the store's format.
//!
//! ```sh
//! DATABASE_URL=postgres://maintenance@db/app \
//! CREDENTIAL_STORE_KEYS=2026-12:<new key>,2026-11:<old key> \
//! CREDENTIAL_STORE_FORMAT=sealed \
//! cargo run --features postgres,bundled-postgres --example rotate_keys -- 1000
//! ```
//!
//! The argument is the batch size (default 1000). `CREDENTIAL_STORE_FORMAT` is
//! `sealed` (default) or `fernet`. Safe to kill at any point and run again. Prints the
//! key usage before and after, and progress after each batch.

use credential_store::{CipherFormat, CredentialStore, Database, Keyring};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let format = match std::env::var("CREDENTIAL_STORE_FORMAT").as_deref() {
        Ok("fernet") => CipherFormat::Fernet,
        Ok("sealed") | Err(_) => CipherFormat::Sealed,
        Ok(other) => {
            return Err(
                format!("CREDENTIAL_STORE_FORMAT must be sealed or fernet, not {other:?}").into(),
            )
        }
    };
    let batch_size: usize = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| format!("batch size must be a number, not {arg:?}"))?,
        None => 1000,
    };
    let db = Database::open(&url)?;
    db.run_migrations()?;
    let store = CredentialStore::new(db, Keyring::from_env()?).with_format(format);
    println!(
        "writing {format} under key `{}`",
        store.keyring().primary_key_id()
    );
    print_usage("before", &store)?;
    let done = store.maintenance().rotate_keys(batch_size, &mut |p| {
        println!(
            "  {} of {} scanned, {} rewritten, {} left",
            p.scanned,
            p.total,
            p.rewritten,
            p.remaining()
        );
    })?;
    println!(
        "done: {} scanned, {} rewritten",
        done.scanned, done.rewritten
    );
    print_usage("after", &store)?;
    Ok(())
}

fn print_usage(when: &str, store: &CredentialStore) -> Result<(), credential_store::Error> {
    println!("key usage {when}:");
    for usage in store.maintenance().key_usage()? {
        println!(
            "  {:<7} key {:<12} {:>8} credential(s){}",
            usage.format.to_string(),
            usage.key_id.as_deref().unwrap_or("(none opens)"),
            usage.credentials,
            if usage.in_keyring {
                ""
            } else {
                "  <- not in the keyring"
            }
        );
    }
    Ok(())
}

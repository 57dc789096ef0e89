//! Several named credentials under one trading account.
//!
//! ```sh
//! cargo run --example multi_credential_lookup                      # embedded SQLite
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --features postgres,bundled-postgres --example multi_credential_lookup
//! ```
//!
//! Keys come from `CREDENTIAL_STORE_KEYS` (comma-separated Fernet keys); without it the
//! example uses a built-in demo key and says so.

use credential_store::{
    CredentialStore, CredentialUpdate, Database, Error, Keyring, NewUserAccount, NewUserCredential,
    UserAccount, UserCredential, KEYS_ENV_VAR,
};
use secrecy::ExposeSecret;

/// A fixed key for the demo only. Never use a key that is published in source code.
const DEMO_KEY: &str = "demo:Y3JlZGVudGlhbC1zdG9yZS1kZW1vLWtleS0wMDAwMDA=";
const DEFAULT_DB: &str = "target/multi_credential_lookup.db";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            // A fresh demo file on every run.
            std::fs::create_dir_all("target")?;
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{DEFAULT_DB}{suffix}"));
            }
            DEFAULT_DB.to_owned()
        }
    };
    let keyring = match Keyring::from_env() {
        Ok(keyring) => keyring,
        Err(Error::NoKeyConfigured { .. }) => {
            println!("note: {KEYS_ENV_VAR} is not set; using the built-in DEMO key (not for real credentials)\n");
            Keyring::from_fernet_keys([DEMO_KEY])?
        }
        Err(other) => return Err(other.into()),
    };

    let db = Database::open(&url)?;
    let applied = db.run_migrations()?;
    println!(
        "database: {:?} backend, {} migration(s) applied now",
        db.backend(),
        applied.len()
    );
    let store = CredentialStore::new(db, keyring);
    println!(
        "keys:     written {} under key `{}` (set CREDENTIAL_STORE_KEYS=id:key,… to choose)",
        store.format(),
        store.keyring().primary_key_id()
    );

    // The user id normally comes from the auth provider; unique per run here.
    let user_id = format!(
        "auth0|demo-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    let account = store.create_account(&NewUserAccount::new(&user_id, "Demo trader"))?;
    println!(
        "account:  {} ({})\n",
        account.account_name(),
        account.user_id()
    );

    let momentum = store.insert_credential(
        &account,
        &NewUserCredential::new("alpaca_paper", "PKMOMENTUM7H2Q4F2A", "momentum-secret")
            .nickname("Momentum"),
    )?;
    store.insert_credential(
        &account,
        &NewUserCredential::new("alpaca_paper", "PKSWINGTRADE99B3C1", "swing-secret")
            .nickname("Swing"),
    )?;
    let live = store.insert_credential(
        &account,
        &NewUserCredential::new("alpaca_live", "AKLIVEACCOUNT00X3F9Q", "live-secret"),
    )?;
    show(
        &store,
        &account,
        "All credentials (newest first)",
        &store.credentials(&account)?,
    )?;

    let swing = store.credential_by_nickname(&account, "Swing")?;
    show(
        &store,
        &account,
        "credential_by_nickname(\"Swing\")",
        swing.as_slice(),
    )?;
    show(
        &store,
        &account,
        "credentials_by_type(\"alpaca_paper\")",
        &store.credentials_by_type(&account, "alpaca_paper")?,
    )?;
    show(
        &store,
        &account,
        "credential_by_nickname(\"alpaca_live\"): no nickname given, so it is the type",
        store
            .credential_by_nickname(&account, "alpaca_live")?
            .as_slice(),
    )?;

    // Nicknames are labels, not keys: two credentials may share one.
    store.insert_credential(
        &account,
        &NewUserCredential::new("polygon", "PGMARKETDATA11D8E7", "polygon-secret")
            .nickname("Momentum"),
    )?;
    println!("Ambiguity: a polygon key is also nicknamed \"Momentum\"");
    println!(
        "  credentials_by_nickname(\"Momentum\") -> {} credentials",
        store.credentials_by_nickname(&account, "Momentum")?.len()
    );
    match store.credential_by_nickname(&account, "Momentum") {
        Err(err @ Error::AmbiguousNickname { .. }) => {
            println!("  credential_by_nickname(\"Momentum\") -> error: {err}\n")
        }
        other => println!("  unexpected: {other:?}\n"),
    }

    // A row from before the nickname migration has a NULL nickname.
    store.update_credential(
        &account,
        momentum.id,
        &CredentialUpdate::default().clear_nickname(),
    )?;
    let legacy = store
        .credential(&account, momentum.id)?
        .expect("still there");
    println!("Legacy row: nickname = {:?}", legacy.nickname);
    let changed = store.maintenance().backfill_nicknames(500)?;
    let backfilled = store
        .credential(&account, momentum.id)?
        .expect("still there");
    println!(
        "backfill_nicknames(500) -> {changed} row(s) changed; nickname is now {:?}; a second run changes {}\n",
        backfilled.nickname.as_deref().unwrap_or_default(),
        store.maintenance().backfill_nicknames(500)?
    );

    // Use a decrypted key for a (pretend) call. The secret never leaves this scope.
    let keys = store.keys(&account, live.id)?;
    println!("Pretend call: GET https://api.alpaca.markets/v2/account");
    println!(
        "  APCA-API-KEY-ID:     {}",
        mask(keys.api_key().expose_secret())
    );
    println!(
        "  APCA-API-SECRET-KEY: {} characters, never printed",
        keys.secret_key().expose_secret().chars().count()
    );
    println!("  Debug of the keys:   {keys:?}");
    Ok(())
}

fn show(
    store: &CredentialStore,
    account: &UserAccount,
    title: &str,
    credentials: &[UserCredential],
) -> Result<(), Error> {
    println!("{title}");
    println!(
        "  {:<12} {:<13} {:<7} {:<12} id",
        "nickname", "type", "active", "api key"
    );
    for credential in credentials {
        let keys = store.keys(account, credential.id)?;
        println!(
            "  {:<12} {:<13} {:<7} {:<12} {}",
            credential.nickname.as_deref().unwrap_or("(none)"),
            credential.credential_type,
            credential.is_active,
            mask(keys.api_key().expose_secret()),
            credential.id,
        );
    }
    println!();
    Ok(())
}

/// `PKMOMENTUM7H2Q4F2A` -> `PK…4F2A`.
fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 10 {
        return "…".into();
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

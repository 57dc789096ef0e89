//! Figures for the data-key cache, for docs/guarantees.md: key-provider calls per
//! 10,000 lookups over 1,000 accounts, cold and warm, and the latency of a reveal
//! with the account's data key cached and not.
//!
//! ```sh
//! cargo bench --bench data_keys              # 10,000 lookups, 2,000 timed reveals each way
//! cargo bench --bench data_keys -- 2000      # another number of lookups
//! ```
//!
//! A SQLite file in a temporary directory; 1,000 accounts of one credential each,
//! through the store (`insert_credential`, sealed v3 under each account's data key).
//! The provider is the keyring behind a wrapper that counts `wrap` and `unwrap` calls
//! (what a KMS would be billed for). Lookups are `keys` of a random account's
//! credential (a fixed-seed xorshift, so every run asks the same sequence):
//!
//! - **cold**: a store with an empty cache of its own (a process just started);
//! - **warm**: the same store again, the cache filled by the cold pass;
//! - **small cache**: a cache of 100 accounts, so most lookups miss.
//!
//! Latency: the median and p99 of single `keys` calls with the account's data key
//! cached, and with the cache cleared before each call (one unwrap by the keyring
//! each: the crate's own cost of a miss; a KMS adds its round trip on top).

use credential_store::crypto::{ProviderFuture, UnwrapRequest, WrapRequest};
use credential_store::{
    CredentialStore, DataKey, DataKeyCache, Database, KeyProvider, Keyring, NewUserAccount,
    NewUserCredential, UserAccount,
};
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The keyring as a provider, counting its calls.
#[derive(Debug)]
struct Counting {
    keyring: Keyring,
    wraps: AtomicU64,
    unwraps: AtomicU64,
}

impl KeyProvider for Counting {
    fn name(&self) -> &str {
        "counting"
    }

    fn key_id(&self) -> &str {
        self.keyring.primary_key_id()
    }

    fn wrap<'a>(&'a self, items: &'a [WrapRequest<'a>]) -> ProviderFuture<'a, Vec<String>> {
        self.wraps.fetch_add(1, Ordering::Relaxed);
        self.keyring.wrap(items)
    }

    fn unwrap<'a>(&'a self, items: &'a [UnwrapRequest<'a>]) -> ProviderFuture<'a, Vec<DataKey>> {
        self.unwraps.fetch_add(1, Ordering::Relaxed);
        self.keyring.unwrap(items)
    }
}

/// A fixed-seed xorshift: the same lookups every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    let lookups: usize = std::env::args()
        .skip(1)
        .find(|a| a != "--bench")
        .map(|a| a.parse().expect("a number of lookups"))
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("data_keys.db");
    let db = Database::open(path.to_str().expect("UTF-8 path")).expect("open");
    db.run_migrations().expect("migrations");
    let key = Keyring::generate_key();
    let keyring = || Keyring::from_fernet_keys([key.expose_secret()]).expect("keyring");
    let provider = Arc::new(Counting {
        keyring: keyring(),
        wraps: AtomicU64::new(0),
        unwraps: AtomicU64::new(0),
    });
    let store_with = |cache: DataKeyCache| {
        CredentialStore::new(db.clone(), keyring())
            .with_key_provider(Arc::clone(&provider) as Arc<dyn KeyProvider>)
            .with_data_key_cache(Arc::new(cache))
    };

    eprintln!("data_keys: 1,000 accounts of one credential each");
    let writer = store_with(DataKeyCache::default());
    let mut accounts: Vec<(UserAccount, Uuid)> = Vec::with_capacity(1000);
    for n in 0..1000 {
        let account = writer
            .create_account(&NewUserAccount::new(&format!("auth0|bench-{n}"), "Bench"))
            .expect("account");
        let credential = writer
            .insert_credential(
                &account,
                &NewUserCredential::new("alpaca_paper", "PK", "sk"),
            )
            .expect("credential");
        accounts.push((account, credential.id));
    }
    let calls = |p: &Counting| {
        (
            p.wraps.load(Ordering::Relaxed),
            p.unwraps.load(Ordering::Relaxed),
        )
    };
    println!(
        "setup: {} wrap call(s) for 1,000 new accounts",
        calls(&provider).0
    );

    let pass = |store: &CredentialStore, label: &str| {
        let before = calls(&provider);
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let started = Instant::now();
        for _ in 0..lookups {
            let (account, id) = &accounts[rng.below(accounts.len())];
            store.keys(account, *id).expect("keys");
        }
        let elapsed = started.elapsed();
        let after = calls(&provider);
        println!(
            "| {label} | {lookups} | {} | {} | {:.1} |",
            after.1 - before.1,
            after.0 - before.0,
            elapsed.as_secs_f64() * 1e6 / lookups as f64
        );
    };
    println!();
    println!("| pass | lookups | unwrap calls | wrap calls | mean µs per lookup |");
    println!("|---|---|---|---|---|");
    let store = store_with(DataKeyCache::default());
    pass(&store, "cold (empty cache)");
    pass(&store, "warm (same cache)");
    let small = store_with(DataKeyCache::new(100, Duration::from_secs(300)));
    pass(&small, "cache of 100 accounts");

    let samples = (lookups / 5).max(100);
    let timed = |clear: bool| {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut times = Vec::with_capacity(samples);
        for _ in 0..samples {
            let (account, id) = &accounts[rng.below(accounts.len())];
            if clear {
                store.data_key_cache().clear();
            } else {
                // Make sure it is cached, outside the timed call.
                store.keys(account, *id).expect("keys");
            }
            let started = Instant::now();
            store.keys(account, *id).expect("keys");
            times.push(started.elapsed());
        }
        times.sort();
        times
    };
    let cached = timed(false);
    let uncached = timed(true);
    println!();
    println!("| reveal (`keys`) | samples | p50 µs | p99 µs |");
    println!("|---|---|---|---|");
    for (label, times) in [
        ("data key cached", &cached),
        ("cache cleared (one keyring unwrap)", &uncached),
    ] {
        println!(
            "| {label} | {samples} | {:.1} | {:.1} |",
            percentile(times, 0.5).as_secs_f64() * 1e6,
            percentile(times, 0.99).as_secs_f64() * 1e6
        );
    }
}

//! Fuzz targets, written as proptest tests (cargo-fuzz needs a nightly toolchain).
//!
//! | target | what it feeds | what must hold |
//! |---|---|---|
//! | `nickname` | any text to `Nickname::parse` | no panic; accepted values are trimmed, NFC, 1 to 255 characters, free of control characters; `parse(parse(x)) == parse(x)`; a refusal names the field and the rule |
//! | `credential_type` | any text to `CredentialType::parse` | no panic; accepted values are 1 to 50 of `[a-z0-9_.-]` starting with a letter or digit, unchanged; idempotent; the rule named is the first one broken |
//! | `ciphertext` | any bytes, and mutated real Fernet, `sealed:v3:` (under the row's account's data key, and another account's) and `sealed:v2:` tokens (and `sealed:v1:`/`sealed:v2:`/`sealed:v3:` forms), written into a row's `api_key` or `secret_key` with raw SQL on a SQLite store whose account's data key the keyring unwraps; then `keys`, `key_usage` and `rotate_keys` | no panic; the original plaintext only for a token that opens in that place; otherwise `Error::UnknownKey` (a sealed v1/v2 token naming a key the keyring lacks) or `Error::Decryption`, naming the credential and the field; messages hold no ciphertext of a real token |
//! | `url` | any text to `Database::open` | no panic; only `UnsupportedUrl`, `Connection` or `Database` errors; an unsupported scheme is refused; an opened SQLite database is a file; no message holds the password |
//! | `keyring` | lists of any text, and mutated keys, to `Keyring::from_fernet_keys` | no panic; the result (ids, or which entry is refused and why) is what the key rules say; no error message and no `Debug` holds key text |
//!
//! Each target first runs every seed of `tests/fuzz_corpus/<target>/`, then generated
//! inputs: mutations of the seeds (bit flips, inserted, deleted, repeated and spliced
//! bytes), arbitrary text and bytes, and inputs built near the limits.
//!
//! - CI mode (the default) runs a modest number of generated cases per target;
//!   `CREDENTIAL_STORE_FUZZ_CASES` changes it.
//! - Long mode: `CREDENTIAL_STORE_FUZZ_SECONDS=600` runs each target for that long
//!   (proptest runners of 500 cases, each with a fresh seed, until the deadline).
//! - `CREDENTIAL_STORE_FUZZ_SEED=<u64>` repeats a run; every run prints its seed.
//! - The `ciphertext`, `url` and `keyring` targets count the outcomes of their
//!   generated inputs, and fail when one is reached less often than its floor (set
//!   for the CI mode's number of cases; checked when at least that many ran).
//!
//! The `url` target never opens anything but a file in a temporary directory (it
//! becomes the current directory for that test: paths lose their `/` and `%`) or a
//! PostgreSQL server on 127.0.0.1 (PostgreSQL URLs are rebuilt with that host).
//!
//! A failure prints the shrunk input. Anything found becomes a regression test at
//! the end of this file.

mod common;

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use common::TestDb;
use credential_store::{
    Backend, CipherFormat, CredentialStore, CredentialType, CredentialUpdate, Database, Error,
    Field, Keyring, Nickname, Rule, Unit, UserAccount,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Binary, Text};
use proptest::prelude::*;
use proptest::test_runner::{
    Config, RngAlgorithm, TestCaseError, TestCaseResult, TestError, TestRng, TestRunner,
};
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The harness.
// ---------------------------------------------------------------------------

const SECONDS_VAR: &str = "CREDENTIAL_STORE_FUZZ_SECONDS";
const CASES_VAR: &str = "CREDENTIAL_STORE_FUZZ_CASES";
const SEED_VAR: &str = "CREDENTIAL_STORE_FUZZ_SEED";

/// Cases per proptest runner in long mode: a fresh seed every chunk.
const LONG_MODE_CHUNK: u32 = 500;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The run's base seed: `CREDENTIAL_STORE_FUZZ_SEED`, or a random one.
fn base_seed() -> u64 {
    env_u64(SEED_VAR).unwrap_or_else(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    })
}

/// A ChaCha seed for chunk `chunk` of a run (splitmix64).
fn rng_for(base: u64, chunk: u64) -> TestRng {
    let mut state = base ^ chunk.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut seed = [0u8; 32];
    for part in seed.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        part.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &seed)
}

/// Runs a target: every seed, then generated inputs (`ci_cases` of them, or for
/// `CREDENTIAL_STORE_FUZZ_SECONDS` in long mode). Returns the number of generated
/// inputs; a `tally` is told when the seeds are done, so that it counts the
/// generated inputs apart.
fn fuzz<T: Debug + Clone + 'static>(
    target: &str,
    seeds: &[T],
    inputs: BoxedStrategy<T>,
    ci_cases: u32,
    tally: Option<&Tally>,
    check: impl Fn(&T) -> TestCaseResult,
) -> u64 {
    let started = Instant::now();
    for (i, seed) in seeds.iter().enumerate() {
        if let Err(e) = check(seed) {
            panic!("fuzz target `{target}`: seed #{i} fails: {e}\ninput: {seed:?}");
        }
    }
    if let Some(tally) = tally {
        tally.seeds_done();
    }
    let deadline = env_u64(SECONDS_VAR).map(|s| started + Duration::from_secs(s));
    let chunk_cases = match deadline {
        Some(_) => LONG_MODE_CHUNK,
        None => env_u64(CASES_VAR).map_or(ci_cases, |n| n as u32),
    };
    let base = base_seed();
    let (mut cases, mut chunk) = (0u64, 0u64);
    loop {
        let config = Config {
            cases: chunk_cases,
            failure_persistence: None,
            max_shrink_time: 60_000,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(config, rng_for(base, chunk));
        match runner.run(&inputs, |input| check(&input)) {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => panic!(
                "fuzz target `{target}` failed ({SEED_VAR}={base}, chunk {chunk}): {why}\nminimal input: {input:?}"
            ),
            Err(TestError::Abort(why)) => panic!("fuzz target `{target}` aborted: {why}"),
        }
        cases += u64::from(chunk_cases);
        chunk += 1;
        match deadline {
            Some(deadline) if Instant::now() < deadline => {}
            _ => break,
        }
    }
    eprintln!(
        "fuzz target `{target}`: {} seeds and {cases} generated cases in {:.1?} ({SEED_VAR}={base})",
        seeds.len(),
        started.elapsed()
    );
    cases
}

type Counts = std::collections::BTreeMap<String, u64>;

/// How often each outcome came up in a run, printed at the end; the seeds' counts
/// are kept apart from the generated inputs'.
#[derive(Default)]
struct Tally {
    counts: Mutex<Counts>,
    /// The counts when the last seed was done.
    seeds: Mutex<Counts>,
}

impl Tally {
    fn note(&self, label: impl Into<String>) {
        *self.counts.lock().unwrap().entry(label.into()).or_default() += 1;
    }

    /// Marks the end of the seeds: what comes after is generated.
    fn seeds_done(&self) {
        *self.seeds.lock().unwrap() = self.counts.lock().unwrap().clone();
    }

    /// The counts of the generated inputs alone.
    fn generated(&self) -> Counts {
        let seeds = self.seeds.lock().unwrap();
        let mut counts = self.counts.lock().unwrap().clone();
        for (label, n) in counts.iter_mut() {
            *n -= seeds.get(label).copied().unwrap_or(0);
        }
        counts
    }

    fn print(&self, target: &str) {
        let show = |counts: &Counts| {
            counts
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let generated = self.generated();
        let seeds = self.seeds.lock().unwrap().clone();
        eprintln!(
            "fuzz target `{target}` outcomes: seeds: {}; generated: {}",
            show(&seeds),
            show(&generated)
        );
    }

    /// Asserts that the generated inputs reached each outcome at least its floor's
    /// number of times. The floors are for `default_cases` generated inputs (the CI
    /// default): a run of fewer (`CREDENTIAL_STORE_FUZZ_CASES`, a short long mode)
    /// is not checked; more only reach each outcome more often.
    fn assert_floors(&self, target: &str, cases: u64, default_cases: u32, floors: &[(&str, u64)]) {
        if cases < u64::from(default_cases) {
            eprintln!(
                "fuzz target `{target}`: outcome floors not checked ({cases} generated cases, they hold for {default_cases})"
            );
            return;
        }
        let generated = self.generated();
        let short: Vec<String> = floors
            .iter()
            .filter_map(|&(label, floor)| {
                let n = generated.get(label).copied().unwrap_or(0);
                (n < floor).then(|| format!("{label} {n} times, fewer than {floor}"))
            })
            .collect();
        assert!(
            short.is_empty(),
            "fuzz target `{target}`: the generated inputs no longer reach some outcomes: {}; generated: {generated:?}",
            short.join(", ")
        );
    }
}

/// The variant name of an error, for a tally.
fn variant(err: &Error) -> String {
    let debug = format!("{err:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn fail(why: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(why.into())
}

/// The seed files of a target, by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

fn text_seeds(target: &str) -> Vec<String> {
    corpus(target)
        .into_iter()
        .map(|(_, bytes)| String::from_utf8_lossy(&bytes).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// Input generators.
// ---------------------------------------------------------------------------

const BASE64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Characters that matter to one rule or another: base64, separators, whitespace
/// of every kind, control characters, combining marks, characters that NFC changes,
/// and the ends of the Unicode range.
fn special_char() -> BoxedStrategy<char> {
    let base64: Vec<char> = BASE64URL.chars().chain(['=', ':', '+', '/']).collect();
    let specials = vec![
        ' ',
        '\t',
        '\n',
        '\r',
        '\0',
        '\u{7}',
        '\u{1b}',
        '\u{7f}',
        '\u{85}',
        '\u{9f}',
        '\u{a0}',
        '\u{1680}',
        '\u{2000}',
        '\u{2001}',
        '\u{200b}',
        '\u{200f}',
        '\u{2028}',
        '\u{2029}',
        '\u{3000}',
        '\u{feff}',
        '\u{301}',
        '\u{308}',
        '\u{327}',
        '\u{345}',
        '\u{1100}',
        '\u{1161}',
        '\u{11a8}',
        '\u{ac00}',
        'e',
        'E',
        '\u{e9}',
        '\u{c5}',
        '\u{212b}',
        '\u{212a}',
        '\u{2126}',
        '\u{fb01}',
        '\u{1c5}',
        '\u{130}',
        '\u{131}',
        '\u{ff41}',
        '\u{10ffff}',
        '\u{e000}',
        '\u{fffd}',
        '\u{1f642}',
        '\u{f900}',
        '\u{2f800}',
        'a',
        'z',
        '0',
        '9',
        '_',
        '.',
        '-',
        '|',
        '%',
        '/',
        '?',
        '@',
        '#',
        '&',
        '=',
    ];
    prop_oneof![
        4 => prop::sample::select(base64),
        3 => prop::sample::select(specials),
        2 => any::<char>(),
    ]
    .boxed()
}

/// One edit of a mutation. Positions are taken modulo the input's length.
#[derive(Debug, Clone)]
enum Edit {
    /// Flips one bit of a byte.
    Flip(usize, u8),
    /// Replaces a byte with a base64 character.
    Base64(usize, u8),
    /// Inserts a character.
    Insert(usize, char),
    /// Deletes bytes.
    Delete(usize, usize),
    /// Cuts the input short.
    Truncate(usize),
    /// Repeats a slice a few times.
    Repeat(usize, usize, u8),
    /// Inserts a slice of another seed.
    Splice(usize, usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(at, c)| Edit::Base64(at, c)),
        3 => (any::<usize>(), special_char()).prop_map(|(at, c)| Edit::Insert(at, c)),
        2 => (any::<usize>(), 1usize..8).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (any::<usize>(), 1usize..16, 1u8..8).prop_map(|(at, n, times)| Edit::Repeat(at, n, times)),
        1 => (any::<usize>(), any::<usize>(), any::<usize>(), 1usize..64)
            .prop_map(|(at, seed, from, n)| Edit::Splice(at, seed, from, n)),
    ]
}

fn apply(seeds: &[Vec<u8>], start: usize, edits: &[Edit]) -> Vec<u8> {
    let mut bytes = seeds[start].clone();
    for edit in edits {
        let len = bytes.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match *edit {
            Edit::Flip(i, bit) if len > 0 => bytes[at(i)] ^= 1 << bit,
            Edit::Base64(i, c) if len > 0 => {
                bytes[at(i)] = BASE64URL.as_bytes()[c as usize % BASE64URL.len()]
            }
            Edit::Insert(i, c) => {
                let mut buf = [0u8; 4];
                let at = i % (len + 1);
                bytes.splice(at..at, c.encode_utf8(&mut buf).bytes());
            }
            Edit::Delete(i, n) if len > 0 => {
                let from = at(i);
                bytes.drain(from..(from + n).min(len));
            }
            Edit::Truncate(i) => bytes.truncate(i % (len + 1)),
            Edit::Repeat(i, n, times) if len > 0 => {
                let from = at(i);
                let piece = bytes[from..(from + n).min(len)].to_vec();
                for _ in 0..times {
                    bytes.splice(from..from, piece.iter().copied());
                }
            }
            Edit::Splice(i, seed, from, n) => {
                let other = &seeds[seed % seeds.len()];
                let from = if other.is_empty() {
                    0
                } else {
                    from % other.len()
                };
                let piece = &other[from..(from + n).min(other.len())];
                let at = i % (len + 1);
                bytes.splice(at..at, piece.iter().copied());
            }
            _ => {}
        }
    }
    bytes
}

/// Mutations of the seeds: one to four edits each.
fn mutated(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let seeds = Arc::new(seeds);
    let count = seeds.len();
    (0..count, prop::collection::vec(edit(), 1..=4))
        .prop_map(move |(start, edits)| apply(&seeds, start, &edits))
        .boxed()
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

fn regex(pattern: &str) -> BoxedStrategy<String> {
    proptest::string::string_regex(pattern).unwrap().boxed()
}

/// Text inputs: mutated seeds, arbitrary text, special characters, and text near
/// the length limits.
fn text_inputs(seeds: &[String], plain: &str) -> BoxedStrategy<String> {
    let seed_bytes: Vec<Vec<u8>> = seeds.iter().map(|s| s.as_bytes().to_vec()).collect();
    prop_oneof![
        4 => mutated(seed_bytes).prop_map(lossy),
        2 => any::<String>(),
        2 => prop::collection::vec(special_char(), 0..64).prop_map(|c| c.into_iter().collect()),
        1 => (special_char(), 1usize..300).prop_map(|(c, n)| c.to_string().repeat(n)),
        2 => (
            prop::collection::vec(special_char(), 0..4),
            regex(plain),
            prop::collection::vec(special_char(), 0..4),
        )
            .prop_map(|(head, body, tail)| {
                head.into_iter()
                    .chain(body.chars())
                    .chain(tail)
                    .collect::<String>()
            }),
    ]
    .boxed()
}

/// An error as text, the way a log would hold it: message, `Debug` and sources.
fn rendered(err: &Error) -> String {
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------
// Target: nickname validation.
// ---------------------------------------------------------------------------

fn check_nickname(input: &str) -> TestCaseResult {
    // The rules, applied the way the documentation states them.
    let normal: String = input.trim().nfc().collect();
    let count = normal.chars().count();
    let expected = if input.trim().len() > 16 * 255 {
        Err(Rule::TooLong {
            max: 16 * 255,
            actual: input.trim().len(),
            unit: Unit::Bytes,
        })
    } else if count == 0 {
        Err(Rule::Empty)
    } else if count > 255 {
        Err(Rule::TooLong {
            max: 255,
            actual: count,
            unit: Unit::Characters,
        })
    } else if let Some(position) = normal.chars().position(char::is_control) {
        Err(Rule::ControlCharacter { position })
    } else {
        Ok(normal)
    };
    let actual = match Nickname::parse(input) {
        Ok(nickname) => Ok(nickname.as_str().to_owned()),
        Err(err @ Error::Invalid { .. }) => {
            prop_assert!(err.to_string().starts_with("invalid nickname: "), "{}", err);
            match err {
                Error::Invalid {
                    field: Field::Nickname,
                    rule,
                } => Err(rule),
                other => return Err(fail(format!("wrong field: {other:?}"))),
            }
        }
        Err(other) => return Err(fail(format!("unexpected error {other:?}"))),
    };
    prop_assert_eq!(&actual, &expected);
    if let Ok(nickname) = &actual {
        prop_assert_eq!(nickname.as_str(), nickname.trim(), "not trimmed");
        prop_assert!(unicode_normalization::is_nfc(nickname), "not NFC");
        prop_assert!((1..=255).contains(&nickname.chars().count()));
        prop_assert!(!nickname.chars().any(char::is_control));
        let again = Nickname::parse(nickname)
            .map(|n| n.as_str().to_owned())
            .map_err(|e| e.to_string());
        prop_assert_eq!(again, Ok(nickname.clone()), "parse(parse(x)) != parse(x)");
    }
    Ok(())
}

#[test]
fn fuzz_nickname() {
    let seeds = text_seeds("nickname");
    fuzz(
        "nickname",
        &seeds,
        text_inputs(&seeds, "[ -~\u{a0}-\u{17f}\u{300}-\u{36f}]{0,300}"),
        5000,
        None,
        |input: &String| check_nickname(input),
    );
}

// ---------------------------------------------------------------------------
// Target: credential type validation.
// ---------------------------------------------------------------------------

fn check_credential_type(input: &str) -> TestCaseResult {
    let count = input.chars().count();
    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-');
    let expected = if count == 0 {
        Err(Rule::Empty)
    } else if count > 50 {
        Err(Rule::TooLong {
            max: 50,
            actual: count,
            unit: Unit::Characters,
        })
    } else if let Some((position, character)) =
        input.chars().enumerate().find(|(_, c)| !allowed(*c))
    {
        Err(Rule::InvalidCharacter {
            character,
            position,
            allowed: "a-z 0-9 _ . -",
        })
    } else if !input.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        Err(Rule::InvalidStart {
            allowed: "a letter or a digit",
        })
    } else {
        Ok(input.to_owned())
    };
    let actual = match CredentialType::parse(input) {
        Ok(t) => Ok(t.as_str().to_owned()),
        Err(Error::Invalid {
            field: Field::CredentialType,
            rule,
        }) => Err(rule),
        Err(other) => return Err(fail(format!("unexpected error {other:?}"))),
    };
    prop_assert_eq!(&actual, &expected);
    if let Ok(t) = &actual {
        prop_assert!((1..=50).contains(&t.chars().count()));
        prop_assert!(t.chars().all(allowed));
        prop_assert!(t.starts_with(|c: char| c.is_ascii_alphanumeric()));
        let again = CredentialType::parse(t)
            .map(|t| t.as_str().to_owned())
            .map_err(|e| e.to_string());
        prop_assert_eq!(again, Ok(t.clone()), "parse(parse(x)) != parse(x)");
    }
    Ok(())
}

#[test]
fn fuzz_credential_type() {
    let seeds = text_seeds("credential_type");
    fuzz(
        "credential_type",
        &seeds,
        text_inputs(&seeds, "[a-z0-9_.-]{0,55}"),
        5000,
        None,
        |input: &String| check_credential_type(input),
    );
}

/// Every Unicode scalar value, alone and next to other text, through both validators.
#[test]
fn every_character_through_both_validators() {
    for c in (0..=0x10_FFFFu32).filter_map(char::from_u32) {
        for input in [c.to_string(), format!("a{c}"), format!(" {c}e")] {
            check_nickname(&input).unwrap_or_else(|e| panic!("nickname {input:?}: {e}"));
            check_credential_type(&input)
                .unwrap_or_else(|e| panic!("credential type {input:?}: {e}"));
        }
    }
}

// ---------------------------------------------------------------------------
// Target: ciphertext decoding.
// ---------------------------------------------------------------------------

/// Test keys, committed with the seed corpus (they protect nothing).
const FUZZ_KEY: &str = "vOvqgDIekZ49z2I2xdTkESN4byXsgweeoHUgui8Q4bc=";
const OLD_KEY: &str = "0VaFRh_MSiyY5BqB-UMfL0CrzQkuk-546EU-KDTo494=";
/// Not in the fixture's keyring.
const GONE_KEY: &str = "i7WsipzGUMWenVQwfRPs5F3ia15hmefv3CkCZuqXJ7Q=";
/// The Fernet specification's test key; its test token (`hello`) is a seed.
const SPEC_KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";

/// The fixture's row: fixed ids, so that sealed seeds made for it stay valid.
const ACCOUNT_ID: &str = "0190a000-0000-7000-8000-00000000000a";
const CREDENTIAL_ID: &str = "0190a000-0000-7000-8000-00000000000c";
const FUZZ_USER: &str = "fuzz|user";

const FIELDS: [Field; 2] = [Field::ApiKey, Field::SecretKey];
const COLUMNS: [&str; 2] = ["api_key", "secret_key"];

fn keyring(entries: &[String]) -> Keyring {
    Keyring::from_fernet_keys(entries).unwrap()
}

/// A SQLite store with one account and one credential, and tokens that are known to
/// open (or not) in each of its fields.
struct CipherFixture {
    /// Keeps the SQLite file.
    _db: TestDb,
    raw: Mutex<SqliteConnection>,
    store: CredentialStore,
    account: UserAccount,
    id: Uuid,
    /// The row's own ciphertexts (`api_key`, `secret_key`) and their plaintexts.
    original: [String; 2],
    plaintext: [String; 2],
    /// Tokens that open in one field of this row (sealed), with their plaintext.
    opens_in: HashMap<(usize, String), String>,
    /// Tokens that open in any field of any row (Fernet under a key of the keyring).
    opens_anywhere: HashMap<String, String>,
    key_ids: Vec<String>,
    /// Every real token, valid or not: the seeds of the mutations.
    tokens: Vec<String>,
    /// The base64 bodies of the real tokens, which no message may quote.
    bodies: Vec<String>,
    tally: Tally,
}

#[derive(QueryableByName)]
struct StoredKeys {
    #[diesel(sql_type = Text)]
    api_key: String,
    #[diesel(sql_type = Text)]
    secret_key: String,
}

impl CipherFixture {
    fn new() -> CipherFixture {
        let db = TestDb::sqlite();
        let database = db.database();
        database.run_migrations().unwrap();
        let at = "2026-01-01T00:00:00.000000Z";
        db.execute(&format!(
            "INSERT INTO user_accounts (id, user_id, account_name, is_active, created_at, updated_at)
             VALUES ('{ACCOUNT_ID}', '{FUZZ_USER}', 'Fuzz', 1, '{at}', '{at}');
             INSERT INTO user_credentials (id, user_account_id, user_id, credential_type, nickname,
                 api_key, secret_key, is_active, expires_at, created_at, updated_at)
             VALUES ('{CREDENTIAL_ID}', '{ACCOUNT_ID}', '{FUZZ_USER}', 'alpaca_paper', 'fuzz',
                 'none', 'none', 1, NULL, '{at}', '{at}');"
        ));
        let mut raw = SqliteConnection::establish(db.sqlite_path().to_str().unwrap()).unwrap();
        // As the store's own connections: no fsync per commit in WAL mode.
        raw.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;")
            .unwrap();
        let ring = [
            format!("fuzz:{FUZZ_KEY}"),
            format!("old:{OLD_KEY}"),
            SPEC_KEY.to_owned(),
        ];
        let store = CredentialStore::new(database.clone(), keyring(&ring));
        let account = store.account_by_user_id(FUZZ_USER).unwrap().unwrap();
        let id: Uuid = CREDENTIAL_ID.parse().unwrap();
        let mut fixture = CipherFixture {
            key_ids: store.keyring().key_ids().map(str::to_owned).collect(),
            _db: db,
            raw: Mutex::new(raw),
            store,
            account,
            id,
            original: Default::default(),
            plaintext: Default::default(),
            opens_in: HashMap::new(),
            opens_anywhere: HashMap::new(),
            tokens: Vec::new(),
            bodies: Vec::new(),
            tally: Tally::default(),
        };
        // Fresh tokens for this row, in both formats and under several keys. The
        // first sealed write makes the account's data key, wrapped by the primary
        // key (`fuzz`): every sealed (v3) token of the row is under it.
        let gone = format!("gone:{GONE_KEY}");
        for (name, entries, format, opens) in [
            ("sealed-fuzz", &ring[..1], CipherFormat::Sealed, true),
            ("sealed-fuzz-again", &ring[..2], CipherFormat::Sealed, true),
            ("fernet-old", &ring[1..2], CipherFormat::Fernet, true),
            ("fernet-spec", &ring[2..3], CipherFormat::Fernet, true),
            (
                "fernet-gone",
                std::slice::from_ref(&gone),
                CipherFormat::Fernet,
                false,
            ),
            ("fernet-fuzz", &ring[..1], CipherFormat::Fernet, true),
        ] {
            let minted = fixture.mint(keyring(entries), format, name);
            for (field, (token, plain)) in minted.into_iter().enumerate() {
                fixture.remember(field, format, opens, token, plain);
            }
        }
        // Sealed v2, as stores wrote it before data keys: under keyring keys
        // themselves, bound to the row and field.
        #[cfg(feature = "bench-internals")]
        for (name, entry, opens) in [
            ("sealed-v2-fuzz", &ring[0], true),
            ("sealed-v2-old", &ring[1], true),
            ("sealed-v2-gone", &gone, false),
        ] {
            let minted = fixture.mint_v2(&keyring(std::slice::from_ref(entry)), name);
            for (field, (token, plain)) in minted.into_iter().enumerate() {
                assert!(token.starts_with("sealed:v2:"), "{token}");
                fixture.remember(field, CipherFormat::Sealed, opens, token, plain);
            }
        }
        // Sealed v3 under another account's data key: opens nowhere here.
        for (token, plain) in fixture.mint_elsewhere() {
            fixture.remember(0, CipherFormat::Sealed, false, token, plain);
        }
        // The seeds: real tokens made for this row by `regenerate_ciphertext_seeds`,
        // and edge cases. `ok_<field>__<plaintext>` opens in that field only,
        // `ok_any__<plaintext>` anywhere (Fernet); any other seed opens nowhere.
        for (name, bytes) in corpus("ciphertext") {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Some(rest) = name.strip_prefix("ok_") {
                let (place, plain) = rest.split_once("__").expect("ok_<place>__<plaintext>");
                let plain = plain.trim_end_matches(".txt").to_owned();
                match place {
                    "any" => fixture.remember(0, CipherFormat::Fernet, true, text, plain),
                    "api_key" => fixture.remember(0, CipherFormat::Sealed, true, text, plain),
                    "secret_key" => fixture.remember(1, CipherFormat::Sealed, true, text, plain),
                    other => panic!("seed {name}: unknown place {other}"),
                }
            } else {
                fixture.tokens.push(text);
            }
        }
        // The row as every case starts: sealed api_key, Fernet secret_key.
        let sealed = fixture.mint(keyring(&ring[..1]), CipherFormat::Sealed, "row");
        let fernet = fixture.mint(keyring(&ring[..1]), CipherFormat::Fernet, "row");
        fixture.remember(
            0,
            CipherFormat::Sealed,
            true,
            sealed[0].0.clone(),
            sealed[0].1.clone(),
        );
        fixture.remember(
            1,
            CipherFormat::Fernet,
            true,
            fernet[1].0.clone(),
            fernet[1].1.clone(),
        );
        fixture.original = [sealed[0].0.clone(), fernet[1].0.clone()];
        fixture.plaintext = [sealed[0].1.clone(), fernet[1].1.clone()];
        fixture
    }

    /// Encrypts two plaintexts for this row through the public API, and reads back
    /// what was stored.
    fn mint(&self, keyring: Keyring, format: CipherFormat, name: &str) -> [(String, String); 2] {
        let store =
            CredentialStore::new(self.store.database().clone(), keyring).with_format(format);
        let (api, secret) = (format!("PK-{name}"), format!("SK-{name}"));
        store
            .update_credential(
                &self.account,
                self.id,
                &CredentialUpdate::default().keys(api.as_str(), secret.as_str()),
            )
            .unwrap();
        let stored = self.stored();
        [(stored.api_key, api), (stored.secret_key, secret)]
    }

    /// Two plaintexts for this row in sealed v2 under `keyring`'s primary key, as
    /// a store wrote them before data keys (the crate's own sealing).
    #[cfg(feature = "bench-internals")]
    fn mint_v2(&self, keyring: &Keyring, name: &str) -> [(String, String); 2] {
        let (api, secret) = (format!("PK-{name}"), format!("SK-{name}"));
        [(Field::ApiKey, api), (Field::SecretKey, secret)].map(|(field, plain)| {
            let token = credential_store::internals::seal(
                keyring,
                CipherFormat::Sealed,
                &self.account,
                self.id,
                field,
                &secrecy::SecretString::from(plain.as_str()),
            );
            (token, plain)
        })
    }

    /// A credential's two sealed (v3) tokens in another account of the store's,
    /// under that account's data key; the account is deleted again.
    fn mint_elsewhere(&self) -> [(String, String); 2] {
        let other = self
            .store
            .create_account(&credential_store::NewUserAccount::new(
                "fuzz|other",
                "Other",
            ))
            .unwrap();
        let (api, secret) = ("PK-elsewhere", "SK-elsewhere");
        let credential = self
            .store
            .insert_credential(
                &other,
                &credential_store::NewUserCredential::new("alpaca_paper", api, secret),
            )
            .unwrap();
        let stored: StoredKeys = diesel::sql_query(format!(
            "SELECT api_key, secret_key FROM user_credentials WHERE id = '{}'",
            credential.id
        ))
        .get_result(&mut *self.raw.lock().unwrap())
        .unwrap();
        // The fixture's row stays the only one (rotation scans one row).
        self.store.delete_account(&other).unwrap();
        [
            (stored.api_key, api.to_owned()),
            (stored.secret_key, secret.to_owned()),
        ]
    }

    fn stored(&self) -> StoredKeys {
        diesel::sql_query(format!(
            "SELECT api_key, secret_key FROM user_credentials WHERE id = '{CREDENTIAL_ID}'"
        ))
        .get_result(&mut *self.raw.lock().unwrap())
        .unwrap()
    }

    fn remember(
        &mut self,
        field: usize,
        format: CipherFormat,
        opens: bool,
        token: String,
        plain: String,
    ) {
        if let Some(body) = token.rsplit(':').next() {
            self.bodies.push(body.trim_end_matches('=').to_owned());
        }
        match (opens, format) {
            (true, CipherFormat::Fernet) => {
                self.opens_anywhere.insert(token.clone(), plain);
            }
            (true, CipherFormat::Sealed) => {
                self.opens_in.insert((field, token.clone()), plain);
            }
            (true, other) => panic!("a format the fuzz model does not know: {other}"),
            (false, _) => {}
        }
        self.tokens.push(token);
    }

    /// Writes the row: `candidate` into one field, the original into the other.
    fn write(&self, field: usize, candidate: &[u8]) {
        let mut conn = self.raw.lock().unwrap();
        let other = &self.original[1 - field];
        let sql = format!(
            "UPDATE user_credentials SET {} = ?, {} = ? WHERE id = '{CREDENTIAL_ID}'",
            COLUMNS[field],
            COLUMNS[1 - field]
        );
        // Not UTF-8: written as a BLOB, which is what another program could leave there.
        let written = match std::str::from_utf8(candidate) {
            Ok(text) => diesel::sql_query(sql)
                .bind::<Text, _>(text)
                .bind::<Text, _>(other)
                .execute(&mut *conn),
            Err(_) => diesel::sql_query(sql)
                .bind::<Binary, _>(candidate)
                .bind::<Text, _>(other)
                .execute(&mut *conn),
        };
        assert_eq!(written.unwrap(), 1);
    }

    /// What `keys` must give once `text` is in `field`.
    fn expected(&self, field: usize, text: &str) -> Result<[String; 2], CipherFailure> {
        let opened = self
            .opens_in
            .get(&(field, text.to_owned()))
            .or_else(|| self.opens_anywhere.get(text));
        if let Some(plain) = opened {
            let mut keys = self.plaintext.clone();
            keys[field] = plain.clone();
            return Ok(keys);
        }
        if let Some((key_id, body)) = text
            .strip_prefix("sealed:v1:")
            .or_else(|| text.strip_prefix("sealed:v2:"))
            .and_then(|rest| rest.split_once(':'))
        {
            // Only a well-formed ciphertext names its key: an id of 1 to 32 of
            // `[A-Za-z0-9_.-]` and a body of at least a nonce and a tag (40 bytes).
            // Anything else in those places is a damaged ciphertext.
            let well_formed = (1..=32).contains(&key_id.len())
                && key_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                && base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(body)
                    .is_ok_and(|bytes| bytes.len() >= 40);
            if well_formed && !self.key_ids.iter().any(|k| k == key_id) {
                return Err(CipherFailure::UnknownKey(FIELDS[field], key_id.to_owned()));
            }
        }
        Err(CipherFailure::Decryption(FIELDS[field]))
    }

    fn check(&self, field: usize, candidate: &[u8]) -> TestCaseResult {
        self.write(field, candidate);
        // Bytes that are not UTF-8 are read as U+FFFD, which no token holds: such a
        // ciphertext is a `Decryption` (or `UnknownKey`) failure of its field.
        let text = String::from_utf8_lossy(candidate).into_owned();
        let expected = self.expected(field, &text);
        self.tally.note(match &expected {
            Ok(_) => "opens".to_owned(),
            Err(CipherFailure::Decryption(_)) => "Decryption".to_owned(),
            Err(CipherFailure::UnknownKey(..)) => "UnknownKey".to_owned(),
            Err(CipherFailure::Other(_)) => "other".to_owned(),
        });
        let actual = self.store.keys(&self.account, self.id);
        if let Err(err) = &actual {
            self.no_ciphertext_in(err)?;
        }
        let actual = actual
            .map(|keys| {
                [
                    keys.api_key().expose_secret().to_owned(),
                    keys.secret_key().expose_secret().to_owned(),
                ]
            })
            .map_err(|e| self.failure(e));
        prop_assert_eq!(&actual, &expected, "keys");

        // Maintenance reads the same column: no panic, a typed outcome.
        if let Err(err) = self.store.maintenance().key_usage() {
            return Err(fail(format!("key_usage failed: {err:?}")));
        }
        let rotated = self.store.maintenance().rotate_keys(10, &mut |_| {});
        if let Err(err) = &rotated {
            self.no_ciphertext_in(err)?;
        }
        match expected {
            Ok(keys) => {
                // Sealed (v3) under the account's data key, of version 1.
                let current = |t: &str| t.starts_with("sealed:v3:1:");
                let (api, secret) = if field == 0 {
                    (text.as_str(), self.original[1].as_str())
                } else {
                    (self.original[0].as_str(), text.as_str())
                };
                let rewritten = u64::from(!(current(api) && current(secret)));
                match rotated {
                    Ok(p) => prop_assert_eq!((p.scanned, p.total, p.rewritten), (1, 1, rewritten)),
                    Err(e) => return Err(fail(format!("rotate_keys failed: {e:?}"))),
                }
                // Rotation kept the plaintext.
                let again = self
                    .store
                    .keys(&self.account, self.id)
                    .map(|k| {
                        [
                            k.api_key().expose_secret().to_owned(),
                            k.secret_key().expose_secret().to_owned(),
                        ]
                    })
                    .map_err(|e| format!("{e:?}"));
                prop_assert_eq!(again, Ok(keys), "after rotation");
            }
            // Every row is opened, even one that looks current: one that does not
            // open is listed, never passed over.
            Err(expected) => match rotated {
                Err(Error::RotationIncomplete {
                    rewritten,
                    failures,
                }) => {
                    prop_assert_eq!(rewritten, 0);
                    let failures: Vec<CipherFailure> =
                        failures.into_iter().map(|e| self.failure(e)).collect();
                    prop_assert_eq!(failures, vec![expected]);
                }
                other => return Err(fail(format!("rotate_keys gave {other:?}"))),
            },
        }
        Ok(())
    }

    fn failure(&self, err: Error) -> CipherFailure {
        match err {
            Error::Decryption {
                credential_id,
                field,
            } if credential_id == self.id => CipherFailure::Decryption(field),
            Error::UnknownKey {
                credential_id,
                field,
                key_id,
            } if credential_id == self.id => CipherFailure::UnknownKey(field, key_id),
            other => CipherFailure::Other(format!("{other:?}")),
        }
    }

    /// No message quotes 24 characters of a real token's body.
    fn no_ciphertext_in(&self, err: &Error) -> TestCaseResult {
        // The one piece of a stored value an error quotes is the key id of a
        // well-formed sealed ciphertext (`Error::UnknownKey`), which names the key it
        // needs: metadata, at most 32 characters. Nothing else may appear.
        let mut text = rendered(err);
        let unknown = |e: &Error| match e {
            Error::UnknownKey { key_id, .. } => Some(key_id.clone()),
            _ => None,
        };
        let key_ids: Vec<String> = match err {
            Error::RotationIncomplete { failures, .. } => {
                failures.iter().filter_map(unknown).collect()
            }
            other => unknown(other).into_iter().collect(),
        };
        for key_id in key_ids {
            text = text.replace(&key_id, "<key id>");
        }
        for body in &self.bodies {
            let chars: Vec<char> = body.chars().collect();
            for window in chars.windows(24) {
                let window: String = window.iter().collect();
                prop_assert!(
                    !text.contains(&window),
                    "the error quotes ciphertext: {}",
                    text
                );
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CipherFailure {
    Decryption(Field),
    UnknownKey(Field, String),
    Other(String),
}

/// Bytes, printed as text when they are UTF-8.
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) => write!(f, "{text:?}"),
            Err(_) => write!(f, "b\"{}\"", self.0.escape_ascii()),
        }
    }
}

fn ciphertext_inputs(fixture: &CipherFixture) -> BoxedStrategy<(usize, Bytes)> {
    let tokens: Vec<Vec<u8>> = fixture
        .tokens
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect();
    let candidate = prop_oneof![
        8 => mutated(tokens.clone()),
        1 => prop::sample::select(tokens),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..160),
        2 => (1u8..=3, regex("[A-Za-z0-9_.|-]{0,40}"), regex("[A-Za-z0-9_=-]{0,200}"))
            .prop_map(|(v, id, body)| format!("sealed:v{v}:{id}:{body}").into_bytes()),
        1 => regex("[A-Za-z0-9_=-]{0,200}").prop_map(|body| format!("gAAAAA{body}").into_bytes()),
    ];
    (0usize..2, candidate.prop_map(Bytes)).boxed()
}

/// Generated inputs of the `ciphertext` target in CI mode.
const CIPHERTEXT_CASES: u32 = 1000;

/// Floors for [`CIPHERTEXT_CASES`] generated inputs, well below the lowest counts
/// seen over many runs: a generator that stops reaching an outcome fails.
const CIPHERTEXT_FLOORS: &[(&str, u64)] = &[("Decryption", 300), ("UnknownKey", 3), ("opens", 5)];

#[test]
fn fuzz_ciphertext() {
    let fixture = CipherFixture::new();
    let seeds: Vec<(usize, Bytes)> = fixture
        .tokens
        .iter()
        .flat_map(|t| [0, 1].map(|field| (field, Bytes(t.as_bytes().to_vec()))))
        .collect();
    let cases = fuzz(
        "ciphertext",
        &seeds,
        ciphertext_inputs(&fixture),
        CIPHERTEXT_CASES,
        Some(&fixture.tally),
        |(field, candidate): &(usize, Bytes)| fixture.check(*field, &candidate.0),
    );
    fixture.tally.print("ciphertext");
    fixture
        .tally
        .assert_floors("ciphertext", cases, CIPHERTEXT_CASES, CIPHERTEXT_FLOORS);
}

/// Rewrites the `ok_*` seeds of `tests/fuzz_corpus/ciphertext/` for the fixture's
/// row and keys (sealed tokens have random nonces: run only to refresh the corpus):
/// `cargo test --all-features --test fuzz regenerate_ciphertext_seeds -- --ignored`.
///
/// The sealed seeds are sealed v2, under keyring keys: a sealed-v3 token is under
/// its account's data key, which each fixture makes anew, so none opens in another
/// run.
#[cfg(feature = "bench-internals")]
#[test]
#[ignore = "writes the seed corpus"]
fn regenerate_ciphertext_seeds() {
    let fixture = CipherFixture::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus/ciphertext");
    let ring = |entry: String| keyring(&[entry]);
    let sealed = fixture.mint_v2(&ring(format!("fuzz:{FUZZ_KEY}")), "seed");
    let old = fixture.mint_v2(&ring(format!("old:{OLD_KEY}")), "seed-old");
    let fernet = fixture.mint(ring(FUZZ_KEY.into()), CipherFormat::Fernet, "seed-fernet");
    let gone = fixture.mint_v2(&ring(format!("gone:{GONE_KEY}")), "gone");
    let fernet_gone = fixture.mint(ring(GONE_KEY.into()), CipherFormat::Fernet, "gone");
    let write = |name: String, token: &str| std::fs::write(dir.join(name), token).unwrap();
    write(format!("ok_api_key__{}.txt", sealed[0].1), &sealed[0].0);
    write(format!("ok_secret_key__{}.txt", sealed[1].1), &sealed[1].0);
    write(format!("ok_api_key__{}.txt", old[0].1), &old[0].0);
    write(format!("ok_any__{}.txt", fernet[0].1), &fernet[0].0);
    write("sealed_unknown_key_gone.txt".into(), &gone[0].0);
    write("fernet_unknown_key.txt".into(), &fernet_gone[0].0);
    // A sealed token of the other field: it must not open here.
    write("sealed_secret_key_in_api_key.txt".into(), &sealed[1].0);
}

// ---------------------------------------------------------------------------
// Target: URL parsing (Database::open).
// ---------------------------------------------------------------------------

/// A file in the `url` target's directory that is not a database.
const NOT_A_DATABASE: &str = "not-a-database.db";

/// A password that must never appear in an error.
const URL_PASSWORD: &str = "Fuzz-Not-A-Real-Password-7c1e";

/// What a URL is, after `url_to_open` made it harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UrlKind {
    /// Rebuilt for the server on 127.0.0.1.
    Postgres,
    /// Rebuilt for the MariaDB server on 127.0.0.1, with a password it refuses.
    Mysql,
    /// A scheme the crate does not support: refused, nothing touched.
    OtherScheme(String),
    /// A SQLite path or URI, without `/` or `%`: a file in the current directory.
    Sqlite(String),
}

/// Makes an arbitrary string safe to open: PostgreSQL URLs get host 127.0.0.1 (and
/// a fuzzed, percent-encoded database name); SQLite paths lose `/` and `%`, so they
/// stay in the current directory. Whitespace around the URL is kept.
fn url_to_open(raw: &str) -> (String, UrlKind) {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return (raw.to_owned(), UrlKind::Sqlite(String::new()));
    }
    let start = raw.len() - raw.trim_start().len();
    let (lead, tail) = (&raw[..start], &raw[start + trimmed.len()..]);
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = trimmed.strip_prefix(scheme) {
            let port = if rest.len() % 5 == 0 { 1 } else { 5432 };
            let name: String = rest
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let url =
                format!("{lead}{scheme}postgres:{URL_PASSWORD}@127.0.0.1:{port}/{name}{tail}");
            return (url, UrlKind::Postgres);
        }
    }
    if let Some(rest) = trimmed.strip_prefix("mysql://") {
        let port = if rest.len() % 5 == 0 { 1 } else { 3306 };
        let name: String = rest
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .map(char::from)
            .collect();
        let url = format!("{lead}mysql://root:{URL_PASSWORD}@127.0.0.1:{port}/{name}{tail}");
        return (url, UrlKind::Mysql);
    }
    let safe = |path: &str| path.replace(['/', '%'], "_");
    for prefix in ["sqlite://", "sqlite:"] {
        if let Some(path) = trimmed.strip_prefix(prefix) {
            let path = safe(path);
            return (format!("{lead}{prefix}{path}{tail}"), UrlKind::Sqlite(path));
        }
    }
    if let Some((scheme, _)) = trimmed.split_once("://") {
        return (raw.to_owned(), UrlKind::OtherScheme(scheme.to_owned()));
    }
    let path = safe(trimmed);
    (format!("{lead}{path}{tail}"), UrlKind::Sqlite(path))
}

/// Runs the `url` target in a temporary current directory, and goes back after.
struct InTempDir {
    previous: PathBuf,
    dir: tempfile::TempDir,
}

impl InTempDir {
    fn enter() -> InTempDir {
        let dir = tempfile::tempdir().unwrap();
        let previous = std::env::current_dir().unwrap();
        std::env::set_current_dir(dir.path()).unwrap();
        InTempDir { previous, dir }
    }

    fn entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    fn clear(&self) {
        for path in self.entries() {
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

impl Drop for InTempDir {
    fn drop(&mut self) {
        let _ = std::env::set_current_dir(&self.previous);
    }
}

fn check_url(cwd: &InTempDir, tally: &Tally, raw: &str) -> TestCaseResult {
    let (url, kind) = url_to_open(raw);
    cwd.clear();
    // A file that is not a database, for the seeds that name it.
    std::fs::write(NOT_A_DATABASE, "this is not a SQLite database, it is text").unwrap();
    let opened = Database::open(&url);
    let kind_name = match &kind {
        UrlKind::Postgres => "postgres",
        UrlKind::Mysql => "mysql",
        UrlKind::OtherScheme(_) => "other scheme",
        UrlKind::Sqlite(_) => "sqlite",
    };
    tally.note(format!(
        "{kind_name}: {}",
        opened.as_ref().map_or_else(variant, |_| "Ok".into())
    ));
    if let Err(err) = &opened {
        let text = rendered(err);
        prop_assert!(
            !text.contains(URL_PASSWORD),
            "the password leaked: {}",
            text
        );
    }
    match (&kind, &opened) {
        (UrlKind::Postgres, Ok(db)) => prop_assert_eq!(db.backend(), Backend::Postgres),
        (UrlKind::Postgres, Err(Error::Connection(_))) => {}
        // A malformed server URL is refused before the driver sees it.
        (UrlKind::Postgres | UrlKind::Mysql, Err(Error::UnsupportedUrl { .. })) => {}
        // The server refuses the password (or nothing listens on the port).
        #[cfg(feature = "mysql")]
        (UrlKind::Mysql, Err(Error::Connection(_))) => {}
        #[cfg(not(feature = "mysql"))]
        (UrlKind::Mysql, Err(Error::UnsupportedUrl { .. })) => {}
        (UrlKind::OtherScheme(scheme), Err(Error::UnsupportedUrl { reason })) => {
            // Named when it is a well-formed scheme, never quoted otherwise.
            let named = scheme.len() <= 20
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            prop_assert!(!named || reason.contains(scheme.as_str()), "{}", reason);
        }
        (UrlKind::Sqlite(path), result) => {
            // What `parse_url` refuses: no path, and every in-memory or private
            // temporary database (a `file:` URI with no file name).
            let uri_file = path
                .strip_prefix("file:")
                .map(|uri| uri.split(['?', '#']).next().unwrap_or_default());
            // A path without a scheme holding `=`, whitespace or a control
            // character is refused too (a libpq key=value string is no file).
            let bare = !url.trim().starts_with("sqlite:");
            let refused = path.is_empty()
                || (bare
                    && url
                        .trim()
                        .contains(|c: char| c == '=' || c.is_whitespace() || c.is_control()))
                || path.contains(":memory:")
                || path.contains("mode=memory")
                || path.contains("vfs=memdb")
                || uri_file.is_some_and(str::is_empty);
            match result {
                Err(Error::UnsupportedUrl { .. }) if refused => {}
                _ if refused => return Err(fail(format!("not refused: {result:?}"))),
                Ok(db) => {
                    prop_assert_eq!(db.backend(), Backend::Sqlite);
                    // A pooled database must be one file that every connection
                    // shares: in-memory and temporary databases are refused.
                    // (Paths have no `/`: the file is in the current directory.)
                    let file = uri_file.unwrap_or(path.as_str());
                    prop_assert!(
                        Path::new(file).is_file(),
                        "{:?} opened a database that is not a file",
                        url
                    );
                }
                Err(Error::Connection(_) | Error::Database(_)) => {}
                Err(other) => return Err(fail(format!("undocumented error {other:?}"))),
            }
        }
        (_, other) => return Err(fail(format!("unexpected result {other:?}"))),
    }
    drop(opened);
    cwd.clear();
    Ok(())
}

/// Generated inputs of the `url` target in CI mode.
const URL_CASES: u32 = 800;

/// Floors for [`URL_CASES`] generated inputs, well below the lowest counts seen over
/// many runs: a generator that stops reaching an outcome fails. Whether a
/// PostgreSQL or MariaDB server answers does not change them: a refused password,
/// a missing database and a closed port are all `Connection`. `sqlite: Connection`,
/// `sqlite: Database` and `postgres: Ok` come from the seeds and only now and then
/// from generated inputs: no floor.
const URL_FLOORS: &[(&str, u64)] = &[
    #[cfg(feature = "mysql")]
    ("mysql: Connection", 5),
    #[cfg(not(feature = "mysql"))]
    ("mysql: UnsupportedUrl", 5),
    ("other scheme: UnsupportedUrl", 30),
    ("postgres: Connection", 15),
    ("sqlite: Ok", 100),
    ("sqlite: UnsupportedUrl", 70),
];

#[test]
fn fuzz_url() {
    let cwd = InTempDir::enter();
    let seeds = text_seeds("url");
    let schemes = vec![
        "postgres://",
        "postgresql://",
        "sqlite://",
        "sqlite:",
        "sqlite:file:",
        "file:",
        "mysql://",
        "SQLITE://",
        "Postgres://",
        " postgres://",
        "postgres:/",
        "",
        "\t",
    ];
    let inputs = prop_oneof![
        4 => mutated(seeds.iter().map(|s| s.as_bytes().to_vec()).collect()).prop_map(lossy),
        2 => any::<String>(),
        2 => (
            prop::sample::select(schemes),
            regex("[a-z0-9:.?&=_ -]{0,40}"),
            prop::collection::vec(special_char(), 0..3),
        )
            .prop_map(|(scheme, rest, extra)| {
                format!("{scheme}{rest}{}", extra.into_iter().collect::<String>())
            }),
    ]
    .boxed();
    let tally = Tally::default();
    let cases = fuzz(
        "url",
        &seeds,
        inputs,
        URL_CASES,
        Some(&tally),
        |input: &String| check_url(&cwd, &tally, input),
    );
    tally.print("url");
    tally.assert_floors("url", cases, URL_CASES, URL_FLOORS);
}

// ---------------------------------------------------------------------------
// Target: keyring parsing.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyringOutcome {
    /// The key ids, primary first.
    Ids(Vec<String>),
    NoKeyConfigured,
    InvalidKey(usize),
    InvalidKeyId(usize),
    DuplicateKeyId(String),
    Other(String),
}

/// The key rules: entries trimmed; `id:key` or `key`; a key is 32 bytes of URL-safe
/// base64 with padding; an id is 1 to 32 of `[A-Za-z0-9_.-]`, or derived from the key;
/// ids are unique; the first broken rule, in entry order, is the error.
fn keyring_rules(entries: &[String]) -> KeyringOutcome {
    let mut ids: Vec<String> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let position = i + 1;
        let entry = entry.trim();
        let (id, key) = match entry.split_once(':') {
            Some((id, key)) => (Some(id.trim()), key.trim()),
            None => (None, entry),
        };
        if !URL_SAFE.decode(key).is_ok_and(|bytes| bytes.len() == 32) {
            return KeyringOutcome::InvalidKey(position);
        }
        let id = match id {
            Some(id) => {
                let valid = (1..=32).contains(&id.chars().count())
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                if !valid {
                    return KeyringOutcome::InvalidKeyId(position);
                }
                id.to_owned()
            }
            // Derived from the key: `k` and 8 hex digits.
            None => Keyring::from_fernet_keys([key])
                .unwrap()
                .primary_key_id()
                .to_owned(),
        };
        if ids.contains(&id) {
            return KeyringOutcome::DuplicateKeyId(id);
        }
        ids.push(id);
    }
    if ids.is_empty() {
        KeyringOutcome::NoKeyConfigured
    } else {
        KeyringOutcome::Ids(ids)
    }
}

fn check_keyring(tally: &Tally, entries: &[String]) -> TestCaseResult {
    let result = Keyring::from_fernet_keys(entries);
    tally.note(result.as_ref().map_or_else(variant, |_| "Ok".into()));
    // Key texts long enough to be recognised; none may appear in any output.
    let secrets: Vec<&str> = entries
        .iter()
        .map(|e| {
            let e = e.trim();
            e.split_once(':').map_or(e, |(_, key)| key.trim())
        })
        .filter(|key| key.len() >= 12)
        .collect();
    let shown = match &result {
        Ok(keyring) => format!("{keyring:?}"),
        Err(err) => rendered(err),
    };
    for secret in &secrets {
        prop_assert!(!shown.contains(secret), "key text in {}", shown);
    }
    let actual = match result {
        Ok(keyring) => {
            prop_assert_eq!(keyring.len(), entries.len());
            prop_assert!(!keyring.is_empty());
            let ids: Vec<String> = keyring.key_ids().map(str::to_owned).collect();
            prop_assert_eq!(keyring.primary_key_id(), ids[0].as_str());
            for id in &ids {
                let derived = id.len() == 9
                    && id.starts_with('k')
                    && id[1..].chars().all(|c| c.is_ascii_hexdigit());
                let explicit = (1..=32).contains(&id.len())
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                prop_assert!(derived || explicit, "bad id {:?}", id);
            }
            KeyringOutcome::Ids(ids)
        }
        Err(Error::NoKeyConfigured { variable: None }) => KeyringOutcome::NoKeyConfigured,
        Err(Error::InvalidKey { position }) => KeyringOutcome::InvalidKey(position),
        Err(Error::InvalidKeyId { position }) => KeyringOutcome::InvalidKeyId(position),
        Err(Error::DuplicateKeyId { key_id }) => KeyringOutcome::DuplicateKeyId(key_id),
        Err(other) => KeyringOutcome::Other(format!("{other:?}")),
    };
    prop_assert_eq!(actual, keyring_rules(entries));
    Ok(())
}

fn keyring_seeds() -> Vec<Vec<String>> {
    corpus("keyring")
        .into_iter()
        .map(|(_, bytes)| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// Generated inputs of the `keyring` target in CI mode.
const KEYRING_CASES: u32 = 2000;

/// Floors for [`KEYRING_CASES`] generated inputs, well below the lowest counts seen
/// over many runs: a generator that stops reaching an outcome fails.
const KEYRING_FLOORS: &[(&str, u64)] = &[
    ("DuplicateKeyId", 5),
    ("InvalidKey", 500),
    ("InvalidKeyId", 8),
    ("NoKeyConfigured", 60),
    ("Ok", 40),
];

#[test]
fn fuzz_keyring() {
    let seeds = keyring_seeds();
    let mut pieces: Vec<Vec<u8>> = seeds
        .iter()
        .flatten()
        .map(|e| e.as_bytes().to_vec())
        .collect();
    for key in [FUZZ_KEY, OLD_KEY, GONE_KEY, SPEC_KEY] {
        pieces.push(key.as_bytes().to_vec());
        pieces.push(format!("id-{}:{key}", key.len()).into_bytes());
    }
    let entry = prop_oneof![
        6 => mutated(pieces).prop_map(lossy),
        2 => Just(()).prop_map(|_| Keyring::generate_key().expose_secret().to_owned()),
        1 => any::<String>(),
        2 => (regex("[A-Za-z0-9_. -]{0,36}"), regex("[A-Za-z0-9_=+/ -]{40,46}"))
            .prop_map(|(id, key)| format!("{id}:{key}")),
        1 => regex("[A-Za-z0-9_-]{43}=").prop_map(|key| format!(" {key} ")),
    ];
    let inputs = prop_oneof![
        1 => prop::collection::vec(entry.clone(), 0..=1),
        3 => prop::collection::vec(entry.clone(), 1..=4),
        // The same entry twice: a duplicate id.
        1 => (entry.clone(), entry).prop_map(|(a, b)| vec![a.clone(), b, a]),
    ]
    .boxed();
    let tally = Tally::default();
    let cases = fuzz(
        "keyring",
        &seeds,
        inputs,
        KEYRING_CASES,
        Some(&tally),
        |entries: &Vec<String>| check_keyring(&tally, entries),
    );
    tally.print("keyring");
    tally.assert_floors("keyring", cases, KEYRING_CASES, KEYRING_FLOORS);
}

// ---------------------------------------------------------------------------
// Regression tests: the crate bugs the targets found, all fixed in src/. Each test
// pins one fix on a minimal input; the targets check the same rules on everything
// they generate.
// ---------------------------------------------------------------------------

/// A SQLite store with one sealed credential, and a way to overwrite its ciphertexts.
fn one_credential(format: CipherFormat) -> (TestDb, CredentialStore, UserAccount, Uuid) {
    let db = TestDb::sqlite();
    let store = db.store().with_format(format);
    let account = store
        .create_account(&credential_store::NewUserAccount::new(
            "auth0|alice",
            "Alice",
        ))
        .unwrap();
    let credential = store
        .insert_credential(
            &account,
            &credential_store::NewUserCredential::new("alpaca_paper", "PK1", "SK1"),
        )
        .unwrap();
    (db, store, account, credential.id)
}

fn stored_api_key(db: &TestDb, id: Uuid) -> String {
    let mut conn = SqliteConnection::establish(db.sqlite_path().to_str().unwrap()).unwrap();
    diesel::sql_query(format!(
        "SELECT api_key, secret_key FROM user_credentials WHERE id = '{id}'"
    ))
    .get_result::<StoredKeys>(&mut conn)
    .unwrap()
    .api_key
}

/// Fixed bug 1 (`url` target; src/connection.rs, `parse_url`): "in-memory SQLite
/// is refused" held for `:memory:` and `mode=memory` only, but SQLite URI filenames
/// (diesel opens with `SQLITE_OPEN_URI`) reached a database that is not one shared
/// file: `file::memory:`, the `memdb` VFS, and `file:` with an empty file name (a
/// private temporary database). `Database::open` returned `Ok`, and each pooled
/// connection then saw a database of its own. All of them are now `UnsupportedUrl`.
#[test]
fn sqlite_uri_filenames_without_a_shared_file_are_refused() {
    for url in [
        "file::memory:",
        "sqlite:file::memory:",
        "sqlite://file::memory:",
        "file::memory:?cache=shared",
        "file:x.db?vfs=memdb",
        "file:",
        "file:?mode=rwc",
    ] {
        match Database::open(url) {
            Err(Error::UnsupportedUrl { .. }) => {}
            other => panic!("{url:?} gave {other:?}"),
        }
    }
}

/// Fixed bug 2 (`ciphertext` target; src/repository.rs, `rotate_keys`): the README
/// says a row that no key opens "is never skipped silently", but a row whose fields
/// both *named* the primary key in the store's format was taken as current without
/// being opened, so `rotate_keys` returned `Ok` although `keys` failed
/// (here a sealed `api_key` copied into `secret_key`, the very tampering the sealed
/// format detects). Rotation now opens every row and lists the one that fails.
#[test]
fn rotation_reports_a_row_whose_sealed_ciphertext_does_not_open() {
    let (db, store, account, id) = one_credential(CipherFormat::Sealed);
    let api_key = stored_api_key(&db, id);
    db.execute(&format!(
        "UPDATE user_credentials SET secret_key = '{api_key}' WHERE id = '{id}'"
    ));
    assert!(matches!(
        store.keys(&account, id),
        Err(Error::Decryption { credential_id, field: Field::SecretKey }) if credential_id == id
    ));
    match store.maintenance().rotate_keys(100, &mut |_| {}) {
        Err(Error::RotationIncomplete {
            rewritten: 0,
            failures,
        }) => assert!(
            matches!(
                failures.as_slice(),
                [Error::Decryption { credential_id, field: Field::SecretKey }] if *credential_id == id
            ),
            "{failures:?}"
        ),
        other => panic!("rotation must list the unreadable row, got {other:?}"),
    }
}

/// Fixed bug 3 (`ciphertext` target; src/repository.rs and src/sql_types.rs, the
/// readers of `api_key` and `secret_key`): on SQLite another program can leave bytes
/// that are not UTF-8 in a ciphertext column (a BLOB in a TEXT column). Reading it
/// failed with `Error::Database(DeserializationError)` instead of an
/// `Error::Decryption` naming the credential and the field, and `rotate_keys`
/// stopped at that batch. The columns are now read byte for byte, so such a
/// ciphertext is a `Decryption` failure of its own credential and field.
#[test]
fn a_ciphertext_that_is_not_utf8_is_a_decryption_error() {
    let (db, store, account, id) = one_credential(CipherFormat::Sealed);
    db.execute(&format!(
        "UPDATE user_credentials SET api_key = X'80' WHERE id = '{id}'"
    ));
    let keys = store.keys(&account, id);
    assert!(
        matches!(keys, Err(Error::Decryption { credential_id, field: Field::ApiKey }) if credential_id == id),
        "{keys:?}"
    );
    let rotated = store.maintenance().rotate_keys(100, &mut |_| {});
    assert!(
        matches!(rotated, Err(Error::RotationIncomplete { .. })),
        "{rotated:?}"
    );
}

/// Fixed bug 4 (`ciphertext` target; src/crypto.rs, `Keyring::decrypt`, through the
/// `fernet` crate): a Fernet token opened whatever its trailing `=` padding, because
/// the `fernet` crate strips every `=` before decoding, so a token that is not the
/// one written opened too. Only the canonical form (URL-safe base64 with exact
/// padding) opens now; any other spelling is `Error::Decryption`.
#[test]
fn a_fernet_token_with_other_padding_does_not_open() {
    let (db, store, account, id) = one_credential(CipherFormat::Fernet);
    let token = stored_api_key(&db, id);
    for other in [format!("{token}="), token.trim_end_matches('=').to_owned()] {
        assert_ne!(other, token);
        db.execute(&format!(
            "UPDATE user_credentials SET api_key = '{other}' WHERE id = '{id}'"
        ));
        let keys = store.keys(&account, id);
        assert!(
            matches!(
                keys,
                Err(Error::Decryption {
                    field: Field::ApiKey,
                    ..
                })
            ),
            "{other:?} opened: {keys:?}"
        );
    }
}

/// Fixed bug 5 (`ciphertext` target; src/crypto.rs, `Keyring::decrypt`):
/// `Error::UnknownKey` quoted the key-id place of a stored `sealed:v1:` ciphertext
/// verbatim, whatever its length and characters, so control characters and
/// terminal escapes reached logs (log injection) and a corrupted token could put
/// ciphertext into the message. A key id is 1 to 32 of `[A-Za-z0-9_.-]` (the keyring
/// refuses any other): anything else in that place is now a damaged ciphertext,
/// `Error::Decryption`, and nothing of it is quoted.
#[test]
fn unknown_key_errors_quote_only_well_formed_key_ids() {
    let (db, store, account, id) = one_credential(CipherFormat::Sealed);
    let forged = "sealed:v1:\u{1b}[2J\nFAKE LOG LINE gAAAAABpZ3J5cHRlZC1ib2R5LWZyYWdtZW50:AAAA";
    db.execute(&format!(
        "UPDATE user_credentials SET api_key = '{forged}' WHERE id = '{id}'"
    ));
    let keys = store.keys(&account, id);
    assert!(
        matches!(keys, Err(Error::Decryption { credential_id, field: Field::ApiKey }) if credential_id == id),
        "{keys:?}"
    );
}

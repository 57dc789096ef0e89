//! Encryption of credential keys at rest.
//!
//! Keys are stored as [Fernet](https://github.com/fernet/spec) tokens, byte-compatible
//! with Python's `cryptography.fernet.Fernet`: a database written by the existing
//! Python system reads here with the same key, and the reverse.

use crate::error::{Error, Result};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use zeroize::Zeroizing;

/// The environment variable [`Keyring::from_env`] reads: one or more Fernet keys,
/// separated by commas. The first encrypts; all of them decrypt.
pub const KEYS_ENV_VAR: &str = "CREDENTIAL_STORE_KEYS";

/// The Fernet keys the store encrypts and decrypts with.
///
/// The first key encrypts every new value; every key is tried, in order, to decrypt.
/// To change keys, put the new key first and keep the old one after it until no row
/// needs it.
///
/// ```
/// use credential_store::Keyring;
/// use secrecy::ExposeSecret;
/// let new = Keyring::generate_key();
/// let old = Keyring::generate_key();
/// let keyring = Keyring::from_fernet_keys([new.expose_secret(), old.expose_secret()]).unwrap();
/// assert_eq!(keyring.len(), 2);
/// assert_eq!(format!("{keyring:?}"), "Keyring { keys: 2 }");
/// ```
pub struct Keyring {
    keys: Vec<fernet::Fernet>,
}

impl Keyring {
    /// A keyring from Fernet keys (32 bytes, URL-safe base64), primary first.
    ///
    /// An empty list is [`Error::NoKeyConfigured`]; a malformed key is
    /// [`Error::InvalidKey`], which gives its position, never its content.
    pub fn from_fernet_keys<I, S>(keys: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys = keys
            .into_iter()
            .enumerate()
            .map(|(index, key)| {
                fernet::Fernet::new(key.as_ref().trim()).ok_or(Error::InvalidKey {
                    position: index + 1,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if keys.is_empty() {
            return Err(Error::NoKeyConfigured { variable: None });
        }
        Ok(Keyring { keys })
    }

    /// A keyring from [`KEYS_ENV_VAR`] (`CREDENTIAL_STORE_KEYS`).
    pub fn from_env() -> Result<Self> {
        Self::from_env_var(KEYS_ENV_VAR)
    }

    /// A keyring from the comma-separated Fernet keys in an environment variable.
    ///
    /// An unset or blank variable is [`Error::NoKeyConfigured`] naming it.
    pub fn from_env_var(variable: &str) -> Result<Self> {
        let missing = || Error::NoKeyConfigured {
            variable: Some(variable.to_owned()),
        };
        let value = Zeroizing::new(std::env::var(variable).map_err(|_| missing())?);
        let keys: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() {
            return Err(missing());
        }
        Self::from_fernet_keys(keys)
    }

    /// A new random Fernet key, in the text form `from_fernet_keys` takes.
    pub fn generate_key() -> SecretString {
        SecretString::from(fernet::Fernet::generate_key())
    }

    /// How many keys the keyring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a keyring holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Encrypts with the primary key.
    pub(crate) fn encrypt(&self, plaintext: &SecretString) -> String {
        self.keys[0].encrypt(plaintext.expose_secret().as_bytes())
    }

    /// Decrypts with the first key that opens the token; `None` if none does or the
    /// plaintext is not UTF-8.
    pub(crate) fn decrypt(&self, token: &str) -> Option<SecretString> {
        let plaintext = self.keys.iter().find_map(|key| key.decrypt(token).ok())?;
        let plaintext = Zeroizing::new(plaintext);
        let text = std::str::from_utf8(&plaintext).ok()?;
        // An exact-size copy: no reallocation leaves an unzeroed buffer behind.
        Some(SecretString::from(text))
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// The decrypted keys of one credential, for immediate use.
///
/// `Debug` prints `[REDACTED]`; there is no `Display` and no serde support; the
/// memory is zeroed when the value is dropped. Read a key with
/// [`secrecy::ExposeSecret::expose_secret`].
pub struct CredentialKeys {
    api_key: SecretString,
    secret_key: SecretString,
}

impl CredentialKeys {
    pub(crate) fn new(api_key: SecretString, secret_key: SecretString) -> Self {
        CredentialKeys {
            api_key,
            secret_key,
        }
    }

    /// The API key (key id).
    pub fn api_key(&self) -> &SecretString {
        &self.api_key
    }

    /// The secret key.
    pub fn secret_key(&self) -> &SecretString {
        &self.secret_key
    }
}

impl fmt::Debug for CredentialKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialKeys")
            .field("api_key", &format_args!("[REDACTED]"))
            .field("secret_key", &format_args!("[REDACTED]"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector from the Fernet specification (and Python's `cryptography`
    // test suite): this token was made at 1985-10-26T01:20:00-07:00 with a fixed IV.
    const SPEC_KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
    const SPEC_TOKEN: &str = "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";

    #[test]
    fn decrypts_the_fernet_specification_vector() {
        let keyring = Keyring::from_fernet_keys([SPEC_KEY]).unwrap();
        assert_eq!(
            keyring.decrypt(SPEC_TOKEN).unwrap().expose_secret(),
            "hello"
        );
    }

    #[test]
    fn every_key_decrypts_and_the_first_encrypts() {
        let old = Keyring::from_fernet_keys([SPEC_KEY]).unwrap();
        let new_key = Keyring::generate_key();
        let rotated = Keyring::from_fernet_keys([new_key.expose_secret(), SPEC_KEY]).unwrap();
        assert_eq!(
            rotated.decrypt(SPEC_TOKEN).unwrap().expose_secret(),
            "hello"
        );
        let token = rotated.encrypt(&SecretString::from("PKTEST"));
        assert!(
            old.decrypt(&token).is_none(),
            "the old key must not open new tokens"
        );
        let only_new = Keyring::from_fernet_keys([new_key.expose_secret()]).unwrap();
        assert_eq!(only_new.decrypt(&token).unwrap().expose_secret(), "PKTEST");
    }

    #[test]
    fn wrong_key_and_corruption_are_refused() {
        let other = Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()]).unwrap();
        assert!(other.decrypt(SPEC_TOKEN).is_none());
        let keyring = Keyring::from_fernet_keys([SPEC_KEY]).unwrap();
        let mut corrupted = SPEC_TOKEN.to_owned();
        corrupted.replace_range(40..41, if &SPEC_TOKEN[40..41] == "A" { "B" } else { "A" });
        assert!(keyring.decrypt(&corrupted).is_none());
        assert!(keyring.decrypt("not a token").is_none());
        assert!(keyring.decrypt("").is_none());
    }

    #[test]
    fn malformed_keys_are_named_by_position_only() {
        let err = Keyring::from_fernet_keys([SPEC_KEY, "too-short"]).unwrap_err();
        assert!(matches!(err, Error::InvalidKey { position: 2 }));
        assert!(!err.to_string().contains("too-short"));
        let none: [&str; 0] = [];
        assert!(matches!(
            Keyring::from_fernet_keys(none),
            Err(Error::NoKeyConfigured { variable: None })
        ));
    }

    #[test]
    fn keys_never_print() {
        let keys = CredentialKeys::new("PKSECRET1".into(), "SKSECRET2".into());
        let debug = format!("{keys:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("[REDACTED]"));
    }
}

//! The key hierarchy every store and maintenance run uses: a key provider's KEK
//! wraps each account's data key, which seals the account's credentials (sealed
//! v3); the keyring reads (and for Fernet writes) the older formats. Each sealing,
//! opening, wrapping and unwrapping step of the crate is here once.

use super::cache::{DataKeyCache, Fingerprint};
use super::{
    data_key_version, open_v3, seal_v3, Binding, CipherFormat, DataKey, FormatVersion, KeyContext,
    KeyProvider, Keyring, UnwrapRequest, WrapRequest, KEYRING_PROVIDER,
};
use crate::error::{Error, Result};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use uuid::Uuid;

/// The keys a store works with, and its format policy.
#[derive(Debug, Clone)]
pub(crate) struct KeyHierarchy {
    /// Reads Fernet and sealed v1/v2, writes Fernet, and (as a provider) unwraps
    /// the data keys it wrapped.
    pub keyring: Arc<Keyring>,
    /// Wraps every new data key; unwraps those stored under its name.
    pub provider: Arc<dyn KeyProvider>,
    /// Unwrapped data keys.
    pub cache: Arc<DataKeyCache>,
    /// The oldest format opened.
    pub minimum: FormatVersion,
}

/// A data key as `account_keys` holds it. `Debug` leaves the wrapped key out.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct StoredDataKey {
    pub version: u32,
    pub provider: String,
    pub kek_id: String,
    pub wrapped: String,
}

impl StoredDataKey {
    /// From the columns `(version, provider, kek_id, wrapped_key)`; a version
    /// below 1 is damage, which no unwrap will get past.
    pub(crate) fn from_columns(
        account_id: Uuid,
        (version, provider, kek_id, wrapped): (i32, String, String, String),
    ) -> Result<Self> {
        let version = u32::try_from(version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| Error::DataKeyUnreadable {
                account_id,
                provider: provider.clone(),
                reason: format!("stored version {version} is not a version"),
            })?;
        Ok(StoredDataKey {
            version,
            provider,
            kek_id,
            wrapped,
        })
    }

    /// Identifies this stored key in the cache: a re-wrapped or replaced key is
    /// another entry.
    pub(crate) fn fingerprint(&self) -> Fingerprint {
        let digest = Sha256::new()
            .chain_update(self.provider.as_bytes())
            .chain_update([0])
            .chain_update(self.kek_id.as_bytes())
            .chain_update([0])
            .chain_update(self.wrapped.as_bytes())
            .finalize();
        (self.version, digest.into())
    }
}

impl std::fmt::Debug for StoredDataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredDataKey")
            .field("version", &self.version)
            .field("provider", &self.provider)
            .field("kek_id", &self.kek_id)
            .field("wrapped", &format_args!("[REDACTED]"))
            .finish()
    }
}

/// One credential field to seal: its plaintext and where it belongs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SealRequest<'a> {
    pub plaintext: &'a SecretString,
    pub binding: Binding<'a>,
}

/// One stored credential field to open: its ciphertext and where it was read.
/// `Debug` leaves the ciphertext out.
#[derive(Clone, Copy)]
pub(crate) struct OpenRequest<'a> {
    pub ciphertext: &'a str,
    pub binding: Binding<'a>,
}

impl std::fmt::Debug for OpenRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenRequest")
            .field("ciphertext", &format_args!("[REDACTED]"))
            .field("binding", &self.binding)
            .finish()
    }
}

/// An account's data key, unwrapped, with its version.
pub(crate) type AccountKey = (Arc<DataKey>, u32);

impl KeyHierarchy {
    /// The keyring's hierarchy: the keyring wraps data keys too; every format is
    /// read.
    pub(crate) fn new(keyring: Arc<Keyring>) -> Self {
        KeyHierarchy {
            provider: Arc::clone(&keyring) as Arc<dyn KeyProvider>,
            keyring,
            cache: Arc::default(),
            minimum: FormatVersion::Fernet,
        }
    }

    /// The provider that unwraps data keys stored under `name`: the store's
    /// provider, or the keyring (which wrapped them before a KMS was configured).
    fn provider_named(&self, name: &str) -> Option<&dyn KeyProvider> {
        if name == self.provider.name() {
            Some(&*self.provider)
        } else if name == KEYRING_PROVIDER {
            Some(&*self.keyring)
        } else {
            None
        }
    }

    /// Whether a stored data key is wrapped by the current provider's current KEK.
    pub(crate) fn is_current(&self, stored: &StoredDataKey) -> bool {
        stored.provider == self.provider.name() && stored.kek_id == self.provider.key_id()
    }

    /// The data key a stored one wraps, from the cache or unwrapped (one unwrap
    /// in flight per account).
    pub(crate) async fn data_key(
        &self,
        account_id: Uuid,
        user_id: &str,
        stored: &StoredDataKey,
    ) -> Result<AccountKey> {
        let key = self
            .cache
            .get_or_unwrap(account_id, stored.fingerprint(), || {
                self.unwrap(account_id, user_id, stored)
            })
            .await?;
        Ok((key, stored.version))
    }

    /// A retired data key, unwrapped and never cached: the cache holds an
    /// account's current key, which writers seal under.
    pub(crate) async fn retired_data_key(
        &self,
        account_id: Uuid,
        user_id: &str,
        stored: &StoredDataKey,
    ) -> Result<AccountKey> {
        let key = self.unwrap(account_id, user_id, stored).await?;
        Ok((Arc::new(key), stored.version))
    }

    /// Unwraps a stored data key with the provider it names, bypassing the cache.
    async fn unwrap(
        &self,
        account_id: Uuid,
        user_id: &str,
        stored: &StoredDataKey,
    ) -> Result<DataKey> {
        let provider =
            self.provider_named(&stored.provider)
                .ok_or_else(|| Error::DataKeyUnreadable {
                    account_id,
                    provider: stored.provider.clone(),
                    reason: "no configured key provider has this name".into(),
                })?;
        let context = KeyContext::new(account_id, user_id, stored.version);
        let request = [UnwrapRequest::new(&stored.wrapped, &stored.kek_id, context)];
        let mut keys = provider.unwrap(&request).await?;
        match (keys.pop(), keys.is_empty()) {
            (Some(key), true) => Ok(key),
            _ => Err(Error::KeyProvider {
                provider: provider.name().to_owned(),
                reason: "did not return one data key for one request".into(),
            }),
        }
    }

    /// A new data key of `version` for an account, wrapped by the provider: the
    /// key, and the row that stores it.
    pub(crate) async fn new_data_key(
        &self,
        account_id: Uuid,
        user_id: &str,
        version: u32,
    ) -> Result<(DataKey, StoredDataKey)> {
        let key = DataKey::generate();
        let stored = self.wrap(&key, account_id, user_id, version).await?;
        Ok((key, stored))
    }

    /// Wraps a data key with the current provider's KEK.
    async fn wrap(
        &self,
        key: &DataKey,
        account_id: Uuid,
        user_id: &str,
        version: u32,
    ) -> Result<StoredDataKey> {
        let context = KeyContext::new(account_id, user_id, version);
        let mut wrapped = self
            .provider
            .wrap(&[WrapRequest::new(key, context)])
            .await?;
        let wrapped = match (wrapped.pop(), wrapped.is_empty()) {
            (Some(wrapped), true) => wrapped,
            _ => {
                return Err(Error::KeyProvider {
                    provider: self.provider.name().to_owned(),
                    reason: "did not return one wrapped key for one request".into(),
                })
            }
        };
        Ok(StoredDataKey {
            version,
            provider: self.provider.name().to_owned(),
            kek_id: self.provider.key_id().to_owned(),
            wrapped,
        })
    }

    /// The same data key, wrapped by the current provider's KEK (rotation of the
    /// KEK: the credentials sealed under it stay as they are).
    pub(crate) async fn rewrap(
        &self,
        account_id: Uuid,
        user_id: &str,
        stored: &StoredDataKey,
    ) -> Result<StoredDataKey> {
        let (key, version) = self.data_key(account_id, user_id, stored).await?;
        let rewrapped = self.wrap(&key, account_id, user_id, version).await?;
        self.cache
            .insert(account_id, rewrapped.fingerprint(), Arc::clone(&key));
        Ok(rewrapped)
    }

    /// Seals every request in `format`: sealed v3 under `data_key` (which the
    /// sealed format needs), or Fernet under the keyring's primary key.
    pub(crate) fn seal(
        &self,
        format: CipherFormat,
        data_key: Option<&AccountKey>,
        requests: &[SealRequest<'_>],
    ) -> Result<Vec<String>> {
        match (format, data_key) {
            (CipherFormat::Sealed, Some((key, version))) => Ok(requests
                .iter()
                .map(|r| seal_v3(key, *version, r.plaintext, &r.binding))
                .collect()),
            (CipherFormat::Fernet, _) => {
                if let Some(first) = requests.first() {
                    self.allows(FormatVersion::Fernet, &first.binding)?;
                }
                Ok(requests
                    .iter()
                    .map(|r| {
                        self.keyring
                            .encrypt(CipherFormat::Fernet, r.plaintext, &r.binding)
                    })
                    .collect())
            }
            (CipherFormat::Sealed, None) => Err(Error::KeyProvider {
                provider: self.provider.name().to_owned(),
                reason: "no data key to seal under".into(),
            }),
        }
    }

    /// Refuses a format older than the minimum.
    fn allows(&self, format: FormatVersion, binding: &Binding<'_>) -> Result<()> {
        if format < self.minimum {
            return Err(Error::FormatRefused {
                credential_id: binding.credential_id,
                field: binding.field,
                format,
                minimum: self.minimum,
            });
        }
        Ok(())
    }

    /// Whether any of the requests is sealed v3 (and so needs its account's data
    /// key), after refusing any older than the minimum format.
    pub(crate) fn check_formats(&self, requests: &[OpenRequest<'_>]) -> Result<bool> {
        let mut needs_data_key = false;
        for request in requests {
            if let Some(format) = FormatVersion::of(request.ciphertext) {
                self.allows(format, &request.binding)?;
                needs_data_key |= format == FormatVersion::SealedV3;
            }
        }
        Ok(needs_data_key)
    }

    /// Opens one field: sealed v3 with the account's data key of the version it
    /// names, among `data_keys` (a v3 value whose key is not there does not open:
    /// its data key is gone), the older formats with the keyring. A format older
    /// than the minimum is refused first.
    pub(crate) fn open(
        &self,
        data_keys: &[AccountKey],
        request: &OpenRequest<'_>,
    ) -> Result<SecretString> {
        let binding = &request.binding;
        let failed = || Error::Decryption {
            credential_id: binding.credential_id,
            field: binding.field,
        };
        let format = FormatVersion::of(request.ciphertext).ok_or_else(failed)?;
        self.allows(format, binding)?;
        if format == FormatVersion::SealedV3 {
            let version = data_key_version(request.ciphertext);
            return match data_keys.iter().find(|(_, v)| Some(*v) == version) {
                Some((key, version)) => open_v3(key, *version, request.ciphertext, binding),
                None => Err(failed()),
            };
        }
        self.keyring.decrypt(request.ciphertext, binding)
    }

    /// The data-key versions the sealed-v3 requests name that `data_keys` does not
    /// hold (those of retired keys), each once.
    pub(crate) fn missing_versions(
        requests: &[OpenRequest<'_>],
        data_keys: &[AccountKey],
    ) -> Vec<u32> {
        let mut missing: Vec<u32> = requests
            .iter()
            .filter_map(|r| data_key_version(r.ciphertext))
            .filter(|version| !data_keys.iter().any(|(_, v)| v == version))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Field;
    use secrecy::ExposeSecret;

    fn hierarchy() -> KeyHierarchy {
        let key = Keyring::generate_key();
        KeyHierarchy::new(Arc::new(
            Keyring::from_fernet_keys([key.expose_secret()]).unwrap(),
        ))
    }

    fn binding(field: Field) -> Binding<'static> {
        Binding::new(Uuid::from_u128(1), Uuid::from_u128(2), "auth0|alice", field)
    }

    #[test]
    fn a_data_key_wrapped_by_the_keyring_unwraps_only_for_its_account() {
        let keys = hierarchy();
        let account = Uuid::from_u128(2);
        let (key, stored) =
            crate::repository::block_on(keys.new_data_key(account, "auth0|alice", 1)).unwrap();
        assert_eq!(stored.provider, "keyring");
        assert_eq!(stored.kek_id, keys.keyring.primary_key_id());
        let (unwrapped, version) =
            crate::repository::block_on(keys.data_key(account, "auth0|alice", &stored)).unwrap();
        assert_eq!(unwrapped.expose_bytes(), key.expose_bytes());
        assert_eq!(version, 1);
        // Another account, user or version: the wrapping does not open.
        for (account, user, version) in [
            (Uuid::from_u128(3), "auth0|alice", 1),
            (account, "auth0|mallory", 1),
            (account, "auth0|alice", 2),
        ] {
            let mut moved = stored.clone();
            moved.version = version;
            let err = crate::repository::block_on(keys.unwrap(account, user, &moved)).unwrap_err();
            assert!(matches!(err, Error::DataKeyUnreadable { .. }), "{err}");
        }
    }

    #[test]
    fn debug_strings_leave_wrapped_keys_and_ciphertexts_out() {
        let stored = StoredDataKey {
            version: 1,
            provider: "keyring".into(),
            kek_id: "k1".into(),
            wrapped: "WRAPPED-SECRET".into(),
        };
        let request = OpenRequest {
            ciphertext: "sealed:v3:1:CIPHERTEXT",
            binding: binding(Field::ApiKey),
        };
        let unwrap = crate::crypto::UnwrapRequest::new(
            "WRAPPED-SECRET",
            "k1",
            crate::crypto::KeyContext::new(Uuid::from_u128(2), "auth0|alice", 1),
        );
        for text in [
            format!("{stored:?}"),
            format!("{request:?}"),
            format!("{unwrap:?}"),
        ] {
            assert!(text.contains("[REDACTED]"), "{text}");
            assert!(
                !text.contains("SECRET") && !text.contains("CIPHERTEXT"),
                "{text}"
            );
        }
    }

    #[test]
    fn the_minimum_format_refuses_older_values_before_opening_them() {
        let mut keys = hierarchy();
        let secret = SecretString::from("PK1");
        let fernet = keys
            .seal(
                CipherFormat::Fernet,
                None,
                &[SealRequest {
                    plaintext: &secret,
                    binding: binding(Field::ApiKey),
                }],
            )
            .unwrap();
        let request = OpenRequest {
            ciphertext: &fernet[0],
            binding: binding(Field::ApiKey),
        };
        assert_eq!(keys.open(&[], &request).unwrap().expose_secret(), "PK1");
        keys.minimum = FormatVersion::SealedV3;
        let err = keys.open(&[], &request).unwrap_err();
        assert!(matches!(
            err,
            Error::FormatRefused {
                format: FormatVersion::Fernet,
                minimum: FormatVersion::SealedV3,
                field: Field::ApiKey,
                ..
            }
        ));
        assert!(keys.check_formats(&[request]).is_err());
        // Writing Fernet under that policy is refused too.
        assert!(keys
            .seal(
                CipherFormat::Fernet,
                None,
                &[SealRequest {
                    plaintext: &secret,
                    binding: binding(Field::ApiKey),
                }],
            )
            .is_err());
    }
}

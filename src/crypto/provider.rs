//! The [`KeyProvider`] seam: what holds the key-encryption keys (KEKs) that wrap
//! each account's data key. The guide to writing a provider is in
//! [the module documentation](crate::crypto#key-providers).

use crate::error::Result;
use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use uuid::Uuid;
use zeroize::Zeroizing;

/// The future a [`KeyProvider`] returns: boxed, so that the trait is object-safe,
/// and `Send`, so that the async store can await it on any worker thread.
pub type ProviderFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Holds the key-encryption keys (KEKs) that wrap every account's data key: the
/// local [`Keyring`](crate::Keyring), or a key service (a KMS). See
/// [the module documentation](crate::crypto#key-providers) for how to write one.
///
/// A provider never sees a credential: the store seals credentials under their
/// account's [`DataKey`] itself, and asks the provider only to wrap a new data key
/// (once per account) and to unwrap a stored one (once per account and process,
/// while the [cache](crate::DataKeyCache) holds it).
pub trait KeyProvider: Send + Sync + fmt::Debug + 'static {
    /// A short, stable name for the provider (`keyring`, `aws-kms`): stored with
    /// every data key it wraps, so that the store knows which provider unwraps it,
    /// and named in errors and traces. 1 to 32 of `[a-z0-9_.-]`.
    fn name(&self) -> &str;

    /// The id of the KEK that [`wrap`](Self::wrap) uses now (a keyring key id, a
    /// KMS key id or ARN), stored with every data key it wraps. Rotation re-wraps
    /// every data key whose provider or KEK id differs. At most 255 bytes.
    fn key_id(&self) -> &str;

    /// Wraps each request's data key under the current KEK, bound to its
    /// [`KeyContext`]: one wrapped key per request, in request order, as text
    /// (the database stores it in a `TEXT` column).
    fn wrap<'a>(&'a self, items: &'a [WrapRequest<'a>]) -> ProviderFuture<'a, Vec<String>>;

    /// Unwraps each request's wrapped key, checking it against its
    /// [`KeyContext`]: one data key per request, in request order.
    ///
    /// A wrapped key that does not open (another KEK, another account's context,
    /// damaged) is [`Error::DataKeyUnreadable`](crate::Error::DataKeyUnreadable); a
    /// service that cannot be reached or does not answer in time is
    /// [`Error::KeyProviderUnavailable`](crate::Error::KeyProviderUnavailable),
    /// which callers retry.
    fn unwrap<'a>(&'a self, items: &'a [UnwrapRequest<'a>]) -> ProviderFuture<'a, Vec<DataKey>>;
}

/// A 256-bit data key (DEK) in memory: zeroed when dropped; `Debug` prints
/// `[REDACTED]`; no `Display`, no serde.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A new random data key, from the operating system's generator.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut *key);
        DataKey(key)
    }

    /// A data key from its 32 bytes, as a provider unwraps it; `None` for any
    /// other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; 32] = bytes.try_into().ok()?;
        Some(DataKey(Zeroizing::new(*bytes)))
    }

    /// The key's bytes, for a provider to wrap.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// What a data key belongs to, which its wrapping is bound to (the associated
/// data of the keyring's wrapping, a KMS's encryption context): a wrapped key
/// copied to another account does not unwrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyContext<'a> {
    account_id: Uuid,
    user_id: &'a str,
    version: u32,
}

impl<'a> KeyContext<'a> {
    /// The data key of version `version` of the account `account_id` of `user_id`.
    pub fn new(account_id: Uuid, user_id: &'a str, version: u32) -> Self {
        KeyContext {
            account_id,
            user_id,
            version,
        }
    }

    /// The account's id.
    pub fn account_id(&self) -> Uuid {
        self.account_id
    }

    /// The account's user (its `user_id`).
    pub fn user_id(&self) -> &'a str {
        self.user_id
    }

    /// The data key's version (1 for an account's first data key).
    pub fn version(&self) -> u32 {
        self.version
    }
}

/// One data key to wrap, and what it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct WrapRequest<'a> {
    key: &'a DataKey,
    context: KeyContext<'a>,
}

impl<'a> WrapRequest<'a> {
    /// A request to wrap `key` for `context`.
    pub fn new(key: &'a DataKey, context: KeyContext<'a>) -> Self {
        WrapRequest { key, context }
    }

    /// The data key to wrap.
    pub fn key(&self) -> &'a DataKey {
        self.key
    }

    /// What it belongs to, which the wrapping must be bound to.
    pub fn context(&self) -> &KeyContext<'a> {
        &self.context
    }
}

/// One stored data key to unwrap: the wrapped key, the id of the KEK that wrapped
/// it, and what it belongs to. `Debug` leaves the wrapped key out.
#[derive(Clone, Copy)]
pub struct UnwrapRequest<'a> {
    wrapped: &'a str,
    key_id: &'a str,
    context: KeyContext<'a>,
}

impl fmt::Debug for UnwrapRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnwrapRequest")
            .field("wrapped", &format_args!("[REDACTED]"))
            .field("key_id", &self.key_id)
            .field("context", &self.context)
            .finish()
    }
}

impl<'a> UnwrapRequest<'a> {
    /// A request to unwrap `wrapped`, made by the KEK `key_id`, for `context`.
    pub fn new(wrapped: &'a str, key_id: &'a str, context: KeyContext<'a>) -> Self {
        UnwrapRequest {
            wrapped,
            key_id,
            context,
        }
    }

    /// The wrapped key as stored.
    pub fn wrapped(&self) -> &'a str {
        self.wrapped
    }

    /// The id of the KEK that wrapped it ([`KeyProvider::key_id`] when it was
    /// wrapped).
    pub fn key_id(&self) -> &'a str {
        self.key_id
    }

    /// What it belongs to, which it must be bound to.
    pub fn context(&self) -> &KeyContext<'a> {
        &self.context
    }
}

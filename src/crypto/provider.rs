//! The [`KeyProvider`] seam and the keyring's implementation of it; the guide to
//! writing a provider is in [the module documentation](crate::crypto#key-providers).

use super::{Binding, CipherFormat, Keyring};
use crate::error::Result;
use secrecy::SecretString;
use std::fmt;
use std::future::{ready, Future};
use std::pin::Pin;

/// The future a [`KeyProvider`] returns: boxed, so that the trait is object-safe,
/// and `Send`, so that the async store can await it on any worker thread.
pub type ProviderFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Seals and opens the key fields of credentials: the [`Keyring`], or a key
/// service. See [the module documentation](crate::crypto#key-providers) for how
/// to write one.
pub trait KeyProvider: Send + Sync + fmt::Debug + 'static {
    /// A short name for the provider (`keyring`, `aws-kms`), for messages and
    /// traces.
    fn name(&self) -> &str;

    /// Encrypts every request's plaintext, bound to its [`Binding`], in `format`:
    /// one ciphertext per request, in request order, each as the database stores it.
    fn seal<'a>(
        &'a self,
        format: CipherFormat,
        items: &'a [SealRequest<'a>],
    ) -> ProviderFuture<'a, Vec<String>>;

    /// Decrypts every request's ciphertext, checking it against its [`Binding`]:
    /// one plaintext per request, in request order. Any ciphertext that does not
    /// open fails the whole call, with an error that names its credential and field.
    fn open<'a>(&'a self, items: &'a [OpenRequest<'a>]) -> ProviderFuture<'a, Vec<SecretString>>;
}

/// One field to encrypt: its plaintext and where it belongs.
#[derive(Debug, Clone, Copy)]
pub struct SealRequest<'a> {
    plaintext: &'a SecretString,
    binding: Binding<'a>,
}

impl<'a> SealRequest<'a> {
    /// A request to seal `plaintext` for the field `binding` names.
    pub fn new(plaintext: &'a SecretString, binding: Binding<'a>) -> Self {
        SealRequest { plaintext, binding }
    }

    /// The value to encrypt.
    pub fn plaintext(&self) -> &'a SecretString {
        self.plaintext
    }

    /// Where the ciphertext belongs, which it must be bound to.
    pub fn binding(&self) -> &Binding<'a> {
        &self.binding
    }
}

/// One stored field to decrypt: its ciphertext and where it was read.
#[derive(Debug, Clone, Copy)]
pub struct OpenRequest<'a> {
    ciphertext: &'a str,
    binding: Binding<'a>,
}

impl<'a> OpenRequest<'a> {
    /// A request to open `ciphertext`, read from the field `binding` names.
    pub fn new(ciphertext: &'a str, binding: Binding<'a>) -> Self {
        OpenRequest {
            ciphertext,
            binding,
        }
    }

    /// The value as stored.
    pub fn ciphertext(&self) -> &'a str {
        self.ciphertext
    }

    /// Where the value was read, which it must be bound to.
    pub fn binding(&self) -> &Binding<'a> {
        &self.binding
    }
}

/// The local keyring as a provider: the primary key seals, every key opens; the
/// futures are ready when they are returned.
impl KeyProvider for Keyring {
    fn name(&self) -> &str {
        "keyring"
    }

    fn seal<'a>(
        &'a self,
        format: CipherFormat,
        items: &'a [SealRequest<'a>],
    ) -> ProviderFuture<'a, Vec<String>> {
        let sealed = items
            .iter()
            .map(|item| self.encrypt(format, item.plaintext, &item.binding))
            .collect();
        Box::pin(ready(Ok(sealed)))
    }

    fn open<'a>(&'a self, items: &'a [OpenRequest<'a>]) -> ProviderFuture<'a, Vec<SecretString>> {
        let opened = items
            .iter()
            .map(|item| self.decrypt(item.ciphertext, &item.binding))
            .collect();
        Box::pin(ready(opened))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, Field};
    use secrecy::ExposeSecret;
    use uuid::Uuid;

    /// Polls a future that is ready at once.
    fn now<T>(future: ProviderFuture<'_, T>) -> Result<T> {
        let mut future = future;
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the keyring's futures are ready at once"),
        }
    }

    fn binding(credential: u128, field: Field) -> Binding<'static> {
        Binding::new(
            Uuid::from_u128(credential),
            Uuid::from_u128(100),
            "auth0|alice",
            field,
        )
    }

    #[test]
    fn the_keyring_seals_and_opens_a_batch_in_order_through_the_trait() {
        let key = Keyring::generate_key();
        let ring = Keyring::from_fernet_keys([key.expose_secret()]).unwrap();
        let provider: &dyn KeyProvider = &ring;
        assert_eq!(provider.name(), "keyring");
        let plaintexts: Vec<SecretString> = ["PK1", "s1", "PK2", "s2"]
            .into_iter()
            .map(SecretString::from)
            .collect();
        let bindings = [
            binding(1, Field::ApiKey),
            binding(1, Field::SecretKey),
            binding(2, Field::ApiKey),
            binding(2, Field::SecretKey),
        ];
        for format in [CipherFormat::Sealed, CipherFormat::Fernet] {
            let requests: Vec<SealRequest<'_>> = plaintexts
                .iter()
                .zip(bindings)
                .map(|(plaintext, binding)| SealRequest::new(plaintext, binding))
                .collect();
            let sealed = now(provider.seal(format, &requests)).unwrap();
            assert_eq!(sealed.len(), 4);
            for (text, binding) in sealed.iter().zip(&bindings) {
                // The same ciphertext the keyring makes and reads without the seam.
                assert!(ring.is_current(format, text), "{text}");
                assert!(ring.decrypt(text, binding).is_ok());
            }
            let requests: Vec<OpenRequest<'_>> = sealed
                .iter()
                .zip(bindings)
                .map(|(text, binding)| OpenRequest::new(text, binding))
                .collect();
            let opened = now(provider.open(&requests)).unwrap();
            let opened: Vec<&str> = opened.iter().map(|s| s.expose_secret()).collect();
            assert_eq!(opened, ["PK1", "s1", "PK2", "s2"]);
        }
    }

    #[test]
    fn a_value_that_does_not_open_fails_the_batch_naming_its_field() {
        let ring = Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()]).unwrap();
        let plaintext = SecretString::from("PK1");
        let sealed = now(ring.seal(
            CipherFormat::Sealed,
            &[SealRequest::new(&plaintext, binding(1, Field::ApiKey))],
        ))
        .unwrap();
        // Read back from the other field: the binding does not match.
        let requests = [
            OpenRequest::new(&sealed[0], binding(1, Field::ApiKey)),
            OpenRequest::new(&sealed[0], binding(1, Field::SecretKey)),
        ];
        assert!(matches!(
            now(ring.open(&requests)),
            Err(Error::Decryption {
                field: Field::SecretKey,
                ..
            })
        ));
        assert!(now(ring.open(&[])).unwrap().is_empty());
    }
}

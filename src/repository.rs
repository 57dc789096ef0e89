//! The `CredentialRepository` trait and the blocking store that implements it.

use crate::connection::Database;
use crate::crypto::CredentialKeys;
use crate::error::Result;
use crate::models::{
    AccountScope, CredentialUpdate, NewUserAccount, NewUserCredential, UserAccount, UserCredential,
};
use crate::ops::Core;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use uuid::Uuid;

/// The per-user operations, listed once: both stores' inherent methods, the two
/// traits and the stores' implementations of them are generated from this list by
/// the macro named (`$m`), so the sync and async APIs cannot drift apart. A scope
/// parameter is marked `@scope`: the traits take it as `&AccountScope`, the stores'
/// inherent methods as anything that is `AsRef<AccountScope>` (a [`UserAccount`], an
/// [`AccountScope`]).
macro_rules! operations {
    ($m:ident) => {
        $m! {
            /// Creates an account. [`Error::AccountExists`](crate::Error::AccountExists) if the
            /// user already has one.
            fn create_account(new: &NewUserAccount<'_>) -> UserAccount;

            /// The account with this id, if it belongs to `user_id`.
            fn account(user_id: &str, account_id: Uuid) -> Option<UserAccount>;

            /// The account of an external user.
            fn account_by_user_id(user_id: &str) -> Option<UserAccount>;

            /// Stores a credential, its keys sealed by the store's key provider (its
            /// keyring's primary key by default).
            ///
            /// A missing or blank nickname becomes the credential type. `user_id` is
            /// the scope's; [`Error::UnknownAccount`](crate::Error::UnknownAccount) if the
            /// scope's user has no account with that id (another user's account is
            /// answered the same way). With a caller-chosen id
            /// ([`NewUserCredential::with_id`]) the insert is idempotent on it.
            fn insert_credential(@scope account, new: &NewUserCredential<'_>) -> UserCredential;

            /// Stores several credentials under one account in one transaction: all of
            /// them, or (on any refusal) none. Same rules as `insert_credential`;
            /// returned in input order. Written with multi-row `INSERT`s of at most
            /// 1000 rows.
            fn insert_credentials(@scope account, new: &[NewUserCredential<'_>]) -> Vec<UserCredential>;

            /// One credential of the account.
            fn credential(@scope account, credential_id: Uuid) -> Option<UserCredential>;

            /// All credentials of the account, newest first.
            fn credentials(@scope account) -> Vec<UserCredential>;

            /// The account's credentials of one type, newest first. The type is
            /// compared exactly, and a lookup accepts any 1 to 50 characters without
            /// control characters, so a type the existing system stored outside
            /// today's rules (`Alpaca_Paper`) is still found by that value; writes take
            /// only valid types.
            fn credentials_by_type(@scope account, credential_type: &str) -> Vec<UserCredential>;

            /// The one credential of this type: `None` if there is none,
            /// [`Error::AmbiguousType`](crate::Error::AmbiguousType) (with the count) if
            /// there are several. For code written when an account held one
            /// credential per type: it never picks one of two.
            fn credential_by_type(@scope account, credential_type: &str) -> Option<UserCredential>;

            /// The account's credentials with this nickname, newest first. Nicknames
            /// are not unique. The nickname is trimmed and NFC-normalised as on
            /// insert, and a row whose nickname is exactly the input as given also
            /// matches: what the existing system stored untrimmed or in another normal
            /// form (`" Swing "`, `"Cafe\u{301}"`) is found by the value it used.
            fn credentials_by_nickname(@scope account, nickname: &str) -> Vec<UserCredential>;

            /// The one credential with this nickname: `None` if there is none,
            /// [`Error::AmbiguousNickname`](crate::Error::AmbiguousNickname) (with the
            /// count) if there are several. It never picks one for you.
            fn credential_by_nickname(@scope account, nickname: &str) -> Option<UserCredential>;

            /// The one credential with this nickname and its decrypted keys, in one
            /// statement: `None` if there is none,
            /// [`Error::AmbiguousNickname`](crate::Error::AmbiguousNickname) if there are
            /// several, and the refusals of `keys`.
            fn keys_by_nickname(@scope account, nickname: &str) -> Option<(UserCredential, CredentialKeys)>;

            /// The decrypted keys of a credential, for use now.
            ///
            /// Refuses a credential of an inactive account
            /// ([`Error::AccountInactive`](crate::Error::AccountInactive)), an inactive
            /// credential ([`Error::CredentialInactive`](crate::Error::CredentialInactive))
            /// and an expired one ([`Error::CredentialExpired`](crate::Error::CredentialExpired))
            /// before decrypting anything. A ciphertext that no key opens is
            /// [`Error::Decryption`](crate::Error::Decryption), naming the credential and
            /// the field.
            fn keys(@scope account, credential_id: Uuid) -> CredentialKeys;

            /// Changes a credential and returns it as stored.
            /// [`Error::CredentialNotFound`](crate::Error::CredentialNotFound) if the
            /// account has no such credential.
            fn update_credential(@scope account, credential_id: Uuid, update: &CredentialUpdate) -> UserCredential;

            /// Deletes a credential.
            /// [`Error::CredentialNotFound`](crate::Error::CredentialNotFound) if the
            /// account has no such credential.
            fn delete_credential(@scope account, credential_id: Uuid) -> ();

            /// Deletes the account, its credentials and its data key, in one
            /// statement, and drops its data key from the store's cache
            /// (crypto-shredding: a copy of its credentials kept elsewhere, in a
            /// backup or a dump, no longer decrypts once no wrapped copy of the data
            /// key survives; see the keys guide). [`Error::UnknownAccount`](crate::Error::UnknownAccount)
            /// if the scope's user has no such account.
            fn delete_account(@scope account) -> ();
        }
    };
}
// The async store generates its half from the same list.
#[cfg(feature = "async")]
pub(crate) use operations;

macro_rules! sync_trait {
    ($(
        $(#[$doc:meta])*
        fn $op:ident($(@scope $scope:ident)? $(,)? $($arg:ident : $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        /// Accounts and their named credentials, blocking: what [`CredentialStore`]
        /// does, as a trait for code that abstracts over it or mocks it.
        ///
        /// Every credential method takes the [`AccountScope`] it acts for, and reads
        /// or changes only rows whose `user_account_id` **and** `user_id` are the
        /// scope's. On PostgreSQL the scope's user is also the row-level-security
        /// context of the transaction. Inputs are validated before anything is
        /// written; a refused input changes nothing.
        ///
        /// The store's inherent methods are the same operations (no import needed)
        /// and also take a `&UserAccount`. New operations may be added to this trait
        /// in any 0.x release: an implementation outside this crate (a mock) then
        /// adds them. The trait is object safe (`&dyn CredentialRepository`).
        pub trait CredentialRepository {
            $(
                $(#[$doc])*
                fn $op(&self $(, $scope: &AccountScope)? $(, $arg: $ty)*) -> Result<$ret>;
            )*
        }

        impl CredentialRepository for CredentialStore {
            $(
                fn $op(&self $(, $scope: &AccountScope)? $(, $arg: $ty)*) -> Result<$ret> {
                    block_on(self.core.$op($($scope,)? $($arg),*))
                }
            )*
        }

        impl CredentialStore {
            $(
                $(#[$doc])*
                pub fn $op(&self $(, $scope: &impl AsRef<AccountScope>)? $(, $arg: $ty)*) -> Result<$ret> {
                    block_on(self.core.$op($($scope.as_ref(),)? $($arg),*))
                }
            )*
        }
    };
}

operations!(sync_trait);

/// The diesel implementation of [`CredentialRepository`], on PostgreSQL, SQLite or MariaDB.
///
/// ```
/// use credential_store::{CredentialRepository, CredentialStore, Database, Keyring,
///     NewUserAccount, NewUserCredential};
/// use secrecy::ExposeSecret;
///
/// let dir = tempfile::tempdir().unwrap();
/// let db = Database::open(dir.path().join("store.db").to_str().unwrap()).unwrap();
/// db.run_migrations().unwrap();
/// let store = CredentialStore::new(db, Keyring::from_fernet_keys([Keyring::generate_key().expose_secret()]).unwrap());
///
/// let account = store.create_account(&NewUserAccount::new("auth0|42", "Ada")).unwrap();
/// store.insert_credential(&account, &NewUserCredential::new("alpaca_paper", "PK1", "s1").nickname("Momentum")).unwrap();
/// store.insert_credential(&account, &NewUserCredential::new("alpaca_paper", "PK2", "s2").nickname("Swing")).unwrap();
///
/// let swing = store.credential_by_nickname(&account, "Swing").unwrap().unwrap();
/// let keys = store.keys(&account, swing.id).unwrap();
/// assert_eq!(keys.api_key().expose_secret(), "PK2");
/// assert_eq!(store.credentials_by_type(&account, "alpaca_paper").unwrap().len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct CredentialStore {
    pub(crate) core: Core<Database>,
}

crate::ops::store_basics!(CredentialStore, Database);

/// Runs a future to its end on the calling thread: the blocking store's way of
/// driving the operations. The database's futures are ready at once; a key
/// provider's may wait, and the thread sleeps (parked) until the provider wakes it.
/// No runtime is entered: a provider whose futures need one brings its own.
pub(crate) fn block_on<T>(future: impl Future<Output = T>) -> T {
    /// Wakes the parked caller.
    struct Unpark(Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(value) => return value,
            // A wake before the park makes the park return at once; a spurious
            // return only polls again.
            Poll::Pending => thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn the_store_can_be_shared_between_threads() {
        fn shared<T: Send + Sync + Clone + 'static>() {}
        shared::<super::CredentialStore>();
        let _: Option<&dyn super::CredentialRepository> = None;
    }

    /// Pending until another thread sets `done` and wakes it, after a pause.
    struct WakenLater {
        done: Arc<AtomicBool>,
        polls: usize,
    }

    impl Future for WakenLater {
        type Output = usize;

        fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.done.load(Ordering::SeqCst) {
                return Poll::Ready(self.polls);
            }
            if self.polls == 1 {
                let (done, waker) = (Arc::clone(&self.done), context.waker().clone());
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(20));
                    done.store(true, Ordering::SeqCst);
                    waker.wake();
                });
            }
            Poll::Pending
        }
    }

    #[test]
    fn block_on_parks_until_a_waiting_future_is_woken() {
        let polls = block_on(WakenLater {
            done: Arc::new(AtomicBool::new(false)),
            polls: 0,
        });
        // Polled once, then again after the wake (a spurious unpark may add polls).
        assert!(polls >= 2, "{polls}");
        assert_eq!(block_on(std::future::ready(7)), 7);
    }

    #[test]
    fn block_on_polls_again_after_a_wake_during_the_poll() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&polls);
        let yield_once = std::future::poll_fn(move |context| {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                // Woken before the executor parks: the park must not sleep forever.
                context.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        block_on(yield_once);
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}

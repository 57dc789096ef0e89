//! The cache of unwrapped data keys, with at most one unwrap in flight per account.

use super::DataKey;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Unwrapped data keys held in memory, so that a lookup with its account's key
/// cached asks no key provider.
///
/// Bounded in entries and in age: an entry older than `max_age` is unwrapped again
/// (so a KEK withdrawn at the provider stops serving within `max_age`), and past
/// `capacity` the oldest entry leaves. A key leaving the cache (evicted, expired,
/// replaced, or the cache dropped) is zeroed once the last call using it is done.
///
/// At most one unwrap per account is in flight: a thousand concurrent cold lookups
/// of one account make one provider call, and the others wait for its result (a
/// failure is theirs too, as the same retryable or permanent error). A waiter whose
/// leader is cancelled takes over.
///
/// A store makes a cache of its own ([`DataKeyCache::default`]: 10,000 accounts,
/// 5 minutes); give the same `Arc` to the blocking and async stores of one process
/// with `with_data_key_cache` so that they share it.
///
/// ```
/// use credential_store::DataKeyCache;
/// use std::time::Duration;
/// let cache = DataKeyCache::new(1_000, Duration::from_secs(60));
/// assert_eq!(cache.capacity(), 1_000);
/// assert!(cache.is_empty());
/// ```
pub struct DataKeyCache {
    capacity: usize,
    max_age: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<Uuid, Entry>,
    flights: HashMap<Uuid, Arc<Flight>>,
}

struct Entry {
    key: Arc<DataKey>,
    /// Which stored key it is: its version and a digest of its wrapped form.
    stored: Fingerprint,
    loaded: Instant,
}

/// Identifies one stored (wrapped) data key.
pub(crate) type Fingerprint = (u32, [u8; 32]);

/// One unwrap in flight, and the calls waiting for it.
#[derive(Default)]
struct Flight {
    state: Mutex<FlightState>,
}

/// What a leader got: the key and which stored key it is, or its error.
type Unwrapped = std::result::Result<(Arc<DataKey>, Fingerprint), SharedError>;

#[derive(Default)]
struct FlightState {
    /// `Some` once the leader is done: its key, its error (shared), or `None`
    /// inside when it was cancelled.
    outcome: Option<Option<Unwrapped>>,
    wakers: Vec<Waker>,
}

/// A leader's failure, for each waiter to return as its own: the same kind of
/// error, naming the same provider.
#[derive(Clone)]
struct SharedError {
    kind: SharedKind,
    provider: String,
    reason: String,
    account_id: Uuid,
}

/// Which [`Error`] a [`SharedError`] is.
#[derive(Clone, Copy)]
enum SharedKind {
    /// [`Error::KeyProviderUnavailable`]: retryable.
    Unavailable,
    /// [`Error::DataKeyUnreadable`].
    Unreadable,
    /// [`Error::KeyProvider`]: the provider misbehaved or refused.
    Provider,
}

impl SharedError {
    fn from_error(err: &Error, account_id: Uuid) -> Self {
        let (kind, provider, reason) = match err {
            Error::KeyProviderUnavailable { provider, reason } => {
                (SharedKind::Unavailable, provider.clone(), reason.clone())
            }
            Error::DataKeyUnreadable {
                provider, reason, ..
            } => (SharedKind::Unreadable, provider.clone(), reason.clone()),
            Error::KeyProvider { provider, reason } => {
                (SharedKind::Provider, provider.clone(), reason.clone())
            }
            // What a provider returns besides those: unreadable, with its message.
            other => (SharedKind::Unreadable, String::from("?"), other.to_string()),
        };
        SharedError {
            kind,
            provider,
            reason,
            account_id,
        }
    }

    fn to_error(&self) -> Error {
        let (provider, reason) = (self.provider.clone(), self.reason.clone());
        match self.kind {
            SharedKind::Unavailable => Error::KeyProviderUnavailable { provider, reason },
            SharedKind::Provider => Error::KeyProvider { provider, reason },
            SharedKind::Unreadable => Error::DataKeyUnreadable {
                account_id: self.account_id,
                provider,
                reason,
            },
        }
    }
}

impl Default for DataKeyCache {
    /// 10,000 accounts, 5 minutes.
    fn default() -> Self {
        DataKeyCache::new(10_000, Duration::from_secs(300))
    }
}

impl fmt::Debug for DataKeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyCache")
            .field("capacity", &self.capacity)
            .field("max_age", &self.max_age)
            .field("len", &self.len())
            .finish()
    }
}

impl DataKeyCache {
    /// A cache of at most `capacity` data keys (at least 1), each kept at most
    /// `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        DataKeyCache {
            capacity: capacity.max(1),
            max_age,
            state: Mutex::new(State::default()),
        }
    }

    /// The most data keys it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long a data key is kept.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// How many data keys it holds now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether it holds no data key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every data key it holds.
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    /// Drops the data key of one account, if held.
    pub fn evict(&self, account_id: Uuid) {
        self.lock().entries.remove(&account_id);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (every
        // change is one insert or remove).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The account's data key if held and fresh, whatever stored key it came from
    /// (`None` for `stored`), or only if it came from `stored`.
    pub(crate) fn get(
        &self,
        account_id: Uuid,
        stored: Option<&Fingerprint>,
    ) -> Option<(Arc<DataKey>, Fingerprint)> {
        let mut state = self.lock();
        let entry = state.entries.get(&account_id)?;
        if entry.loaded.elapsed() > self.max_age {
            state.entries.remove(&account_id);
            return None;
        }
        if stored.is_some_and(|stored| *stored != entry.stored) {
            return None;
        }
        Some((Arc::clone(&entry.key), entry.stored))
    }

    /// Holds a data key that was just made or unwrapped.
    pub(crate) fn insert(&self, account_id: Uuid, stored: Fingerprint, key: Arc<DataKey>) {
        let mut state = self.lock();
        self.insert_locked(&mut state, account_id, stored, key);
    }

    fn insert_locked(
        &self,
        state: &mut State,
        account_id: Uuid,
        stored: Fingerprint,
        key: Arc<DataKey>,
    ) {
        if !state.entries.contains_key(&account_id) && state.entries.len() >= self.capacity {
            let oldest = state
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.loaded)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                state.entries.remove(&oldest);
            }
        }
        state.entries.insert(
            account_id,
            Entry {
                key,
                stored,
                loaded: Instant::now(),
            },
        );
    }

    /// The data key of the stored key `stored` of an account: from the cache, or
    /// from `unwrap`, called by one caller at a time per account while the others
    /// wait for its result.
    pub(crate) async fn get_or_unwrap<F, Fut>(
        &self,
        account_id: Uuid,
        stored: Fingerprint,
        unwrap: F,
    ) -> Result<Arc<DataKey>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<DataKey>>,
    {
        loop {
            let flight = {
                let mut state = self.lock();
                if let Some(entry) = state.entries.get(&account_id) {
                    if entry.stored == stored && entry.loaded.elapsed() <= self.max_age {
                        return Ok(Arc::clone(&entry.key));
                    }
                }
                match state.flights.get(&account_id) {
                    Some(flight) => Some(Arc::clone(flight)),
                    None => {
                        state.flights.insert(account_id, Arc::default());
                        None
                    }
                }
            };
            match flight {
                Some(flight) => match (Wait { flight }).await {
                    Some(Ok((key, fingerprint))) if fingerprint == stored => return Ok(key),
                    Some(Err(shared)) => return Err(shared.to_error()),
                    // Cancelled, or another stored key: try again.
                    _ => continue,
                },
                None => {
                    let mut leader = Leader {
                        cache: self,
                        account_id,
                        outcome: None,
                    };
                    let result = unwrap().await.map(Arc::new);
                    leader.outcome = Some(match &result {
                        Ok(key) => Ok((Arc::clone(key), stored)),
                        Err(err) => Err(SharedError::from_error(err, account_id)),
                    });
                    drop(leader);
                    return result;
                }
            }
        }
    }
}

/// The caller that unwraps for everyone: when dropped (done or cancelled) it ends
/// the flight, caching a key it got and waking the waiters.
struct Leader<'a> {
    cache: &'a DataKeyCache,
    account_id: Uuid,
    outcome: Option<Unwrapped>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let outcome = self.outcome.take();
        let mut state = self.cache.lock();
        if let Some(Ok((key, stored))) = &outcome {
            self.cache
                .insert_locked(&mut state, self.account_id, *stored, Arc::clone(key));
        }
        let Some(flight) = state.flights.remove(&self.account_id) else {
            return;
        };
        drop(state);
        let wakers = {
            let mut flight = flight.state.lock().unwrap_or_else(|e| e.into_inner());
            flight.outcome = Some(outcome);
            std::mem::take(&mut flight.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// Waits for a flight's outcome.
struct Wait {
    flight: Arc<Flight>,
}

impl Future for Wait {
    type Output = Option<Unwrapped>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut flight = self.flight.state.lock().unwrap_or_else(|e| e.into_inner());
        match &flight.outcome {
            Some(outcome) => Poll::Ready(outcome.clone()),
            None => {
                flight.wakers.push(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        crate::repository::block_on(future)
    }

    #[test]
    fn a_key_is_served_from_the_cache_until_its_stored_form_changes() {
        let cache = DataKeyCache::default();
        let calls = AtomicUsize::new(0);
        let account = Uuid::from_u128(7);
        let unwrap = || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(DataKey::generate()))
        };
        let first = block_on(cache.get_or_unwrap(account, (1, [1; 32]), unwrap)).unwrap();
        let again = block_on(cache.get_or_unwrap(account, (1, [1; 32]), unwrap)).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Another stored key (re-wrapped, or replaced): unwrapped anew.
        block_on(cache.get_or_unwrap(account, (1, [2; 32]), unwrap)).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(cache.get(account, Some(&(1, [1; 32]))).is_none());
        assert!(cache.get(account, None).is_some());
        cache.evict(account);
        assert!(cache.is_empty());
    }

    #[test]
    fn entries_expire_and_the_oldest_leaves_past_capacity() {
        let cache = DataKeyCache::new(2, Duration::from_secs(3600));
        for n in 0..3u128 {
            cache.insert(
                Uuid::from_u128(n),
                (1, [0; 32]),
                Arc::new(DataKey::generate()),
            );
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(Uuid::from_u128(0), None).is_none());
        assert!(cache.get(Uuid::from_u128(2), None).is_some());
        let expired = DataKeyCache::new(2, Duration::ZERO);
        expired.insert(
            Uuid::from_u128(1),
            (1, [0; 32]),
            Arc::new(DataKey::generate()),
        );
        std::thread::sleep(Duration::from_millis(2));
        assert!(expired.get(Uuid::from_u128(1), None).is_none());
    }

    #[test]
    fn concurrent_cold_lookups_of_one_account_make_one_unwrap() {
        let cache = Arc::new(DataKeyCache::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let account = Uuid::from_u128(9);
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let (cache, calls) = (Arc::clone(&cache), Arc::clone(&calls));
                std::thread::spawn(move || {
                    block_on(cache.get_or_unwrap(account, (1, [3; 32]), || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // Slow enough that the others arrive while it runs.
                        std::thread::sleep(Duration::from_millis(50));
                        std::future::ready(Ok(DataKey::generate()))
                    }))
                    .unwrap()
                })
            })
            .collect();
        let keys: Vec<Arc<DataKey>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(keys.iter().all(|k| Arc::ptr_eq(k, &keys[0])));
    }

    #[test]
    fn a_failed_unwrap_is_every_waiters_error_and_is_not_cached() {
        let cache = DataKeyCache::default();
        let account = Uuid::from_u128(5);
        let err = block_on(cache.get_or_unwrap(account, (1, [4; 32]), || {
            std::future::ready(Err(Error::KeyProviderUnavailable {
                provider: "kms".into(),
                reason: "timed out".into(),
            }))
        }))
        .unwrap_err();
        assert!(err.is_retryable());
        assert!(cache.is_empty());
        let shared = SharedError::from_error(&err, account).to_error();
        assert!(
            matches!(shared, Error::KeyProviderUnavailable { ref provider, .. } if provider == "kms")
        );
        // Each kind reaches the waiters as the same kind, naming the provider.
        for err in [
            Error::KeyProvider {
                provider: "kms".into(),
                reason: "access denied".into(),
            },
            Error::DataKeyUnreadable {
                account_id: account,
                provider: "kms".into(),
                reason: "damaged".into(),
            },
        ] {
            let shared = SharedError::from_error(&err, account).to_error();
            assert_eq!(shared.to_string(), err.to_string());
            assert_eq!(shared.kind(), err.kind());
        }
    }

    #[test]
    fn a_cancelled_leader_hands_over_to_a_waiter() {
        let cache = DataKeyCache::default();
        let account = Uuid::from_u128(11);
        // The leader's unwrap never finishes; polling it once makes it the leader.
        let mut leader = Box::pin(cache.get_or_unwrap(account, (1, [5; 32]), || {
            std::future::pending::<Result<DataKey>>()
        }));
        let waker = Waker::noop();
        assert!(leader
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending());
        drop(leader);
        let key = block_on(cache.get_or_unwrap(account, (1, [5; 32]), || {
            std::future::ready(Ok(DataKey::generate()))
        }));
        assert!(key.is_ok());
    }
}

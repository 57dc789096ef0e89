//! The executors: what runs a call's statements in one transaction. The blocking
//! [`Database`](crate::Database) runs them at once (its futures are ready when
//! made); the async store's handle (`AsyncDatabase`) runs them on the pipelined
//! PostgreSQL executor ([`pipelined_pg`]) or on tokio's blocking pool. Both stores
//! run the one body of each operation (`ops::Core`) over an [`Executor`].

use crate::backend::{Backend, Execute, Load, LoadWritten, Scope, Stored};
use crate::error::Result;
use std::future::Future;

#[cfg(all(feature = "async", feature = "postgres"))]
pub(crate) mod pipelined_pg;

/// Runs statements: each call is one transaction.
pub(crate) trait Executor: Send + Sync {
    /// The backend the statements run on.
    fn backend(&self) -> Backend;

    /// Runs `statements` in order in one transaction and returns their rows.
    fn load<Q: Load<T>, T: Send + 'static>(
        &self,
        scope: Scope<'_>,
        statements: Vec<Q>,
    ) -> impl Future<Output = Result<Vec<T>>> + Send;

    /// Runs writes in order in one transaction and returns their rows as stored
    /// ([`BackendConnection::load_written`](crate::backend::BackendConnection::load_written)).
    fn load_written<Q: LoadWritten<T>, T: Stored + Send + 'static>(
        &self,
        scope: Scope<'_>,
        statements: Vec<Q>,
    ) -> impl Future<Output = Result<Vec<T>>> + Send;

    /// Runs `statements` in order in one transaction and returns how many rows
    /// they changed.
    fn execute<Q: Execute>(
        &self,
        scope: Scope<'_>,
        statements: Vec<Q>,
    ) -> impl Future<Output = Result<usize>> + Send;
}

//! The pipelined PostgreSQL executor of the async store: diesel-async's
//! `AsyncPgConnection` (tokio-postgres) in a deadpool pool. A call's `BEGIN`,
//! `set_config('app.current_user_id', $1, true)` (a bound parameter), statements and
//! `COMMIT` are sent without waiting for each other: one network round trip once
//! the connection has prepared the statements (the pool prepares every per-user
//! read and the delete when it opens a connection). A call cancelled mid-flight
//! closes its connection instead of returning it to the pool, so no context or open
//! transaction reaches another call; its write may still have committed if its
//! `COMMIT` reached the server first (the caller retries by id).
use crate::backend::postgres::user_context;
use crate::backend::{classify, DatabaseOptions, Execute, Load, LoadReturning, Location, Redactor};
use crate::error::{Error, Result};
use crate::models::AccountScope;
use crate::query;
use deadpool::managed::{Metrics, Object, Pool, RecycleError, RecycleResult};
use diesel::pg::Pg;
use diesel::query_builder::{QueryFragment, QueryId};
use diesel::QueryResult;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::future::{join_all, BoxFuture};
use std::any::TypeId;
use std::collections::HashSet;
use uuid::Uuid;

/// One pooled connection and what the crate knows of it.
pub(crate) struct PgSession {
    conn: AsyncPgConnection,
    /// Statements this connection has prepared (diesel-async keeps them).
    prepared: HashSet<TypeId>,
    /// Outside any transaction the crate opened.
    clean: bool,
}

impl PgSession {
    /// Prepares the statements of every per-user read (and the delete) once, when the connection
    /// is made, inside a transaction that is rolled back (no user context: they
    /// see no rows), so that even a connection's first call sends BEGIN, the
    /// context, the statement and COMMIT in one round trip. A statement the role
    /// may not run is left to be prepared on first use.
    async fn prepare_hot_statements(&mut self) -> QueryResult<()> {
        let nobody = AccountScope {
            id: Uuid::nil(),
            user_id: String::new(),
        };
        let (id, user) = (Uuid::nil(), "");
        let statements = [
            hot::<_, String>(user_context(user)),
            hot(query::account(user, id)),
            hot(query::account_by_user_id(user)),
            hot(query::credential(&nobody, id)),
            hot(query::credentials(&nobody)),
            hot(query::credentials_by_type(&nobody, user)),
            hot(query::credentials_by_nickname(&nobody, user, user)),
            hot(query::credentials_by_nickname_with_ciphertexts(
                &nobody, user, user,
            )),
            hot(query::credential_with_ciphertexts(&nobody, id)),
            hot_write(query::delete_credential(&nobody, id)),
        ];
        self.conn.batch_execute("BEGIN").await?;
        for (key, run) in statements {
            let Some(key) = key else { continue };
            // In a savepoint, so that a refusal leaves the transaction usable.
            self.conn.batch_execute("SAVEPOINT cs_prepare").await?;
            let ran = run(&self.conn).await.is_ok();
            let undo = if ran { "RELEASE" } else { "ROLLBACK TO" };
            self.conn
                .batch_execute(&format!("{undo} SAVEPOINT cs_prepare"))
                .await?;
            if ran {
                self.prepared.insert(key);
            }
        }
        self.conn.batch_execute("ROLLBACK").await
    }
}

/// A statement to prepare: its cache key, and a run of it.
type HotStatement = (
    Option<TypeId>,
    Box<dyn for<'c> FnOnce(&'c AsyncPgConnection) -> BoxFuture<'c, QueryResult<()>> + Send>,
);

fn hot_write<Q: Execute>(statement: Q) -> HotStatement {
    let key = statement_key(&statement);
    (
        key,
        Box::new(move |conn| {
            Box::pin(async move {
                let mut conn = conn;
                diesel_async::RunQueryDsl::execute(statement, &mut conn)
                    .await
                    .map(drop)
            })
        }),
    )
}

fn hot<Q: Load<T>, T: Send + 'static>(statement: Q) -> HotStatement {
    let key = statement_key(&statement);
    (
        key,
        Box::new(move |conn| {
            Box::pin(async move {
                let mut conn = conn;
                diesel_async::RunQueryDsl::load::<T>(statement, &mut conn)
                    .await
                    .map(drop)
            })
        }),
    )
}

pub(crate) struct PgManager {
    url: String,
    /// Scrubs the driver's connection errors of the URL's credentials.
    redactor: Redactor,
}

impl deadpool::managed::Manager for PgManager {
    type Type = PgSession;
    type Error = diesel::ConnectionError;

    async fn create(&self) -> Result<PgSession, diesel::ConnectionError> {
        let mut session = PgSession {
            conn: AsyncPgConnection::establish(&self.url)
                .await
                .map_err(|err| self.redactor.connection(err))?,
            prepared: HashSet::new(),
            clean: true,
        };
        session.prepare_hot_statements().await.map_err(|err| {
            self.redactor
                .connection(diesel::ConnectionError::CouldntSetupConfiguration(err))
        })?;
        Ok(session)
    }

    async fn recycle(
        &self,
        session: &mut PgSession,
        _: &Metrics,
    ) -> RecycleResult<diesel::ConnectionError> {
        // No round trip on checkout: a connection left inside a transaction is
        // never reused (the checkout closes it first; this is a second guard).
        if session.clean {
            Ok(())
        } else {
            Err(RecycleError::message("left inside a transaction"))
        }
    }
}

/// Returns the connection to the pool when the call closed its transaction, and
/// closes it otherwise (a cancelled call, a failed `BEGIN` or `COMMIT`, a lost
/// connection): the server then rolls back a transaction it has not committed (a
/// `COMMIT` that reached it before the close has committed).
struct Checkout(Option<Object<PgManager>>);

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            if !object.clean {
                drop(Object::take(object));
            }
        }
    }
}

pub(crate) struct PgPool {
    pool: Pool<PgManager>,
}

/// The key diesel-async caches a prepared statement under, when it caches it.
fn statement_key<Q: QueryId + QueryFragment<Pg>>(statement: &Q) -> Option<TypeId> {
    match statement.is_safe_to_cache_prepared(&Pg) {
        Ok(true) => Q::query_id(),
        _ => None,
    }
}

fn pool_error(err: deadpool::managed::PoolError<diesel::ConnectionError>) -> Error {
    use deadpool::managed::PoolError;
    match err {
        PoolError::Backend(err) => Error::Connection(err),
        other => Error::PoolUnavailable {
            reason: other.to_string(),
        },
    }
}

impl PgPool {
    pub(crate) async fn open(location: Location<'_>, options: &DatabaseOptions) -> Result<Self> {
        let pool = Pool::builder(PgManager {
            url: location.text.to_owned(),
            redactor: location.redactor,
        })
        .max_size(options.max_connections.max(1) as usize)
        .wait_timeout(Some(options.connection_timeout))
        .create_timeout(Some(options.connection_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|err| Error::PoolUnavailable {
            reason: err.to_string(),
        })?;
        drop(pool.get().await.map_err(pool_error)?);
        Ok(PgPool { pool })
    }

    pub(crate) fn url(&self) -> &str {
        &self.pool.manager().url
    }

    pub(crate) async fn load<Q: LoadReturning<T>, T: Send + 'static>(
        &self,
        user: Option<&str>,
        statements: Vec<Q>,
    ) -> Result<Vec<T>> {
        let keys = statements.iter().map(statement_key).collect();
        let rows = self
            .pipelined(user, keys, |conn| {
                Box::pin(async move {
                    let loads = statements.into_iter().map(|statement| {
                        let mut conn = conn;
                        async move { diesel_async::RunQueryDsl::load(statement, &mut conn).await }
                    });
                    join_all(loads)
                        .await
                        .into_iter()
                        .collect::<QueryResult<Vec<Vec<T>>>>()
                })
            })
            .await?;
        Ok(rows.into_iter().flatten().collect())
    }

    pub(crate) async fn execute<Q: Execute>(
        &self,
        user: Option<&str>,
        statements: Vec<Q>,
    ) -> Result<usize> {
        let keys = statements.iter().map(statement_key).collect();
        self.pipelined(user, keys, |conn| {
            Box::pin(async move {
                let runs = statements.into_iter().map(|statement| {
                    let mut conn = conn;
                    async move { diesel_async::RunQueryDsl::execute(statement, &mut conn).await }
                });
                join_all(runs).await.into_iter().sum::<QueryResult<usize>>()
            })
        })
        .await
    }

    /// Runs `body` in one transaction with `user` as its row-level-security
    /// context. When the connection has prepared every statement, `BEGIN`, the
    /// context, the body and `COMMIT` go out together: one round trip. Otherwise
    /// `COMMIT` waits for the body, so that it cannot overtake a statement still
    /// being prepared.
    async fn pipelined<R: Send>(
        &self,
        user: Option<&str>,
        keys: Vec<Option<TypeId>>,
        body: impl for<'c> FnOnce(&'c AsyncPgConnection) -> BoxFuture<'c, QueryResult<R>>,
    ) -> Result<R> {
        let mut checkout = Checkout(Some(self.pool.get().await.map_err(pool_error)?));
        let Some(session) = checkout.0.as_deref_mut() else {
            unreachable!("a checkout holds its connection until dropped")
        };
        let context_key = user.map(|user| statement_key(&user_context(user)));
        let warm = keys
            .iter()
            .chain(context_key.iter())
            .all(|key| key.is_some_and(|key| session.prepared.contains(&key)));
        session.clean = false;
        let conn = &session.conn;
        let (mut begin_conn, mut context_conn, mut commit_conn) = (conn, conn, conn);
        let begin = begin_conn.batch_execute("BEGIN");
        let context = async {
            match user {
                Some(user) => {
                    diesel_async::RunQueryDsl::execute(user_context(user), &mut context_conn)
                        .await
                        .map(drop)
                }
                None => Ok(()),
            }
        };
        let body = body(conn);
        let (begun, context, result, committed) = if warm {
            tokio::join!(begin, context, body, commit_conn.batch_execute("COMMIT"))
        } else {
            let (begun, context, result) = tokio::join!(begin, context, body);
            (
                begun,
                context,
                result,
                commit_conn.batch_execute("COMMIT").await,
            )
        };
        let outcome = match (begun, committed) {
            (Ok(()), Ok(())) => {
                // The transaction is closed: committed, or rolled back by the
                // server when a statement failed.
                session.clean = true;
                context.and(result)
            }
            (begun, committed) => Err(begun
                .and(committed)
                .err()
                .unwrap_or(diesel::result::Error::RollbackTransaction)),
        };
        if outcome.is_ok() {
            session
                .prepared
                .extend(keys.into_iter().chain(context_key).flatten());
        }
        let outcome = outcome.map_err(|err| classify(Error::Database(err)));
        if matches!(outcome, Err(Error::ConnectionLost(_))) {
            session.clean = false;
        }
        outcome
    }

    pub(crate) async fn connection_states(&self) -> Result<Vec<(bool, Option<String>)>> {
        use diesel::sql_types::{Nullable, Text};
        #[derive(diesel::QueryableByName)]
        struct Setting {
            #[diesel(sql_type = Nullable<Text>)]
            user_id: Option<String>,
        }
        let idle = self.pool.status().available;
        let mut held = Vec::new();
        for _ in 0..idle {
            held.push(self.pool.get().await.map_err(pool_error)?);
        }
        let mut states = Vec::new();
        for session in &mut held {
            // SAVEPOINT fails outside a transaction block, and only there.
            let in_transaction = session
                .conn
                .batch_execute("SAVEPOINT cs_probe")
                .await
                .is_ok();
            let setting: Setting = diesel_async::RunQueryDsl::get_result(
                diesel::sql_query("SELECT current_setting('app.current_user_id', true) AS user_id"),
                &mut session.conn,
            )
            .await?;
            if in_transaction {
                session.clean = false;
            }
            states.push((in_transaction, setting.user_id));
        }
        Ok(states)
    }
}

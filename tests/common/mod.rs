//! Test databases: a fresh SQLite file, or a fresh PostgreSQL or MariaDB/MySQL
//! database with a random name that is dropped afterwards.
//!
//! MariaDB/MySQL comes from `CREDENTIAL_STORE_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`), a user allowed to create databases.
//!
//! PostgreSQL comes from `CREDENTIAL_STORE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), a role allowed to create databases.
//!
//! A test says what it needs when it is declared ([`trials`]): one whose server
//! cannot be reached is reported as ignored, or fails when CI requires the server
//! (`CREDENTIAL_STORE_REQUIRE_POSTGRES=1`, `CREDENTIAL_STORE_REQUIRE_MYSQL=1`). So
//! [`TestDb::postgres`] and [`TestDb::mysql`] are only called where the server
//! answered, and panic if it does not.

#![allow(dead_code)]

pub mod trials;

use credential_store::{Backend, CredentialStore, Database, DatabaseOptions, Keyring};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use secrecy::ExposeSecret;
use std::path::PathBuf;

#[cfg(feature = "mysql")]
pub use credential_store::connection::MysqlConnection;

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Where the AWS KMS API (moto, `.ci/moto`) answers unless
/// `CREDENTIAL_STORE_TEST_KMS_URL` says otherwise.
pub const DEFAULT_KMS_URL: &str = "http://127.0.0.1:5000";

/// A database made for one test.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    /// Keeps the SQLite file's directory alive.
    pub dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the admin URL and the database name to drop.
    pg: Option<(String, String)>,
    /// MySQL: the admin URL and the database name to drop.
    mysql: Option<(String, String)>,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        TestDb {
            url,
            backend: Backend::Sqlite,
            dir: Some(dir),
            pg: None,
            mysql: None,
        }
    }

    /// A fresh MariaDB/MySQL database (for a test declared to need
    /// [`trials::Service::Mysql`]).
    #[cfg(feature = "mysql")]
    pub fn mysql() -> TestDb {
        let admin = mysql_admin_url();
        let mut conn = MysqlConnection::establish(&admin).unwrap_or_else(|err| {
            panic!("cannot connect to MariaDB/MySQL at {admin}: {err}; `.ci/mariadb` starts it")
        });
        let name = format!("credential_store_test_{}", uuid::Uuid::now_v7().simple());
        conn.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        TestDb {
            url: with_database(&admin, &name),
            backend: Backend::Mysql,
            dir: None,
            pg: None,
            mysql: Some((admin, name)),
        }
    }

    /// A fresh PostgreSQL database (for a test declared to need
    /// [`trials::Service::Postgres`]).
    pub fn postgres() -> TestDb {
        let admin = admin_url();
        let mut conn = PgConnection::establish(&admin)
            .unwrap_or_else(|err| panic!("cannot connect to PostgreSQL at {admin}: {err}"));
        let name = format!("credential_store_test_{}", uuid::Uuid::now_v7().simple());
        conn.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        let url = with_database(&admin, &name);
        TestDb {
            url,
            backend: Backend::Postgres,
            dir: None,
            pg: Some((admin, name)),
            mysql: None,
        }
    }

    pub fn for_backend(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::sqlite(),
            #[cfg(feature = "mysql")]
            Backend::Mysql => TestDb::mysql(),
            _ => TestDb::postgres(),
        }
    }

    /// The crate's handle on this database. On PostgreSQL, `CREDENTIAL_STORE_TEST_ROUTE`
    /// sends it another way: `pgbouncer` through the transaction pooler
    /// ([`pgbouncer_url`], with `transaction_pooler` set), `replica` with per-user
    /// reads on the streaming replica ([`replica_url`]).
    pub fn database(&self) -> Database {
        match (self.backend, Route::from_env()) {
            (Backend::Postgres, Route::Pgbouncer) => Database::open_with(
                &self.through(&pgbouncer_url()),
                &DatabaseOptions::default().transaction_pooler(true),
            )
            .expect("open database through PgBouncer"),
            (Backend::Postgres, Route::Replica) => Database::open(&self.url)
                .expect("open database")
                .with_read_replica(&self.on_replica(&self.url))
                .expect("open the read replica"),
            _ => Database::open(&self.url).expect("open database"),
        }
    }

    /// This database's URL with the server of `server` (same user and name).
    pub fn through(&self, server: &str) -> String {
        let (_, name) = self.pg_admin().expect("a PostgreSQL test database");
        with_database(server, name)
    }

    /// `url` (this database's, as some user) on the replica, once the replica has
    /// replayed the database's creation (waits up to 30 s).
    pub fn on_replica(&self, url: &str) -> String {
        let replica = replica_url();
        let (_, name) = self.pg_admin().expect("a PostgreSQL test database");
        let user = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(user, _)| user.to_owned());
        let mut target = with_database(&replica, name);
        if let Some(user) = user {
            target = with_user(&target, &user);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match PgConnection::establish(&target) {
                Ok(_) => return target,
                Err(err) if std::time::Instant::now() > deadline => {
                    panic!("the replica never showed the test database: {err}")
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }

    /// A migrated store with a fresh random key.
    pub fn store(&self) -> CredentialStore {
        let db = self.database();
        db.run_migrations().expect("migrations");
        CredentialStore::new(db, test_keyring())
    }

    /// Runs SQL outside the crate, as another program would.
    pub fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(self.sqlite_path().to_str().unwrap())
                    .expect("sqlite connection");
                conn.batch_execute(sql)
                    .unwrap_or_else(|e| panic!("{e}: {sql}"));
            }
            #[cfg(feature = "mysql")]
            Backend::Mysql => {
                let mut conn = mysql_raw(&self.url);
                conn.batch_execute(sql)
                    .unwrap_or_else(|e| panic!("{e}: {sql}"));
            }
            _ => {
                let mut conn = PgConnection::establish(&self.url).expect("pg connection");
                conn.batch_execute(sql)
                    .unwrap_or_else(|e| panic!("{e}: {sql}"));
            }
        }
    }

    /// The number of rows `SELECT COUNT(*) FROM <table>` sees, outside the crate and
    /// outside row-level security (as the test's superuser).
    pub fn count(&self, table: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let sql = format!("SELECT COUNT(*) AS n FROM {table}");
        match self.backend {
            Backend::Sqlite => {
                let mut conn =
                    SqliteConnection::establish(self.sqlite_path().to_str().unwrap()).unwrap();
                diesel::sql_query(sql)
                    .get_result::<Count>(&mut conn)
                    .unwrap()
                    .n
            }
            #[cfg(feature = "mysql")]
            Backend::Mysql => {
                let mut conn = mysql_raw(&self.url);
                diesel::sql_query(sql)
                    .get_result::<Count>(&mut conn)
                    .unwrap()
                    .n
            }
            _ => {
                let mut conn = PgConnection::establish(&self.url).unwrap();
                diesel::sql_query(sql)
                    .get_result::<Count>(&mut conn)
                    .unwrap()
                    .n
            }
        }
    }

    /// Runs SQL outside the crate, as another program would, and returns the
    /// database's message when it refuses.
    pub fn try_execute(&self, sql: &str) -> Result<(), String> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(self.sqlite_path().to_str().unwrap())
                    .expect("sqlite connection");
                conn.batch_execute(sql).map_err(|e| e.to_string())
            }
            #[cfg(feature = "mysql")]
            Backend::Mysql => {
                let mut conn = mysql_raw(&self.url);
                conn.batch_execute(sql).map_err(|e| e.to_string())
            }
            _ => {
                let mut conn = PgConnection::establish(&self.url).expect("pg connection");
                conn.batch_execute(sql).map_err(|e| e.to_string())
            }
        }
    }

    /// The one `BIGINT` column `n` of a query's one row, outside the crate and outside
    /// row-level security (as the test's superuser).
    pub fn scalar(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Scalar {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let result = match self.backend {
            Backend::Sqlite => {
                let mut conn =
                    SqliteConnection::establish(self.sqlite_path().to_str().unwrap()).unwrap();
                diesel::sql_query(sql).get_result::<Scalar>(&mut conn)
            }
            #[cfg(feature = "mysql")]
            Backend::Mysql => {
                let mut conn = mysql_raw(&self.url);
                diesel::sql_query(sql).get_result::<Scalar>(&mut conn)
            }
            _ => {
                let mut conn = PgConnection::establish(&self.url).unwrap();
                diesel::sql_query(sql).get_result::<Scalar>(&mut conn)
            }
        };
        result.unwrap_or_else(|e| panic!("{e}: {sql}")).n
    }

    /// The one text column `t` of a query's one row, outside the crate and outside
    /// row-level security (as the test's superuser).
    pub fn text(&self, sql: &str) -> String {
        #[derive(QueryableByName)]
        struct Text {
            #[diesel(sql_type = diesel::sql_types::Text)]
            t: String,
        }
        let result = match self.backend {
            Backend::Sqlite => {
                let mut conn =
                    SqliteConnection::establish(self.sqlite_path().to_str().unwrap()).unwrap();
                diesel::sql_query(sql).get_result::<Text>(&mut conn)
            }
            #[cfg(feature = "mysql")]
            Backend::Mysql => {
                let mut conn = mysql_raw(&self.url);
                diesel::sql_query(sql).get_result::<Text>(&mut conn)
            }
            _ => {
                let mut conn = PgConnection::establish(&self.url).unwrap();
                diesel::sql_query(sql).get_result::<Text>(&mut conn)
            }
        };
        result.unwrap_or_else(|e| panic!("{e}: {sql}")).t
    }

    /// The backend's name, as spans give it.
    pub fn backend_name(&self) -> &'static str {
        self.backend.as_str()
    }

    pub fn sqlite_path(&self) -> PathBuf {
        PathBuf::from(
            self.url
                .strip_prefix("sqlite://")
                .expect("a SQLite test database"),
        )
    }

    /// The admin URL and database name, on PostgreSQL.
    pub fn pg_admin(&self) -> Option<(&str, &str)> {
        self.pg
            .as_ref()
            .map(|(admin, name)| (admin.as_str(), name.as_str()))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        #[cfg(feature = "mysql")]
        if let Some((admin, name)) = &self.mysql {
            if let Ok(mut conn) = MysqlConnection::establish(admin) {
                let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"));
            }
        }
        if let Some((admin, name)) = &self.pg {
            if let Ok(mut conn) = PgConnection::establish(admin) {
                let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// How the crate reaches a PostgreSQL test database (`CREDENTIAL_STORE_TEST_ROUTE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight to the server (the default).
    Direct,
    /// Through PgBouncer in transaction pooling mode.
    Pgbouncer,
    /// Reads on the streaming replica, writes on the primary.
    Replica,
}

impl Route {
    pub fn from_env() -> Route {
        match std::env::var("CREDENTIAL_STORE_TEST_ROUTE").as_deref() {
            Ok("pgbouncer") => Route::Pgbouncer,
            Ok("replica") => Route::Replica,
            Ok("") | Ok("direct") | Err(_) => Route::Direct,
            Ok(other) => {
                panic!("CREDENTIAL_STORE_TEST_ROUTE={other}: use direct, pgbouncer or replica")
            }
        }
    }
}

/// PgBouncer in transaction pooling mode, in front of the test server
/// (`CREDENTIAL_STORE_TEST_PGBOUNCER_URL`; `.ci/pg-topology` starts it).
pub fn pgbouncer_url() -> String {
    std::env::var("CREDENTIAL_STORE_TEST_PGBOUNCER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:6432/postgres".into())
}

/// A streaming replica of the test server (`CREDENTIAL_STORE_TEST_REPLICA_URL`;
/// `.ci/pg-topology` makes it).
pub fn replica_url() -> String {
    std::env::var("CREDENTIAL_STORE_TEST_REPLICA_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/postgres".into())
}

pub fn admin_url() -> String {
    std::env::var("CREDENTIAL_STORE_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into())
}

/// A connection for raw SQL on a MySQL test database, as another program would
/// send it, in standard SQL: `||` concatenates and `"…"` quotes identifiers.
#[cfg(feature = "mysql")]
pub fn mysql_raw(url: &str) -> MysqlConnection {
    let mut conn = MysqlConnection::establish(url).expect("mysql connection");
    conn.batch_execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,ANSI_QUOTES')")
        .expect("sql_mode");
    conn
}

/// The AWS KMS API the `aws-kms` tests make their keys on (for a test declared to
/// need [`trials::Service::Kms`]).
pub fn kms_url() -> String {
    std::env::var("CREDENTIAL_STORE_TEST_KMS_URL").unwrap_or_else(|_| DEFAULT_KMS_URL.to_owned())
}

/// The MariaDB/MySQL server tests make their databases on.
pub fn mysql_admin_url() -> String {
    std::env::var("CREDENTIAL_STORE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// `url` with its user replaced by `user` (no password: the test server trusts).
pub fn with_user(url: &str, user: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let host = match rest.find('@') {
        Some(at) if rest.find('/').is_none_or(|slash| at < slash) => &rest[at + 1..],
        _ => rest,
    };
    format!("{}{user}@{host}", &url[..scheme_end])
}

pub fn test_key() -> String {
    Keyring::generate_key().expose_secret().to_owned()
}

pub fn test_keyring() -> Keyring {
    Keyring::from_fernet_keys([test_key()]).unwrap()
}

/// Declares one test body that runs on SQLite, on PostgreSQL and (feature `mysql`)
/// on MariaDB/MySQL: `on_both_backends!(name, |db: &TestDb| { … });` gives the tests
/// `name::sqlite`, `name::postgres` and `name::mysql`, which `name::tests()` lists
/// for [`trials::run`] ([`trials::needing`] adds what all three need besides their
/// database).
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($db: &$crate::common::TestDb) $body

            /// The test on each backend.
            pub fn tests() -> Vec<$crate::common::trials::Test> {
                use $crate::common::trials::{test_name, Service, Test};
                use $crate::common::TestDb;
                vec![
                    Test::new(test_name(module_path!(), "sqlite"), || body(&TestDb::sqlite())),
                    Test::new(test_name(module_path!(), "postgres"), || {
                        body(&TestDb::postgres())
                    })
                    .needs(&[Service::Postgres]),
                    #[cfg(feature = "mysql")]
                    Test::new(test_name(module_path!(), "mysql"), || body(&TestDb::mysql()))
                        .needs(&[Service::Mysql]),
                ]
            }
        }
    };
}

/// Runs Python with `cryptography` and returns its stdout (for a test declared to
/// need [`trials::Service::Python`]).
pub fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run python3: {err}"));
    if !out.status.success() {
        panic!("python failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout).unwrap()
}

/// The service role of `docs/database.md`'s "PostgreSQL" section: row-level
/// security applies to it. `{role}` and `{database}` are filled in. It is the
/// documented statements without the password; `tests/rls.rs` checks it against
/// [`documented_role`].
pub const SERVICE_ROLE: &str = "
CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS;
GRANT CONNECT ON DATABASE {database} TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON user_accounts, user_credentials, account_keys TO {role};
GRANT SELECT ON retired_account_keys TO {role};
GRANT EXECUTE ON FUNCTION current_user_id() TO {role};";

/// `docs/database.md`, whose "PostgreSQL" section gives the roles to create.
pub const DATABASE_DOC: &str = include_str!("../../docs/database.md");

/// The database name the documented role statements grant on (`ON DATABASE app`).
pub const DOCUMENTED_DATABASE: &str = "app";

/// The roles `docs/database.md` documents, in the order its `sql` block creates them.
pub const DOCUMENTED_ROLES: [&str; 3] = [
    "credential_owner",
    "credential_service",
    "credential_maintenance",
];

/// The `sql` block of `docs/database.md` that creates the documented roles, as
/// written there.
pub fn documented_roles_block() -> &'static str {
    DATABASE_DOC
        .split("```sql\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .find(|block| block.contains("CREATE ROLE credential_owner "))
        .expect("docs/database.md has a ```sql block that creates credential_owner")
}

/// The statements `docs/database.md` gives for the documented role `documented`
/// (its paragraph of the roles block, comment included), for the role `role` on the
/// database `database`: the documented role name and `ON DATABASE app` are
/// substituted. The documented `PASSWORD '…'` is left out: the test server trusts
/// local connections and tests log in without a password. Panics when a
/// substitution finds nothing to replace, so that a change of the documentation
/// shows here.
pub fn documented_role(documented: &str, role: &str, database: &str) -> String {
    let create = format!("CREATE ROLE {documented} ");
    let mut paragraphs = documented_roles_block()
        .split("\n\n")
        .filter(|paragraph| paragraph.contains(&create));
    let paragraph = paragraphs
        .next()
        .unwrap_or_else(|| panic!("docs/database.md creates no role {documented}"));
    assert!(
        paragraphs.next().is_none(),
        "docs/database.md creates {documented} twice"
    );
    let password = " PASSWORD '\u{2026}'";
    assert!(
        paragraph.contains(password),
        "docs/database.md gives {documented} no `PASSWORD '\u{2026}'`: {paragraph}"
    );
    let on_database = format!("ON DATABASE {DOCUMENTED_DATABASE} ");
    assert!(
        paragraph.contains(&on_database),
        "docs/database.md grants {documented} nothing on database {DOCUMENTED_DATABASE}: {paragraph}"
    );
    paragraph
        .replace(password, "")
        .replace(&on_database, &format!("ON DATABASE {database} "))
        .replace(documented, role)
}

/// A PostgreSQL role made for one test, named `cs_test_<kind>_<hex>`, dropped when
/// the guard is, even when the test fails: its sessions are ended, what it owns or
/// holds in the test database goes (`DROP OWNED BY`, which also revokes its CONNECT
/// on the database), then the role is dropped.
///
/// `RoleGuard::new` only picks the name: create the role after the guard exists, so
/// that a failure half-way through the `CREATE ROLE … GRANT …` still drops it. Keep
/// the guard in a binding declared after the `TestDb` (or in a struct field
/// declared before it), so that it drops first, while the database still exists.
pub struct RoleGuard {
    admin_url: String,
    db_url: String,
    /// The role's name.
    pub role: String,
}

impl RoleGuard {
    /// A guard for a new role name for the PostgreSQL test database `db`.
    pub fn new(db: &TestDb, kind: &str) -> RoleGuard {
        let (admin_url, _) = db.pg_admin().expect("a PostgreSQL test database");
        RoleGuard {
            admin_url: admin_url.to_owned(),
            db_url: db.url.clone(),
            role: format!("cs_test_{kind}_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    /// The test database's URL, logging in as this role.
    pub fn url(&self) -> String {
        with_user(&self.db_url, &self.role)
    }
}

impl Drop for RoleGuard {
    fn drop(&mut self) {
        let role = &self.role;
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = admin.batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE usename = '{role}' AND pid <> pg_backend_pid()"
            ));
        }
        if let Ok(mut conn) = PgConnection::establish(&self.db_url) {
            let _ = conn.batch_execute(&format!("DROP OWNED BY {role}"));
        }
        let dropped = PgConnection::establish(&self.admin_url)
            .map_err(|e| e.to_string())
            .and_then(|mut admin| {
                admin
                    .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
                    .map_err(|e| e.to_string())
            });
        if let Err(err) = dropped {
            eprintln!("WARNING: could not drop test role {role}: {err}; drop it by hand");
        }
    }
}

/// Rewrites both keys of the credential `credential_id` of `account` in sealed v2
/// under `keyring`'s primary key, as a store wrote them before data keys existed
/// (with the crate's own sealing, `internals::seal`): a legacy row.
#[cfg(feature = "bench-internals")]
pub fn write_sealed_v2(
    db: &TestDb,
    keyring: &Keyring,
    account: &credential_store::UserAccount,
    credential_id: uuid::Uuid,
    (api_key, secret_key): (&str, &str),
) {
    use credential_store::{internals, CipherFormat, Field};
    let seal = |field, plaintext: &str| {
        let sealed = internals::seal(
            keyring,
            CipherFormat::Sealed,
            account,
            credential_id,
            field,
            &secrecy::SecretString::from(plaintext),
        );
        assert!(sealed.starts_with("sealed:v2:"), "{sealed}");
        sealed
    };
    db.execute(&format!(
        "UPDATE user_credentials SET api_key = '{}', secret_key = '{}' WHERE id = '{credential_id}'",
        seal(Field::ApiKey, api_key),
        seal(Field::SecretKey, secret_key)
    ));
}

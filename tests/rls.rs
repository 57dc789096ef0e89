//! Row-level security on PostgreSQL, under the roles of `docs/database.md`'s
//! "## PostgreSQL" section (its `sql` block itself, with the role and database names
//! substituted): every repository call of a service role reads and changes only its own
//! user's rows; a connection without a user context sees and writes nothing; the
//! database itself (not the crate) refuses a credential filed under another user's
//! account; the context never outlives its transaction; and the cross-user
//! maintenance jobs (nickname backfill, key rotation and usage) refuse under
//! row-level security and work under `BYPASSRLS`.
//!
//! Each test makes its own database and its own roles (random names, dropped at the
//! end even when the test fails). The tables are created by migrations run as an
//! owner role that is not a superuser, as in production, so that foreign-key checks
//! and row-level security behave as they would there. What PUBLIC gets by default in
//! a new database (CONNECT, USAGE on `public`, EXECUTE on functions) is revoked
//! first, so that the grants below are shown to be enough on their own.

mod common;

use common::{documented_role, RoleGuard, TestDb};
use credential_store::{
    AccountScope, CipherFormat, CredentialStore, CredentialUpdate, Database, DatabaseOptions,
    Error, Keyring, NewUserAccount, NewUserCredential, UserAccount, UserCredential,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::Text;
use secrecy::ExposeSecret;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

const ALICE: &str = "auth0|alice";
const BOB: &str = "google-oauth2|1098";
const MALLORY: &str = "auth0|mallory";

/// The credentials every seeded user gets: two of one type, and the same nicknames
/// and types for every user.
const SEEDED: &[(&str, &str)] = &[
    ("alpaca_paper", "Main"),
    ("alpaca_paper", "Swing"),
    ("alpaca_live", "Live"),
];

// ---------------------------------------------------------------------------
// The roles are `docs/database.md`'s statements (`common::documented_role`), with
// this test's role and database names; passwords are left out (the test server
// trusts local connections).
// ---------------------------------------------------------------------------

/// What every new database gives PUBLIC, taken away so that the roles' own grants
/// are all they have.
const REVOKE_PUBLIC_DEFAULTS: &str = "
REVOKE ALL ON DATABASE {database} FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;";

fn main() {
    common::trials::run(vec![
        trial!(every_repository_method_stays_within_its_user, [Postgres]),
        trial!(
            without_a_user_context_the_role_sees_and_writes_nothing,
            [Postgres]
        ),
        trial!(
            the_database_refuses_credentials_under_another_users_account,
            [Postgres]
        ),
        trial!(the_user_context_ends_with_its_transaction, [Postgres]),
        trial!(backfill_needs_the_maintenance_role, [Postgres]),
        trial!(key_rotation_and_usage_need_the_maintenance_role, [Postgres]),
        trial!(the_documented_roles_are_the_ones_tested),
    ]);
}

/// After the migrations: the function the policies call is executable by PUBLIC
/// when it is created; only the service role keeps it.
const REVOKE_FUNCTION_FROM_PUBLIC: &str = "REVOKE ALL ON FUNCTION current_user_id() FROM PUBLIC;";

fn fill(template: &str, role: &str, database: &str) -> String {
    template
        .replace("{role}", role)
        .replace("{database}", database)
}

/// A migrated test database and its three roles. Field order is drop order: the
/// roles go before the database.
struct Rls {
    service: RoleGuard,
    maintenance: RoleGuard,
    owner: RoleGuard,
    db: TestDb,
}

impl Rls {
    fn setup() -> Rls {
        let db = TestDb::postgres();
        let owner = RoleGuard::new(&db, "owner");
        let service = RoleGuard::new(&db, "svc");
        let maintenance = RoleGuard::new(&db, "maint");
        let (_, database) = db.pg_admin().expect("a PostgreSQL test database");
        db.execute(&fill(REVOKE_PUBLIC_DEFAULTS, "", database));
        // Owns the schema and runs the migrations.
        db.execute(&documented_role("credential_owner", &owner.role, database));
        let applied = Database::open(&owner.url())
            .expect("open as the owner")
            .run_migrations()
            .expect("the owner role runs the migrations");
        assert_eq!(applied.len(), 7);
        db.execute(REVOKE_FUNCTION_FROM_PUBLIC);
        // What services use: row-level security applies to it.
        db.execute(&documented_role(
            "credential_service",
            &service.role,
            database,
        ));
        // Maintenance that spans users: `backfill_nicknames`, `rotate_keys`, `key_usage`.
        db.execute(&documented_role(
            "credential_maintenance",
            &maintenance.role,
            database,
        ));
        assert_eq!(
            db.scalar(
                "SELECT COUNT(*) AS n FROM pg_class \
                 WHERE relname IN ('user_accounts', 'user_credentials', 'account_keys') \
                   AND relrowsecurity AND relforcerowsecurity"
            ),
            3,
            "row-level security is enabled and forced on all three tables"
        );
        // What the documented statements make of each role: none a superuser, only
        // the maintenance role bypassing row-level security.
        let attributes = |role: &str| {
            db.text(&format!(
                "SELECT rolsuper::text || ' ' || rolbypassrls::text AS t \
                 FROM pg_roles WHERE rolname = '{role}'"
            ))
        };
        assert_eq!(attributes(&owner.role), "false false", "owner");
        assert_eq!(attributes(&service.role), "false false", "service");
        assert_eq!(attributes(&maintenance.role), "false true", "maintenance");
        Rls {
            service,
            maintenance,
            owner,
            db,
        }
    }

    /// The crate, as the service role.
    fn service_store(&self) -> CredentialStore {
        CredentialStore::new(
            Database::open(&self.service.url()).expect("open as the service role"),
            common::test_keyring(),
        )
    }

    /// A plain connection as the service role, outside the crate.
    fn service_connection(&self) -> PgConnection {
        PgConnection::establish(&self.service.url()).expect("connect as the service role")
    }

    /// Every row of both tables, as text, read by the superuser (who bypasses
    /// row-level security): `account <row>` and `credential <row>`, in id order.
    fn all_rows(&self) -> Vec<String> {
        self.rows_where("TRUE")
    }

    /// The rows of one user: their account and every credential that names them or
    /// sits under their account.
    fn rows_of(&self, user_id: &str) -> Vec<String> {
        let user = literal(user_id);
        self.rows_where(&format!(
            "t.user_id = {user} OR t.id IN (SELECT id FROM user_accounts WHERE user_id = {user}) \
             OR t.user_account_id IN (SELECT id FROM user_accounts WHERE user_id = {user})"
        ))
    }

    fn rows_where(&self, condition: &str) -> Vec<String> {
        // `t.user_account_id` does not exist on accounts: give them a stand-in column.
        let sql = format!(
            "SELECT line FROM (
                 SELECT 'account ' || t::text AS line, t.id AS id FROM
                     (SELECT a.*, NULL::uuid AS user_account_id FROM user_accounts a) t
                 WHERE {condition}
                 UNION ALL
                 SELECT 'credential ' || t::text, t.id FROM user_credentials t WHERE {condition}
             ) rows ORDER BY line LIKE 'credential%', id"
        );
        lines(&mut self.superuser(), &sql)
    }

    /// Every stored data key as `<user_id> <provider> <kek_id>`, seen by the
    /// superuser.
    fn data_keys(&self) -> BTreeSet<String> {
        lines(
            &mut self.superuser(),
            "SELECT user_id || ' ' || provider || ' ' || kek_id AS line FROM account_keys",
        )
        .into_iter()
        .collect()
    }

    fn superuser(&self) -> PgConnection {
        PgConnection::establish(&self.db.url).expect("superuser connection")
    }
}

/// A user's account and credentials, created through the crate as the service role.
struct Seeded {
    account: UserAccount,
    credentials: Vec<UserCredential>,
}

impl Seeded {
    fn ids(&self) -> BTreeSet<Uuid> {
        self.credentials.iter().map(|c| c.id).collect()
    }

    fn nicknamed(&self, nickname: &str) -> &UserCredential {
        self.credentials
            .iter()
            .find(|c| c.nickname.as_deref() == Some(nickname))
            .expect("a seeded nickname")
    }
}

fn seed(store: &CredentialStore, user_id: &str) -> Seeded {
    let account = store
        .create_account(&NewUserAccount::new(
            user_id,
            // The same display name for everyone: nothing may tell users apart by it.
            "Trading",
        ))
        .unwrap_or_else(|e| panic!("create_account for {user_id} as the service role: {e}"));
    let credentials = SEEDED
        .iter()
        .map(|(credential_type, nickname)| {
            let new = NewUserCredential::new(
                credential_type,
                format!("PK-{user_id}-{nickname}"),
                format!("secret-{user_id}-{nickname}"),
            )
            .nickname(nickname);
            store
                .insert_credential(&account, &new)
                .unwrap_or_else(|e| panic!("insert_credential for {user_id}: {e}"))
        })
        .collect();
    Seeded {
        account,
        credentials,
    }
}

// ---------------------------------------------------------------------------
// a. Every repository method sees and changes only its own user's rows
// ---------------------------------------------------------------------------

fn every_repository_method_stays_within_its_user() {
    let rls = Rls::setup();
    let store = rls.service_store();
    let alice = seed(&store, ALICE);
    let bob = seed(&store, BOB);
    assert_eq!(rls.all_rows().len(), 2 + 2 * SEEDED.len());

    for (me, victim) in [(&alice, &bob), (&bob, &alice)] {
        let user = me.account.user_id();
        let victim_user = victim.account.user_id();
        let victim_rows = rls.rows_of(victim_user);
        assert_eq!(victim_rows.len(), 1 + SEEDED.len());

        // What is mine, I see, and only that.
        assert_own_view(&store, me);

        // Every method, aimed at the victim: with my account and the victim's ids,
        // and with forged accounts that mix my user id and the victim's account id
        // (and the reverse).
        let mine = &me.account;
        let forged_id = AccountScope::new(mine.user_id(), victim.account.id()).unwrap();
        let forged_user = AccountScope::new(victim_user, mine.id()).unwrap();
        let victim_ids: Vec<Uuid> = victim.credentials.iter().map(|c| c.id).collect();

        match store.create_account(&NewUserAccount::new(victim_user, "Hijack")) {
            Err(Error::AccountExists { user_id }) => assert_eq!(user_id, victim_user),
            other => panic!("{user}: a second account for {victim_user}: {other:?}"),
        }
        assert_eq!(
            store.account(user, victim.account.id()).expect("account"),
            None,
            "{user}: the victim's account id under my user id"
        );
        assert_eq!(
            store.account(victim_user, mine.id()).expect("account"),
            None,
            "{user}: my account id under the victim's user id"
        );
        for lookalike in [
            victim_user.to_uppercase(),
            format!("{victim_user} "),
            format!("{victim_user}\u{200B}"),
            victim_user.replace('|', "%"),
        ] {
            assert_eq!(
                store
                    .account_by_user_id(&lookalike)
                    .expect("account_by_user_id"),
                None,
                "{user}: a lookalike of {victim_user} finds nothing: {lookalike:?}"
            );
        }

        for account in [mine.scope(), &forged_id, &forged_user] {
            let label = format!("{user} as {}/{}", account.user_id(), account.id());
            for &id in &victim_ids {
                assert_eq!(
                    store.credential(account, id).expect("credential"),
                    None,
                    "{label}: credential"
                );
                assert!(
                    matches!(
                        store.keys(account, id),
                        Err(Error::CredentialNotFound { credential_id, .. }) if credential_id == id
                    ),
                    "{label}: keys"
                );
                let update = CredentialUpdate::default()
                    .nickname("Stolen")
                    .active(false)
                    .keys("PKEVIL", "evil");
                assert!(
                    matches!(
                        store.update_credential(account, id, &update),
                        Err(Error::CredentialNotFound { credential_id, .. }) if credential_id == id
                    ),
                    "{label}: update_credential"
                );
                assert!(
                    matches!(
                        store.delete_credential(account, id),
                        Err(Error::CredentialNotFound { credential_id, .. }) if credential_id == id
                    ),
                    "{label}: delete_credential"
                );
            }
        }
        for account in [&forged_id, &forged_user] {
            let label = format!("{user} as {}/{}", account.user_id(), account.id());
            assert!(
                store.credentials(account).expect("list").is_empty(),
                "{label}: credentials"
            );
            for (credential_type, nickname) in SEEDED {
                assert!(
                    store
                        .credentials_by_type(account, credential_type)
                        .expect("credentials_by_type")
                        .is_empty(),
                    "{label}: credentials_by_type"
                );
                assert!(
                    store
                        .credentials_by_nickname(account, nickname)
                        .expect("credentials_by_nickname")
                        .is_empty(),
                    "{label}: credentials_by_nickname"
                );
                assert_eq!(
                    store
                        .credential_by_nickname(account, nickname)
                        .expect("credential_by_nickname"),
                    None,
                    "{label}: credential_by_nickname"
                );
            }
            let planted =
                NewUserCredential::new("alpaca_live", "PKPLANT", "plant").nickname("Main");
            assert!(
                matches!(
                    store.insert_credential(account, &planted),
                    Err(Error::UnknownAccount { account_id }) if account_id == account.id()
                ),
                "{label}: insert_credential"
            );
        }

        // My own writes work, and stay mine.
        let swing = me.nicknamed("Swing");
        let renamed = store
            .update_credential(
                mine,
                swing.id,
                &CredentialUpdate::default().nickname("Main"),
            )
            .expect("update my own credential");
        assert_eq!(renamed.nickname.as_deref(), Some("Main"));
        assert!(matches!(
            store.credential_by_nickname(mine, "Main"),
            Err(Error::AmbiguousNickname { matches: 2, .. })
        ));
        let extra = store
            .insert_credential(mine, &NewUserCredential::new("polygon", "PKX", "sx"))
            .expect("insert my own credential");
        store
            .delete_credential(mine, extra.id)
            .expect("delete my own credential");
        store
            .update_credential(
                mine,
                swing.id,
                &CredentialUpdate::default().nickname("Swing"),
            )
            .expect("rename it back");

        assert_eq!(
            rls.rows_of(victim_user),
            victim_rows,
            "{user}'s calls left every row of {victim_user} byte for byte as it was"
        );
    }
    assert_eq!(
        rls.db.count("user_accounts"),
        2,
        "no account was added by the cross attempts"
    );
    assert_eq!(rls.db.count("user_credentials"), 2 * SEEDED.len() as i64);
}

/// A user sees exactly their own account and credentials, through every read.
fn assert_own_view(store: &CredentialStore, me: &Seeded) {
    let account = &me.account;
    let user = account.user_id();
    assert_eq!(
        store.account_by_user_id(user).expect("account_by_user_id"),
        Some(account.clone())
    );
    assert_eq!(
        store.account(user, account.id()).expect("account"),
        Some(account.clone())
    );
    let listed: BTreeSet<Uuid> = store
        .credentials(account)
        .expect("credentials")
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        listed,
        me.ids(),
        "{user} lists exactly their own credentials"
    );
    for credential in &me.credentials {
        assert_eq!(
            store
                .credential(account, credential.id)
                .expect("credential"),
            Some(credential.clone())
        );
        let nickname = credential.nickname.as_deref().unwrap();
        let found = store
            .credential_by_nickname(account, nickname)
            .expect("the nickname is unique within the account, though every user has it")
            .expect("found");
        assert_eq!(found.id, credential.id);
        assert_eq!(
            store
                .credentials_by_nickname(account, nickname)
                .expect("credentials_by_nickname")
                .len(),
            1
        );
        let keys = store.keys(account, credential.id).expect("keys");
        assert_eq!(
            keys.api_key().expose_secret(),
            format!("PK-{user}-{nickname}")
        );
    }
    let paper: BTreeSet<Uuid> = store
        .credentials_by_type(account, "alpaca_paper")
        .expect("credentials_by_type")
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(paper.len(), 2);
    assert!(paper.is_subset(&me.ids()));
}

// ---------------------------------------------------------------------------
// b. Without a user context: no rows, no writes
// ---------------------------------------------------------------------------

fn without_a_user_context_the_role_sees_and_writes_nothing() {
    let rls = Rls::setup();
    let store = rls.service_store();
    let alice = seed(&store, ALICE);
    let before = rls.all_rows();

    let mut conn = rls.service_connection();
    assert_eq!(count(&mut conn, "user_accounts"), 0);
    assert_eq!(count(&mut conn, "user_credentials"), 0);
    assert!(context_is_null(&mut conn));

    let refused = [
        (
            "an account",
            "INSERT INTO user_accounts (user_id, account_name) VALUES ('auth0|eve', 'Eve')"
                .to_owned(),
            "user_accounts",
        ),
        (
            "a credential under Alice's account, as Alice",
            format!(
                "INSERT INTO user_credentials \
                     (user_account_id, user_id, credential_type, nickname, api_key, secret_key) \
                 VALUES ('{}', {}, 'alpaca_paper', 'Planted', 'ct', 'ct')",
                alice.account.id(),
                literal(ALICE)
            ),
            "user_credentials",
        ),
    ];
    for (what, sql, table) in refused {
        match diesel::sql_query(&sql).execute(&mut conn) {
            Err(err) => assert!(
                err.to_string().contains(&format!(
                    "new row violates row-level security policy for table \"{table}\""
                )),
                "inserting {what} without a context: {err}"
            ),
            Ok(n) => panic!("inserting {what} without a context was accepted ({n} row)"),
        }
    }
    for sql in [
        "UPDATE user_credentials SET nickname = 'pwned', api_key = 'x'",
        "UPDATE user_accounts SET account_name = 'pwned'",
        "DELETE FROM user_credentials",
        "DELETE FROM user_accounts",
    ] {
        assert_eq!(
            diesel::sql_query(sql).execute(&mut conn).expect(sql),
            0,
            "{sql}: no row is visible to change"
        );
    }

    // An empty setting is no user either (current_user_id() makes it NULL).
    conn.batch_execute("SELECT set_config('app.current_user_id', '', false)")
        .unwrap();
    assert_eq!(count(&mut conn, "user_credentials"), 0);
    assert!(context_is_null(&mut conn));

    assert_eq!(rls.all_rows(), before, "nothing changed");
}

// ---------------------------------------------------------------------------
// c. The database refuses a credential filed under another user's account
// ---------------------------------------------------------------------------

fn the_database_refuses_credentials_under_another_users_account() {
    let rls = Rls::setup();
    // Fernet rows, so that no data key is stored: migration 000006 (whose foreign
    // key needs 000005's unique key) is taken off by hand below without losing one.
    let store = rls.service_store().with_format(CipherFormat::Fernet);
    let victim = seed(&store, ALICE);
    let mallory = seed(&store, MALLORY);
    let victim_account = victim.account.id();
    let own = mallory.nicknamed("Main").id;
    let before = rls.all_rows();
    let mut conn = rls.service_connection();

    let plant = |user_id: &str| {
        format!(
            "INSERT INTO user_credentials \
                 (user_account_id, user_id, credential_type, nickname, api_key, secret_key) \
             VALUES ('{victim_account}', {}, 'alpaca_live', 'Planted', 'ct', 'ct')",
            literal(user_id)
        )
    };
    let insert_with_own_user_id = plant(MALLORY);
    let move_own_credential = format!(
        "UPDATE user_credentials SET user_account_id = '{victim_account}' WHERE id = '{own}'"
    );

    // Mallory's own user_id satisfies the policies' WITH CHECK; the composite foreign
    // key refuses, checked by PostgreSQL outside row-level security.
    for (what, sql) in [
        (
            "insert under Alice's account with Mallory's user_id",
            &insert_with_own_user_id,
        ),
        (
            "move Mallory's credential under Alice's account",
            &move_own_credential,
        ),
    ] {
        match as_user(&mut conn, MALLORY, sql) {
            Err(DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, info)) => {
                assert_eq!(
                    info.constraint_name(),
                    Some("user_credentials_owner_matches_account_fkey"),
                    "{what}: {}",
                    info.message()
                );
            }
            other => panic!("{what}: expected the composite foreign key to refuse, got {other:?}"),
        }
    }

    // Another user's user_id breaks the policies' WITH CHECK.
    for (what, sql) in [
        ("insert with Alice's user_id", plant(ALICE)),
        (
            "give Mallory's credential Alice's user_id",
            format!(
                "UPDATE user_credentials SET user_id = {} WHERE id = '{own}'",
                literal(ALICE)
            ),
        ),
        (
            "move Mallory's credential to Alice, both columns",
            format!(
                "UPDATE user_credentials SET user_account_id = '{victim_account}', user_id = {} \
                 WHERE id = '{own}'",
                literal(ALICE)
            ),
        ),
    ] {
        match as_user(&mut conn, MALLORY, &sql) {
            Err(err) => assert!(
                err.to_string().contains(
                    "new row violates row-level security policy for table \"user_credentials\""
                ),
                "{what}: {err}"
            ),
            Ok(n) => panic!("{what}: accepted ({n} row)"),
        }
    }
    assert_eq!(rls.all_rows(), before, "nothing changed");

    // The refusals above are migration 000005's: without it, row-level security
    // alone lets both through (run here in transactions that are rolled back). Its
    // revert, and that of 000006 after it (the data keys, whose foreign key needs
    // 000005's unique key), refuse while rows are stored, so their down migrations
    // are run by hand: 000006's first (no data key is stored), then 000005's.
    // (000007, the retired data keys, reverts first: none is stored.)
    let owner = Database::open(&rls.owner.url()).expect("open as the owner");
    assert_eq!(owner.revert_last_migration().unwrap(), "20261208000007");
    match owner.revert_last_migration() {
        Err(Error::RevertWouldExpose { version, .. }) => assert_eq!(version, "20261207000006"),
        other => panic!("reverting 000006 with rows stored: {other:?}"),
    }
    assert_eq!(rls.db.count("account_keys"), 0);
    rls.superuser()
        .batch_execute(concat!(
            include_str!("../migrations/postgres/2026-12-07-000006_account_data_keys/down.sql"),
            "DELETE FROM __diesel_schema_migrations WHERE version = '20261207000006';"
        ))
        .expect("000006 reverted by hand");
    match owner.revert_last_migration() {
        Err(Error::RevertWouldExpose { version, .. }) => assert_eq!(version, "20261125000005"),
        other => panic!("reverting 000005 with rows stored: {other:?}"),
    }
    rls.superuser()
        .batch_execute(concat!(
            include_str!("../migrations/postgres/2026-11-25-000005_credential_owner_matches_account/down.sql"),
            "DELETE FROM __diesel_schema_migrations WHERE version = '20261125000005';"
        ))
        .expect("000005 reverted by hand");
    for sql in [&insert_with_own_user_id, &move_own_credential] {
        assert_eq!(
            as_user(&mut conn, MALLORY, sql).expect("accepted without migration 000005"),
            1,
            "{sql}"
        );
    }
    assert_eq!(
        owner
            .run_migrations()
            .expect("re-apply 000005, 000006 and 000007")
            .len(),
        3
    );
    assert!(as_user(&mut conn, MALLORY, &insert_with_own_user_id).is_err());
    assert_eq!(rls.all_rows(), before, "nothing changed");

    // Mallory's legitimate writes still work in the same way.
    assert_eq!(
        as_user(
            &mut conn,
            MALLORY,
            &format!("UPDATE user_credentials SET nickname = 'Mine' WHERE id = '{own}'")
        )
        .expect("an update of her own credential"),
        1
    );
}

// ---------------------------------------------------------------------------
// d. The user context never outlives its transaction
// ---------------------------------------------------------------------------

fn the_user_context_ends_with_its_transaction() {
    let rls = Rls::setup();
    let store = rls.service_store();
    let alice = seed(&store, ALICE);
    let bob = seed(&store, BOB);
    drop(store);

    // On one plain connection.
    let mut conn = rls.service_connection();
    let set_alice = format!(
        "SELECT set_config('app.current_user_id', {}, true)",
        literal(ALICE)
    );
    for end in ["COMMIT", "ROLLBACK"] {
        conn.batch_execute("BEGIN").unwrap();
        conn.batch_execute(&set_alice).unwrap();
        assert_eq!(
            count(&mut conn, "user_credentials"),
            SEEDED.len() as i64,
            "inside the transaction: Alice's rows"
        );
        assert_eq!(count(&mut conn, "user_accounts"), 1);
        conn.batch_execute(end).unwrap();
        assert_eq!(
            count(&mut conn, "user_credentials"),
            0,
            "after {end}: no rows"
        );
        assert_eq!(count(&mut conn, "user_accounts"), 0);
        assert!(context_is_null(&mut conn), "after {end}: no context");
    }
    // A transaction-local setting outside an explicit transaction lasts one statement.
    conn.batch_execute(&set_alice).unwrap();
    assert_eq!(count(&mut conn, "user_credentials"), 0);
    assert!(context_is_null(&mut conn));
    drop(conn);

    // Through the crate, on a pool of exactly one connection.
    let single = CredentialStore::new(
        Database::open_with(
            &rls.service.url(),
            &DatabaseOptions::default().max_connections(1),
        )
        .expect("open a one-connection pool as the service role"),
        common::test_keyring(),
    );
    assert_eq!(
        single.credentials(&alice.account).unwrap().len(),
        SEEDED.len()
    );
    wait_for_sessions(&rls, 1);
    let bob_sees: BTreeSet<Uuid> = single
        .credentials(&bob.account)
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        bob_sees,
        bob.ids(),
        "Bob's call, right after Alice's on the same connection, sees only Bob's rows"
    );
    // With Alice's account id under Bob's user id, the connection Alice just used
    // shows nothing of hers.
    let forged = AccountScope::new(bob.account.user_id(), alice.account.id()).unwrap();
    assert!(single.credentials(&forged).unwrap().is_empty());
    // A failed call (its transaction rolled back) leaves no context either.
    assert!(matches!(
        single.insert_credential(
            &AccountScope::new(alice.account.user_id(), bob.account.id()).unwrap(),
            &NewUserCredential::new("polygon", "PK", "s")
        ),
        Err(Error::UnknownAccount { .. })
    ));
    assert_eq!(
        single.credentials(&bob.account).unwrap().len(),
        SEEDED.len()
    );
    assert_eq!(
        single.account_by_user_id(MALLORY).unwrap(),
        None,
        "a user without an account sees none, after Alice and Bob on the same connection"
    );
    assert_eq!(
        single.account(BOB, alice.account.id()).unwrap(),
        None,
        "Alice's account under Bob's context"
    );
    wait_for_sessions(&rls, 1);
}

/// Waits until the service role has exactly `expected` sessions: the pool's, once the
/// probe connection `Database::open_with` makes has gone.
fn wait_for_sessions(rls: &Rls, expected: i64) {
    let sql = format!(
        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE usename = {}",
        literal(&rls.service.role)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sessions = rls.db.scalar(&sql);
        if sessions == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the service role has {sessions} sessions, expected {expected}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// e. Backfill: refused under row-level security, done under BYPASSRLS
// ---------------------------------------------------------------------------

fn backfill_needs_the_maintenance_role() {
    let rls = Rls::setup();
    let store = rls.service_store();
    let alice = seed(&store, ALICE);
    let bob = seed(&store, BOB);
    // Rows some other writer left without a nickname, for two users.
    let cleared = [alice.nicknamed("Swing").id, bob.nicknamed("Live").id];
    let mut superuser = rls.superuser();
    for id in cleared {
        superuser
            .batch_execute(&format!(
                "UPDATE user_credentials SET nickname = NULL WHERE id = '{id}'"
            ))
            .unwrap();
    }
    let before = rls.all_rows();

    match store.maintenance().backfill_nicknames(100) {
        Err(Error::RowSecurityActive { operation }) => {
            assert_eq!(operation, "backfill_nicknames")
        }
        other => panic!("backfill as the service role: expected RowSecurityActive, got {other:?}"),
    }
    assert_eq!(
        rls.all_rows(),
        before,
        "the refused backfill changed nothing"
    );

    let maintenance = CredentialStore::new(
        Database::open(&rls.maintenance.url()).expect("open as the maintenance role"),
        common::test_keyring(),
    );
    assert_eq!(
        maintenance
            .maintenance()
            .backfill_nicknames(1)
            .expect("backfill as the maintenance role"),
        cleared.len() as u64,
        "one row per batch, both users' rows"
    );
    assert_eq!(
        maintenance.maintenance().backfill_nicknames(1).unwrap(),
        0,
        "nothing left"
    );

    // Exactly the cleared rows changed, and only in their nickname.
    let nickname_of = |id: Uuid| {
        lines(
            &mut rls.superuser(),
            &format!("SELECT nickname || '=' || credential_type AS line FROM user_credentials WHERE id = '{id}'"),
        )
    };
    assert_eq!(nickname_of(cleared[0]), ["alpaca_paper=alpaca_paper"]);
    assert_eq!(nickname_of(cleared[1]), ["alpaca_live=alpaca_live"]);
    let unchanged = |rows: Vec<String>| -> Vec<String> {
        rows.into_iter()
            .filter(|row| !cleared.iter().any(|id| row.contains(&id.to_string())))
            .collect()
    };
    assert_eq!(unchanged(rls.all_rows()), unchanged(before));
    assert_eq!(
        rls.all_rows().len(),
        2 + 2 * SEEDED.len(),
        "no row added or removed"
    );
}

/// README gives the maintenance role `rotate_keys` and `key_usage` too, with the
/// same grants: both refuse under row-level security and work under `BYPASSRLS`.
fn key_rotation_and_usage_need_the_maintenance_role() {
    let rls = Rls::setup();
    let (old, new) = (common::test_key(), common::test_key());
    let store_as = |url: &str, keys: &[&String]| {
        CredentialStore::new(
            Database::open(url).expect("open"),
            Keyring::from_fernet_keys(keys).expect("keyring"),
        )
    };
    // Alice's rows are sealed v3 under a data key the old key wraps; Bob's are
    // Fernet tokens of the old key, without a data key.
    let service = store_as(&rls.service.url(), &[&old]);
    let alice = seed(&service, ALICE);
    let bob = seed(&service.clone().with_format(CipherFormat::Fernet), BOB);
    let before = rls.all_rows();
    let data_keys_before = rls.data_keys();

    let service_rotating = store_as(&rls.service.url(), &[&new, &old]);
    match service_rotating.maintenance().rotate_keys(10, &mut |_| {}) {
        Err(Error::RowSecurityActive { operation }) => assert_eq!(operation, "rotate_keys"),
        other => panic!("rotate_keys as the service role: {other:?}"),
    }
    match service_rotating.maintenance().key_usage() {
        Err(Error::RowSecurityActive { operation }) => assert_eq!(operation, "key_usage"),
        other => panic!("key_usage as the service role: {other:?}"),
    }
    assert_eq!(
        rls.all_rows(),
        before,
        "the refused rotation changed nothing"
    );
    assert_eq!(rls.data_keys(), data_keys_before, "nor any data key");

    let maintenance = store_as(&rls.maintenance.url(), &[&new, &old]);
    let done = maintenance
        .maintenance()
        .rotate_keys(4, &mut |_| {})
        .expect("rotate_keys as the maintenance role");
    let credentials = 2 * SEEDED.len() as u64;
    // Alice's data key is re-wrapped (her credentials stay as they are); Bob's
    // credentials are sealed v3 under a data key made for him.
    assert_eq!(
        (done.total, done.rewritten, done.data_keys_rewrapped),
        (credentials, SEEDED.len() as u64, 1)
    );
    let primary = Keyring::from_fernet_keys([&new])
        .unwrap()
        .primary_key_id()
        .to_owned();
    assert_eq!(
        rls.data_keys(),
        [
            format!("{ALICE} keyring {primary}"),
            format!("{BOB} keyring {primary}")
        ]
        .into_iter()
        .collect::<BTreeSet<_>>(),
        "both data keys wrapped by the new key"
    );
    let usage: Vec<(CipherFormat, Option<u8>, Option<String>, u64)> = maintenance
        .maintenance()
        .key_usage()
        .expect("key_usage as the maintenance role")
        .into_iter()
        .map(|u| (u.format, u.version, u.key_id, u.credentials))
        .collect();
    assert_eq!(
        usage,
        [(CipherFormat::Sealed, Some(3), Some(primary), credentials)],
        "every row sealed v3 under a data key the new key wraps"
    );

    // Both users' keys read with the new key alone, as the service role.
    let new_only = store_as(&rls.service.url(), &[&new]);
    for user in [&alice, &bob] {
        let user_id = user.account.user_id();
        for credential in &user.credentials {
            let nickname = credential.nickname.as_deref().unwrap();
            let keys = new_only
                .keys(&user.account, credential.id)
                .expect("decrypt with the new key");
            assert_eq!(
                keys.api_key().expose_secret(),
                format!("PK-{user_id}-{nickname}")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs `sql` in a transaction whose user context is `user`, as the policies expect
/// it (`set_config(…, true)`), and rolls the transaction back whatever happens.
fn as_user(conn: &mut PgConnection, user: &str, sql: &str) -> QueryResult<usize> {
    let mut outcome = None;
    let _ = conn.transaction::<(), DieselError, _>(|c| {
        diesel::sql_query("SELECT set_config('app.current_user_id', $1, true)")
            .bind::<Text, _>(user)
            .execute(c)?;
        outcome = Some(diesel::sql_query(sql).execute(c));
        Err(DieselError::RollbackTransaction)
    });
    outcome.expect("the user context was set")
}

/// `SELECT COUNT(*)` of a table, as `conn` sees it.
fn count(conn: &mut PgConnection, table: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}"))
        .get_result::<Count>(conn)
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .n
}

/// Whether `current_user_id()` is NULL on `conn`.
fn context_is_null(conn: &mut PgConnection) -> bool {
    #[derive(QueryableByName)]
    struct Null {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        is_null: bool,
    }
    diesel::sql_query("SELECT current_user_id() IS NULL AS is_null")
        .get_result::<Null>(conn)
        .expect("current_user_id()")
        .is_null
}

/// The text column `line` of every row of a query.
fn lines(conn: &mut PgConnection, sql: &str) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        line: String,
    }
    diesel::sql_query(sql)
        .load::<Line>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|l| l.line)
        .collect()
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The statements of a piece of SQL, whitespace collapsed, comments left out.
fn statements(sql: &str) -> Vec<String> {
    sql.lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join(" ")
        .split(';')
        .map(|statement| statement.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|statement| !statement.is_empty())
        .collect()
}

/// The tests' roles are `docs/database.md`'s: the block creates exactly the three
/// roles the tests make from it, every statement of the block belongs to one of
/// them, and `common::SERVICE_ROLE` (which other tests use) is the documented
/// service role statement for statement.
fn the_documented_roles_are_the_ones_tested() {
    use common::{documented_roles_block, DOCUMENTED_ROLES, SERVICE_ROLE};
    let block = statements(documented_roles_block());
    let created: Vec<&str> = block
        .iter()
        .filter_map(|statement| statement.strip_prefix("CREATE ROLE "))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(
        created, DOCUMENTED_ROLES,
        "the roles docs/database.md creates"
    );
    let documented: Vec<String> = DOCUMENTED_ROLES
        .iter()
        .flat_map(|role| statements(&documented_role(role, role, common::DOCUMENTED_DATABASE)))
        .collect();
    let block_without_passwords: Vec<String> = block
        .iter()
        .map(|statement| statement.replace(" PASSWORD '\u{2026}'", ""))
        .collect();
    assert_eq!(documented, block_without_passwords);
    assert_eq!(
        statements(SERVICE_ROLE),
        statements(&documented_role(
            "credential_service",
            "{role}",
            "{database}"
        )),
        "common::SERVICE_ROLE is not docs/database.md's service role"
    );
}

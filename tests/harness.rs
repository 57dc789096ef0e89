//! Checks of the test harness itself.

mod common;

use common::{with_database, with_user};

#[test]
fn database_urls_are_rewritten() {
    assert_eq!(
        with_database("postgres://u@h:5432/postgres", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        with_database("postgres://u@h/postgres?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    assert_eq!(
        with_user("postgres://postgres@127.0.0.1:5432/db", "svc"),
        "postgres://svc@127.0.0.1:5432/db"
    );
    assert_eq!(
        with_user("postgres://127.0.0.1/db", "svc"),
        "postgres://svc@127.0.0.1/db"
    );
}

//! SQL types that one `table!` can use on every backend.
//!
//! PostgreSQL stores ids as `UUID` and times as `TIMESTAMPTZ`; SQLite has neither, so
//! the same columns are `TEXT` there:
//!
//! - [`DbUuid`]: `UUID` on PostgreSQL; on SQLite the lowercase hyphenated form,
//!   36 characters (`0190a6f2-8c3e-7b4a-9f1d-2e5c8a7b6d4f`).
//! - [`DbTimestamp`]: `TIMESTAMPTZ` on PostgreSQL; on SQLite UTC text in one
//!   fixed-width format, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds, as PostgreSQL
//!   keeps them), so that text order is time order.
//!
//! - On MariaDB/MySQL, [`DbUuid`] is `CHAR(36)` text as on SQLite and
//!   [`DbTimestamp`] is `DATETIME(6)` holding UTC (every connection sets
//!   `time_zone = '+00:00'`).
//!
//! Rust code sees [`uuid::Uuid`] and [`chrono::DateTime<Utc>`] on every backend.
//!
//! Not covered by semver (hidden from the docs), as `schema`.

use chrono::{DateTime, Utc};
use diesel::deserialize::{self, FromSql};
use diesel::expression::AsExpression;
use diesel::query_builder::QueryId;
use diesel::serialize::{self, ToSql};
use diesel::sql_types::SqlType;
use uuid::Uuid;

/// A UUID column: `UUID` on PostgreSQL, 36-character `TEXT` on SQLite, `CHAR(36)`
/// on MySQL.
#[derive(Debug, Clone, Copy, Default, SqlType, QueryId)]
#[cfg_attr(
    feature = "postgres",
    diesel(postgres_type(oid = 2950, array_oid = 2951))
)]
#[cfg_attr(feature = "sqlite", diesel(sqlite_type(name = "Text")))]
#[cfg_attr(feature = "mysql", diesel(mysql_type(name = "String")))]
pub struct DbUuid;

/// A point in time: `TIMESTAMPTZ` on PostgreSQL, fixed-width UTC `TEXT` on SQLite,
/// `DATETIME(6)` in UTC on MySQL.
#[derive(Debug, Clone, Copy, Default, SqlType, QueryId)]
#[cfg_attr(
    feature = "postgres",
    diesel(postgres_type(oid = 1184, array_oid = 1185))
)]
#[cfg_attr(feature = "sqlite", diesel(sqlite_type(name = "Text")))]
#[cfg_attr(feature = "mysql", diesel(mysql_type(name = "DateTime")))]
pub struct DbTimestamp;

/// The text form of a timestamp on SQLite: fixed width, UTC, microseconds.
pub(crate) const SQLITE_TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Formats a time the way SQLite columns store it.
pub(crate) fn sqlite_timestamp(time: &DateTime<Utc>) -> String {
    time.format(SQLITE_TIMESTAMP_FORMAT).to_string()
}

/// Parses a SQLite timestamp column: the crate's own format or any RFC 3339 time.
pub(crate) fn parse_sqlite_timestamp(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc))
}

/// Truncates a time to the microsecond precision every backend stores, so that a value
/// written and read back compares equal.
pub(crate) fn to_stored_precision(time: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    time.trunc_subsecs(6)
}

// Values are bound through these wrappers: diesel's blanket `AsExpression` impl
// keeps a crate from implementing it for the foreign `Uuid` and `DateTime<Utc>`.
// Loading needs no wrapper: `FromSql` is implemented on the foreign types below.

/// A UUID bound as a [`DbUuid`] parameter.
#[derive(Debug, Clone, Copy, AsExpression)]
#[diesel(sql_type = DbUuid)]
pub(crate) struct SqlUuid(pub Uuid);

/// A time bound as a [`DbTimestamp`] parameter.
#[derive(Debug, Clone, Copy, AsExpression)]
#[diesel(sql_type = DbTimestamp)]
pub(crate) struct SqlTime(pub DateTime<Utc>);

impl<DB: diesel::backend::Backend> ToSql<DbUuid, DB> for SqlUuid
where
    Uuid: ToSql<DbUuid, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, DB>) -> serialize::Result {
        self.0.to_sql(out)
    }
}

impl<DB: diesel::backend::Backend> ToSql<DbTimestamp, DB> for SqlTime
where
    DateTime<Utc>: ToSql<DbTimestamp, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, DB>) -> serialize::Result {
        self.0.to_sql(out)
    }
}

// diesel derives `Queryable` for `uuid::Uuid` only with its PostgreSQL backend; a
// build without it (SQLite or MySQL alone) gets the impl here, for the crate's own
// id type.
#[cfg(not(feature = "postgres"))]
impl<DB: diesel::backend::Backend> diesel::Queryable<DbUuid, DB> for Uuid
where
    Uuid: FromSql<DbUuid, DB>,
{
    type Row = Uuid;

    fn build(row: Uuid) -> deserialize::Result<Self> {
        Ok(row)
    }
}

/// A text column read byte for byte: bytes that are not UTF-8 (SQLite stores
/// whatever it is given) become U+FFFD instead of failing the whole row, so a
/// damaged ciphertext is reported as undecryptable, for its credential alone.
#[derive(Debug, Clone, PartialEq, Eq, diesel::deserialize::FromSqlRow)]
pub(crate) struct LossyText(pub String);

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use diesel::pg::{Pg, PgValue};
    use diesel::sql_types::{Timestamptz, Uuid as PgUuid};

    impl FromSql<diesel::sql_types::Text, Pg> for LossyText {
        fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
            Ok(LossyText(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ))
        }
    }

    impl ToSql<DbUuid, Pg> for Uuid {
        fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, Pg>) -> serialize::Result {
            <Uuid as ToSql<PgUuid, Pg>>::to_sql(self, out)
        }
    }

    impl FromSql<DbUuid, Pg> for Uuid {
        fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
            <Uuid as FromSql<PgUuid, Pg>>::from_sql(value)
        }
    }

    impl ToSql<DbTimestamp, Pg> for DateTime<Utc> {
        fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, Pg>) -> serialize::Result {
            <DateTime<Utc> as ToSql<Timestamptz, Pg>>::to_sql(self, out)
        }
    }

    impl FromSql<DbTimestamp, Pg> for DateTime<Utc> {
        fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
            <DateTime<Utc> as FromSql<Timestamptz, Pg>>::from_sql(value)
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use diesel::serialize::IsNull;
    use diesel::sql_types::Text;
    use diesel::sqlite::{Sqlite, SqliteValue};

    impl FromSql<Text, Sqlite> for LossyText {
        fn from_sql(mut value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
            Ok(LossyText(
                String::from_utf8_lossy(value.read_blob()).into_owned(),
            ))
        }
    }

    impl ToSql<DbUuid, Sqlite> for Uuid {
        fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, Sqlite>) -> serialize::Result {
            out.set_value(self.hyphenated().to_string());
            Ok(IsNull::No)
        }
    }

    impl FromSql<DbUuid, Sqlite> for Uuid {
        fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
            let text = <String as FromSql<Text, Sqlite>>::from_sql(value)?;
            Ok(Uuid::parse_str(&text)?)
        }
    }

    impl ToSql<DbTimestamp, Sqlite> for DateTime<Utc> {
        fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, Sqlite>) -> serialize::Result {
            out.set_value(sqlite_timestamp(self));
            Ok(IsNull::No)
        }
    }

    impl FromSql<DbTimestamp, Sqlite> for DateTime<Utc> {
        fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
            let text = <String as FromSql<Text, Sqlite>>::from_sql(value)?;
            Ok(parse_sqlite_timestamp(&text)?)
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use chrono::NaiveDateTime;
    use diesel::mysql::{Mysql, MysqlValue};
    use diesel::serialize::IsNull;
    use diesel::sql_types::{Datetime, Text};
    use std::io::Write;

    impl FromSql<Text, Mysql> for LossyText {
        fn from_sql(value: MysqlValue<'_>) -> deserialize::Result<Self> {
            Ok(LossyText(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ))
        }
    }

    impl ToSql<DbUuid, Mysql> for Uuid {
        fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, Mysql>) -> serialize::Result {
            let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
            out.write_all(self.hyphenated().encode_lower(&mut text).as_bytes())?;
            Ok(IsNull::No)
        }
    }

    impl FromSql<DbUuid, Mysql> for Uuid {
        fn from_sql(value: MysqlValue<'_>) -> deserialize::Result<Self> {
            Ok(Uuid::try_parse_ascii(value.as_bytes())?)
        }
    }

    impl ToSql<DbTimestamp, Mysql> for DateTime<Utc> {
        fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, Mysql>) -> serialize::Result {
            let utc = self.naive_utc();
            <NaiveDateTime as ToSql<Datetime, Mysql>>::to_sql(&utc, &mut out.reborrow())
        }
    }

    impl FromSql<DbTimestamp, Mysql> for DateTime<Utc> {
        fn from_sql(value: MysqlValue<'_>) -> deserialize::Result<Self> {
            <NaiveDateTime as FromSql<Datetime, Mysql>>::from_sql(value).map(|t| t.and_utc())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_timestamps_are_fixed_width_and_sort_as_time() {
        let times = [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00.000001Z",
            "2026-01-01T00:00:00.1Z",
            "2026-01-01T00:00:01Z",
            "2026-12-31T23:59:59.999999Z",
        ]
        .map(|t| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc));
        let texts: Vec<String> = times.iter().map(sqlite_timestamp).collect();
        assert!(texts.iter().all(|t| t.len() == 27), "{texts:?}");
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(sorted, texts);
        for (time, text) in times.iter().zip(&texts) {
            assert_eq!(parse_sqlite_timestamp(text).unwrap(), *time);
        }
    }

    #[test]
    fn stored_precision_drops_nanoseconds_only() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            sqlite_timestamp(&to_stored_precision(t)),
            "2026-01-01T00:00:00.123456Z"
        );
    }
}

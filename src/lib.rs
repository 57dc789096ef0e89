#![recursion_limit = "256"]
#![doc = include_str!("../README.md")]
//!
//! ## Cargo features
//!
#![doc = document_features::document_features!()]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// A build without every backend leaves code unused that only those backends call.
#![cfg_attr(
    not(all(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(dead_code)
)]

#[cfg(feature = "async")]
mod async_database;
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub mod async_store;
mod backend;
pub mod connection;
pub mod crypto;
pub mod error;
mod executor;
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod internals;
mod keys_file;
pub mod maintenance;
pub mod migrations;
pub mod models;
mod ops;
mod query;
pub mod repository;
// `schema` and `sql_types` are for raw diesel queries beside the crate; hidden from
// the docs and not covered by semver: a migration may change them in any release.
#[doc(hidden)]
pub mod schema;
#[doc(hidden)]
pub mod sql_types;
mod steps;
pub mod validation;

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub use async_store::{AsyncCredentialRepository, AsyncCredentialStore, AsyncDatabase};
pub use connection::{Backend, Database, DatabaseOptions};
#[cfg(feature = "aws-kms")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws-kms")))]
pub use crypto::{AwsKms, AwsKmsBuilder};
pub use crypto::{
    CipherFormat, CredentialKeys, DataKey, DataKeyCache, FormatVersion, KeyProvider, Keyring,
    KEYS_ENV_VAR,
};
pub use error::{Error, ErrorKind, Field, Result, Rule, Unit};
pub use maintenance::{
    BackfillProgress, KeyUsage, Maintenance, Outcome, RotationProgress, DEFAULT_RETIRED_KEY_GRACE,
};
pub use models::{
    AccountScope, CredentialUpdate, NewUserAccount, NewUserCredential, Patch, UserAccount,
    UserCredential,
};
pub use repository::{CredentialRepository, CredentialStore};
pub use validation::{CredentialType, Nickname};

// The types of other crates that the API hands out or takes, so that a user needs
// no dependency of their own to name them.
pub use chrono::{DateTime, Utc};
/// `secrecy`, whose `ExposeSecret` reads a [`CredentialKeys`]' keys.
pub use secrecy;
pub use secrecy::{ExposeSecret, SecretString};
pub use uuid::Uuid;

/// The code in the documentation beside the README, compiled and run as doc tests.
#[cfg(doctest)]
mod documentation {
    #[doc = include_str!("../docs/database.md")]
    struct Databases;
    #[doc = include_str!("../docs/keys.md")]
    struct Keys;
    #[doc = include_str!("../docs/operators.md")]
    struct Operators;
    #[doc = include_str!("../docs/guarantees.md")]
    struct Guarantees;
    #[doc = include_str!("../docs/contributing.md")]
    struct Contributing;
}

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
pub mod schema;
pub mod sql_types;
mod steps;
pub mod validation;

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub use async_store::{AsyncCredentialStore, AsyncDatabase};
pub use connection::{Backend, Database, DatabaseOptions};
pub use crypto::{CipherFormat, CredentialKeys, KeyProvider, Keyring, KEYS_ENV_VAR};
pub use error::{Error, ErrorKind, Field, Result, Rule, Unit};
pub use maintenance::{BackfillProgress, KeyUsage, Maintenance, Outcome, RotationProgress};
pub use models::{
    CredentialUpdate, NewUserAccount, NewUserCredential, Patch, UserAccount, UserCredential,
};
pub use repository::{CredentialRepository, CredentialStore};
pub use validation::{CredentialType, Nickname};

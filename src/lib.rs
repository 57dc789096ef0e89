#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod connection;
pub mod crypto;
pub mod error;
pub mod migrations;
pub mod models;
pub mod repository;
pub mod schema;
pub mod sql_types;
pub mod validation;

pub use connection::{Backend, Database, DatabaseOptions};
pub use crypto::{CipherFormat, CredentialKeys, Keyring, KEYS_ENV_VAR};
pub use error::{Error, Field, Result, Rule, Unit};
pub use models::{
    CredentialUpdate, NewUserAccount, NewUserCredential, Patch, UserAccount, UserCredential,
};
pub use repository::{CredentialRepository, CredentialStore, KeyUsage, RotationProgress};
pub use validation::{CredentialType, Nickname};

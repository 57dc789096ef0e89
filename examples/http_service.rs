//! A JSON HTTP service over the async store (axum on tokio).
//!
//! ```sh
//! cargo run --all-features --example http_service                     # SQLite, ephemeral key
//! DATABASE_URL=postgres://postgres@127.0.0.1/test CREDENTIAL_STORE_KEYS=… \
//!     LISTEN_ADDR=127.0.0.1:8080 cargo run --all-features --example http_service
//! ```
//!
//! | route | does |
//! |---|---|
//! | `POST /accounts` `{"user_id", "account_name"}` | 201 the account; 409 if the user has one |
//! | `POST /accounts/{user_id}/credentials` `{"credential_type", "api_key", "secret_key", "nickname"?}` | 201 the credential, without its keys |
//! | `GET /accounts/{user_id}/credentials` | 200 every credential, newest first, with `api_key_masked` |
//! | `GET /accounts/{user_id}/credentials/by-nickname/{nickname}` | 200 the one credential; 404 none; 409 several |
//!
//! Every error is `{"error": "…"}`, plus `"field"` and `"rule"` when an input broke a
//! rule (422). A plaintext key never leaves the service except as `api_key_masked`
//! (`PK…2A`), and never reaches a log line.
//!
//! Configuration, from the environment:
//! - `DATABASE_URL`: `postgres://…`, `sqlite://…` or a file path. Unset: the SQLite
//!   file `credential-store-http.db`, in the current directory when keys are
//!   configured, else in a temporary directory deleted at exit (its rows could not be
//!   read with the next run's key anyway).
//! - `CREDENTIAL_STORE_KEYS`: comma-separated Fernet keys. Unset: one random key for
//!   this run only, with a warning.
//! - `LISTEN_ADDR`: default `127.0.0.1:3000`.
//! - `RUST_LOG`: log filter (default `info`), to stderr.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use credential_store::{
    AsyncCredentialStore, AsyncDatabase, Error, Keyring, NewUserAccount, NewUserCredential,
    UserAccount, UserCredential, KEYS_ENV_VAR,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use std::time::Instant;
use tokio::net::TcpListener;

const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:3000";
const DEFAULT_DB_FILE: &str = "credential-store-http.db";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let (keyring, ephemeral_key) = match Keyring::from_env() {
        Ok(keyring) => (keyring, false),
        Err(Error::NoKeyConfigured { .. }) => {
            let key = Keyring::generate_key();
            (Keyring::from_fernet_keys([key.expose_secret()])?, true)
        }
        Err(other) => return Err(other.into()),
    };
    if ephemeral_key {
        eprintln!(
            "warning: {KEYS_ENV_VAR} is not set; using a random key for this run only: \
             what is stored now cannot be decrypted after a restart"
        );
    }

    // Kept alive until `main` returns, then deleted.
    let mut _temporary_dir = None;
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            println!("database: DATABASE_URL ({})", redact_password(&url));
            url
        }
        Err(_) if ephemeral_key => {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join(DEFAULT_DB_FILE);
            println!(
                "database: SQLite file {} (temporary, deleted at exit; set DATABASE_URL to keep data)",
                path.display()
            );
            _temporary_dir = Some(dir);
            path.to_str()
                .ok_or("temporary path is not UTF-8")?
                .to_owned()
        }
        Err(_) => {
            let path = std::env::current_dir()?.join(DEFAULT_DB_FILE);
            println!(
                "database: SQLite file {} (current directory)",
                path.display()
            );
            path.to_str()
                .ok_or("current directory is not UTF-8")?
                .to_owned()
        }
    };

    let db = AsyncDatabase::open(&url).await?;
    let applied = db.run_migrations().await?;
    println!(
        "database: {:?} backend, {} migration(s) applied now",
        db.backend(),
        applied.len()
    );
    let store = AsyncCredentialStore::new(db, keyring);

    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| DEFAULT_LISTEN_ADDR.to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);

    // Ctrl-C or SIGTERM stops accepting and drops open connections: each request is
    // one short transaction, which the database rolls back if it was cut off.
    tokio::select! {
        served = serve(listener, store) => served?,
        () = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

/// Serves the API on `listener` until the returned future is dropped.
pub async fn serve(listener: TcpListener, store: AsyncCredentialStore) -> std::io::Result<()> {
    axum::serve(listener, router(store)).await
}

/// The API's routes, over `store`.
pub fn router(store: AsyncCredentialStore) -> Router {
    Router::new()
        .route("/accounts", post(create_account))
        .route(
            "/accounts/{user_id}/credentials",
            post(create_credential).get(credentials),
        )
        .route(
            "/accounts/{user_id}/credentials/by-nickname/{nickname}",
            get(credential_by_nickname),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(middleware::from_fn(log_request))
        .with_state(store)
}

// ---------------------------------------------------------------------------------
// Handlers

#[derive(Debug, Deserialize)]
struct CreateAccount {
    user_id: String,
    account_name: String,
}

async fn create_account(
    State(store): State<AsyncCredentialStore>,
    ApiJson(body): ApiJson<CreateAccount>,
) -> Result<(StatusCode, Json<UserAccount>), ApiError> {
    let account = store
        .create_account(&NewUserAccount::new(&body.user_id, &body.account_name))
        .await?;
    Ok((StatusCode::CREATED, Json(account)))
}

/// `Debug` shows `[REDACTED]` for both keys.
#[derive(Debug, Deserialize)]
struct CreateCredential {
    credential_type: String,
    #[serde(deserialize_with = "secret")]
    api_key: SecretString,
    #[serde(deserialize_with = "secret")]
    secret_key: SecretString,
    #[serde(default)]
    nickname: Option<String>,
}

fn secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SecretString, D::Error> {
    String::deserialize(deserializer).map(SecretString::from)
}

async fn create_credential(
    State(store): State<AsyncCredentialStore>,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateCredential>,
) -> Result<(StatusCode, Json<UserCredential>), ApiError> {
    let account = account_of(&store, &user_id).await?;
    let mut new = NewUserCredential::new(&body.credential_type, body.api_key, body.secret_key);
    new.nickname = body.nickname.as_deref();
    let credential = store.insert_credential(&account, &new).await?;
    Ok((StatusCode::CREATED, Json(credential)))
}

/// A credential as listed: its fields and a masked API key. `api_key_masked` is
/// `null` when the keys are not handed out (inactive or expired credential).
#[derive(Debug, Serialize)]
struct CredentialView {
    #[serde(flatten)]
    credential: UserCredential,
    api_key_masked: Option<String>,
}

async fn credentials(
    State(store): State<AsyncCredentialStore>,
    ApiPath(user_id): ApiPath<String>,
) -> Result<Json<Vec<CredentialView>>, ApiError> {
    let account = account_of(&store, &user_id).await?;
    let credentials = store.credentials(&account).await?;
    let mut views = Vec::with_capacity(credentials.len());
    for credential in credentials {
        views.push(view(&store, &account, credential).await?);
    }
    Ok(Json(views))
}

async fn credential_by_nickname(
    State(store): State<AsyncCredentialStore>,
    ApiPath((user_id, nickname)): ApiPath<(String, String)>,
) -> Result<Json<CredentialView>, ApiError> {
    let account = account_of(&store, &user_id).await?;
    match store.credential_by_nickname(&account, &nickname).await? {
        Some(credential) => Ok(Json(view(&store, &account, credential).await?)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no credential nicknamed `{nickname}` for user `{user_id}`"),
        )),
    }
}

async fn account_of(store: &AsyncCredentialStore, user_id: &str) -> Result<UserAccount, ApiError> {
    store.account_by_user_id(user_id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no account for user `{user_id}`"),
        )
    })
}

async fn view(
    store: &AsyncCredentialStore,
    account: &UserAccount,
    credential: UserCredential,
) -> Result<CredentialView, ApiError> {
    let api_key_masked = match store.keys(account, credential.id).await {
        Ok(keys) => Some(mask_api_key(keys.api_key().expose_secret())),
        Err(Error::CredentialInactive { .. } | Error::CredentialExpired { .. }) => None,
        // A key missing from the keyring should not hide the other credentials.
        Err(err @ (Error::Decryption { .. } | Error::UnknownKey { .. })) => {
            tracing::warn!(credential_id = %credential.id, error = %err, "cannot mask api key");
            None
        }
        Err(err) => return Err(err.into()),
    };
    Ok(CredentialView {
        credential,
        api_key_masked,
    })
}

/// The first two and the last two characters of an API key (`PK…2A`); a key of six
/// characters or fewer is all `•`.
pub fn mask_api_key(api_key: &str) -> String {
    let count = api_key.chars().count();
    if count <= 6 {
        return "•".repeat(count);
    }
    let head: String = api_key.chars().take(2).collect();
    let tail: String = api_key.chars().skip(count - 2).collect();
    format!("{head}…{tail}")
}

// ---------------------------------------------------------------------------------
// Errors

/// An error response: `{"error": …, "field"?: …, "rule"?: …, "matches"?: …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    /// How many credentials an ambiguous nickname matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    matches: Option<usize>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: message.into(),
                field: None,
                rule: None,
                matches: None,
            },
        }
    }

    fn field(mut self, field: impl Into<String>, rule: impl Into<String>) -> Self {
        self.body.field = Some(field.into());
        self.body.rule = Some(rule.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        // The crate's messages name the thing and the rule, never key material.
        let message = err.to_string();
        match err {
            Error::Invalid { field, rule } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
                    .field(field.as_str(), rule.to_string())
            }
            Error::AccountExists { .. } => ApiError::new(StatusCode::CONFLICT, message),
            Error::AmbiguousNickname { matches, .. } => {
                let mut api = ApiError::new(StatusCode::CONFLICT, message);
                api.body.matches = Some(matches);
                api
            }
            Error::UnknownAccount { .. }
            | Error::AccountUserMismatch { .. }
            | Error::CredentialNotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, message),
            Error::CredentialInactive { .. } | Error::CredentialExpired { .. } => {
                ApiError::new(StatusCode::CONFLICT, message)
            }
            Error::Busy(_)
            | Error::Pool(_)
            | Error::PoolUnavailable { .. }
            | Error::ConnectionLost(_) => {
                tracing::warn!(error = %error_chain(&err), "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; retry later",
                )
            }
            err => {
                tracing::error!(error = %error_chain(&err), "request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
            }
        }
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Json<T>` whose rejections are [`ApiError`]s: malformed JSON and bodies of the
/// wrong shape are 422.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::JsonSyntaxError(rejection)) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                // serde_json's syntax messages give a position, never the input.
                format!("malformed JSON: {}", after_colon(&rejection.body_text())),
            )),
            Err(JsonRejection::JsonDataError(rejection)) => {
                Err(data_error(after_colon(&rejection.body_text())))
            }
            Err(rejection) => Err(ApiError::new(rejection.status(), rejection.body_text())),
        }
    }
}

/// axum's `"Failed to …: detail"` → `detail`.
fn after_colon(text: &str) -> &str {
    text.split_once(": ").map_or(text, |(_, detail)| detail)
}

/// A body that is JSON but not the expected object, from serde's message
/// (`[path: ]missing field `x` at …` or `[path: ]invalid type: integer `5`, expected a
/// string at …`). The value that was sent is left out: it may be a key.
fn data_error(detail: &str) -> ApiError {
    let unprocessable = |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message);
    if let Some((path, rest)) = detail.split_once("invalid type: ") {
        let expected = rest.rsplit_once(", expected ").map(|(_, expected)| {
            expected
                .rsplit_once(" at line ")
                .map_or(expected, |(e, _)| e)
        });
        // A top-level field; not the body itself, nor `[0]` (a struct sent as an array).
        let field = path
            .strip_suffix(": ")
            .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        return match (field, expected) {
            (Some(field), Some(expected)) => {
                unprocessable(format!("invalid {field}: must be {expected}"))
                    .field(field, format!("must be {expected}"))
            }
            _ => unprocessable("the request body must be a JSON object".into()),
        };
    }
    if let Some(rest) = detail.split_once("missing field `").map(|(_, rest)| rest) {
        if let Some((field, _)) = rest.split_once('`') {
            return unprocessable(format!("missing field `{field}`")).field(field, "required");
        }
    }
    unprocessable("the request body does not have the expected fields".into())
}

/// `Path<T>` whose rejections are [`ApiError`]s.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    axum::extract::Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::new(rejection.status(), rejection.body_text())),
        }
    }
}

// ---------------------------------------------------------------------------------
// Logging and shutdown

/// One log line per request: the route template (not the path, which holds user ids
/// and nicknames), the status and the time taken. Bodies are never logged.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched>", MatchedPath::as_str)
        .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        route,
        status = response.status().as_u16(),
        elapsed = ?started.elapsed(),
        "request"
    );
    response
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// A database URL with its password, if any, replaced by `***`.
fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

//! The HTTP example (`examples/http_service.rs`) served on a real TCP port and driven
//! with a real HTTP client, on SQLite and on PostgreSQL.
//!
//! Every log line of the test process (all targets, TRACE) is captured, and each test
//! checks that none of its plaintext keys reached one. Tests run in parallel into the
//! one log: each test's runtime names its threads after the test, every line carries
//! the name of the thread that wrote it, and a test looks for its own requests only
//! among the lines of its own threads.

#[path = "../examples/http_service.rs"]
#[allow(dead_code)]
mod http_service;

mod common;

use common::TestDb;
use credential_store::{AsyncCredentialStore, AsyncDatabase, NewUserCredential};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use std::sync::{Mutex, OnceLock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

fn main() {
    common::trials::run(vec![
        accounts_credentials_and_nickname_lookups::tests(),
        bad_input_is_refused_with_the_field_named::tests(),
        unusable_credentials_list_without_a_mask::tests(),
        unexpected_errors_are_500_without_details::tests(),
        trial!(api_keys_are_masked_to_their_first_and_last_two_characters),
    ]);
}

// ---------------------------------------------------------------------------------
// Harness

/// The service on 127.0.0.1:<random port>, with a client and the store behind it.
struct Server {
    client: reqwest::Client,
    base: Url,
    store: AsyncCredentialStore,
    task: JoinHandle<std::io::Result<()>>,
    /// The name of the threads the service runs on: the test's tag in the log.
    tag: String,
}

/// A response: status, raw body and the body as JSON (`Null` if it is not JSON).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    text: String,
    json: Value,
}

impl Server {
    async fn start(db: &TestDb) -> Server {
        capture_logs();
        let database = AsyncDatabase::open(&db.url).await.expect("open database");
        database.run_migrations().await.expect("migrations");
        let store = AsyncCredentialStore::new(database, common::test_keyring());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(http_service::serve(listener, store.clone()));
        Server {
            client: reqwest::Client::new(),
            base: Url::parse(&format!("http://{addr}/")).unwrap(),
            store,
            task,
            tag: TEST_TAG.with(Clone::clone),
        }
    }

    /// The URL of `segments`, each percent-encoded as one path segment.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .unwrap()
            .pop_if_empty()
            .extend(segments);
        url
    }

    async fn get(&self, segments: &[&str]) -> Reply {
        reply(self.client.get(self.url(segments)).send().await).await
    }

    async fn post(&self, segments: &[&str], body: Value) -> Reply {
        reply(
            self.client
                .post(self.url(segments))
                .json(&body)
                .send()
                .await,
        )
        .await
    }

    /// POSTs `body` as it is, with `Content-Type: application/json`.
    async fn post_raw(&self, segments: &[&str], body: &'static str) -> Reply {
        let request = self
            .client
            .post(self.url(segments))
            .header("content-type", "application/json")
            .body(body);
        reply(request.send().await).await
    }

    async fn create_account(&self, user_id: &str) {
        let r = self
            .post(
                &["accounts"],
                json!({ "user_id": user_id, "account_name": "Ada" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn reply(response: reqwest::Result<reqwest::Response>) -> Reply {
    let response = response.expect("request sent");
    let status = response.status();
    let text = response.text().await.expect("response body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, text, json }
}

/// Asserts the shape every error shares: a JSON object with a non-empty `error`.
fn assert_error(r: &Reply, status: StatusCode) {
    assert_eq!(r.status, status, "{}", r.text);
    let message = r.json["error"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "no error message: {}", r.text);
}

fn assert_invalid(r: &Reply, field: &str) {
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["field"], field, "{}", r.text);
    assert!(r.json["rule"].as_str().is_some_and(|rule| !rule.is_empty()));
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every event of the process, at every level, to [`LOGS`], each line with
/// the name of the thread that wrote it.
fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_thread_names(true)
            .with_writer(|| LogSink)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

tokio::task_local! {
    /// The test's tag: the name of its runtime's threads.
    static TEST_TAG: String;
}

impl Server {
    /// The log lines written by this test's threads (those that carry its tag).
    fn own_log_lines(&self) -> Vec<String> {
        let tag = format!(" {} ", self.tag);
        logs()
            .lines()
            .filter(|line| line.contains(&tag))
            .map(str::to_owned)
            .collect()
    }

    /// Asserts that this test's threads logged a line holding every one of `parts`.
    fn assert_logged(&self, parts: &[&str]) {
        let own = self.own_log_lines();
        assert!(
            own.iter()
                .any(|line| parts.iter().all(|part| line.contains(part))),
            "no log line of {} holds {parts:?}; its lines:\n{}",
            self.tag,
            own.join("\n")
        );
    }
}

/// Asserts that one of this test's requests was logged, as the service logs each
/// one (the route template and the status), and that no secret reached any log
/// line of any test.
fn assert_logs_free_of(server: &Server, secrets: &[&str]) {
    server.assert_logged(&[" request ", "route=", "status="]);
    let logs = logs();
    for secret in secrets {
        assert!(!logs.contains(secret), "a plaintext key reached the logs");
    }
}

/// `name::sqlite` and `name::postgres` running `async fn body(&TestDb)`, each on a
/// multi-threaded runtime of its own whose threads are named after the test (its
/// tag in the log, [`TEST_TAG`]); `name::tests()` lists them.
macro_rules! on_both_backends_async {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            use crate::common::trials::{test_name, Service, Test};

            fn run(db: TestDb, leaf: &str) {
                let tag = test_name(module_path!(), leaf);
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(tag.clone())
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(TEST_TAG.scope(tag, $body(&db)));
            }

            pub fn tests() -> Vec<Test> {
                vec![
                    Test::new(test_name(module_path!(), "sqlite"), || {
                        run(TestDb::sqlite(), "sqlite")
                    }),
                    Test::new(test_name(module_path!(), "postgres"), || {
                        run(TestDb::postgres(), "postgres")
                    })
                    .needs(&[Service::Postgres]),
                ]
            }
        }
    };
}

// ---------------------------------------------------------------------------------
// Tests

on_both_backends_async!(accounts_credentials_and_nickname_lookups, nickname_lookups);

async fn nickname_lookups(db: &TestDb) {
    let server = Server::start(db).await;
    // A user id as auth providers make them: `|` and `/` travel percent-encoded.
    let user = "google-oauth2|1/ada x";

    let created = server
        .post(
            &["accounts"],
            json!({ "user_id": user, "account_name": "Ada" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json["user_id"], user);
    assert_eq!(created.json["account_name"], "Ada");
    assert_eq!(created.json["is_active"], true);
    assert!(created.json["id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .is_ok());

    let duplicate = server
        .post(
            &["accounts"],
            json!({ "user_id": user, "account_name": "Ada again" }),
        )
        .await;
    assert_error(&duplicate, StatusCode::CONFLICT);
    assert!(duplicate.json["error"].as_str().unwrap().contains(user));

    // (type, api key, secret key, nickname, masked api key), oldest first.
    let credentials = [
        (
            "alpaca_paper",
            "PKSWINGONE7H2Q4F2A",
            "swing-one-secret-x81",
            "Swing",
            "PK…2A",
        ),
        (
            "alpaca_paper",
            "PKSWINGTWO99B3C1ZZ",
            "swing-two-secret-k27",
            "Swing",
            "PK…ZZ",
        ),
        (
            "alpaca_live",
            "AKMOMENTUM00X3F9Q",
            "momentum-secret-q55",
            "Momentum",
            "AK…9Q",
        ),
    ];
    let secrets: Vec<&str> = credentials
        .iter()
        .flat_map(|(_, api, secret, _, _)| [*api, *secret])
        .collect();
    let no_secret_in = |r: &Reply| {
        for secret in &secrets {
            assert!(!r.text.contains(secret), "a plaintext key in {}", r.text);
        }
    };

    let mut ids = Vec::new();
    for (credential_type, api_key, secret_key, nickname, _) in credentials {
        let r = server
            .post(
                &["accounts", user, "credentials"],
                json!({
                    "credential_type": credential_type,
                    "api_key": api_key,
                    "secret_key": secret_key,
                    "nickname": nickname,
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["credential_type"], credential_type);
        assert_eq!(r.json["nickname"], nickname);
        assert_eq!(r.json["user_id"], user);
        assert_eq!(r.json["user_account_id"], created.json["id"]);
        assert_eq!(r.json["is_active"], true);
        assert!(r.json.get("api_key").is_none() && r.json.get("secret_key").is_none());
        no_secret_in(&r);
        ids.push(r.json["id"].clone());
    }

    let list = server.get(&["accounts", user, "credentials"]).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    no_secret_in(&list);
    let items = list.json.as_array().expect("a JSON array");
    assert_eq!(items.len(), 3);
    // Newest first.
    for (item, (id, (credential_type, _, _, nickname, masked))) in
        items.iter().zip(ids.iter().zip(credentials).rev())
    {
        assert_eq!(&item["id"], id);
        assert_eq!(item["credential_type"], credential_type);
        assert_eq!(item["nickname"], nickname);
        assert_eq!(item["api_key_masked"], masked);
        assert!(item.get("api_key").is_none() && item.get("secret_key").is_none());
    }

    let momentum = server
        .get(&["accounts", user, "credentials", "by-nickname", "Momentum"])
        .await;
    assert_eq!(momentum.status, StatusCode::OK, "{}", momentum.text);
    assert_eq!(momentum.json["id"], ids[2]);
    assert_eq!(momentum.json["api_key_masked"], "AK…9Q");
    no_secret_in(&momentum);

    let swing = server
        .get(&["accounts", user, "credentials", "by-nickname", "Swing"])
        .await;
    assert_error(&swing, StatusCode::CONFLICT);
    assert_eq!(swing.json["matches"], 2);
    assert!(swing.json["error"].as_str().unwrap().contains('2'));

    let nope = server
        .get(&["accounts", user, "credentials", "by-nickname", "Nope"])
        .await;
    assert_error(&nope, StatusCode::NOT_FOUND);

    // Unknown users, on every route that names one.
    let nobody = "auth0|nobody";
    assert_error(
        &server.get(&["accounts", nobody, "credentials"]).await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        &server
            .get(&["accounts", nobody, "credentials", "by-nickname", "Swing"])
            .await,
        StatusCode::NOT_FOUND,
    );
    let r = server
        .post(
            &["accounts", nobody, "credentials"],
            json!({ "credential_type": "alpaca_paper", "api_key": "PKX", "secret_key": "sx" }),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
    assert!(r.json["error"].as_str().unwrap().contains(nobody));

    assert_logs_free_of(&server, &secrets);
}

on_both_backends_async!(bad_input_is_refused_with_the_field_named, bad_input);

async fn bad_input(db: &TestDb) {
    let server = Server::start(db).await;
    let user = "auth0|bad-input";
    server.create_account(user).await;
    let credentials = ["accounts", user, "credentials"];
    let secret = "bad-input-secret-7Hq2";
    let with = |overrides: Value| {
        let mut body = json!({
            "credential_type": "alpaca_paper",
            "api_key": "PKBADINPUT0001",
            "secret_key": secret,
            "nickname": "Swing",
        });
        for (name, value) in overrides.as_object().unwrap() {
            if value.is_null() {
                body.as_object_mut().unwrap().remove(name);
            } else {
                body[name] = value.clone();
            }
        }
        body
    };

    let r = server
        .post(&credentials, with(json!({ "nickname": "n".repeat(300) })))
        .await;
    assert_invalid(&r, "nickname");
    assert!(
        r.json["rule"].as_str().unwrap().contains("255"),
        "{}",
        r.text
    );

    let r = server
        .post(&credentials, with(json!({ "nickname": "Swing\u{7}bot" })))
        .await;
    assert_invalid(&r, "nickname");
    assert!(
        r.json["rule"].as_str().unwrap().contains("control"),
        "{}",
        r.text
    );

    let r = server
        .post(&credentials, with(json!({ "credential_type": "Bad Type" })))
        .await;
    assert_invalid(&r, "credential_type");
    assert!(r.json["error"]
        .as_str()
        .unwrap()
        .contains("credential_type"));

    let r = server
        .post(&credentials, with(json!({ "api_key": "" })))
        .await;
    assert_invalid(&r, "api_key");

    let r = server
        .post_raw(&credentials, r#"{"credential_type": "#)
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json.get("field").is_none(), "{}", r.text);

    let r = server.post_raw(&credentials, "not json at all").await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);

    let r = server
        .post(&credentials, with(json!({ "secret_key": null })))
        .await;
    assert_invalid(&r, "secret_key");

    // A key of the wrong JSON type is refused without being echoed.
    let r = server
        .post(
            &credentials,
            with(json!({ "api_key": 987_654_321_123_u64 })),
        )
        .await;
    assert_invalid(&r, "api_key");
    assert!(!r.text.contains("987654321123"), "{}", r.text);

    for body in [json!(["an", "array"]), json!("PKBADINPUT0001"), json!(null)] {
        let r = server.post(&credentials, body).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.json.get("field").is_none(), "{}", r.text);
        assert!(!r.text.contains("PKBADINPUT0001"), "{}", r.text);
    }

    // JSON without the JSON content type.
    let r = reply(
        server
            .client
            .post(server.url(&credentials))
            .body(with(json!({})).to_string())
            .send()
            .await,
    )
    .await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Accounts.
    let r = server
        .post(
            &["accounts"],
            json!({ "user_id": "", "account_name": "Ada" }),
        )
        .await;
    assert_invalid(&r, "user_id");
    let r = server
        .post(
            &["accounts"],
            json!({ "user_id": "auth0|line\nbreak", "account_name": "Ada" }),
        )
        .await;
    assert_invalid(&r, "user_id");
    let r = server
        .post(
            &["accounts"],
            json!({ "user_id": "auth0|x", "account_name": " " }),
        )
        .await;
    assert_invalid(&r, "account_name");
    let r = server
        .post(&["accounts"], json!({ "user_id": "auth0|x" }))
        .await;
    assert_invalid(&r, "account_name");

    // Routes and methods that do not exist answer in the same shape.
    assert_error(&server.get(&["nowhere"]).await, StatusCode::NOT_FOUND);
    assert_error(
        &server.get(&["accounts"]).await,
        StatusCode::METHOD_NOT_ALLOWED,
    );

    // Nothing was written.
    let list = server.get(&credentials).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.json, json!([]));

    assert_logs_free_of(&server, &[secret, "PKBADINPUT0001"]);
}

on_both_backends_async!(
    unusable_credentials_list_without_a_mask,
    unusable_credentials
);

async fn unusable_credentials(db: &TestDb) {
    let server = Server::start(db).await;
    let user = "auth0|unusable";
    server.create_account(user).await;
    let account = server
        .store
        .account_by_user_id(user)
        .await
        .unwrap()
        .expect("created above");
    let expired_at = chrono::Utc::now() - chrono::Duration::hours(1);
    for new in [
        NewUserCredential::new("alpaca_paper", "PKUSABLE000001", "usable-secret")
            .nickname("Usable"),
        NewUserCredential::new("alpaca_paper", "PKINACTIVE0002", "inactive-secret")
            .nickname("Off")
            .active(false),
        NewUserCredential::new("alpaca_paper", "PKEXPIRED00003", "expired-secret")
            .nickname("Old")
            .expires_at(expired_at),
    ] {
        server
            .store
            .insert_credential(&account, &new)
            .await
            .unwrap();
    }

    let list = server.get(&["accounts", user, "credentials"]).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let masks: Vec<(&str, &Value)> = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["nickname"].as_str().unwrap(), &item["api_key_masked"]))
        .collect();
    assert_eq!(
        masks,
        [
            ("Old", &Value::Null),
            ("Off", &Value::Null),
            ("Usable", &json!("PK…01"))
        ]
    );

    let off = server
        .get(&["accounts", user, "credentials", "by-nickname", "Off"])
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.text);
    assert_eq!(off.json["is_active"], false);
    assert_eq!(off.json["api_key_masked"], Value::Null);
}

on_both_backends_async!(unexpected_errors_are_500_without_details, unexpected_error);

async fn unexpected_error(db: &TestDb) {
    let server = Server::start(db).await;
    let user = "auth0|broken";
    server.create_account(user).await;
    // Break the database under the running service.
    tokio::task::block_in_place(|| db.execute("DROP TABLE user_credentials"));

    let r = server.get(&["accounts", user, "credentials"]).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    assert_eq!(r.json, json!({ "error": "internal server error" }));
    // The cause, and the request with its status, on this test's own threads.
    server.assert_logged(&["request failed", "user_credentials"]);
    server.assert_logged(&[" request ", "status=500"]);
}

fn api_keys_are_masked_to_their_first_and_last_two_characters() {
    use http_service::mask_api_key;
    assert_eq!(mask_api_key(""), "");
    assert_eq!(mask_api_key("abc"), "•••");
    assert_eq!(mask_api_key("abcdef"), "••••••");
    assert_eq!(mask_api_key("abcdefg"), "ab…fg");
    assert_eq!(mask_api_key("PKMOMENTUM7H2Q4F2A"), "PK…2A");
    // Characters, not bytes.
    assert_eq!(mask_api_key("ééééééé"), "éé…éé");
    assert_eq!(mask_api_key("éééééé"), "••••••");
}

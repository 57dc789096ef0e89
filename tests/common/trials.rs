//! The harness of the test binaries whose tests need a server (`harness = false` on
//! their `[[test]]` in Cargo.toml): libtest-mimic, with each test declared once with
//! what it needs.
//!
//! A test whose service cannot be reached is reported as **ignored**, with the
//! reason, in the runner's own output (`test name ... ignored (needs PostgreSQL at
//! …)`, `test result: ok. 3 passed; 0 failed; 5 ignored; …`), unless the service is
//! required: then it fails. Each service that a selected test needs is probed once per
//! binary, before the tests run (a TCP connect with a short timeout, then a real
//! connection), and a line on stderr names each one that is unreachable, and why.
//!
//! | service | where | required by |
//! |---|---|---|
//! | PostgreSQL | `CREDENTIAL_STORE_TEST_DATABASE_URL` | `CREDENTIAL_STORE_REQUIRE_POSTGRES=1` |
//! | MariaDB/MySQL | `CREDENTIAL_STORE_TEST_MYSQL_URL` | `CREDENTIAL_STORE_REQUIRE_MYSQL=1` |
//! | AWS KMS (moto) | `CREDENTIAL_STORE_TEST_KMS_URL` | `CREDENTIAL_STORE_REQUIRE_KMS=1` |
//! | PgBouncer | `CREDENTIAL_STORE_TEST_PGBOUNCER_URL` | `CREDENTIAL_STORE_REQUIRE_POSTGRES=1` |
//! | the streaming replica | `CREDENTIAL_STORE_TEST_REPLICA_URL` | `CREDENTIAL_STORE_REQUIRE_POSTGRES=1` |
//! | Python's `cryptography` | `python3` on `PATH` | `CI` set, or `CREDENTIAL_STORE_REQUIRE_POSTGRES=1` |
//! | `pg_dump` | on `PATH` | `CREDENTIAL_STORE_REQUIRE_POSTGRES=1` |
//!
//! With `CREDENTIAL_STORE_TEST_ROUTE=pgbouncer` (or `replica`) a test that needs
//! PostgreSQL reaches it through PgBouncer (or reads from the replica), so it needs
//! that too.
//!
//! A binary on this harness lists its tests in its `main`:
//!
//! ```ignore
//! fn main() {
//!     common::trials::run(vec![
//!         accounts_are_created_and_found::tests(), // on_both_backends!
//!         trial!(the_sqlite_file_holds_no_plaintext),
//!         trial!(replica_reads_keep_row_level_security, [Postgres, Replica]),
//!     ]);
//! }
//! ```
//!
//! `#[test]` does nothing there: without libtest, rustc drops such a function without
//! a word. A test function left out of the list is dead code, which clippy refuses.
//! libtest-mimic understands libtest's arguments (filters, `--skip`, `--exact`,
//! `--ignored`, `--include-ignored`, `--list`, `--test-threads`, `-q`), but cannot
//! capture what a test prints: it always runs as with `--nocapture`. Panic messages
//! of a test's own thread are kept, as libtest keeps them: shown when the test fails,
//! dropped when it passes (a panic it caught on purpose).

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::RefCell;
use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// What a test needs besides the machine it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// The PostgreSQL server tests make their databases on.
    Postgres,
    /// The MariaDB/MySQL server tests make their databases on.
    Mysql,
    /// PgBouncer in transaction pooling mode in front of the PostgreSQL server.
    Pgbouncer,
    /// A streaming replica of the PostgreSQL server.
    Replica,
    /// `python3` with the `cryptography` package.
    Python,
    /// PostgreSQL's `pg_dump`.
    PgDump,
    /// The AWS KMS API: moto (`.ci/moto`), where tests make their KMS keys.
    Kms,
}

/// How long a probe waits for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl Service {
    const ALL: [Service; 7] = [
        Service::Postgres,
        Service::Mysql,
        Service::Pgbouncer,
        Service::Replica,
        Service::Python,
        Service::PgDump,
        Service::Kms,
    ];

    fn label(self) -> &'static str {
        match self {
            Service::Postgres => "PostgreSQL",
            Service::Mysql => "MariaDB/MySQL",
            Service::Pgbouncer => "PgBouncer",
            Service::Replica => "the streaming replica",
            Service::Python => "Python's `cryptography`",
            Service::PgDump => "pg_dump",
            Service::Kms => "AWS KMS (moto)",
        }
    }

    /// The server's URL, without its password.
    fn url(self) -> Option<String> {
        let url = match self {
            Service::Postgres => super::admin_url(),
            Service::Mysql => super::mysql_admin_url(),
            Service::Pgbouncer => super::pgbouncer_url(),
            Service::Replica => super::replica_url(),
            Service::Kms => super::kms_url(),
            Service::Python | Service::PgDump => return None,
        };
        Some(without_password(&url))
    }

    /// The setting that makes a missing service a failure, when it is set.
    fn required_by(self) -> Option<&'static str> {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
        match self {
            Service::Mysql if set("CREDENTIAL_STORE_REQUIRE_MYSQL") => {
                Some("CREDENTIAL_STORE_REQUIRE_MYSQL=1")
            }
            Service::Mysql => None,
            Service::Kms if set("CREDENTIAL_STORE_REQUIRE_KMS") => {
                Some("CREDENTIAL_STORE_REQUIRE_KMS=1")
            }
            Service::Kms => None,
            _ if set("CREDENTIAL_STORE_REQUIRE_POSTGRES") => {
                Some("CREDENTIAL_STORE_REQUIRE_POSTGRES=1")
            }
            Service::Python if std::env::var("CI").is_ok() => Some("CI"),
            _ => None,
        }
    }

    /// How to get the service.
    fn remedy(self) -> &'static str {
        match self {
            Service::Postgres => {
                "set CREDENTIAL_STORE_TEST_DATABASE_URL to a role that may create databases"
            }
            Service::Mysql => "`.ci/mariadb` starts it, or set CREDENTIAL_STORE_TEST_MYSQL_URL",
            Service::Pgbouncer => {
                "`.ci/pg-topology` starts it, or set CREDENTIAL_STORE_TEST_PGBOUNCER_URL"
            }
            Service::Replica => {
                "`.ci/pg-topology` makes it, or set CREDENTIAL_STORE_TEST_REPLICA_URL"
            }
            Service::Python => "pip install cryptography",
            Service::PgDump => "install PostgreSQL's client programs",
            Service::Kms => "`.ci/moto` starts it, or set CREDENTIAL_STORE_TEST_KMS_URL",
        }
    }

    /// Whether the service answers; if not, why.
    fn probe(self) -> Result<(), String> {
        match self {
            Service::Postgres | Service::Pgbouncer | Service::Replica => {
                use diesel::Connection;
                let url = match self {
                    Service::Postgres => super::admin_url(),
                    Service::Pgbouncer => super::pgbouncer_url(),
                    _ => super::replica_url(),
                };
                tcp_probe(&url, 5432)?;
                diesel::PgConnection::establish(&url)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            #[cfg(feature = "mysql")]
            Service::Mysql => {
                use diesel::Connection;
                let url = super::mysql_admin_url();
                tcp_probe(&url, 3306)?;
                super::MysqlConnection::establish(&url)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            #[cfg(not(feature = "mysql"))]
            Service::Mysql => Err("built without the `mysql` feature".into()),
            Service::Python => program_runs("python3", &["-c", "import cryptography"]),
            Service::PgDump => program_runs("pg_dump", &["--version"]),
            Service::Kms => {
                let url = super::kms_url();
                tcp_probe(&url, if url.starts_with("https:") { 443 } else { 80 })
            }
        }
    }

    /// The probe's answer, probed once per binary.
    fn status(self) -> &'static Result<(), String> {
        static STATUS: [OnceLock<Result<(), String>>; 7] = [const { OnceLock::new() }; 7];
        let index = Service::ALL.iter().position(|s| *s == self).unwrap();
        STATUS[index].get_or_init(|| self.probe().map_err(|e| one_line(&e)))
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.url() {
            Some(url) => write!(f, "{} at {url}", self.label()),
            None => f.write_str(self.label()),
        }
    }
}

/// A TCP connection to the URL's host and port, with a timeout, so that a host that
/// drops packets does not hold the run. A URL without a host (a Unix socket) passes.
fn tcp_probe(url: &str, default_port: u16) -> Result<(), String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() {
        return Ok(());
    }
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => return Ok(()),
        },
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    let port = match port {
        Some(port) => match port.parse() {
            Ok(port) => port,
            Err(_) => return Ok(()),
        },
        None => default_port,
    };
    // A name that does not resolve here is left to the connection to report.
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return Ok(());
    };
    let mut last = format!("{host}:{port} resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(err) => last = format!("cannot connect to {addr}: {err}"),
        }
    }
    Err(last)
}

fn program_runs(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Err(err) => Err(format!("cannot run {program}: {err}")),
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            Err(format!(
                "`{program} {}` failed ({}): {}",
                args.join(" "),
                out.status,
                last.unwrap_or("no message")
            ))
        }
    }
}

/// `url` with its password, if any, replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let at = rest[..end].rfind('@').unwrap_or_default();
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        _ => url.to_owned(),
    }
}

/// A message on one line (libpq's run over several).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One test: its name, what it needs, and its body.
pub struct Test {
    name: String,
    needs: Vec<Service>,
    ignored: bool,
    body: Box<dyn FnOnce() + Send + 'static>,
}

impl Test {
    pub fn new(name: impl Into<String>, body: impl FnOnce() + Send + 'static) -> Test {
        Test {
            name: name.into(),
            needs: Vec::new(),
            ignored: false,
            body: Box::new(body),
        }
    }

    /// Adds what the test needs.
    pub fn needs(mut self, services: &[Service]) -> Test {
        for service in services {
            if !self.needs.contains(service) {
                self.needs.push(*service);
            }
        }
        self
    }

    /// Marks the test ignored, as `#[ignore]` does: it runs with `--ignored` only.
    pub fn ignored(mut self) -> Test {
        self.ignored = true;
        self
    }

    fn into_trial(self) -> (Trial, Vec<Service>) {
        let Test {
            name,
            needs,
            ignored,
            body,
        } = self;
        let thread_name = name.clone();
        let wanted = needs.clone();
        let trial = Trial::ignorable_test(name, move || {
            let missing: Vec<Service> = wanted
                .iter()
                .copied()
                .filter(|s| s.status().is_err())
                .collect();
            // A required service that is missing fails the test, whatever else is.
            for service in &missing {
                if let (Some(setting), Err(why)) = (service.required_by(), service.status()) {
                    return Err(Failed::from(format!(
                        "{service} is required ({setting}) but unavailable: {why}; {}",
                        service.remedy()
                    )));
                }
            }
            if let Some(service) = missing.first() {
                return Ok(Completion::ignored_with(format!("needs {service}")));
            }
            // In a thread named after the test, as libtest does: a panic message
            // names the test.
            let panics = Panics::default();
            let recorder = panics.clone();
            let outcome = std::thread::Builder::new()
                .name(thread_name)
                .spawn(move || {
                    PANICS.with(|p| *p.borrow_mut() = Some(recorder));
                    body()
                })
                .expect("spawn the test's thread")
                .join();
            match outcome {
                Ok(()) => Ok(Completion::Completed),
                Err(_) => {
                    let messages = panics.lock().unwrap_or_else(PoisonError::into_inner);
                    Err(Failed::from(messages.join("\n")))
                }
            }
        })
        .with_ignored_flag(ignored);
        (trial, needs)
    }
}

/// The panic messages of one test's thread.
type Panics = Arc<Mutex<Vec<String>>>;

thread_local! {
    /// On a test's own thread: where its panic messages go.
    static PANICS: RefCell<Option<Panics>> = const { RefCell::new(None) };
}

/// Keeps the panic messages of a test's own thread for its failure report, instead
/// of printing them at once (other threads' go to stderr as before).
fn keep_test_panics() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let Some(panics) = PANICS.with(|p| p.borrow().clone()) else {
            return print(info);
        };
        let payload = info.payload();
        let payload = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("Box<dyn Any>");
        let thread = std::thread::current();
        let mut message = format!(
            "thread '{}' panicked at {}:\n{payload}",
            thread.name().unwrap_or("<unnamed>"),
            info.location()
                .map_or_else(String::new, ToString::to_string)
        );
        let backtrace = Backtrace::capture();
        if backtrace.status() == BacktraceStatus::Captured {
            message.push_str(&format!("\nstack backtrace:\n{backtrace}"));
        }
        panics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(message);
    }));
}

/// `tests`, each needing `services` besides what it needs already.
pub fn needing(services: &[Service], tests: Vec<Test>) -> Vec<Test> {
    tests.into_iter().map(|t| t.needs(services)).collect()
}

/// One trial per declared test (under the names libtest would give them); the
/// process exits with libtest's status.
pub fn run(groups: impl IntoIterator<Item = Vec<Test>>) -> ! {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|n| n.parse().ok());
    }
    let route = match super::Route::from_env() {
        super::Route::Direct => None,
        super::Route::Pgbouncer => Some(Service::Pgbouncer),
        super::Route::Replica => Some(Service::Replica),
    };
    let mut tests: Vec<Test> = groups.into_iter().flatten().collect();
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    let mut trials = Vec::with_capacity(tests.len());
    let mut wanted = Vec::new();
    for mut test in tests {
        if let (Some(route), true) = (route, test.needs.contains(&Service::Postgres)) {
            test = test.needs(&[route]);
        }
        let (trial, needs) = test.into_trial();
        if !args.list && !args.is_filtered_out(&trial) && !args.is_ignored(&trial) {
            wanted.extend(needs);
        }
        trials.push(trial);
    }
    wanted.sort();
    wanted.dedup();
    announce(&wanted);
    keep_test_panics();
    libtest_mimic::run(&args, trials).exit()
}

/// Probes the services (at once), and says on stderr which are unavailable.
fn announce(services: &[Service]) {
    std::thread::scope(|scope| {
        for service in services {
            scope.spawn(|| service.status());
        }
    });
    for service in services {
        let Err(why) = service.status() else {
            continue;
        };
        match service.required_by() {
            Some(setting) => eprintln!(
                "error: {service} is required ({setting}) but unavailable: {why}; the tests \
                 that need it fail; {}",
                service.remedy()
            ),
            None => eprintln!(
                "note: {service} is unavailable: {why}; the tests that need it are ignored \
                 ({}, or {} to make this a failure)",
                service.remedy(),
                requirement(*service)
            ),
        }
    }
}

/// The setting that would make `service` required.
fn requirement(service: Service) -> &'static str {
    match service {
        Service::Mysql => "CREDENTIAL_STORE_REQUIRE_MYSQL=1",
        Service::Kms => "CREDENTIAL_STORE_REQUIRE_KMS=1",
        _ => "CREDENTIAL_STORE_REQUIRE_POSTGRES=1",
    }
}

/// The name libtest gives the test function `leaf` of the module `module_path`
/// (`module_path!()`): the path without the crate's name.
pub fn test_name(module_path: &str, leaf: &str) -> String {
    match module_path.split_once("::") {
        Some((_, path)) => format!("{path}::{leaf}"),
        None => leaf.to_owned(),
    }
}

/// A test of this binary, as a one-element list for [`run`]:
/// `trial!(name)`, `trial!(name, [Postgres, Pgbouncer])` for one that needs
/// services, `trial!(name, ignored)` for one that runs with `--ignored` only.
#[macro_export]
macro_rules! trial {
    ($name:ident) => {
        $crate::trial!($name, [])
    };
    ($name:ident, ignored) => {
        vec![$crate::common::trials::Test::new(stringify!($name), $name).ignored()]
    };
    ($name:ident, [$($need:ident),* $(,)?]) => {
        vec![$crate::common::trials::Test::new(stringify!($name), $name)
            .needs(&[$($crate::common::trials::Service::$need),*])]
    };
}

//! Server URLs (`postgres://…`, `mysql://…`) checked by the crate before any driver
//! sees them, and the drivers' connection messages scrubbed of the URL's
//! credentials.
//!
//! A driver that cannot parse a URL says why, and the reason often quotes the part
//! it choked on: libpq's `invalid integer value "Ab" for connection option "port"`
//! for an unencoded `/` in a password, tokio-postgres's `invalid percent-encoded
//! token: "Ab%zz9secret"`. So the URL's structure is checked here first, and a
//! malformed one is refused with a reason that quotes nothing of it
//! ([`Error::UnsupportedUrl`]). What a driver still says while connecting to a
//! well-formed URL goes through [`Redactor`]: a message that holds any fragment of
//! three characters or more of the password (as written, or percent-decoded), or of
//! a `password=` query parameter, is replaced by one that names the host and the
//! database only; the user name is replaced by `[user]`.

use crate::error::{Error, Result};
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Where a backend connects: a server URL that passed [`check_server_url`], or a
/// SQLite path, as the driver gets it, and what its connection errors must not
/// repeat.
#[derive(Clone)]
pub(crate) struct Location<'a> {
    /// The URL or path, as given (trimmed; a SQLite path without its scheme).
    pub text: &'a str,
    /// Scrubs the driver's messages about this URL.
    pub redactor: Redactor,
}

impl<'a> Location<'a> {
    /// A location without credentials (a SQLite path).
    pub(crate) fn path(text: &'a str) -> Self {
        Location {
            text,
            redactor: Redactor::nothing(),
        }
    }
}

impl fmt::Debug for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Location")
            .field("place", &self.redactor.0.place)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Location<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Location<'_> {}

/// What a driver's connection message must not repeat, and the place to name
/// instead. Cheap to clone; its `Debug` shows nothing of the credentials.
#[derive(Clone)]
pub(crate) struct Redactor(Arc<Secrets>);

struct Secrets {
    /// The password as written and percent-decoded, and any `password=` parameter.
    passwords: Vec<Zeroizing<String>>,
    /// The user name as written and percent-decoded.
    users: Vec<Zeroizing<String>>,
    /// "PostgreSQL database `app` on 127.0.0.1:5432", or less when that would
    /// repeat a fragment of a password.
    place: String,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor").finish_non_exhaustive()
    }
}

/// The shortest fragment of a password that a message must not hold.
const FRAGMENT: usize = 3;

impl Redactor {
    /// A redactor with nothing to hide (a SQLite path).
    pub(crate) fn nothing() -> Self {
        Redactor(Arc::new(Secrets {
            passwords: Vec::new(),
            users: Vec::new(),
            place: "the database".into(),
        }))
    }

    /// Whether `message` holds a fragment of a password.
    fn leaks(&self, message: &str) -> bool {
        leaks(&self.0.passwords, message)
    }

    /// `message`, or a generic one naming the place when it holds a fragment of a
    /// password; the user name replaced by `[user]`.
    pub(crate) fn scrub(&self, message: &str) -> String {
        if self.leaks(message) {
            return format!(
                "cannot connect to {} (the driver's message is withheld: it repeats part of the URL's password)",
                self.0.place
            );
        }
        let mut message = message.to_owned();
        for user in &self.0.users {
            if user.chars().count() >= FRAGMENT {
                message = message.replace(user.as_str(), "[user]");
            }
        }
        message
    }

    /// A connection error whose message is scrubbed.
    pub(crate) fn connection(&self, err: diesel::ConnectionError) -> diesel::ConnectionError {
        use diesel::ConnectionError as E;
        let clean = |message: String| {
            let scrubbed = self.scrub(&message);
            (scrubbed == message, scrubbed)
        };
        match err {
            E::BadConnection(message) => E::BadConnection(clean(message).1),
            E::InvalidConnectionUrl(message) => E::InvalidConnectionUrl(clean(message).1),
            E::InvalidCString(_) => E::InvalidConnectionUrl("the URL holds a NUL byte".into()),
            E::CouldntSetupConfiguration(inner) => match clean(inner.to_string()) {
                (true, _) => E::CouldntSetupConfiguration(inner),
                (false, scrubbed) => E::BadConnection(scrubbed),
            },
            // `ConnectionError` is non-exhaustive: anything else keeps only its
            // scrubbed text.
            other => E::BadConnection(clean(other.to_string()).1),
        }
    }
}

/// Whether `message` holds a fragment of any of `passwords`.
fn leaks(passwords: &[Zeroizing<String>], message: &str) -> bool {
    passwords
        .iter()
        .any(|password| holds_fragment(message, password))
}

/// Whether `message` holds a fragment of `secret` of [`FRAGMENT`] characters (the
/// whole secret, when it is shorter).
fn holds_fragment(message: &str, secret: &str) -> bool {
    let chars: Vec<char> = secret.chars().collect();
    if chars.is_empty() {
        return false;
    }
    let window = FRAGMENT.min(chars.len());
    chars.windows(window).any(|fragment| {
        let fragment: String = fragment.iter().collect();
        message.contains(&fragment)
    })
}

/// A URL refused, with a reason that quotes nothing of it.
fn refuse(reason: impl Into<String>) -> Error {
    Error::UnsupportedUrl {
        reason: reason.into(),
    }
}

fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

fn is_sub_delim(c: char) -> bool {
    matches!(
        c,
        '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | ';' | '='
    )
}

/// Percent-decodes `text` (whose `%` escapes were checked), lossily as UTF-8.
fn decode(text: &str) -> Zeroizing<String> {
    let bytes = text.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Zeroizing::new(String::from_utf8_lossy(&out).into_owned())
}

/// Whether every `%` in `text` starts a `%XX` escape.
fn escapes_are_valid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// Checks a `postgres://`, `postgresql://` or `mysql://` URL's structure, so that
/// no driver ever parses (and quotes) a malformed one: no whitespace, control
/// characters or fragment; at most one `@` before the host; user information of
/// unreserved characters, sub-delimiters, `:` and valid `%XX` escapes only; hosts
/// (one for MySQL, a comma-separated list for PostgreSQL) with numeric ports;
/// valid escapes in the database name and the query. `label` names the backend.
pub(crate) fn check_server_url<'a>(
    url: &'a str,
    scheme_len: usize,
    label: &str,
    many_hosts: bool,
) -> Result<Location<'a>> {
    let malformed = |what: &str| refuse(format!("the {label} URL is malformed: {what}"));
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(malformed(
            "it holds whitespace or a control character (percent-encode them)",
        ));
    }
    if !url.is_ascii() {
        return Err(malformed(
            "it holds non-ASCII characters (percent-encode them)",
        ));
    }
    if url.contains('#') {
        return Err(malformed(
            "it holds a `#`, which URLs of databases do not use (write %23 in a password)",
        ));
    }
    if !escapes_are_valid(url) {
        return Err(malformed(
            "a `%` is not followed by two hexadecimal digits (write a `%` of a password as %25)",
        ));
    }
    let rest = &url[scheme_len..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.matches('@').count() {
        0 => (None, authority),
        1 => {
            let (userinfo, hosts) = authority.split_once('@').unwrap_or_default();
            (Some(userinfo), hosts)
        }
        _ => return Err(malformed(
            "more than one `@` before the host (write an `@` of a user name or password as %40)",
        )),
    };
    let (mut user, mut password) = (None, None);
    if let Some(userinfo) = userinfo {
        if !userinfo
            .chars()
            .all(|c| is_unreserved(c) || is_sub_delim(c) || c == ':' || c == '%')
        {
            return Err(malformed(
                "the user name or password holds a character that must be percent-encoded",
            ));
        }
        match userinfo.split_once(':') {
            Some((u, p)) => {
                user = Some(u);
                password = Some(p);
            }
            None => user = Some(userinfo),
        }
    }
    let host_list: Vec<&str> = if hosts.is_empty() {
        Vec::new()
    } else {
        hosts.split(',').collect()
    };
    if host_list.len() > 1 && !many_hosts {
        return Err(malformed("more than one host"));
    }
    for host in &host_list {
        check_host(host).map_err(&malformed)?;
    }
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    if path.len() > 1 && path[1..].contains('/') {
        return Err(malformed(
            "the database name holds a `/` (an unencoded `/` in a password ends the host part: write it as %2F)",
        ));
    }
    let mut passwords = Vec::new();
    if let Some(password) = password {
        passwords.push(Zeroizing::new(password.to_owned()));
        passwords.push(decode(password));
    }
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() && !value.contains('=') => (key, value),
            _ => {
                return Err(malformed(
                    "a query parameter is not one `key=value` (an unencoded `&` or `=` in a password splits it: write %26 and %3D)",
                ))
            }
        };
        if decode(key).eq_ignore_ascii_case("password") {
            passwords.push(Zeroizing::new(value.to_owned()));
            passwords.push(decode(value));
        }
    }
    let users = user
        .map(|user| vec![Zeroizing::new(user.to_owned()), decode(user)])
        .unwrap_or_default();
    // The place names the database and the first host, unless either repeats a
    // fragment of a password.
    let database = decode(path.trim_start_matches('/'));
    let mut place = format!("the {label} database");
    if !database.is_empty() && !leaks(&passwords, &database) {
        place.push_str(&format!(" `{}`", database.as_str()));
    }
    if let Some(host) = host_list
        .first()
        .filter(|h| !h.is_empty() && !leaks(&passwords, h))
    {
        place.push_str(&format!(" on {host}"));
    }
    let redactor = Redactor(Arc::new(Secrets {
        passwords,
        users,
        place,
    }));
    Ok(Location {
        text: url,
        redactor,
    })
}

/// Checks one `host[:port]` of the host list; `Err` says what is wrong, quoting
/// nothing.
fn check_host(host: &str) -> std::result::Result<(), &'static str> {
    let port = if let Some(v6) = host.strip_prefix('[') {
        let (address, after) = v6
            .split_once(']')
            .ok_or("an IPv6 host lacks its closing `]`")?;
        if !address
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err("an IPv6 host holds characters that are not part of an address");
        }
        match after {
            "" => None,
            port => Some(port.strip_prefix(':').ok_or("junk after an IPv6 host")?),
        }
    } else {
        let (name, port) = match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        };
        if !name
            .chars()
            .all(|c| is_unreserved(c) || (is_sub_delim(c) && c != ',') || c == '%')
        {
            return Err("the host name holds a character that must be percent-encoded");
        }
        port
    };
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| p <= 65535);
        if !valid {
            return Err(
                "the port is not a number from 0 to 65535 (an unencoded `/`, `?` or `#` in a password ends the host part early: percent-encode them)",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: usize = "postgres://".len();

    fn check(url: &str) -> Result<Location<'_>> {
        check_server_url(url, PG, "PostgreSQL", true)
    }

    #[test]
    fn well_formed_urls_pass_as_they_are() {
        for url in [
            "postgres://u@h/db",
            "postgres://svc:Ab%25zz9secret@127.0.0.1/app",
            "postgres://svc:p%2Fw%40d@[::1]:5432/app?sslmode=require",
            "postgres:///app?host=/var/run/postgresql",
            "postgres://h1:5432,h2:5433/app",
            "postgres://svc:a:b:c@h/db",
        ] {
            assert_eq!(check(url).unwrap().text, url);
        }
    }

    #[test]
    fn malformed_urls_are_refused_without_quoting_them() {
        for url in [
            "postgres://svc:Ab%zz9secret@127.0.0.1/app",
            "postgres://svc:Ab/zz9secret@127.0.0.1/app",
            "postgres://svc:Ab@zz9secret@127.0.0.1/app",
            "postgres://svc:Ab#zz9secret@127.0.0.1/app",
            "postgres://svc:Ab?zz9secret@127.0.0.1/app",
            "postgres://svc:Ab zz9secret@127.0.0.1/app",
            "postgres://svc:Ab\"zz9secret@127.0.0.1/app",
            "postgres://svc:Abé9secret@127.0.0.1/app",
            "postgres://svc@127.0.0.1:zz9secret/app",
            "postgres://svc@[::1/app",
        ] {
            match check(url) {
                Err(Error::UnsupportedUrl { reason }) => {
                    assert!(
                        !reason.contains("zz9") && !reason.contains("Ab"),
                        "{reason}"
                    );
                }
                other => panic!("{url:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn messages_with_a_fragment_of_the_password_are_withheld() {
        let url =
            check("postgres://svc:Ab%2Fzz9secret@db.internal:5432/app?password=Qx7Wv9").unwrap();
        let r = &url.redactor;
        for message in [
            "invalid integer value \"Ab\" for connection option \"port\"... zz9",
            "token: Ab/zz9secret",
            "token: Ab%2Fzz9secret",
            "bad value sec",
            "got 7Wv back",
        ] {
            let scrubbed = r.scrub(message);
            assert!(scrubbed.contains("`app` on db.internal:5432"), "{scrubbed}");
            assert!(
                !scrubbed.contains("sec") && !scrubbed.contains("7Wv"),
                "{scrubbed}"
            );
        }
        assert_eq!(
            r.scrub("password authentication failed for user \"svc\""),
            "password authentication failed for user \"[user]\""
        );
        assert_eq!(Redactor::nothing().scrub("refused"), "refused");
        assert!(!format!("{url:?}").contains("zz9"));
    }
}

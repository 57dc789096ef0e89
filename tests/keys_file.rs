//! The keys file is opened once, checked on its descriptor, and refused unless it
//! is a regular file of the user the process runs as, readable by that user only;
//! a file that cannot be read at all (missing, not UTF-8 text) is `Error::KeysFile`.
#![cfg(unix)]

use credential_store::{Error, Keyring};
use secrecy::ExposeSecret;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A private keys file with one key.
fn keys_file(path: &Path) {
    let key = Keyring::generate_key();
    std::fs::write(path, format!("2026-12:{}\n", key.expose_secret())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn untrusted(result: Result<Keyring, Error>) -> String {
    match result {
        Err(err @ Error::KeysFileUntrusted { .. }) => {
            assert_eq!(err.kind().as_str(), "keys_file_untrusted");
            err.to_string()
        }
        Err(other) => panic!("expected KeysFileUntrusted, got {other:?}"),
        Ok(_) => panic!("expected KeysFileUntrusted, got a keyring"),
    }
}

#[test]
fn a_private_regular_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    keys_file(&path);
    assert_eq!(
        Keyring::from_file(&path).unwrap().primary_key_id(),
        "2026-12"
    );
}

#[test]
fn a_symbolic_link_is_refused_even_to_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("keys");
    keys_file(&target);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let message = untrusted(Keyring::from_file(&link));
    assert!(message.contains("symbolic link"), "{message}");
}

#[test]
fn another_users_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    keys_file(&path);
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    // `nobody` is 65534 on Linux; the test runs as root, who may give it away.
    let status = std::process::Command::new("chown")
        .args(["nobody", path.to_str().unwrap()])
        .status()
        .unwrap();
    if !status.success() {
        assert_ne!(me, 0, "root could not chown the file to nobody");
        eprintln!("SKIPPED: not root, cannot give a file to another user");
        return;
    }
    assert_ne!(std::fs::metadata(&path).unwrap().uid(), me);
    let message = untrusted(Keyring::from_file(&path));
    assert!(message.contains("owned by uid"), "{message}");
}

#[test]
fn a_directory_or_a_fifo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("keys.d");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
    let message = untrusted(Keyring::from_file(&sub));
    assert!(message.contains("directory"), "{message}");

    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "600", fifo.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(made.success());
    // Without O_NONBLOCK the open would wait for a writer forever.
    let message = untrusted(Keyring::from_file(&fifo));
    assert!(message.contains("FIFO"), "{message}");
}

#[test]
fn an_exposed_mode_is_still_refused_with_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    keys_file(&path);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(matches!(
        Keyring::from_file(&path),
        Err(Error::KeysFileExposed { mode: 0o640, .. })
    ));
}

/// The message, the path and the I/O error kind of a keys file that could not be
/// read, or a panic.
fn unreadable(result: Result<Keyring, Error>) -> (String, PathBuf, std::io::ErrorKind) {
    match result {
        Err(err @ Error::KeysFile { .. }) => {
            assert_eq!(err.kind().as_str(), "keys_file");
            let message = err.to_string();
            let Error::KeysFile { path, source } = err else {
                unreachable!("matched above")
            };
            (message, path, source.kind())
        }
        Err(other) => panic!("expected KeysFile, got {other:?}"),
        Ok(_) => panic!("expected KeysFile, got a keyring"),
    }
}

#[test]
fn a_missing_file_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-keys");
    let (message, named, kind) = unreadable(Keyring::from_file(&path));
    assert_eq!(named, path);
    assert_eq!(kind, std::io::ErrorKind::NotFound);
    assert!(message.contains(path.to_str().unwrap()), "{message}");
}

#[test]
fn a_private_file_that_is_not_text_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    keys_file(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
    std::fs::write(&path, bytes).unwrap();
    let (_, named, kind) = unreadable(Keyring::from_file(&path));
    assert_eq!(named, path);
    assert_eq!(kind, std::io::ErrorKind::InvalidData);
}

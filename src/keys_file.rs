//! A keyring read from a file, for operators who keep keys out of the environment.

use crate::crypto::Keyring;
use crate::error::{Error, Result};
use std::path::Path;
use zeroize::Zeroizing;

impl Keyring {
    /// A keyring from a file of keys in their text form (`key` or `id:key`), primary
    /// first, separated by commas or newlines; blank lines and lines starting with
    /// `#` are skipped.
    ///
    /// On Unix the file is opened once, without following a symbolic link
    /// (`O_NOFOLLOW`, and `O_NONBLOCK` so that a FIFO cannot stall the open), and
    /// checked on that open descriptor (`fstat`), so that nothing can swap it
    /// between the check and the read: a symbolic link, anything but a regular file
    /// (a directory, a FIFO, a device), or a file owned by another user than the
    /// process's effective user is refused with [`Error::KeysFileUntrusted`]; a file
    /// that its group or others may read or write (any of the mode bits `0o077`)
    /// with [`Error::KeysFileExposed`], naming the path and its mode. A file that
    /// cannot be read is [`Error::KeysFile`]. The file's content is zeroed from
    /// memory once parsed.
    ///
    /// ```
    /// # #[cfg(unix)] {
    /// use credential_store::{Error, Keyring};
    /// use secrecy::ExposeSecret;
    /// use std::os::unix::fs::PermissionsExt;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("keys");
    /// let key = Keyring::generate_key();
    /// std::fs::write(&path, format!("# primary\n2026-12:{}\n", key.expose_secret())).unwrap();
    /// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    /// assert!(matches!(Keyring::from_file(&path), Err(Error::KeysFileExposed { mode: 0o644, .. })));
    /// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    /// assert_eq!(Keyring::from_file(&path).unwrap().primary_key_id(), "2026-12");
    /// # }
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = Zeroizing::new(read_private(path)?);
        let keys: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .collect();
        Self::from_fernet_keys(keys)
    }
}

/// Reads a file that only the process's effective user may read or write, opened
/// once and checked on its descriptor.
#[cfg(unix)]
fn read_private(path: &Path) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let unreadable = |source| Error::KeysFile {
        path: path.to_owned(),
        source,
    };
    let untrusted = |reason: String| Error::KeysFileUntrusted {
        path: path.to_owned(),
        reason,
    };
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
    {
        Ok(file) => file,
        // O_NOFOLLOW on a symbolic link: ELOOP.
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(untrusted(
                "it is a symbolic link; name the file itself".into(),
            ))
        }
        Err(err) => return Err(unreadable(err)),
    };
    let metadata = file.metadata().map_err(unreadable)?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(untrusted(format!("it is {what}, not a regular file")));
    }
    let euid = rustix::process::geteuid().as_raw();
    if metadata.uid() != euid {
        return Err(untrusted(format!(
            "it is owned by uid {}, not by uid {euid} that this process runs as; chown it",
            metadata.uid()
        )));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::KeysFileExposed {
            path: path.to_owned(),
            mode,
        });
    }
    // Room for the whole file, so that reading does not leave copies behind in
    // reallocated buffers.
    let mut text = String::with_capacity(usize::try_from(metadata.len()).unwrap_or(0) + 1);
    if let Err(err) = file.read_to_string(&mut text) {
        zeroize::Zeroize::zeroize(&mut text);
        return Err(unreadable(err));
    }
    Ok(text)
}

/// Reads the file (no ownership or mode to check off Unix).
#[cfg(not(unix))]
fn read_private(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::KeysFile {
        path: path.to_owned(),
        source,
    })
}

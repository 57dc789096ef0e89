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
    /// On Unix a file that its group or others may read or write (any of the mode
    /// bits `0o077`) is refused with [`Error::KeysFileExposed`], naming the path and
    /// its mode; a file that cannot be read is [`Error::KeysFile`]. The file's
    /// content is zeroed from memory once parsed.
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
        let unreadable = |source| Error::KeysFile {
            path: path.to_owned(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(unreadable)?
                .permissions()
                .mode()
                & 0o7777;
            if mode & 0o077 != 0 {
                return Err(Error::KeysFileExposed {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(unreadable)?);
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

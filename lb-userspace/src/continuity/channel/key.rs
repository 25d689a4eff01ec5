//! The shared key of the continuity channel.
//!
//! Every node of a group uses the same key file. Its bytes, after trimming ASCII whitespace,
//! are the HMAC key as they are: the text is the key material, so
//! `head -c 32 /dev/urandom | base64 > key` and `head -c 32 /dev/urandom | xxd -p -c 64 > key`
//! both work (the encodings carry the 32 random bytes' entropy in more characters). At least
//! [`PeerKey::MIN_LEN`] bytes are required so a short password cannot stand in for a key.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::continuity::wire::{NONCE_LEN, TAG_LEN};

/// Largest key file read: a key is a line of text, a bigger file is a wrong path.
const MAX_FILE_LEN: u64 = 4096;

/// Why a key file was refused; each message tells the operator what to do.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read the continuity key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the continuity key file {path} is accessible to group or others (mode {mode:o}): \
         chmod 600 {path}"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the continuity key file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "the continuity key file {path} holds {len} bytes after trimming whitespace, at least \
         {min} are needed: head -c 32 /dev/urandom | base64 > {path}",
        min = PeerKey::MIN_LEN
    )]
    TooShort { path: PathBuf, len: usize },
    #[error("the continuity key file {path} is larger than {MAX_FILE_LEN} bytes: wrong file?")]
    TooLarge { path: PathBuf },
}

/// The HMAC-SHA-256 key shared by the nodes. Cheap to clone (the keyed state is precomputed);
/// its Debug output never shows key bytes.
#[derive(Clone)]
pub struct PeerKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerKey(<redacted>)")
    }
}

impl PeerKey {
    /// Fewest bytes of key material accepted.
    pub const MIN_LEN: usize = 32;

    /// Reads a key file, refusing one that group or others may read or write.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        // The mode of the file actually opened, not of whatever the path names later.
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_FILE_LEN {
            return Err(KeyError::TooLarge {
                path: path.to_owned(),
            });
        }
        Self::from_material(&bytes).map_err(|len| KeyError::TooShort {
            path: path.to_owned(),
            len,
        })
    }

    /// A key from material already in memory, trimmed like a file's; the error is the trimmed
    /// length when it is shorter than [`Self::MIN_LEN`].
    pub fn from_material(material: &[u8]) -> Result<Self, usize> {
        let trimmed = material.trim_ascii();
        if trimmed.len() < Self::MIN_LEN {
            return Err(trimmed.len());
        }
        // HMAC takes keys of any length; this never fails.
        let mac = Hmac::<Sha256>::new_from_slice(trimmed).map_err(|_| trimmed.len())?;
        Ok(Self { mac })
    }

    fn keyed(
        &self,
        label: &[u8],
        nonce: &[u8; NONCE_LEN],
        header: &[u8],
        payload: &[u8],
    ) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(label);
        mac.update(nonce);
        mac.update(header);
        mac.update(payload);
        mac
    }

    /// The tag of a frame (see the wire module doc for what it covers).
    pub(crate) fn tag(
        &self,
        label: &[u8],
        nonce: &[u8; NONCE_LEN],
        header: &[u8],
        payload: &[u8],
    ) -> [u8; TAG_LEN] {
        self.keyed(label, nonce, header, payload)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `tag` is the frame's tag, compared in constant time so timing tells an attacker
    /// nothing about how much of a forged tag was right.
    pub(crate) fn verify(
        &self,
        label: &[u8],
        nonce: &[u8; NONCE_LEN],
        header: &[u8],
        payload: &[u8],
        tag: &[u8],
    ) -> bool {
        self.keyed(label, nonce, header, payload)
            .verify_slice(tag)
            .is_ok()
    }
}

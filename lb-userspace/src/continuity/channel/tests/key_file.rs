//! Key files: what is accepted, what is refused and what the operator is told.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A file in the system's temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &[u8], mode: u32) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "xlb-continuity-key-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn a_private_file_of_base64_text_is_a_key() {
    // What `head -c 32 /dev/urandom | base64 > key` writes: 44 characters and a newline.
    let file = TempFile::new(b"q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=\n", 0o600);
    let key = PeerKey::load(&file.0).unwrap();
    // The trailing newline is not part of the key: the same text without it gives equal tags.
    let same = PeerKey::from_material(b"q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=").unwrap();
    let nonce = [1; NONCE_LEN];
    assert_eq!(
        key.tag(b"l", &nonce, b"h", b"p"),
        same.tag(b"l", &nonce, b"h", b"p")
    );
    assert_ne!(
        key.tag(b"l", &nonce, b"h", b"p"),
        PeerKey::from_material(OTHER_KEY)
            .unwrap()
            .tag(b"l", &nonce, b"h", b"p")
    );
    assert!(PeerKey::load(&TempFile::new(KEY, 0o400).0).is_ok());
}

#[test]
fn a_file_others_can_read_is_refused_with_the_fix() {
    let file = TempFile::new(KEY, 0o644);
    let err = PeerKey::load(&file.0).unwrap_err();
    assert!(matches!(err, KeyError::Permissions { mode: 0o644, .. }));
    assert!(
        err.to_string()
            .contains(&format!("chmod 600 {}", file.0.display())),
        "{err}"
    );
    let group_writable = TempFile::new(KEY, 0o620);
    assert!(matches!(
        PeerKey::load(&group_writable.0),
        Err(KeyError::Permissions { .. })
    ));
}

#[test]
fn a_short_key_is_refused() {
    let file = TempFile::new(b"  correct horse battery staple \n", 0o600);
    let err = PeerKey::load(&file.0).unwrap_err();
    assert!(matches!(err, KeyError::TooShort { len: 28, .. }), "{err}");
    assert!(err.to_string().contains("/dev/urandom"));
    assert_eq!(PeerKey::from_material(&[b' '; 64]).unwrap_err(), 0);
}

#[test]
fn missing_and_odd_files_are_refused() {
    let missing = std::env::temp_dir().join("xlb-continuity-no-such-key");
    assert!(matches!(
        PeerKey::load(&missing),
        Err(KeyError::Read { .. })
    ));
    let big = TempFile::new(&[b'k'; 5000], 0o600);
    assert!(matches!(
        PeerKey::load(&big.0),
        Err(KeyError::TooLarge { .. })
    ));
    let dir = std::env::temp_dir().join(format!("xlb-continuity-dir-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let result = PeerKey::load(&dir);
    let _ = fs::remove_dir(&dir);
    assert!(matches!(result, Err(KeyError::NotAFile { .. })));
}

#[test]
fn debug_output_hides_the_key() {
    let key = PeerKey::from_material(KEY).unwrap();
    let shown = format!("{key:?}");
    assert_eq!(shown, "PeerKey(<redacted>)");
    assert!(!shown.contains("0123"));
}

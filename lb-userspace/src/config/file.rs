//! Reading the config file defensively. A reload runs on the agent's event loop, so whatever
//! sits at the config path (a FIFO, a directory, a device, a runaway generated file, invalid
//! UTF-8) must be refused quickly with a message that says what is there, never block the loop
//! or make the agent allocate without bound.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::error::ConfigError;

/// The largest config file accepted. A config with the maximum VIPs and backends, commented,
/// stays well below it; anything beyond is a mistake (a log or a binary at the config path).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Why a config file's contents were not accepted (the file could be opened).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileProblem {
    #[error("is {what}, not a regular file: point the config path at a TOML file")]
    NotRegular { what: &'static str },
    #[error(
        "is larger than {} KiB: a config file is TOML text well below that; check that the path names the config",
        MAX_CONFIG_BYTES / 1024
    )]
    TooLarge,
    #[error("is not UTF-8 text (invalid byte at offset {offset}): save it as UTF-8")]
    NotUtf8 { offset: usize },
}

/// Reads the config file at `path` (following symlinks) as UTF-8 text of at most
/// [`MAX_CONFIG_BYTES`].
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source: io::Error| ConfigError::Read {
        file: path.to_owned(),
        source,
    };
    let problem = |reason: FileProblem| ConfigError::Unreadable {
        file: path.to_owned(),
        reason,
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever if
    // there is none. It has no effect on a regular file.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(problem(FileProblem::NotRegular {
            what: kind(&meta.file_type()),
        }));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(problem(FileProblem::TooLarge));
    }
    // The size may change between the stat and the read (a file being rewritten): the cap
    // holds on what is actually read.
    let bytes = read_capped(file).map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(problem(FileProblem::TooLarge));
    }
    String::from_utf8(bytes).map_err(|e| {
        problem(FileProblem::NotUtf8 {
            offset: e.utf8_error().valid_up_to(),
        })
    })
}

/// At most `MAX_CONFIG_BYTES + 1` bytes, so an over-long file is detected without reading it.
fn read_capped(file: File) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn kind(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use super::*;

    /// A scratch directory unique to one test, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xlb-config-file-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn problem(e: ConfigError) -> FileProblem {
        match e {
            ConfigError::Unreadable { reason, .. } => reason,
            other => panic!("expected a file problem, got {other}"),
        }
    }

    #[test]
    fn a_regular_file_and_a_symlink_to_one_are_read() {
        let s = Scratch::new("regular");
        let file = s.0.join("xlb.toml");
        std::fs::write(&file, "[agent]\n").unwrap();
        let link = s.0.join("current.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_config_file(&file).unwrap(), "[agent]\n");
        assert_eq!(read_config_file(&link).unwrap(), "[agent]\n");
    }

    #[test]
    fn a_directory_is_refused_by_name() {
        let s = Scratch::new("dir");
        let e = read_config_file(&s.0).unwrap_err();
        let message = e.to_string();
        assert_eq!(
            problem(e),
            FileProblem::NotRegular {
                what: "a directory"
            }
        );
        assert!(
            message.contains("is a directory, not a regular file"),
            "{message}"
        );
    }

    #[test]
    fn a_fifo_without_writer_is_refused_at_once() {
        let s = Scratch::new("fifo");
        let fifo = s.0.join("xlb.toml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo reads it only.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        let e = read_config_file(&fifo).unwrap_err();
        // Without O_NONBLOCK the open blocks until a writer appears, i.e. forever here.
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(problem(e), FileProblem::NotRegular { what: "a FIFO" });
    }

    #[test]
    fn a_character_device_is_refused() {
        let e = read_config_file(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            problem(e),
            FileProblem::NotRegular {
                what: "a character device"
            }
        );
    }

    #[test]
    fn a_file_over_the_cap_is_refused_and_one_at_the_cap_is_read() {
        let s = Scratch::new("huge");
        let at_cap = s.0.join("at-cap.toml");
        let text = "#".repeat(MAX_CONFIG_BYTES as usize - 1) + "\n";
        std::fs::write(&at_cap, &text).unwrap();
        assert_eq!(
            read_config_file(&at_cap).unwrap().len(),
            MAX_CONFIG_BYTES as usize
        );
        let huge = s.0.join("huge.toml");
        // Sparse: 1 GiB that costs no disk, which a plain read would try to allocate.
        File::create(&huge).unwrap().set_len(1 << 30).unwrap();
        let e = read_config_file(&huge).unwrap_err();
        let message = e.to_string();
        assert_eq!(problem(e), FileProblem::TooLarge);
        assert!(message.contains("is larger than 1024 KiB"), "{message}");
    }

    #[test]
    fn a_symlink_loop_is_a_read_error_naming_the_file() {
        let s = Scratch::new("loop");
        let (a, b) = (s.0.join("a.toml"), s.0.join("b.toml"));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let e = read_config_file(&a).unwrap_err();
        let ConfigError::Read { file, source } = &e else {
            panic!("expected a read error, got {e}");
        };
        assert_eq!(file, &a);
        assert_eq!(source.raw_os_error(), Some(libc::ELOOP));
        assert!(e.to_string().contains("a.toml: cannot read"), "{e}");
    }

    #[test]
    fn invalid_utf8_is_refused_with_its_offset() {
        let s = Scratch::new("utf8");
        let file = s.0.join("xlb.toml");
        std::fs::write(&file, b"[agent]\n\xff\n").unwrap();
        let e = read_config_file(&file).unwrap_err();
        assert_eq!(problem(e), FileProblem::NotUtf8 { offset: 8 });
    }
}

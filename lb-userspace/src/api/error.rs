//! The errors of the server and the client.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors of the server and the client, phrased as what the operator should do.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no agent listening on {}: is `xlb run` running?", path.display())]
    NotRunning { path: PathBuf },
    #[error("permission denied on {}: run as root", path.display())]
    PermissionDenied { path: PathBuf },
    #[error(
        "another agent is running on {}: stop it first (or give this one another api-socket)",
        path.display()
    )]
    AlreadyRunning { path: PathBuf },
    #[error("{} exists and is not a socket: remove it or choose another api-socket", path.display())]
    NotASocket { path: PathBuf },
    #[error("the agent on {} did not answer within {}s", path.display(), timeout.as_secs())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("bad answer from the agent on {}: {detail}", path.display())]
    Protocol { path: PathBuf, detail: String },
}

/// An I/O error of `op` on `path`; a permission error becomes the advice to run as root.
pub(super) fn io_error(op: &'static str, path: &Path, e: io::Error) -> ApiError {
    match e.kind() {
        io::ErrorKind::PermissionDenied => ApiError::PermissionDenied { path: path.into() },
        _ => ApiError::Io {
            op,
            path: path.into(),
            source: e,
        },
    }
}

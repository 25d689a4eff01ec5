//! The client: one request, one answer.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::ANSWER_TIMEOUT;
use super::error::{ApiError, io_error};
use super::line::{Line, read_line};
use super::server::BUSY_MESSAGE;
use super::types::{Request, Response};

/// Longest response line a client accepts (a status report of many VIPs is large).
pub const MAX_RESPONSE_LINE: usize = 64 * 1024 * 1024;

/// How long [`call`] keeps retrying a request the agent refused as busy (never read, so safe
/// to send again) before it returns that refusal.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(2);

/// Sends one request to the agent on `path` and returns its answer. An agent-side failure is
/// `Ok(Response::Error)`; `Err` means the request did not get through.
pub async fn call(path: &Path, req: &Request) -> Result<Response, ApiError> {
    let timeout = ANSWER_TIMEOUT + Duration::from_secs(5);
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        let r = match tokio::time::timeout(timeout, call_inner(path, req)).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::Timeout {
                path: path.into(),
                timeout,
            }),
        };
        match &r {
            Ok(Response::Error { message })
                if message == BUSY_MESSAGE && started.elapsed() + pause < BUSY_RETRY_FOR =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            _ => return r,
        }
    }
}

async fn call_inner(path: &Path, req: &Request) -> Result<Response, ApiError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ApiError::NotRunning { path: path.into() }
            }
            _ => io_error("connect", path, e),
        })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(|e| ApiError::Protocol {
        path: path.into(),
        detail: e.to_string(),
    })?;
    line.push(b'\n');
    // An agent that refuses the connection (busy, not allowed) answers and closes at once; the
    // write may then fail, and the answer is still there to read.
    let sent = write.write_all(&line).await;
    let mut reader = BufReader::new(read);
    let answer = read_line(&mut reader, MAX_RESPONSE_LINE).await;
    let line = match (sent, answer) {
        (_, Ok(Line::Text(t))) => t,
        (Err(e), _) => return Err(io_error("send", path, e)),
        (Ok(()), Err(e)) => return Err(io_error("receive", path, e)),
        (Ok(()), Ok(Line::Eof)) => {
            return Err(ApiError::Protocol {
                path: path.into(),
                detail: "connection closed without an answer".into(),
            });
        }
        (Ok(()), Ok(Line::TooLong)) => {
            return Err(ApiError::Protocol {
                path: path.into(),
                detail: format!("answer longer than {MAX_RESPONSE_LINE} bytes"),
            });
        }
    };
    serde_json::from_slice(&line).map_err(|e| ApiError::Protocol {
        path: path.into(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::DEFAULT_API_SOCKET;

    /// A fresh directory under /tmp, unique per process.
    fn temp_dir(name: &str) -> std::path::PathBuf {
        Path::new("/tmp").join(format!("xlb-api-{}-{name}", std::process::id()))
    }

    #[tokio::test]
    async fn client_errors_tell_the_operator_what_to_do() {
        let dir = temp_dir("client");
        let path = dir.join("xlb.sock");
        let err = call(&path, &Request::Status).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no agent listening on {}: is `xlb run` running?",
                path.display()
            )
        );
        let denied = ApiError::PermissionDenied {
            path: DEFAULT_API_SOCKET.into(),
        };
        assert_eq!(
            denied.to_string(),
            "permission denied on /run/xlb/xlb.sock: run as root"
        );
        assert!(matches!(
            io_error(
                "connect",
                &path,
                io::Error::from(io::ErrorKind::PermissionDenied)
            ),
            ApiError::PermissionDenied { .. }
        ));
    }
}

//! The server: binds the socket safely, accepts connections and hands each request to the
//! agent's loop as an [`ApiCall`].

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::ANSWER_TIMEOUT;
use super::error::{ApiError, io_error};
use super::line::{Line, read_line};
use super::types::{ApiCall, Request, Response};

/// Longest request line accepted, newline excluded.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// A request line must arrive whole within this time, counted from the connection's start or
/// the previous answer: a total, not a per-read timeout, so a client trickling a byte a second
/// (or idling) holds a connection slot at most this long. A request is one short line that the
/// `xlb` CLI writes at once.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer must be written within this time, so a client that does not read does not hold
/// a slot either.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once. Past it, a new connection gets [`BUSY_MESSAGE`] at once and is
/// closed, rather than waiting in the listen backlog behind slow clients.
pub const MAX_CONNECTIONS: usize = 64;
/// The error answer of a connection refused because every slot is taken; its request was
/// never acted on, so a client may retry it.
pub const BUSY_MESSAGE: &str = "busy: all 64 API connections are in use; try again";
/// How long a refused connection is read from (and discarded) before it is closed: closing a
/// Unix socket with unread data resets it, and the client would see ECONNRESET instead of
/// [`BUSY_MESSAGE`].
const REFUSE_LINGER: Duration = Duration::from_secs(1);
/// How long a closing server lets open connections finish writing their answers (the agent
/// answers `xlb stop` last, just before it closes the API).
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A bound API socket, not yet serving.
#[derive(Debug)]
pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
    /// (dev, ino) of the socket file we created, so we remove only our own on shutdown.
    file_id: (u64, u64),
}

/// Binds `path` (see [`ApiServer::bind`]) and serves until `handler`'s receiver is dropped.
pub async fn serve(path: &Path, handler: mpsc::Sender<ApiCall>) -> Result<(), ApiError> {
    ApiServer::bind(path).await?.serve(handler).await
}

impl ApiServer {
    /// Creates the parent directory (0700) if missing, replaces a stale socket file (one
    /// nothing accepts on), refuses if another agent answers, then binds with mode 0600.
    pub async fn bind(path: &Path) -> Result<Self, ApiError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_error("create directory", dir, e))?;
        }
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("stat", path, e)),
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ApiError::NotASocket { path: path.into() });
            }
            Ok(_) => {
                match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await
                {
                    // Something accepts (or is too busy to, which is just as alive).
                    Ok(Ok(_)) | Err(_) => {
                        return Err(ApiError::AlreadyRunning { path: path.into() });
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        tracing::info!(path = %path.display(), "removing stale API socket");
                        std::fs::remove_file(path)
                            .or_else(|e| match e.kind() {
                                io::ErrorKind::NotFound => Ok(()),
                                _ => Err(e),
                            })
                            .map_err(|e| io_error("remove stale socket", path, e))?;
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {}
                    Ok(Err(e)) => return Err(io_error("probe existing socket", path, e)),
                }
            }
        }
        // Bind under a temporary name, chmod, then rename into place: the socket is never
        // reachable at its real path with the umask's permissions.
        let name = path
            .file_name()
            .map_or("xlb.sock".into(), |n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(|e| io_error("bind", &tmp, e))?;
        let finish = || -> io::Result<std::fs::Metadata> {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, path)?;
            std::fs::symlink_metadata(path)
        };
        let meta = match finish() {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_error("install socket", path, e));
            }
        };
        Ok(Self {
            listener,
            path: path.into(),
            file_id: (meta.dev(), meta.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections concurrently until `handler`'s receiver is dropped, then gives the
    /// open connections [`CLOSE_GRACE`] to write their answers and removes the socket file (if
    /// it is still ours).
    pub async fn serve(self, handler: mpsc::Sender<ApiCall>) -> Result<(), ApiError> {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        // Refusals in progress are bounded too; past them a connection is closed at once.
        let refusals = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = tokio::task::JoinSet::new();
        // Refusals are logged once per episode of saturation, not per connection.
        let mut saturated = false;
        let result = loop {
            let stream = tokio::select! {
                _ = handler.closed() => break Ok(()),
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                r = self.listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) if is_transient_accept_error(&e) => {
                        tracing::warn!(error = %e, "API accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(e) => break Err(io_error("accept", &self.path, e)),
                },
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                if !std::mem::replace(&mut saturated, true) {
                    tracing::warn!(
                        "all {MAX_CONNECTIONS} API connections are in use: refusing new ones \
                         until one ends (a client that does not finish its requests?)"
                    );
                }
                match refusals.clone().try_acquire_owned() {
                    Ok(permit) => {
                        connections.spawn(async move {
                            refuse(stream, BUSY_MESSAGE).await;
                            drop(permit);
                        });
                    }
                    // The answer still goes out; a client may see a reset after it.
                    Err(_) => {
                        let _ = stream.try_write(&error_line(BUSY_MESSAGE));
                    }
                }
                continue;
            };
            if std::mem::replace(&mut saturated, false) {
                tracing::info!("API connections available again");
            }
            let handler = handler.clone();
            connections.spawn(async move {
                if let Err(e) = serve_connection(stream, handler).await {
                    tracing::debug!(error = %e, "API connection ended with an error");
                }
                drop(permit);
            });
        };
        drop(handler);
        let drained = async { while connections.join_next().await.is_some() {} };
        // Past the grace, dropping the set aborts what is left (idle connections).
        let _ = tokio::time::timeout(CLOSE_GRACE, drained).await;
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.file_id
        {
            let _ = std::fs::remove_file(&self.path);
        }
        result
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)
    ) || e.kind() == io::ErrorKind::Interrupted
}

/// Answers `message` at once (a fresh socket's send buffer takes the short line), then reads
/// the request it refuses for at most [`REFUSE_LINGER`]: closing first would make the client's
/// write of its request fail (EPIPE) before it reads the answer, or reset the connection.
async fn refuse(mut stream: UnixStream, message: &str) {
    if stream.try_write(&error_line(message)).is_err() {
        return;
    }
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            total += n;
            if buf[..n].contains(&b'\n') || total > MAX_REQUEST_LINE {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(REFUSE_LINGER, drain).await;
}

fn error_line(message: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Response::error(message)).expect("serializable");
    line.push(b'\n');
    line
}

/// Whether a peer may use the API: root, or the agent's own user.
fn peer_allowed(stream: &UnixStream) -> bool {
    match stream.peer_cred() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Ok(cred) => cred.uid() == 0 || cred.uid() == unsafe { libc::geteuid() },
        Err(_) => false,
    }
}

async fn write_response(stream: &mut (impl AsyncWriteExt + Unpin), r: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    let write = async {
        stream.write_all(&line).await?;
        stream.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not read its answer",
        )),
    }
}

async fn serve_connection(stream: UnixStream, handler: mpsc::Sender<ApiCall>) -> io::Result<()> {
    if !peer_allowed(&stream) {
        refuse(stream, "permission denied: the xlb API is for root only").await;
        return Ok(());
    }
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let line = match tokio::time::timeout(
            READ_TIMEOUT,
            read_line(&mut reader, MAX_REQUEST_LINE),
        )
        .await
        {
            Err(_) => return Ok(()), // idle: close
            Ok(r) => r?,
        };
        let line = match line {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                let r = Response::error(format!(
                    "request longer than {MAX_REQUEST_LINE} bytes; closing the connection"
                ));
                // The rest of the oversized line cannot be told apart from the next request.
                return write_response(&mut write, &r).await;
            }
            Line::Text(t) => t,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let response = match super::request::parse_request(&line) {
            Err(e) => Response::error(e),
            Ok(request) => dispatch(&handler, request).await,
        };
        write_response(&mut write, &response).await?;
    }
}

async fn dispatch(handler: &mpsc::Sender<ApiCall>, request: Request) -> Response {
    let (reply, answer) = oneshot::channel();
    if handler.send(ApiCall { request, reply }).await.is_err() {
        return Response::error("the agent is shutting down");
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Response::error("the agent dropped the request without answering"),
        Err(_) => Response::error(format!(
            "the agent did not answer within {}s",
            ANSWER_TIMEOUT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::api::client::call;
    use crate::api::status::tests::sample_report;
    use crate::model::VipId;

    /// A fresh directory under /tmp, unique per test and process.
    fn temp_dir(name: &str) -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        // Under /tmp (not $TMPDIR): socket paths must fit in sun_path's 108 bytes.
        let dir = Path::new("/tmp").join(format!(
            "xlb-api-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn vip_id(s: &str) -> VipId {
        s.parse().unwrap()
    }

    /// Answers every call with an `Ok` echoing the request's JSON (status gets the sample report).
    fn fake_agent() -> (mpsc::Sender<ApiCall>, tokio::task::JoinHandle<usize>) {
        let (tx, mut rx) = mpsc::channel::<ApiCall>(8);
        let task = tokio::spawn(async move {
            let mut n = 0;
            while let Some(call) = rx.recv().await {
                n += 1;
                let r = match &call.request {
                    Request::Status => Response::Status(sample_report()),
                    other => Response::ok(serde_json::to_string(other).unwrap()),
                };
                let _ = call.reply.send(r);
            }
            n
        });
        (tx, task)
    }

    async fn raw_exchange(path: &Path, bytes: &[u8]) -> Vec<String> {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.lines().map(str::to_string).collect()
    }

    #[tokio::test]
    async fn every_request_round_trips_through_the_socket() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("run/xlb.sock");
        let (tx, agent) = fake_agent();
        let server = tokio::spawn({
            let path = path.clone();
            async move { serve(&path, tx).await }
        });
        for _ in 0..1000 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let vip = vip_id("udp/[2001:db8::1]:53");
        let addr: IpAddr = "2001:db8::53".parse().unwrap();
        let requests = [
            Request::AddBackend {
                vip,
                addr,
                weight: 100,
            },
            Request::RemoveBackend { vip, addr },
            Request::Drain { vip, addr },
            Request::SetWeight {
                vip,
                addr,
                weight: 7,
            },
            Request::Reload,
        ];
        for req in &requests {
            let r = call(&path, req).await.unwrap();
            let Response::Ok { message } = r else {
                panic!("{r:?}")
            };
            assert_eq!(serde_json::from_str::<Request>(&message).unwrap(), *req);
        }
        assert_eq!(
            call(&path, &Request::Status).await.unwrap(),
            Response::Status(sample_report())
        );
        // The wire format names the VIP by its display string.
        assert_eq!(
            serde_json::to_string(&requests[0]).unwrap(),
            r#"{"op":"add_backend","vip":"udp/[2001:db8::1]:53","addr":"2001:db8::53","weight":100}"#
        );
        // The parent directory was created 0700.
        let mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
        server.abort();
        let _ = server.await;
        assert_eq!(agent.await.unwrap(), 6);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn socket_is_0600_and_removed_when_the_agent_stops() {
        let dir = temp_dir("mode");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("xlb.sock");
        let server = ApiServer::bind(&path).await.unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o600);
        // No temporary socket left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(server.serve(tx));
        drop(rx);
        task.await.unwrap().unwrap();
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_and_live_one_refused() {
        let dir = temp_dir("stale");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("xlb.sock");
        // A socket file nobody listens on (its listener is gone).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert!(matches!(
            call(&path, &Request::Status).await,
            Err(ApiError::NotRunning { .. })
        ));
        let live = ApiServer::bind(&path).await.unwrap();
        // A second agent is refused, and the first keeps its socket.
        let err = ApiServer::bind(&path).await.unwrap_err();
        assert!(matches!(err, ApiError::AlreadyRunning { .. }), "{err}");
        assert_eq!(
            err.to_string().split(':').next().unwrap(),
            format!("another agent is running on {}", path.display())
        );
        let (tx, agent) = fake_agent();
        let server = tokio::spawn(live.serve(tx));
        assert!(matches!(
            call(&path, &Request::Reload).await.unwrap(),
            Response::Ok { .. }
        ));
        server.abort();
        let _ = server.await;
        agent.abort();
        // A regular file is not clobbered.
        let file = dir.join("file.sock");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            ApiServer::bind(&file).await,
            Err(ApiError::NotASocket { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn malformed_and_oversized_lines_get_errors() {
        let dir = temp_dir("malformed");
        let path = dir.join("xlb.sock");
        let server = ApiServer::bind(&path).await.unwrap();
        let (tx, agent) = fake_agent();
        let task = tokio::spawn(server.serve(tx));

        // Malformed JSON, an unknown op, a bad VIP: each an Error naming the problem, and the
        // connection stays usable for the next request.
        let lines = raw_exchange(
            &path,
            b"{not json\n{\"op\":\"explode\"}\n\n{\"op\":\"drain\",\"vip\":\"tcp/1.2.3.4\",\"addr\":\"1.2.3.5\"}\n{\"op\":\"reload\"}\n",
        )
        .await;
        assert_eq!(lines.len(), 4, "{lines:?}");
        let r: Vec<Response> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let msg = |r: &Response| match r {
            Response::Error { message } => message.clone(),
            other => panic!("{other:?}"),
        };
        assert!(
            msg(&r[0]).starts_with("malformed request: key must be a string"),
            "{r:?}"
        );
        assert!(msg(&r[1]).contains("unknown variant `explode`"), "{r:?}");
        assert!(msg(&r[2]).contains("missing the port"), "{r:?}");
        assert!(matches!(r[3], Response::Ok { .. }));

        // Oversized: an Error, then the connection is closed.
        let mut big = vec![b' '; MAX_REQUEST_LINE + 10];
        big.push(b'\n');
        big.extend_from_slice(b"{\"op\":\"reload\"}\n");
        let lines = raw_exchange(&path, &big).await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        let r: Response = serde_json::from_str(&lines[0]).unwrap();
        assert!(msg(&r).contains("longer than 65536 bytes"));

        // A line of exactly the limit is still read.
        let mut edge = b"{\"op\":\"reload\"}".to_vec();
        edge.resize(MAX_REQUEST_LINE, b' ');
        edge.push(b'\n');
        let lines = raw_exchange(&path, &edge).await;
        assert!(lines[0].contains("\"result\":\"ok\""), "{lines:?}");

        task.abort();
        let _ = task.await;
        agent.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A server on a fresh socket with the fake agent; (path, server, agent) for clean-up.
    async fn running(name: &str) -> (PathBuf, PathBuf, Vec<tokio::task::JoinHandle<()>>) {
        let dir = temp_dir(name);
        let path = dir.join("xlb.sock");
        let server = ApiServer::bind(&path).await.unwrap();
        let (tx, agent) = fake_agent();
        let task = tokio::spawn(async move {
            let _ = server.serve(tx).await;
        });
        let agent = tokio::spawn(async move {
            let _ = agent.await;
        });
        (dir, path, vec![task, agent])
    }

    async fn stop(dir: PathBuf, tasks: Vec<tokio::task::JoinHandle<()>>) {
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_busy_message_names_the_limit() {
        assert!(BUSY_MESSAGE.contains(&format!(" {MAX_CONNECTIONS} ")));
    }

    /// A byte a second never completes a request: the deadline is per request, not per read,
    /// so the connection is closed READ_TIMEOUT after it opened.
    #[tokio::test(start_paused = true)]
    async fn a_trickling_client_is_cut_off_at_the_request_deadline() {
        let (dir, path, tasks) = running("trickle").await;
        let s = UnixStream::connect(&path).await.unwrap();
        let (mut read, mut write) = s.into_split();
        let started = tokio::time::Instant::now();
        let trickle = tokio::spawn(async move {
            let request = b"{\"op\":\"status\"}";
            // Bounded: well past the deadline, then give up.
            for i in 0..(2 * READ_TIMEOUT.as_secs() as usize) {
                let byte = request.get(i).copied().unwrap_or(b' ');
                if write.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let mut buf = Vec::new();
        // EOF without an answer: the server closed the connection.
        assert_eq!(read.read_to_end(&mut buf).await.unwrap(), 0);
        let held = started.elapsed();
        // The documented limit: 10 s per request, whatever the client does.
        assert!(
            held >= READ_TIMEOUT && held <= Duration::from_secs(11),
            "held {held:?}"
        );
        trickle.abort();
        stop(dir, tasks).await;
    }

    /// The server writes answers to a client that sends requests but never reads them: once
    /// the socket buffers are full, the write deadline closes the connection.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_is_cut_off_at_the_write_deadline() {
        let (dir, path, tasks) = running("no-read").await;
        let s = UnixStream::connect(&path).await.unwrap();
        let (mut read, mut write) = s.into_split();
        // Status answers of about 1 KiB each, for 17-byte requests: what the server must write
        // far exceeds the socket buffers (wmem_max is 4 MiB) while the requests fit at once.
        let answer = serde_json::to_vec(&Response::Status(sample_report())).unwrap();
        let count = (8 << 20) / answer.len() + 1;
        let requests = b"{\"op\":\"status\"}\n".repeat(count);
        let sender = tokio::spawn(async move {
            let _ = write.write_all(&requests).await;
        });
        // The documented limit: an answer not taken within 10 s ends the connection.
        tokio::time::sleep(Duration::from_secs(11)).await;
        // The server closed the connection: the answers it wrote, then EOF, or a reset (it
        // closed with requests unread).
        let mut answers = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        let drained = tokio::time::timeout(Duration::from_millis(10), async {
            loop {
                match read.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => answers.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .await;
        assert!(drained.is_ok(), "the connection stayed open");
        let n = answers.iter().filter(|b| **b == b'\n').count();
        assert!(n < count, "all {n} answers were written: nothing blocked");
        sender.abort();
        stop(dir, tasks).await;
    }

    #[tokio::test]
    async fn when_every_slot_is_taken_a_new_connection_is_refused_at_once() {
        let (dir, path, tasks) = running("busy").await;
        // Idle connections, accepted in order: they take every slot.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        let started = std::time::Instant::now();
        let lines = raw_exchange(&path, b"{\"op\":\"status\"}\n").await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            lines
                .iter()
                .map(|l| serde_json::from_str::<Response>(l).unwrap())
                .collect::<Vec<_>>(),
            [Response::error(BUSY_MESSAGE)]
        );
        // The client retries a busy refusal: a slot freed meanwhile serves it.
        let freer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(idle.pop());
            idle
        });
        assert_eq!(
            call(&path, &Request::Status).await.unwrap(),
            Response::Status(sample_report())
        );
        drop(freer.await.unwrap());
        stop(dir, tasks).await;
    }
}

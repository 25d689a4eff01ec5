//! The agent's local control API: one JSON object per line over a Unix stream socket.
//!
//! A client writes a [`Request`] terminated by `\n` and reads one [`Response`] line back; it may
//! send further requests on the same connection. The socket is the authority to change the load
//! balancer, so it is never a network port: it lives in a directory created 0700, is itself mode
//! 0600 (bound under a temporary name, chmod-ed, then renamed into place, so it is never
//! reachable with looser permissions), and peers whose uid is neither root nor the agent's are
//! refused (`SO_PEERCRED`).
//!
//! Wire format (serde, internally tagged):
//!
//! ```text
//! {"op":"status"}
//! {"op":"add_backend","vip":"tcp/203.0.113.10:80","addr":"198.51.100.7","weight":100}
//! {"op":"remove_backend","vip":"tcp/203.0.113.10:80","addr":"198.51.100.7"}
//! {"op":"drain","vip":"udp/[2001:db8::1]:53","addr":"2001:db8::53"}
//! {"op":"set_weight","vip":"tcp/203.0.113.10:*","addr":"198.51.100.7","weight":50}
//! {"op":"reload"}
//! -> {"result":"ok","message":"..."} | {"result":"status",...StatusReport} | {"result":"error","message":"..."}
//! ```
//!
//! The server ([`serve`]) only moves requests: each becomes an [`ApiCall`] on the agent's
//! channel, and the agent's loop (the owner of all state) answers through the call's oneshot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lb_common::{
    addr::from_words,
    limits::RING_SIZE,
    values::{BACKEND_ACTIVE, BACKEND_DOWN, BACKEND_DRAINING, BACKEND_EMPTY},
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::maglev;
use crate::maps::{MapError, MapStore};
use crate::model::{CheckKind, Config, VipId};
use crate::reconcile::{BackendView, NetInfo, Overrides};

/// Default socket path (the config's `api_socket` default).
pub const DEFAULT_SOCKET: &str = "/run/xlb/xlb.sock";
/// Longest request line accepted, newline excluded.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// Longest response line a client accepts (a status report of many VIPs is large).
pub const MAX_RESPONSE_LINE: usize = 64 * 1024 * 1024;
/// A connection that sends nothing for this long is closed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request may wait for the agent's answer (a reload re-reads and applies the
/// config; a status report reads the maps) before the client is told the agent is stuck.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a closing server lets open connections finish writing their answers (the agent
/// answers `xlb stop` last, just before it closes the API).
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// `VipId` as its `Display` string (`tcp/203.0.113.10:80`) in serde, parsed back with its
/// `FromStr`. Use with `#[serde(with = "crate::api::vip_id_serde")]`.
pub mod vip_id_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::model::VipId;

    pub fn serialize<S: Serializer>(id: &VipId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VipId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The [`StatusReport`].
    Status,
    /// Adds a backend to a configured VIP at runtime (kept until the next reload).
    AddBackend {
        #[serde(with = "vip_id_serde")]
        vip: VipId,
        addr: IpAddr,
        weight: u32,
    },
    /// Removes a backend at runtime (until the next reload).
    RemoveBackend {
        #[serde(with = "vip_id_serde")]
        vip: VipId,
        addr: IpAddr,
    },
    /// Weight override 0: out of the ring, existing flows kept.
    Drain {
        #[serde(with = "vip_id_serde")]
        vip: VipId,
        addr: IpAddr,
    },
    /// Weight override (wins over the config's weight until the backend leaves the config).
    SetWeight {
        #[serde(with = "vip_id_serde")]
        vip: VipId,
        addr: IpAddr,
        weight: u32,
    },
    /// Re-reads the config file and applies it.
    Reload,
    /// Stops the agent; with `detach`, also detaches the program and unpins the maps
    /// (`xlb stop --detach`). Without it forwarding continues from the pinned program.
    Shutdown { detach: bool },
}

/// What the agent answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok { message: String },
    Status(StatusReport),
    Error { message: String },
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Response::Ok {
            message: message.into(),
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
        }
    }
}

/// One request handed to the agent's loop; answer through `reply` (dropping it answers with
/// an error).
#[derive(Debug)]
pub struct ApiCall {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

// ---------------------------------------------------------------------------------------------
// Status report

/// Result of a backend's health check, as the agent knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Up,
    Down,
    /// Not probed to a verdict yet.
    Unknown,
}

impl HealthStatus {
    pub const fn name(self) -> &'static str {
        match self {
            HealthStatus::Up => "up",
            HealthStatus::Down => "down",
            HealthStatus::Unknown => "unknown",
        }
    }
}

/// A backend map entry's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapState {
    /// In the ring: gets new flows.
    Active,
    /// Out of the ring; flows already pinned to it stay.
    Draining,
    /// Out of the ring; its flows re-hash.
    Down,
    /// The entry exists but is zeroed (no backend).
    Empty,
    /// No entry at all.
    Missing,
    /// A state number this agent does not know (see the mismatch text for the value).
    Invalid,
}

impl MapState {
    pub const fn from_raw(state: u8) -> Self {
        match state {
            BACKEND_EMPTY => MapState::Empty,
            BACKEND_ACTIVE => MapState::Active,
            BACKEND_DRAINING => MapState::Draining,
            BACKEND_DOWN => MapState::Down,
            _ => MapState::Invalid,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            MapState::Active => "active",
            MapState::Draining => "draining",
            MapState::Down => "down",
            MapState::Empty => "empty",
            MapState::Missing => "missing",
            MapState::Invalid => "invalid",
        }
    }
}

/// `xlb status`: what the config wants next to what the maps hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub agent: AgentInfo,
    /// Sorted by VIP; VIPs found in the maps but not in the config come last.
    pub vips: Vec<VipStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub config_path: PathBuf,
    pub pin_dir: PathBuf,
    pub interfaces: Vec<String>,
    /// `None` until the first reload request (the startup load is not a reload).
    pub last_reload: Option<ReloadInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadInfo {
    pub ok: bool,
    /// What it did, or why it failed.
    pub message: String,
    /// Seconds since the Unix epoch (UTC).
    pub at_unix: u64,
}

impl ReloadInfo {
    pub fn now(ok: bool, message: impl Into<String>) -> Self {
        Self {
            ok,
            message: message.into(),
            at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    #[serde(with = "vip_id_serde")]
    pub id: VipId,
    /// `ipip`, `gue` or `dsr-l2`; `unknown(N)` for a VIP only in the maps with an odd mode.
    pub mode: String,
    /// VIP index in the maps (`None`: not in the maps).
    pub index: Option<u32>,
    pub backends: Vec<BackendStatus>,
    pub mismatch: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub addr: IpAddr,
    /// Backend id in the maps (`None`: none assigned).
    pub id: Option<u32>,
    /// Weight in the config (0 for a backend only in the maps).
    pub weight: u32,
    /// Weight the ring is built with: the API override if any, else `weight`.
    pub effective_weight: u32,
    pub health: HealthStatus,
    /// The state the config, overrides, health and reachability call for.
    pub desired: MapState,
    /// The state the backend map holds.
    pub state: MapState,
    /// Ring slots it owns in the map.
    pub ring_slots: u32,
    /// `ring_slots` as a percentage of the ring.
    pub ring_share: f64,
    pub mismatch: Option<String>,
}

/// What [`StatusReport::collect`] compares the maps with.
pub struct StatusInputs<'a> {
    pub config: &'a Config,
    pub agent: AgentInfo,
    pub overrides: &'a Overrides,
    /// Damped health per backend; a backend missing here is `unknown`, except under a check of
    /// kind `none` (always up).
    pub health: &'a HashMap<(VipId, IpAddr), HealthStatus>,
    /// Backends without a neighbour MAC are kept out of the ring by the reconciler.
    pub net: &'a NetInfo,
    /// `Reconciler::backends()`: which id each backend was given. Entry contents and ring
    /// shares are read back from the maps, not taken from here.
    pub assigned: &'a [BackendView],
}

fn mode_name(mode: u8) -> String {
    crate::model::ForwardMode::from_number(mode)
        .map_or_else(|| format!("unknown({mode})"), |m| m.name().to_string())
}

fn share(slots: u32) -> f64 {
    f64::from(slots) * 100.0 / f64::from(RING_SIZE)
}

impl StatusReport {
    /// Builds the report: desired state from `inputs`, actual state read from `store` (VIP
    /// entries, each assigned backend's entry, each VIP's ring). Costs one VIP-map walk, one
    /// lookup per backend and one ring read per VIP.
    pub fn collect<S: MapStore + ?Sized>(
        inputs: &StatusInputs<'_>,
        store: &S,
    ) -> Result<StatusReport, MapError> {
        let mut in_maps: BTreeMap<VipId, lb_common::VipMeta> = BTreeMap::new();
        for (key, meta) in store.vips()? {
            if let Some(id) = VipId::from_map_entry(&key, &meta) {
                in_maps.insert(id, meta);
            }
        }
        let mut assigned: BTreeMap<VipId, BTreeMap<IpAddr, u32>> = BTreeMap::new();
        for v in inputs.assigned {
            assigned.entry(v.vip).or_default().insert(v.addr, v.id);
        }

        let mut vips = Vec::new();
        for vip in &inputs.config.vips {
            let meta = in_maps.get(&vip.id);
            let index = meta.map(|m| m.index);
            let counts = match index {
                Some(i) => maglev::slot_counts(&store.ring(i)?),
                None => BTreeMap::new(),
            };
            let mut mismatch = match meta {
                None => Some("in config, not in maps".to_string()),
                Some(m) if m.mode != vip.mode.number() => Some(format!(
                    "desired mode {}, map says {}",
                    vip.mode.name(),
                    mode_name(m.mode)
                )),
                Some(_) => None,
            };
            let ids = assigned.get(&vip.id);
            let mut backends = Vec::new();
            for spec in &vip.backends {
                let key = (vip.id, spec.addr);
                let effective = inputs
                    .overrides
                    .weights
                    .get(&key)
                    .copied()
                    .unwrap_or(spec.weight);
                let health = match inputs.health.get(&key) {
                    Some(h) => *h,
                    None if vip.health.kind == CheckKind::None => HealthStatus::Up,
                    None => HealthStatus::Unknown,
                };
                let reachable = inputs.net.macs.contains_key(&spec.addr);
                let desired = if inputs.overrides.down.contains(&key) || !reachable {
                    MapState::Down
                } else if effective == 0 {
                    MapState::Draining
                } else {
                    MapState::Active
                };
                let id = ids.and_then(|m| m.get(&spec.addr)).copied();
                let (state, note) = match id {
                    None => (
                        MapState::Missing,
                        Some("in config, not in maps".to_string()),
                    ),
                    Some(id) => {
                        let entry = store.backend(id)?;
                        let state = MapState::from_raw(entry.state);
                        let owner = from_words(entry.family, &entry.addr);
                        let note = if state == MapState::Empty {
                            None
                        } else if owner != Some(spec.addr) || Some(entry.vip_index) != index {
                            Some(format!(
                                "id {id} holds {} of VIP index {}",
                                owner.map_or("an invalid address".to_string(), |a| a.to_string()),
                                entry.vip_index
                            ))
                        } else if state == MapState::Invalid {
                            Some(format!("map holds unknown state {}", entry.state))
                        } else {
                            None
                        };
                        (state, note)
                    }
                };
                let slots = id.and_then(|id| counts.get(&id)).copied().unwrap_or(0);
                let note = note.or_else(|| {
                    if state != desired {
                        Some(format!(
                            "desired {}, map says {}",
                            desired.name(),
                            state.name()
                        ))
                    } else if state == MapState::Active && slots == 0 {
                        Some("active but owns no ring slots".to_string())
                    } else if state != MapState::Active && slots > 0 {
                        Some(format!("{} but owns {slots} ring slots", state.name()))
                    } else {
                        None
                    }
                });
                backends.push(BackendStatus {
                    addr: spec.addr,
                    id,
                    weight: spec.weight,
                    effective_weight: effective,
                    health,
                    desired,
                    state,
                    ring_slots: slots,
                    ring_share: share(slots),
                    mismatch: note,
                });
            }
            // Backends the reconciler still has for this VIP that the config no longer lists.
            let listed: HashSet<IpAddr> = vip.backends.iter().map(|b| b.addr).collect();
            for (addr, id) in ids.into_iter().flatten() {
                if listed.contains(addr) {
                    continue;
                }
                let entry = store.backend(*id)?;
                let slots = counts.get(id).copied().unwrap_or(0);
                backends.push(BackendStatus {
                    addr: *addr,
                    id: Some(*id),
                    weight: 0,
                    effective_weight: 0,
                    health: inputs
                        .health
                        .get(&(vip.id, *addr))
                        .copied()
                        .unwrap_or(HealthStatus::Unknown),
                    desired: MapState::Empty,
                    state: MapState::from_raw(entry.state),
                    ring_slots: slots,
                    ring_share: share(slots),
                    mismatch: Some("in maps, not in config".to_string()),
                });
            }
            if mismatch.is_none() && meta.is_some() {
                let stray = counts
                    .iter()
                    .filter(|(id, _)| {
                        **id != 0 && !ids.is_some_and(|m| m.values().any(|x| x == *id))
                    })
                    .map(|(_, n)| n)
                    .sum::<u32>();
                if stray > 0 {
                    mismatch = Some(format!(
                        "{stray} ring slots name backends of no VIP backend"
                    ));
                }
            }
            vips.push(VipStatus {
                id: vip.id,
                mode: vip.mode.name().to_string(),
                index,
                backends,
                mismatch,
            });
        }
        for (id, meta) in &in_maps {
            if inputs.config.vip(id).is_none() {
                vips.push(VipStatus {
                    id: *id,
                    mode: mode_name(meta.mode),
                    index: Some(meta.index),
                    backends: Vec::new(),
                    mismatch: Some("in maps, not in config".to_string()),
                });
            }
        }
        Ok(StatusReport {
            agent: inputs.agent.clone(),
            vips,
        })
    }

    /// The report as `xlb status` prints it, in the spirit of `ipvsadm -L -n`: numeric,
    /// one VIP line (`TCP`/`UDP`) followed by its `  -> backend` lines, columns separated by
    /// runs of spaces, a trailing `!N` on a line whose desired and actual state disagree, and
    /// the footnotes `!N <vip> [<backend>]: <what disagrees>` at the end.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let a = &self.agent;
        let _ = writeln!(out, "config:     {}", a.config_path.display());
        let _ = writeln!(out, "pin dir:    {}", a.pin_dir.display());
        let _ = writeln!(
            out,
            "interfaces: {}",
            if a.interfaces.is_empty() {
                "-".to_string()
            } else {
                a.interfaces.join(" ")
            }
        );
        match &a.last_reload {
            None => out.push_str("reload:     none since start\n"),
            Some(r) => {
                let _ = writeln!(
                    out,
                    "reload:     {} at {}: {}",
                    if r.ok { "ok" } else { "FAILED" },
                    rfc3339(r.at_unix),
                    r.message
                );
            }
        }

        // Column widths: the address column fits the longest VIP or backend address.
        let vip_addr = |id: &VipId| {
            let s = id.to_string();
            s.split_once('/')
                .map_or(s.clone(), |(_, rest)| rest.to_string())
        };
        let addr_w = self
            .vips
            .iter()
            .flat_map(|v| {
                std::iter::once(vip_addr(&v.id).len())
                    .chain(v.backends.iter().map(|b| b.addr.to_string().len()))
            })
            .chain(std::iter::once("LocalAddress:Port".len()))
            .max()
            .unwrap_or(0);
        let _ = writeln!(out, "Prot {:<addr_w$}  Mode    Index", "LocalAddress:Port");
        let _ = writeln!(
            out,
            "  -> {:<addr_w$}  Weight  Eff     Health   State     Slots   Share",
            "Backend"
        );
        let mut notes = Vec::new();
        let mark = |notes: &mut Vec<String>, what: String, text: &Option<String>| match text {
            None => String::new(),
            Some(t) => {
                notes.push(format!("{what}: {t}"));
                format!("  !{}", notes.len())
            }
        };
        for v in &self.vips {
            let proto = v.id.proto.name().to_ascii_uppercase();
            let index = v.index.map_or("-".to_string(), |i| i.to_string());
            let m = mark(&mut notes, v.id.to_string(), &v.mismatch);
            let line = format!(
                "{proto:<4} {:<addr_w$}  {:<7} {index}{m}",
                vip_addr(&v.id),
                v.mode
            );
            let _ = writeln!(out, "{}", line.trim_end());
            for b in &v.backends {
                let m = mark(&mut notes, format!("{} {}", v.id, b.addr), &b.mismatch);
                let _ = writeln!(
                    out,
                    "  -> {:<addr_w$}  {:<7} {:<7} {:<8} {:<9} {:<7} {:>6.2}%{m}",
                    b.addr.to_string(),
                    b.weight,
                    b.effective_weight,
                    b.health.name(),
                    b.state.name(),
                    b.ring_slots,
                    b.ring_share,
                );
            }
        }
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(out, "!{} {n}", i + 1);
        }
        out
    }
}

/// `2026-04-20T12:00:00Z` from Unix seconds (proleptic Gregorian, UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Errors

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

fn io_error(op: &'static str, path: &Path, e: io::Error) -> ApiError {
    match e.kind() {
        io::ErrorKind::PermissionDenied => ApiError::PermissionDenied { path: path.into() },
        _ => ApiError::Io {
            op,
            path: path.into(),
            source: e,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Server

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
        let mut connections = tokio::task::JoinSet::new();
        let result = loop {
            let permit = tokio::select! {
                _ = handler.closed() => break Ok(()),
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            };
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

/// Whether a peer may use the API: root, or the agent's own user.
fn peer_allowed(stream: &UnixStream) -> bool {
    match stream.peer_cred() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Ok(cred) => cred.uid() == 0 || cred.uid() == unsafe { libc::geteuid() },
        Err(_) => false,
    }
}

/// Outcome of reading one line.
enum Line {
    Text(Vec<u8>),
    TooLong,
    Eof,
}

/// Reads up to and excluding `\n`; more than `max` bytes before it is `TooLong`.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    max: usize,
) -> io::Result<Line> {
    let mut buf = Vec::new();
    let n = reader
        .take(max as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > max {
        return Ok(Line::TooLong);
    }
    Ok(Line::Text(buf))
}

async fn write_response(stream: &mut (impl AsyncWriteExt + Unpin), r: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.flush().await
}

async fn serve_connection(stream: UnixStream, handler: mpsc::Sender<ApiCall>) -> io::Result<()> {
    let allowed = peer_allowed(&stream);
    let (read, mut write) = stream.into_split();
    if !allowed {
        let r = Response::error("permission denied: the xlb API is for root only");
        return write_response(&mut write, &r).await;
    }
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
        let response = match serde_json::from_slice::<Request>(&line) {
            Err(e) => Response::error(format!("malformed request: {e}")),
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

// ---------------------------------------------------------------------------------------------
// Client

/// Sends one request to the agent on `path` and returns its answer. An agent-side failure is
/// `Ok(Response::Error)`; `Err` means the request did not get through.
pub async fn call(path: &Path, req: &Request) -> Result<Response, ApiError> {
    let timeout = ANSWER_TIMEOUT + Duration::from_secs(5);
    match tokio::time::timeout(timeout, call_inner(path, req)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::Timeout {
            path: path.into(),
            timeout,
        }),
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
    write
        .write_all(&line)
        .await
        .map_err(|e| io_error("send", path, e))?;
    let mut reader = BufReader::new(read);
    let line = match read_line(&mut reader, MAX_RESPONSE_LINE)
        .await
        .map_err(|e| io_error("receive", path, e))?
    {
        Line::Text(t) => t,
        Line::Eof => {
            return Err(ApiError::Protocol {
                path: path.into(),
                detail: "connection closed without an answer".into(),
            });
        }
        Line::TooLong => {
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
    use std::sync::atomic::{AtomicU32, Ordering};

    use lb_common::Backend;

    use super::*;
    use crate::maps::FakeStore;
    use crate::model::{ForwardMode, Vip};
    use crate::reconcile::Reconciler;

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

    /// Answers every call with an `Ok` echoing the request's JSON (status gets a tiny report).
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
            path: DEFAULT_SOCKET.into(),
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

    fn sample_report() -> StatusReport {
        StatusReport {
            agent: AgentInfo {
                config_path: "/etc/xlb/xlb.toml".into(),
                pin_dir: "/sys/fs/bpf/xlb".into(),
                interfaces: vec!["eth0".into(), "eth1".into()],
                last_reload: Some(ReloadInfo {
                    ok: true,
                    message: "2 VIPs, 3 backends".into(),
                    at_unix: 1_776_686_400,
                }),
            },
            vips: vec![
                VipStatus {
                    id: vip_id("tcp/203.0.113.10:80"),
                    mode: "ipip".into(),
                    index: Some(0),
                    backends: vec![
                        BackendStatus {
                            addr: "198.51.100.1".parse().unwrap(),
                            id: Some(1),
                            weight: 100,
                            effective_weight: 100,
                            health: HealthStatus::Up,
                            desired: MapState::Active,
                            state: MapState::Active,
                            ring_slots: 65_537,
                            ring_share: 100.0,
                            mismatch: None,
                        },
                        BackendStatus {
                            addr: "198.51.100.2".parse().unwrap(),
                            id: Some(2),
                            weight: 100,
                            effective_weight: 0,
                            health: HealthStatus::Up,
                            desired: MapState::Draining,
                            state: MapState::Draining,
                            ring_slots: 0,
                            ring_share: 0.0,
                            mismatch: None,
                        },
                        BackendStatus {
                            addr: "198.51.100.3".parse().unwrap(),
                            id: Some(3),
                            weight: 50,
                            effective_weight: 50,
                            health: HealthStatus::Down,
                            desired: MapState::Down,
                            state: MapState::Active,
                            ring_slots: 0,
                            ring_share: 0.0,
                            mismatch: Some("desired down, map says active".into()),
                        },
                    ],
                    mismatch: None,
                },
                VipStatus {
                    id: vip_id("udp/[2001:db8::1]:*"),
                    mode: "dsr-l2".into(),
                    index: None,
                    backends: vec![BackendStatus {
                        addr: "2001:db8::53".parse().unwrap(),
                        id: None,
                        weight: 1,
                        effective_weight: 1,
                        health: HealthStatus::Unknown,
                        desired: MapState::Active,
                        state: MapState::Missing,
                        ring_slots: 0,
                        ring_share: 0.0,
                        mismatch: Some("in config, not in maps".into()),
                    }],
                    mismatch: Some("in config, not in maps".into()),
                },
            ],
        }
    }

    #[test]
    fn render_table_golden() {
        let expected = "\
config:     /etc/xlb/xlb.toml
pin dir:    /sys/fs/bpf/xlb
interfaces: eth0 eth1
reload:     ok at 2026-04-20T12:00:00Z: 2 VIPs, 3 backends
Prot LocalAddress:Port  Mode    Index
  -> Backend            Weight  Eff     Health   State     Slots   Share
TCP  203.0.113.10:80    ipip    0
  -> 198.51.100.1       100     100     up       active    65537   100.00%
  -> 198.51.100.2       100     0       up       draining  0         0.00%
  -> 198.51.100.3       50      50      down     active    0         0.00%  !1
UDP  [2001:db8::1]:*    dsr-l2  -  !2
  -> 2001:db8::53       1       1       unknown  missing   0         0.00%  !3
!1 tcp/203.0.113.10:80 198.51.100.3: desired down, map says active
!2 udp/[2001:db8::1]:*: in config, not in maps
!3 udp/[2001:db8::1]:* 2001:db8::53: in config, not in maps
";
        let got = sample_report().render_table();
        assert_eq!(got, expected, "\n{got}");
        let mut r = sample_report();
        r.agent.last_reload = None;
        r.agent.interfaces.clear();
        let got = r.render_table();
        assert!(
            got.contains("interfaces: -\nreload:     none since start\n"),
            "{got}"
        );
        // The JSON form round-trips.
        let json = serde_json::to_string(&sample_report()).unwrap();
        assert!(json.contains(r#""id":"udp/[2001:db8::1]:*""#), "{json}");
        assert_eq!(
            serde_json::from_str::<StatusReport>(&json).unwrap(),
            sample_report()
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_776_686_399), "2026-04-20T11:59:59Z");
    }

    use crate::test_fixtures::config;

    fn vip(id: &str, backends: &[(&str, u32)]) -> Vip {
        let id = vip_id(id);
        let mut v = crate::test_fixtures::vip(&id.addr.to_string(), id.port, id.proto, backends);
        v.health.kind = CheckKind::Tcp;
        v
    }

    /// FakeStore is not Clone; its map contents are public.
    fn copy_of(s: &FakeStore) -> FakeStore {
        let mut c = FakeStore::new(s.max_vips(), s.max_backends());
        c.config = s.config;
        c.vips = s.vips.clone();
        c.backends = s.backends.clone();
        c.rings = s.rings.clone();
        c.filter = s.filter.clone();
        c
    }

    #[test]
    fn collect_compares_desired_with_the_maps() {
        let cfg = config(vec![vip(
            "tcp/203.0.113.10:80",
            &[
                ("198.51.100.1", 100),
                ("198.51.100.2", 100),
                ("198.51.100.3", 100),
            ],
        )]);
        let id = cfg.vips[0].id;
        let a = |s: &str| -> IpAddr { s.parse().unwrap() };
        let net = NetInfo {
            src_mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            macs: ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
                .iter()
                .map(|s| (a(s), [2, 0, 0, 0, 0, 2]))
                .collect(),
        };
        let mut over = Overrides::default();
        over.weights.insert((id, a("198.51.100.2")), 0);
        let mut r = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        r.apply(&cfg, &over, &net).unwrap();
        let assigned = r.backends();
        let mut health = HashMap::new();
        health.insert((id, a("198.51.100.1")), HealthStatus::Up);
        // The health check says .3 is down, but the maps were not updated (yet).
        health.insert((id, a("198.51.100.3")), HealthStatus::Down);
        let mut over_now = over.clone();
        over_now.down.insert((id, a("198.51.100.3")));
        let inputs = StatusInputs {
            config: &cfg,
            agent: AgentInfo {
                config_path: "/etc/xlb/xlb.toml".into(),
                pin_dir: cfg.pin_dir.clone(),
                interfaces: vec!["eth0".into()],
                last_reload: None,
            },
            overrides: &over_now,
            health: &health,
            net: &net,
            assigned: &assigned,
        };
        let report = StatusReport::collect(&inputs, r.store()).unwrap();
        assert_eq!(report.vips.len(), 1);
        let v = &report.vips[0];
        assert_eq!((v.index, v.mismatch.as_deref()), (Some(0), None));
        let b: Vec<_> = v
            .backends
            .iter()
            .map(|b| {
                (
                    b.addr.to_string(),
                    b.effective_weight,
                    b.health,
                    b.state,
                    b.mismatch.clone(),
                )
            })
            .collect();
        assert_eq!(
            b,
            vec![
                (
                    "198.51.100.1".into(),
                    100,
                    HealthStatus::Up,
                    MapState::Active,
                    None
                ),
                (
                    "198.51.100.2".into(),
                    0,
                    HealthStatus::Unknown,
                    MapState::Draining,
                    None
                ),
                (
                    "198.51.100.3".into(),
                    100,
                    HealthStatus::Down,
                    MapState::Active,
                    Some("desired down, map says active".into())
                ),
            ]
        );
        let total: u32 = v.backends.iter().map(|b| b.ring_slots).sum();
        assert_eq!(total, RING_SIZE);
        assert_eq!(v.backends[1].ring_slots, 0);

        // Someone zeroes .1's entry behind the agent's back; a VIP only in the maps shows up.
        let mut tampered = copy_of(r.store());
        tampered.backends[assigned[0].id as usize] = Backend::default();
        let extra = vip_id("udp/192.0.2.99:53");
        tampered.vips.insert(
            extra.map_key(),
            lb_common::VipMeta {
                index: 5,
                flags: 0,
                mode: ForwardMode::Gue.number(),
                _pad: [0; 3],
            },
        );
        let report = StatusReport::collect(&inputs, &tampered).unwrap();
        assert_eq!(
            report.vips[0].backends[0].mismatch.as_deref(),
            Some("desired active, map says empty")
        );
        assert_eq!(report.vips[1].id, extra);
        assert_eq!(report.vips[1].mode, "gue");
        assert_eq!(
            report.vips[1].mismatch.as_deref(),
            Some("in maps, not in config")
        );
        let table = report.render_table();
        assert!(
            table.contains("!3 udp/192.0.2.99:53: in maps, not in config"),
            "{table}"
        );
    }
}

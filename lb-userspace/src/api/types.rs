//! The wire types: requests, responses and the status report, as serde writes them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::model::{BackendState, VipId};

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
    /// Withdraws every route this node announces (`[announce]`) and keeps forwarding, so the
    /// routers move the traffic to the other nodes (`xlb drain-node`). Not kept across restarts.
    DrainNode,
    /// Ends a node drain: addresses are announced again as their VIPs allow.
    UndrainNode,
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
        match BackendState::from_number(state) {
            Some(BackendState::Empty) => MapState::Empty,
            Some(BackendState::Active) => MapState::Active,
            Some(BackendState::Draining) => MapState::Draining,
            Some(BackendState::Down) => MapState::Down,
            None => MapState::Invalid,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            MapState::Active => BackendState::Active.name(),
            MapState::Draining => BackendState::Draining.name(),
            MapState::Down => BackendState::Down.name(),
            MapState::Empty => BackendState::Empty.name(),
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
    /// The VIP routes for the routers, when `[announce]` is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<Box<crate::announce::AnnounceStatus>>,
    /// Flow continuity with the peers, when `[continuity]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuity: Option<Box<crate::continuity::status::ContinuityStatus>>,
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

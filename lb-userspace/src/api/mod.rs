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
//!
//! Files: `types` (the wire types), `request` (reading a request line, every refusal naming
//! its field), `status` (the status report: computed from the config and
//! the maps, and rendered as `xlb status` prints it), `server`, `client`, `line` (the line
//! framing both ends share) and `error`.

use std::time::Duration;

mod client;
mod error;
mod line;
mod request;
mod server;
mod status;
mod types;

pub use client::{MAX_RESPONSE_LINE, call};
pub use error::ApiError;
pub use request::parse_request;
pub use server::{
    ApiServer, BUSY_MESSAGE, CLOSE_GRACE, MAX_CONNECTIONS, MAX_REQUEST_LINE, READ_TIMEOUT,
    WRITE_TIMEOUT, serve,
};
pub use status::StatusInputs;
pub use types::{
    AgentInfo, ApiCall, BackendStatus, HealthStatus, MapState, ReloadInfo, Request, Response,
    StatusReport, VipStatus, vip_id_serde,
};

/// How long a request may wait for the agent's answer (a reload re-reads and applies the
/// config; a status report reads the maps) before the client is told the agent is stuck.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

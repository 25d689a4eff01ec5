//! Defaults and limits of the file's keys, all documented in `examples/xlb.toml`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The file's path defaults are the ones the CLI uses too.
pub use crate::paths::{BPFFS_ROOT, DEFAULT_API_SOCKET, DEFAULT_PIN_DIR};

/// Default flow-hash seed: the bytes of "xlb!". Any fixed value works; what matters is that
/// every LB node sharing a config uses the same one.
pub const DEFAULT_HASH_SEED: u32 = 0x786c_6221;
/// Default GUE destination port (what `ip fou add port 6080 gue` listens on by convention).
pub const DEFAULT_GUE_PORT: u16 = 6080;
pub const DEFAULT_ICMP_RATE: u32 = 1000;
pub const DEFAULT_ICMP_BURST: u32 = 100;
/// TTL / hop limit of the outer header of encapsulated packets: xlb's own header, so not the
/// inner packet's (an inner TTL of 0 or 1 must not kill the tunnelled packet). 64 as Katran.
pub const DEFAULT_OUTER_TTL: u8 = 64;
/// Loopback only: the metrics endpoint has no authentication.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9477);
pub const DEFAULT_WEIGHT: u32 = 100;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_HTTP_PATH: &str = "/";
pub const DEFAULT_EXPECT_STATUS: u16 = 200;

pub const FLOW_TABLE_SIZE_RANGE: (u64, u64) = (1024, 64 * 1024 * 1024);
/// The ring map holds `max_vips * RING_SIZE` u32 slots: 4096 VIPs is 1 GiB of ring.
pub const MAX_VIPS_RANGE: (u64, u64) = (1, 4096);
/// One backend-map entry ([`lb_common::values::Backend`]) per backend id; id 0 is reserved, so
/// at least 2.
pub const MAX_BACKENDS_RANGE: (u64, u64) = (2, 1 << 20);
pub const MTU_RANGE: (u64, u64) = (576, 9216);
/// IPv6 links carry at least this much (RFC 8200); PMTU reports below it are ignored (RFC 8201).
pub const IPV6_MIN_MTU: u32 = 1280;
pub const ICMP_RATE_RANGE: (u64, u64) = (1, 1_000_000);
pub const ICMP_BURST_RANGE: (u64, u64) = (1, 1_000_000);
pub const OUTER_TTL_RANGE: (u64, u64) = (1, 255);
pub const RISE_FALL_RANGE: (u64, u64) = (1, 100);
pub const EXPECT_STATUS_RANGE: (u64, u64) = (100, 599);
pub const INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));

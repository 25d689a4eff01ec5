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
/// A UDP flow silent this long takes the ring's choice again (Katran's default too).
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// From about two ticks of the program's idle clock (0.5 to 1.07 s each, by the kernel's HZ)
/// to 4 hours (below `lb_common::flows::MAX_IDLE_TICKS` of the shortest tick, 4.9 hours).
pub const UDP_IDLE_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(2), Duration::from_secs(4 * 3600));
pub const RISE_FALL_RANGE: (u64, u64) = (1, 100);
pub const EXPECT_STATUS_RANGE: (u64, u64) = (100, 599);
pub const INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));

/// `[announce]`: the kernel table the VIP routes go into, and their route protocol number.
/// 200 is free on a stock system (`/etc/iproute2/rt_tables`, `rt_protos`).
pub const DEFAULT_ANNOUNCE_TABLE: u32 = 200;
pub const DEFAULT_ANNOUNCE_PROTOCOL: u8 = 200;
pub const DEFAULT_MIN_HEALTHY: u32 = 1;
pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(5);
pub const DEFAULT_WITHDRAW_GRACE: Duration = Duration::from_secs(3);
pub const DEFAULT_DRAIN_QUIET: Duration = Duration::from_secs(10);
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";
/// Table ids: 0 is "unspecified"; 2^31 is the largest id `ip route` documents.
pub const ANNOUNCE_TABLE_RANGE: (u64, u64) = (1, 1 << 31);
/// The kernel's own tables: default, main, local.
pub const RESERVED_TABLES: [u32; 3] = [253, 254, 255];
/// 0..=4 are the kernel's (unspec, redirect, kernel, boot, static).
pub const ANNOUNCE_PROTOCOL_RANGE: (u64, u64) = (5, 255);
/// RTPROT_BIRD: BIRD's kernel protocol does not learn routes carrying its own number.
pub const BIRD_PROTOCOL: u8 = 12;
pub const MIN_HEALTHY_RANGE: (u64, u64) = (1, MAX_BACKENDS_RANGE.1);
pub const HOLD_DOWN_RANGE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(3600));
/// `xlb stop --detach` waits this long before it answers, and its client gives up after 60 s.
pub const WITHDRAW_GRACE_RANGE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(50));
pub const DRAIN_QUIET_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));

/// `[continuity]`: exceptions are sent again every `refresh`; a lost peer's are kept `hold`.
pub const DEFAULT_CONTINUITY_REFRESH: Duration = Duration::from_secs(1);
pub const CONTINUITY_REFRESH_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(60));
/// Long enough for an idle connection of a lost node to send its next packet elsewhere.
pub const DEFAULT_CONTINUITY_HOLD: Duration = Duration::from_secs(600);
pub const CONTINUITY_HOLD_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(86_400));
pub const DEFAULT_MAX_EXCEPTIONS: u32 = lb_common::limits::DEFAULT_PEER_FLOWS;
/// 64 bytes per entry: 1 GiB at the top.
pub const MAX_EXCEPTIONS_RANGE: (u64, u64) = (1024, 16 * 1024 * 1024);

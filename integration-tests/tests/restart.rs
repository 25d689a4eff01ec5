//! Hitless restart against a real kernel: the program attached through a pinned link to a veth
//! in a namespace this test creates, maps pinned under a unique bpffs directory; the "agent"
//! (this test's handles) goes away, forwarding state stays, and a fresh load adopts the maps
//! and swaps itself into the link. Everything is removed at the end, even on panic.
//!
//! Needs root and a mounted bpffs (`cargo xtask setup`): fails loudly rather than skip.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use lb_common::{FlowEntry, map_names, stats::Counter};
use lb_userspace::{
    config,
    loader::{self, LoadOptions},
    maps::{AyaStore, MapStore},
    model::{Config, XdpMode},
    pinning::{self, PinError},
    reconcile::{NetInfo, Overrides, Reconciler},
};
use xlb_testkit::{Packet, datapath::run_named, netns::Netns, packet::TCP_ACK};

const MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0, 0x42];

/// A pin directory under bpffs, detached and removed on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> PinDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = Path::new("/sys/fs/bpf");
        assert!(
            std::fs::read_to_string("/proc/self/mounts")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
                    && l.split_whitespace().nth(2) == Some("bpf")),
            "restart tests need bpffs at /sys/fs/bpf: run `cargo xtask setup` (as root)"
        );
        PinDir(root.join(format!(
            "xlbt-restart-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = pinning::detach(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn test_config(pin_dir: &Path) -> Config {
    let text = format!(
        r#"
[agent]
interfaces = ["xr0"]
lb-src-v4 = "192.0.2.1"
hash-seed = 99
max-vips = 4
max-backends = 16
flow-table-size = 4096
pin-dir = "{}"
metrics-listen = "off"

[[vip]]
address = "203.0.113.10"
port = 80
protocol = "tcp"
mode = "ipip"
  [[vip.backend]]
  address = "198.51.100.1"
  [[vip.backend]]
  address = "198.51.100.2"
"#,
        pin_dir.display()
    );
    config::load_str(&text, &|_: &str| true)
        .expect("test config is valid")
        .config
}

fn opts(cfg: &Config) -> LoadOptions {
    LoadOptions {
        max_vips: cfg.max_vips,
        max_backends: cfg.max_backends,
        flow_table_size: cfg.flow_table_size,
        peer_flows: lb_common::limits::PEER_FLOWS_OFF,
    }
}

fn net(cfg: &Config) -> NetInfo {
    NetInfo {
        src_mac: [0x02, 0, 0x5e, 0, 0, 1],
        mtu: 1500,
        macs: cfg
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| (b.addr, MAC)))
            .collect(),
    }
}

/// One "agent start": prepare, adopt sizes, load on the pinned maps, attach, reconcile.
fn start(pin_dir: &Path, cfg: &Config) -> (aya::Ebpf, Reconciler<AyaStore>) {
    pinning::prepare(pin_dir).expect("prepare pin dir");
    let o = pinning::adopt_sizes(pin_dir, &opts(cfg)).expect("pinned maps compatible");
    let maps = pinning::maps_dir(pin_dir);
    let mut ebpf = loader::load_pinned(&o, &maps).expect("load on pinned maps");
    pinning::attach(&mut ebpf, pin_dir, "xr0", XdpMode::Auto).expect("attach");
    let store = AyaStore::from_pin_dir(&maps).expect("open pinned maps");
    let mut r = Reconciler::adopt(store).expect("adopt");
    r.apply(cfg, &Overrides::default(), &net(cfg))
        .expect("reconcile");
    (ebpf, r)
}

fn run(ebpf: &mut aya::Ebpf, frame: &[u8]) -> (u32, Vec<u8>) {
    run_named(ebpf, map_names::PROG_LB, frame)
}

/// The id of the XDP program attached to `dev` in `ns`, from `ip -d link`.
fn attached_prog(ns: &Netns, dev: &str) -> Option<u32> {
    let out = ns.ip(&["-d", "link", "show", "dev", dev]);
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "prog/xdp" && words.next() == Some("id") {
            return words.next().and_then(|id| id.parse().ok());
        }
    }
    None
}

/// Outer destination (backend) of an IPIP frame forwarded by xlb.
fn outer_dst(frame: &[u8]) -> IpAddr {
    let o: [u8; 4] = frame[14 + 16..14 + 20].try_into().unwrap();
    IpAddr::from(o)
}

#[test]
fn agent_restart_keeps_forwarding_flows_and_link() {
    let ns = Netns::new("rs");
    ns.ip(&["link", "add", "xr0", "type", "veth", "peer", "name", "xr1"]);
    ns.ip(&["link", "set", "xr0", "up"]);
    ns.ip(&["link", "set", "xr1", "up"]);
    let pin = PinDir::new();
    let pin_dir = pin.0.clone();

    let backend = ns.enter({
        let pin_dir = pin_dir.clone();
        move || {
            let cfg = test_config(&pin_dir);
            let (mut ebpf, r) = start(&pin_dir, &cfg);
            // An established flow (not a SYN): the ring picks its backend, the table keeps it.
            let pkt = Packet::tcp("198.51.100.200", 40000, "203.0.113.10", 80, TCP_ACK);
            let (v, out) = run(&mut ebpf, &pkt.frame());
            assert_eq!(v, 3, "XDP_TX");
            let backend = outer_dst(&out);
            let entry = r
                .store()
                .flow(&pkt.flow_key())
                .unwrap()
                .expect("flow remembered");
            assert_ne!(entry.backend_id, 0);
            // The agent goes away: its handles drop, the pins stay.
            drop(r);
            drop(ebpf);
            backend
        }
    });
    let attached = attached_prog(&ns, "xr0").unwrap_or_else(|| {
        panic!(
            "program still attached after the agent left: {}",
            ns.ip(&["-d", "link", "show", "dev", "xr0"])
        )
    });

    // The restarted agent: same maps, same flow table, new program.
    ns.enter({
        let pin_dir = pin_dir.clone();
        move || {
            let store = AyaStore::from_pin_dir(&pinning::maps_dir(&pin_dir)).unwrap();
            let stats_before = store.global_stats().unwrap();
            let cfg = test_config(&pin_dir);
            let (mut ebpf, r) = start(&pin_dir, &cfg);
            let pkt = Packet::tcp("198.51.100.200", 40000, "203.0.113.10", 80, TCP_ACK);
            let (v, out) = run(&mut ebpf, &pkt.frame());
            assert_eq!(v, 3);
            assert_eq!(
                outer_dst(&out),
                backend,
                "the flow kept its backend across restart"
            );
            let after = r.store().global_stats().unwrap();
            assert_eq!(
                after.counters[Counter::FlowHit as usize],
                stats_before.counters[Counter::FlowHit as usize] + 1,
                "served from the adopted flow table"
            );
            let entry: FlowEntry = r.store().flow(&pkt.flow_key()).unwrap().unwrap();
            assert_ne!(entry.backend_id, 0);
            // Dropping our handles leaves the new program running: the pinned link holds it.
        }
    });
    let after = attached_prog(&ns, "xr0").expect("still attached after restart");
    assert_ne!(
        after, attached,
        "the restart swapped a new program into the pinned link"
    );

    // A pin directory of another layout version is refused with a clear message.
    let other = pin_dir.join("maps-v999");
    std::fs::create_dir(&other).unwrap();
    let err = pinning::prepare(&pin_dir).unwrap_err();
    assert!(
        matches!(err, PinError::LayoutMismatch { found: 999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("xlb stop --detach"), "{err}");
    std::fs::remove_dir(&other).unwrap();

    // Detach really detaches and unpins.
    pinning::detach(&pin_dir).unwrap();
    assert!(!pin_dir.exists());
    assert_eq!(
        attached_prog(&ns, "xr0"),
        None,
        "detach removed the program"
    );
}

/// Maps pinned in a fresh directory by a program loaded with `max_vips`, 16 backends and a
/// 1,024-flow table; the program is kept loaded while the returned values live.
fn load_small(max_vips: u32) -> (PinDir, PathBuf, aya::Ebpf) {
    let pin = PinDir::new();
    pinning::prepare(&pin.0).expect("prepare pin dir");
    let maps = pinning::maps_dir(&pin.0);
    let opts = LoadOptions {
        max_vips,
        max_backends: 16,
        flow_table_size: 1024,
        peer_flows: lb_common::limits::PEER_FLOWS_OFF,
    };
    let ebpf = loader::load_pinned(&opts, &maps).expect("load on pinned maps");
    (pin, maps, ebpf)
}

/// The ring is written through a memory mapping; the program reads it through the map, two
/// slots per element. Both must see the same slot for the same index, across the odd VIP
/// boundary too (VIP 1 starts in the second half of an element).
#[test]
fn mmapped_ring_matches_the_map_slot_for_slot() {
    use aya::maps::{Array, Map, MapData};
    use lb_common::limits::{RING_SIZE, RING_SLOTS_PER_ENTRY};

    let (_pin, maps, _ebpf) = load_small(2);
    let mut store = AyaStore::from_pin_dir(&maps).expect("open pinned maps");
    // Distinct ids at distinct slots of both VIP indices, including the last slot.
    let writes: Vec<(u32, u32)> = [0u32, 1, 2, 3, 1000, RING_SIZE - 2, RING_SIZE - 1]
        .iter()
        .enumerate()
        .map(|(i, slot)| (*slot, 100 + i as u32))
        .collect();
    store.set_ring_slots(0, &writes).unwrap();
    store
        .set_ring_slots(1, &[(0, 7), (RING_SIZE - 1, 9)])
        .unwrap();

    let ring: Array<MapData, [u32; RING_SLOTS_PER_ENTRY as usize]> = Array::try_from(Map::Array(
        MapData::from_pin(maps.join(map_names::RING)).unwrap(),
    ))
    .unwrap();
    // What the program reads for global slot `g`.
    let slot = |g: u32| {
        ring.get(&(g / RING_SLOTS_PER_ENTRY), 0).unwrap()[(g % RING_SLOTS_PER_ENTRY) as usize]
    };
    for (s, id) in &writes {
        assert_eq!(slot(*s), *id, "VIP 0 slot {s}");
    }
    assert_eq!(slot(RING_SIZE), 7, "VIP 1 slot 0");
    assert_eq!(
        slot(RING_SIZE - 1),
        101 + 5,
        "VIP 0's last slot shares VIP 1's first element"
    );
    assert_eq!(slot(2 * RING_SIZE - 1), 9, "VIP 1 last slot");
    // Nothing else was touched, and the mapping reads back what the map holds.
    let read = store.ring(0).unwrap();
    let nonzero = read.iter().filter(|id| **id != 0).count();
    assert_eq!(nonzero, writes.len());
    for s in [4u32, 999, 1001, RING_SIZE - 3] {
        assert_eq!(slot(s), 0, "slot {s} untouched");
        assert_eq!(read[s as usize], 0);
    }
    assert_eq!(read[RING_SIZE as usize - 1], 106);
    assert_eq!(store.ring(1).unwrap()[0], 7);
}

/// Every map sized by `max-vips` follows it, the VIP hash map included (it used to stay at its
/// compiled-in 2,048 entries, so ~680 VIPs on distinct addresses filled it whatever
/// `max-vips` said).
#[test]
fn vip_maps_are_sized_by_max_vips() {
    use aya::maps::MapInfo;
    use lb_common::limits::{RING_SIZE, RING_SLOTS_PER_ENTRY, vip_map_entries};

    let (_pin, maps, _ebpf) = load_small(1024);
    let entries = |name: &str| MapInfo::from_pin(maps.join(name)).unwrap().max_entries();
    assert_eq!(entries(map_names::VIPS), vip_map_entries(1024).unwrap());
    assert_eq!(entries(map_names::VIPS), 4096);
    assert_eq!(entries(map_names::VIP_STATS), 1024);
    assert_eq!(
        entries(map_names::RING),
        (1024 * RING_SIZE).div_ceil(RING_SLOTS_PER_ENTRY)
    );
}

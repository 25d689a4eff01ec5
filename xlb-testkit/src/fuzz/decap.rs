//! The backend's decap program under the fuzzer: a model of docs/datapath.md §9, the loaded
//! program, and the frames to try (the LB program's own tunnels, the same from other sources,
//! mutated tunnels, client traffic). The invariant that matters most: only a tunnel from a
//! configured LB source is ever stripped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
};
use lb_common::{
    addr::to_words,
    map_names,
    stats::{COUNTER_SLOTS, DecapCounter, GlobalStats},
    values::{CONFIG_F_READY, DecapConfig},
};
use lb_userspace::loader;

use crate::datapath::run_named;

/// The decap program, loaded (never attached), with its configuration written.
pub struct DecapUnderTest {
    ebpf: Ebpf,
    pub cfg: DecapConfig,
}

impl DecapUnderTest {
    pub fn new(lb_v4: Ipv4Addr, lb_v6: Ipv6Addr, gue_port: u16) -> Self {
        let mut ebpf = loader::load_decap(None)
            .unwrap_or_else(|e| panic!("the decap fuzz run needs root with CAP_BPF: {e}"));
        let cfg = DecapConfig {
            lb_v6: to_words(IpAddr::V6(lb_v6)).1,
            lb_v4: to_words(IpAddr::V4(lb_v4)).1[0],
            gue_port: gue_port.to_be(),
            flags: CONFIG_F_READY,
        };
        let map = ebpf
            .map_mut(map_names::DECAP_CONFIG)
            .expect("DECAP_CONFIG in the object");
        let mut a: Array<&mut MapData, DecapConfig> = Array::try_from(map).expect("an array");
        a.set(0, cfg, 0).expect("write the decap config");
        DecapUnderTest { ebpf, cfg }
    }

    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        run_named(&mut self.ebpf, map_names::PROG_DECAP, frame)
    }

    /// Counters summed over CPUs.
    pub fn counters(&self) -> [u64; COUNTER_SLOTS] {
        let map = self.ebpf.map(map_names::DECAP_STATS).expect("DECAP_STATS");
        let m: PerCpuArray<&MapData, GlobalStats> = PerCpuArray::try_from(map).expect("per-CPU");
        let mut sum = [0u64; COUNTER_SLOTS];
        for cpu in m.get(&0, 0).expect("read DECAP_STATS").iter() {
            for (s, c) in sum.iter_mut().zip(cpu.counters) {
                *s += c;
            }
        }
        sum
    }
}

/// What §9 prescribes: the counter, and the output (`None`: the input unchanged). The verdict
/// is always `PASS`.
pub fn model(cfg: &DecapConfig, f: &[u8]) -> (DecapCounter, Option<Vec<u8>>) {
    let pass = (DecapCounter::Pass, None);
    if cfg.flags & CONFIG_F_READY == 0 {
        return (DecapCounter::PassNotReady, None);
    }
    let be16 = |at: usize| f.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let Some(mut et) = be16(12) else { return pass };
    let mut l2 = 14;
    if et == 0x8100 {
        let Some(inner) = be16(16) else { return pass };
        et = inner;
        l2 = 18;
    }
    let (proto, hdr_len, src_ok, fragment) = match et {
        0x0800 => {
            let Some(ip) = f.get(l2..l2 + 20) else {
                return pass;
            };
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if !matches!(ip[9], 4 | 41 | 17) || ip[0] >> 4 != 4 || ihl < 20 || l2 + ihl > f.len() {
                return pass;
            }
            let src = u32::from_ne_bytes(ip[12..16].try_into().expect("4 bytes"));
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            (ip[9], ihl, cfg.lb_v4 != 0 && src == cfg.lb_v4, frag)
        }
        0x86dd => {
            let Some(ip) = f.get(l2..l2 + 40) else {
                return pass;
            };
            if !matches!(ip[6], 4 | 41 | 17) || ip[0] >> 4 != 6 {
                return pass;
            }
            let src: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
            let src = to_words(IpAddr::V6(src.into())).1;
            (ip[6], 40, cfg.lb_v6 != [0; 4] && src == cfg.lb_v6, false)
        }
        _ => return pass,
    };
    let (overhead, inner_et, counter) = match proto {
        4 => (hdr_len, 0x0800u16, DecapCounter::DecapIpip),
        41 => (hdr_len, 0x86dd, DecapCounter::DecapIpip),
        _ => {
            let udp = l2 + hdr_len;
            let gue_port = u16::from_be(cfg.gue_port);
            let (Some(dport), Some(first)) = (be16(udp + 2), f.get(udp + 8)) else {
                return pass;
            };
            if gue_port == 0 || dport != gue_port {
                return pass;
            }
            let et = match first >> 4 {
                4 => 0x0800,
                6 => 0x86dd,
                _ => return pass,
            };
            (hdr_len + 8, et, DecapCounter::DecapGue)
        }
    };
    if !src_ok {
        return (DecapCounter::PassNotFromLb, None);
    }
    if fragment {
        return (DecapCounter::PassOuterFragment, None);
    }
    let mut out = f[..l2].to_vec();
    out[l2 - 2..l2].copy_from_slice(&inner_et.to_be_bytes());
    out.extend_from_slice(&f[l2 + overhead..]);
    (counter, Some(out))
}

/// A tunnel frame with its outer source replaced by `src` (IPv4 checksum fixed).
pub fn with_outer_source(f: &[u8], src: IpAddr) -> Vec<u8> {
    let mut f = f.to_vec();
    let l2 = if f.get(12..14) == Some(&[0x81, 0x00]) {
        18
    } else {
        14
    };
    match src {
        IpAddr::V4(a) if f.len() >= l2 + 20 && f[l2] >> 4 == 4 => {
            f[l2 + 12..l2 + 16].copy_from_slice(&a.octets());
            crate::packet::fix_ipv4_checksum(&mut f, l2);
        }
        IpAddr::V6(a) if f.len() >= l2 + 40 && f[l2] >> 4 == 6 => {
            f[l2 + 8..l2 + 24].copy_from_slice(&a.octets());
        }
        _ => {}
    }
    f
}

/// Whether the frame's outer IP source is the configured LB address of its family (read
/// independently of the model: the invariant's own parse).
pub fn from_configured_source(cfg: &DecapConfig, f: &[u8]) -> bool {
    // The EtherType says which header follows, as for the program.
    let tagged = f.get(12..14) == Some(&[0x81, 0x00]);
    let (l2, et) = if tagged {
        (18, f.get(16..18))
    } else {
        (14, f.get(12..14))
    };
    match et {
        Some([0x08, 0x00]) => f.get(l2 + 12..l2 + 16).is_some_and(|s| {
            cfg.lb_v4 != 0 && u32::from_ne_bytes(s.try_into().expect("4")) == cfg.lb_v4
        }),
        Some([0x86, 0xdd]) => f.get(l2 + 8..l2 + 24).is_some_and(|s| {
            let a: [u8; 16] = s.try_into().expect("16");
            cfg.lb_v6 != [0; 4] && to_words(IpAddr::V6(a.into())).1 == cfg.lb_v6
        }),
        _ => false,
    }
}

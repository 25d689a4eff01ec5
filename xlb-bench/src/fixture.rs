//! A loaded (never attached) LB program configured the way the agent configures it: TOML text
//! -> `config::load_str` -> `Reconciler::apply` over an [`AyaStore`] (Maglev tables written
//! through the ring's memory mapping), plus a second handle on the flow table for direct fills.

use std::collections::HashMap as StdHashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{Context as _, anyhow};
use aya::{Ebpf, programs::Xdp};
use lb_common::{FlowEntry, FlowKey, addr, map_names, stats::Counter};

use super::runner::client_of;
use lb_userspace::{
    config,
    loader::{self, LoadOptions},
    maps::{AyaStore, MapStore, mmap::FlowTable},
    model::{Config, Proto, VipId},
    reconcile::{NetInfo, Overrides, Reconciler},
};

/// MAC of the (pretend) egress interface.
pub const LB_MAC: [u8; 6] = [0x02, 0x1b, 0x00, 0x00, 0x00, 0x01];
/// Outer IPv4 / IPv6 source of tunnels.
pub const LB_SRC_V4: &str = "192.0.2.1";
pub const LB_SRC_V6: &str = "2001:db8:1b::1";

/// One `[[vip]]` of the bench config.
#[derive(Clone, Debug)]
pub struct VipSpec {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: Proto,
    /// "ipip" | "gue" | "dsr-l2".
    pub mode: &'static str,
    pub affinity: bool,
    pub backends: Vec<IpAddr>,
}

impl VipSpec {
    pub fn id(&self) -> VipId {
        VipId {
            addr: self.addr,
            port: self.port,
            proto: self.proto,
        }
    }
}

/// Map sizes + VIPs -> config text (the agent's format).
pub fn config_text(opts: &LoadOptions, vips: &[VipSpec]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "[agent]\ninterfaces = [\"bench0\"]\nlb-src-v4 = \"{LB_SRC_V4}\"\nlb-src-v6 = \"{LB_SRC_V6}\"\n\
         flow-table-size = {}\nmax-vips = {}\nmax-backends = {}\nmtu = 1500\n\
         metrics-listen = \"off\"\n",
        opts.flow_table_size, opts.max_vips, opts.max_backends
    );
    for v in vips {
        let proto = match v.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        let _ = writeln!(
            t,
            "[[vip]]\naddress = \"{}\"\nport = {}\nprotocol = \"{proto}\"\nmode = \"{}\"\n\
             source-affinity = {}\nicmp-echo = false\n[vip.health]\nkind = \"none\"",
            v.addr, v.port, v.mode, v.affinity
        );
        for b in &v.backends {
            let _ = writeln!(t, "[[vip.backend]]\naddress = \"{b}\"");
        }
    }
    t
}

/// Parses and validates bench config text (every interface "exists").
pub fn validate(text: &str) -> anyhow::Result<Config> {
    let env = |_: &str| true;
    config::load_str(text, &env)
        .map(|v| v.config)
        .map_err(|e| anyhow!("bench config invalid: {e}"))
}

/// A deterministic MAC per backend address.
pub fn mac_of(a: IpAddr) -> [u8; 6] {
    let (_, w) = addr::to_words(a);
    let x = w[0] ^ w[1] ^ w[2] ^ w[3];
    let b = x.to_be_bytes();
    [0x02, 0xbe, b[0], b[1], b[2], b[3]]
}

pub fn net_info(cfg: &Config) -> NetInfo {
    let macs = cfg
        .vips
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| (b.addr, mac_of(b.addr))))
        .collect();
    NetInfo {
        src_mac: LB_MAC,
        mtu: 1500,
        macs,
    }
}

pub struct Fixture {
    ebpf: Ebpf,
    pub reconciler: Reconciler<AyaStore>,
    /// A second mapping of the flow table (the store holds the first).
    flows: FlowTable,
    pub opts: LoadOptions,
    pub config: Config,
}

impl Fixture {
    /// Loads the LB program with `opts` and applies `vips`.
    pub fn new(opts: LoadOptions, vips: &[VipSpec]) -> anyhow::Result<Self> {
        let mut ebpf = loader::load(&opts).context("loading xlb (root with CAP_BPF needed)")?;
        // A second mapping of the flow table before the store takes the maps.
        let flows = FlowTable::of(
            ebpf.map(map_names::FLOWS)
                .context("XLB_FLOWS is missing from the object")?,
        )?;
        let store = AyaStore::from_ebpf(&mut ebpf)?;
        let reconciler = Reconciler::adopt(store)?;
        let mut f = Fixture {
            ebpf,
            reconciler,
            flows,
            opts,
            config: validate(&config_text(&opts, &[]))?,
        };
        f.apply(vips)?;
        Ok(f)
    }

    /// Makes the maps hold `vips` (the reconciler writes the difference).
    pub fn apply(&mut self, vips: &[VipSpec]) -> anyhow::Result<()> {
        self.apply_text(&config_text(&self.opts, vips))
    }

    /// [`Fixture::apply`] with flow continuity on: the program then consults the (empty) peer
    /// table on every flow-table miss. The channel is not started; only the flag matters here.
    pub fn apply_with_continuity(&mut self, vips: &[VipSpec]) -> anyhow::Result<()> {
        let text = config_text(&self.opts, vips)
            + "[continuity]\nlisten = \"192.0.2.250:7946\"\npeers = [\"192.0.2.251:7946\"]\n\
               key-file = \"/nonexistent/bench.key\"\n";
        self.apply_text(&text)
    }

    fn apply_text(&mut self, text: &str) -> anyhow::Result<()> {
        let cfg = validate(text)?;
        self.reconciler
            .apply(&cfg, &Overrides::default(), &net_info(&cfg))?;
        self.config = cfg;
        Ok(())
    }

    pub fn prog(&self) -> &Xdp {
        self.ebpf
            .program(map_names::PROG_LB)
            .expect("program xlb")
            .try_into()
            .expect("xlb is an XDP program")
    }

    /// Backend ids of a VIP, in address order.
    pub fn backend_ids(&self, vip: &VipId) -> Vec<u32> {
        self.reconciler
            .backends()
            .into_iter()
            .filter(|b| b.vip == *vip)
            .map(|b| b.id)
            .collect()
    }

    /// Inserts the flow-table entries of flow indices `range` (clients from [`client_of`]) to
    /// `vip`, spread over its backends, each where the program would put it (so a full set
    /// evicts as the program's inserts do).
    pub fn fill_flows(&mut self, vip: &VipId, range: std::ops::Range<u64>) -> anyhow::Result<()> {
        let ids = self.backend_ids(vip);
        let generations: std::collections::HashMap<u32, u32> = self
            .reconciler
            .backends()
            .into_iter()
            .map(|b| (b.id, b.entry.generation))
            .collect();
        anyhow::ensure!(!ids.is_empty(), "VIP {vip} has no backends");
        let seed = self.reconciler.store().config()?.hash_seed;
        for k in range {
            let id = ids[(k % ids.len() as u64) as usize];
            let entry = FlowEntry {
                backend_id: id,
                generation: generations[&id],
            };
            self.flows.insert(&flow_key(vip, k), seed, entry);
        }
        Ok(())
    }

    /// How many of the flow indices `flows` (as [`Fixture::fill_flows`] makes them) have an
    /// entry.
    pub fn resident(
        &self,
        vip: &VipId,
        flows: impl IntoIterator<Item = u64>,
    ) -> anyhow::Result<usize> {
        let seed = self.reconciler.store().config()?.hash_seed;
        Ok(flows
            .into_iter()
            .filter(|&k| self.flows.get(&flow_key(vip, k), seed).is_some())
            .count())
    }

    /// Entries in the flow table (reads the whole table).
    pub fn flow_count(&self) -> usize {
        self.flows.count()
    }

    /// Flows the table holds at most.
    pub fn flow_capacity(&self) -> u64 {
        u64::from(self.flows.capacity())
    }

    /// Global counters summed over CPUs.
    pub fn counters(&self) -> anyhow::Result<Vec<u64>> {
        Ok(self.reconciler.store().global_stats()?.counters.to_vec())
    }
}

/// The flow key of flow index `k` (client from [`client_of`]) to `vip`.
fn flow_key(vip: &VipId, k: u64) -> FlowKey {
    let (src, sport) = client_of(k);
    let (family, src) = addr::to_words(IpAddr::from(src));
    FlowKey {
        src,
        dst: addr::to_words(vip.addr).1,
        sport: sport.to_be(),
        dport: vip.port.to_be(),
        proto: vip.proto.number(),
        family,
        _pad: [0; 2],
    }
}

/// Non-zero differences of two counter snapshots, by counter name.
pub fn counter_delta(before: &[u64], after: &[u64]) -> StdHashMap<String, u64> {
    Counter::ALL
        .iter()
        .filter_map(|c| {
            let i = *c as usize;
            let d = after.get(i)?.saturating_sub(*before.get(i)?);
            (d > 0).then(|| (format!("{c:?}"), d))
        })
        .collect()
}

/// A loaded auxiliary program (`xlb_pass` or `xlb_reflect`).
pub struct Aux {
    ebpf: Ebpf,
    name: &'static str,
}

impl Aux {
    pub fn new(name: &'static str) -> anyhow::Result<Self> {
        Ok(Aux {
            ebpf: loader::load_aux(name)?,
            name,
        })
    }

    pub fn prog(&self) -> &Xdp {
        self.ebpf
            .program(self.name)
            .expect("aux program")
            .try_into()
            .expect("an XDP program")
    }

    pub fn prog_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(self.name)
            .expect("aux program")
            .try_into()
            .expect("an XDP program")
    }
}

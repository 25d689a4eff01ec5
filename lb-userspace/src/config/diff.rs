//! What a reload changes: the difference between two validated configs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::model::{BackendSpec, Config, Vip, VipId};

/// An agent-level setting, named as in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentField {
    Interfaces,
    LbSrcV4,
    LbSrcV6,
    HashSeed,
    FlowTableSize,
    MaxVips,
    MaxBackends,
    GuePort,
    Mtu,
    IcmpRate,
    IcmpBurst,
    OuterTtl,
    UdpIdleTimeout,
    PinDir,
    ApiSocket,
    MetricsListen,
    DetachOnExit,
}

impl AgentField {
    pub const fn key(self) -> &'static str {
        match self {
            AgentField::Interfaces => "interfaces",
            AgentField::LbSrcV4 => "lb-src-v4",
            AgentField::LbSrcV6 => "lb-src-v6",
            AgentField::HashSeed => "hash-seed",
            AgentField::FlowTableSize => "flow-table-size",
            AgentField::MaxVips => "max-vips",
            AgentField::MaxBackends => "max-backends",
            AgentField::GuePort => "gue-port",
            AgentField::Mtu => "mtu",
            AgentField::IcmpRate => "icmp-rate",
            AgentField::IcmpBurst => "icmp-burst",
            AgentField::OuterTtl => "outer-ttl",
            AgentField::UdpIdleTimeout => "udp-idle-timeout",
            AgentField::PinDir => "pin-dir",
            AgentField::ApiSocket => "api-socket",
            AgentField::MetricsListen => "metrics-listen",
            AgentField::DetachOnExit => "detach-on-exit",
        }
    }
}

/// A VIP setting other than its backends, named as in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VipField {
    Mode,
    SourceAffinity,
    IcmpEcho,
    NoBackend,
    Health,
    MinHealthy,
}

impl VipField {
    pub const fn key(self) -> &'static str {
        match self {
            VipField::Mode => "mode",
            VipField::SourceAffinity => "source-affinity",
            VipField::IcmpEcho => "icmp-echo",
            VipField::NoBackend => "no-backend",
            VipField::Health => "health",
            VipField::MinHealthy => "min-healthy",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WeightChange {
    pub addr: IpAddr,
    pub old: u32,
    pub new: u32,
}

/// How one VIP present in both configs changed. Lists are sorted by address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipChange {
    pub id: VipId,
    pub fields: Vec<VipField>,
    pub backends_added: Vec<IpAddr>,
    pub backends_removed: Vec<IpAddr>,
    pub weights_changed: Vec<WeightChange>,
    /// Backends whose `check_port` changed (their probes restart).
    pub check_ports_changed: Vec<IpAddr>,
}

/// What a reload changes. VIPs are identified by [`VipId`]: changing a VIP's address, port or
/// protocol is a removal plus an addition. All lists are sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConfigDiff {
    pub agent: Vec<AgentField>,
    pub vips_added: Vec<VipId>,
    pub vips_removed: Vec<VipId>,
    pub vips_changed: Vec<VipChange>,
    /// The `[announce]` table changed (turned on or off, or any of its keys).
    pub announce: bool,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        self.agent.is_empty()
            && self.vips_added.is_empty()
            && self.vips_removed.is_empty()
            && self.vips_changed.is_empty()
            && !self.announce
    }
}

/// What changes from `old` to `new`.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut agent = Vec::new();
    let mut field = |changed: bool, f: AgentField| {
        if changed {
            agent.push(f);
        }
    };
    field(old.interfaces != new.interfaces, AgentField::Interfaces);
    field(old.lb_src_v4 != new.lb_src_v4, AgentField::LbSrcV4);
    field(old.lb_src_v6 != new.lb_src_v6, AgentField::LbSrcV6);
    field(old.hash_seed != new.hash_seed, AgentField::HashSeed);
    field(
        old.flow_table_size != new.flow_table_size,
        AgentField::FlowTableSize,
    );
    field(old.max_vips != new.max_vips, AgentField::MaxVips);
    field(
        old.max_backends != new.max_backends,
        AgentField::MaxBackends,
    );
    field(old.gue_port != new.gue_port, AgentField::GuePort);
    field(old.mtu != new.mtu, AgentField::Mtu);
    field(old.icmp_rate != new.icmp_rate, AgentField::IcmpRate);
    field(old.icmp_burst != new.icmp_burst, AgentField::IcmpBurst);
    field(old.outer_ttl != new.outer_ttl, AgentField::OuterTtl);
    field(
        old.udp_idle_timeout != new.udp_idle_timeout,
        AgentField::UdpIdleTimeout,
    );
    field(old.pin_dir != new.pin_dir, AgentField::PinDir);
    field(old.api_socket != new.api_socket, AgentField::ApiSocket);
    field(
        old.metrics_listen != new.metrics_listen,
        AgentField::MetricsListen,
    );
    field(
        old.detach_on_exit != new.detach_on_exit,
        AgentField::DetachOnExit,
    );

    let olds: BTreeMap<VipId, &Vip> = old.vips.iter().map(|v| (v.id, v)).collect();
    let news: BTreeMap<VipId, &Vip> = new.vips.iter().map(|v| (v.id, v)).collect();
    let vips_added = news
        .keys()
        .filter(|id| !olds.contains_key(id))
        .copied()
        .collect();
    let vips_removed = olds
        .keys()
        .filter(|id| !news.contains_key(id))
        .copied()
        .collect();
    let vips_changed = olds
        .iter()
        .filter_map(|(id, o)| news.get(id).and_then(|n| vip_change(o, n)))
        .collect();
    ConfigDiff {
        agent,
        vips_added,
        vips_removed,
        vips_changed,
        announce: old.announce != new.announce,
    }
}

fn vip_change(old: &Vip, new: &Vip) -> Option<VipChange> {
    if old == new {
        return None;
    }
    let mut fields = Vec::new();
    if old.mode != new.mode {
        fields.push(VipField::Mode);
    }
    if old.src_affinity != new.src_affinity {
        fields.push(VipField::SourceAffinity);
    }
    if old.icmp_echo != new.icmp_echo {
        fields.push(VipField::IcmpEcho);
    }
    if old.no_backend != new.no_backend {
        fields.push(VipField::NoBackend);
    }
    if old.health != new.health {
        fields.push(VipField::Health);
    }
    if old.min_healthy != new.min_healthy {
        fields.push(VipField::MinHealthy);
    }
    let ob: BTreeMap<IpAddr, &BackendSpec> = old.backends.iter().map(|b| (b.addr, b)).collect();
    let nb: BTreeMap<IpAddr, &BackendSpec> = new.backends.iter().map(|b| (b.addr, b)).collect();
    let mut change = VipChange {
        id: new.id,
        fields,
        backends_added: nb.keys().filter(|a| !ob.contains_key(a)).copied().collect(),
        backends_removed: ob.keys().filter(|a| !nb.contains_key(a)).copied().collect(),
        weights_changed: Vec::new(),
        check_ports_changed: Vec::new(),
    };
    for (addr, o) in &ob {
        let Some(n) = nb.get(addr) else { continue };
        if o.weight != n.weight {
            change.weights_changed.push(WeightChange {
                addr: *addr,
                old: o.weight,
                new: n.weight,
            });
        }
        if o.check_port != n.check_port {
            change.check_ports_changed.push(*addr);
        }
    }
    Some(change)
}

impl fmt::Display for ConfigDiff {
    /// One line per change, for the reload log: `+ vip …`, `- vip …`, `~ vip …: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut lines = Vec::new();
        if !self.agent.is_empty() {
            let keys: Vec<&str> = self.agent.iter().map(|a| a.key()).collect();
            lines.push(format!("~ agent: {}", keys.join(", ")));
        }
        if self.announce {
            lines.push("~ announce".to_string());
        }
        for id in &self.vips_removed {
            lines.push(format!("- vip {id}"));
        }
        for id in &self.vips_added {
            lines.push(format!("+ vip {id}"));
        }
        for c in &self.vips_changed {
            let mut parts: Vec<String> = c.fields.iter().map(|f| f.key().to_owned()).collect();
            parts.extend(c.backends_added.iter().map(|a| format!("+backend {a}")));
            parts.extend(c.backends_removed.iter().map(|a| format!("-backend {a}")));
            parts.extend(
                c.weights_changed
                    .iter()
                    .map(|w| format!("weight {} {}->{}", w.addr, w.old, w.new)),
            );
            parts.extend(
                c.check_ports_changed
                    .iter()
                    .map(|a| format!("check-port {a}")),
            );
            lines.push(format!("~ vip {}: {}", c.id, parts.join(", ")));
        }
        f.write_str(&lines.join("\n"))
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    fn cfg(rest: &str) -> Config {
        ok(&with_agent(rest)).config
    }

    fn id(addr: &str) -> VipId {
        VipId {
            addr: addr.parse().unwrap(),
            port: 80,
            proto: crate::model::Proto::Tcp,
        }
    }

    #[test]
    fn diff_of_equal_configs_is_empty() {
        let c = ok(EXAMPLE).config;
        let d = diff(&c, &c);
        assert!(d.is_empty());
        assert_eq!(d.to_string(), "no changes");
    }

    #[test]
    fn diff_vips_added_removed_changed() {
        let a = vip("203.0.113.1", tcp_check()) + &backend("198.51.100.1", "");
        let b = vip("203.0.113.2", tcp_check())
            + &backend("198.51.100.1", "")
            + &backend("198.51.100.2", "weight = 5")
            + &backend("198.51.100.3", "check-port = 81");
        let b2 = vip(
            "203.0.113.2",
            "source-affinity = true\n[vip.health]\nkind = \"tcp\"\nrise = 5",
        )
        .replace("ipip", "gue")
            + &backend("198.51.100.2", "weight = 0")
            + &backend("198.51.100.3", "check-port = 82")
            + &backend("198.51.100.4", "");
        let c3 = vip("203.0.113.3", tcp_check()) + &backend("198.51.100.1", "");
        let old = cfg(&format!("{a}{b}"));
        let new = cfg(&format!("{b2}{c3}"));
        let d = diff(&old, &new);
        assert!(d.agent.is_empty());
        assert_eq!(d.vips_added, [id("203.0.113.3")]);
        assert_eq!(d.vips_removed, [id("203.0.113.1")]);
        assert_eq!(
            d.vips_changed,
            [VipChange {
                id: id("203.0.113.2"),
                fields: vec![VipField::Mode, VipField::SourceAffinity, VipField::Health],
                backends_added: vec!["198.51.100.4".parse().unwrap()],
                backends_removed: vec!["198.51.100.1".parse().unwrap()],
                weights_changed: vec![WeightChange {
                    addr: "198.51.100.2".parse().unwrap(),
                    old: 5,
                    new: 0
                }],
                check_ports_changed: vec!["198.51.100.3".parse().unwrap()],
            }]
        );
        assert_eq!(
            d.to_string(),
            "- vip tcp/203.0.113.1:80\n+ vip tcp/203.0.113.3:80\n~ vip tcp/203.0.113.2:80: mode, \
             source-affinity, health, +backend 198.51.100.4, -backend 198.51.100.1, weight \
             198.51.100.2 5->0, check-port 198.51.100.3"
        );
        // Reverse direction mirrors added/removed.
        let r = diff(&new, &old);
        assert_eq!(r.vips_added, d.vips_removed);
        assert_eq!(r.vips_removed, d.vips_added);
    }

    #[test]
    fn diff_agent_fields() {
        let old = cfg("");
        let new = ok(&format!(
            "{}hash-seed = 1\nmtu = 1400\nmetrics-listen = \"off\"\n",
            AGENT.replace("[\"eth0\"]", "[\"eth0\", \"eth1\"]")
        ))
        .config;
        let d = diff(&old, &new);
        assert_eq!(
            d.agent,
            [
                AgentField::Interfaces,
                AgentField::HashSeed,
                AgentField::Mtu,
                AgentField::MetricsListen
            ]
        );
        assert!(d.vips_changed.is_empty() && d.vips_added.is_empty());
        assert_eq!(
            d.to_string(),
            "~ agent: interfaces, hash-seed, mtu, metrics-listen"
        );
    }

    #[test]
    fn diff_announce_and_min_healthy() {
        let v = vip("203.0.113.1", tcp_check()) + &backend("198.51.100.1", "");
        let old = cfg(&v);
        let on = cfg(&format!("{v}[announce]\nenabled = true\n"));
        let d = diff(&old, &on);
        assert!(d.announce && d.vips_changed.is_empty());
        assert_eq!(d.to_string(), "~ announce");
        let slower = cfg(&format!(
            "{v}[announce]\nenabled = true\nhold-down = \"9s\"\n"
        ));
        assert!(diff(&on, &slower).announce);
        let own = v.replace("mode = \"ipip\"", "mode = \"ipip\"\nmin-healthy = 1");
        let d = diff(&on, &cfg(&format!("{own}[announce]\nenabled = true\n")));
        assert!(!d.announce);
        assert_eq!(d.vips_changed[0].fields, [VipField::MinHealthy]);
    }

    #[test]
    fn diff_is_independent_of_file_order() {
        let x = vip("203.0.113.1", tcp_check()) + &backend("198.51.100.1", "");
        let y = vip("203.0.113.2", tcp_check()) + &backend("198.51.100.2", "");
        assert!(diff(&cfg(&format!("{x}{y}")), &cfg(&format!("{y}{x}"))).is_empty());
    }
}

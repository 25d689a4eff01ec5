//! What the maps say, decoded once: the VIP entries, the non-empty backends, and the names
//! of the values stored in them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Context;
use lb_common::{
    Backend, LbConfig, VipKey, VipMeta,
    addr::{from_words, to_words},
    values::{
        BACKEND_EMPTY, CONFIG_F_ANY_PORT_VIPS, VIP_F_FRAG_ONLY, VIP_F_ICMP_ECHO,
        VIP_F_NO_BACKEND_PASS, VIP_F_SRC_AFFINITY,
    },
};

use crate::maps::MapStore;
use crate::model::{BackendState, ForwardMode, Proto, VipId};

/// A main VIP entry (not an address entry or a fragment alias).
#[derive(Clone, Debug)]
pub(super) struct VipEntry {
    pub(super) id: VipId,
    pub(super) meta: VipMeta,
}

pub(super) struct Snapshot {
    pub(super) config: LbConfig,
    entries: BTreeMap<VipKey, VipMeta>,
    /// Main VIP entries, sorted by VIP.
    pub(super) vips: Vec<VipEntry>,
    /// Non-empty backend entries.
    pub(super) backends: BTreeMap<u32, Backend>,
}

/// The protocol of a map key's protocol number; `None` for any but TCP and UDP.
pub(super) fn proto_of(number: u8) -> Option<Proto> {
    [Proto::Tcp, Proto::Udp]
        .into_iter()
        .find(|p| p.number() == number)
}

pub(super) fn mode_name(mode: u8) -> String {
    ForwardMode::name_of_number(mode)
}

pub(super) fn state_name(state: u8) -> String {
    BackendState::name_of_number(state)
}

/// The backend's address; `None` if its family is neither IPv4 nor IPv6 (an empty entry).
pub(super) fn backend_addr(b: &Backend) -> Option<IpAddr> {
    from_words(b.family, &b.addr)
}

impl Snapshot {
    pub(super) fn read<S: MapStore>(store: &S) -> anyhow::Result<Self> {
        let config = store.config()?;
        let entries: BTreeMap<VipKey, VipMeta> = store.vips()?.into_iter().collect();
        let mut vips: Vec<VipEntry> = entries
            .iter()
            .filter(|(k, m)| k.proto != 0 && m.flags & VIP_F_FRAG_ONLY == 0)
            .filter_map(|(k, m)| {
                Some(VipEntry {
                    id: VipId {
                        addr: from_words(k.family, &k.addr)?,
                        port: u16::from_be(k.port),
                        proto: proto_of(k.proto)?,
                    },
                    meta: *m,
                })
            })
            .collect();
        vips.sort_by_key(|v| v.id);
        let mut backends = BTreeMap::new();
        for id in 1..store.max_backends() {
            let b = store.backend(id)?;
            if b.state != BACKEND_EMPTY {
                backends.insert(id, b);
            }
        }
        Ok(Self {
            config,
            entries,
            vips,
            backends,
        })
    }

    pub(super) fn vip(&self, id: &VipId) -> anyhow::Result<&VipEntry> {
        self.vips.iter().find(|v| v.id == *id).with_context(|| {
            format!("{id} is not in the VIP map (`xlb inspect vips` lists the VIPs)")
        })
    }

    pub(super) fn vip_by_index(&self, index: u32) -> Option<&VipEntry> {
        self.vips.iter().find(|v| v.meta.index == index)
    }

    pub(super) fn backends_of(&self, index: u32) -> impl Iterator<Item = (u32, &Backend)> {
        self.backends
            .iter()
            .filter(move |(_, b)| b.vip_index == index)
            .map(|(id, b)| (*id, b))
    }

    /// Whether `addr` is a VIP address: its address entry `(addr, 0, 0)` exists.
    pub(super) fn is_vip_address(&self, addr: IpAddr) -> bool {
        self.entries.contains_key(&VipKey::of(addr, 0, 0))
    }

    /// The VIP the datapath picks for a non-fragment to `dst:dport` (docs/datapath.md §3), and whether it
    /// took the all-ports entry.
    pub(super) fn lookup(
        &self,
        dst: IpAddr,
        dport: u16,
        proto: Proto,
    ) -> Option<(&VipEntry, bool)> {
        let exact = VipId {
            addr: dst,
            port: dport,
            proto,
        };
        let usable = |id: &VipId| {
            self.entries
                .get(&id.map_key())
                .filter(|m| m.flags & VIP_F_FRAG_ONLY == 0)
                .and_then(|_| self.vips.iter().find(|v| v.id == *id))
        };
        if let Some(v) = usable(&exact) {
            return Some((v, false));
        }
        if self.config.flags & CONFIG_F_ANY_PORT_VIPS != 0 {
            return usable(&VipId { port: 0, ..exact }).map(|v| (v, true));
        }
        None
    }

    pub(super) fn flags(&self, v: &VipEntry) -> Vec<String> {
        let mut flags = Vec::new();
        if v.meta.flags & VIP_F_SRC_AFFINITY != 0 {
            flags.push("src-affinity".to_string());
        }
        if v.meta.flags & VIP_F_NO_BACKEND_PASS != 0 {
            flags.push("no-backend-pass".to_string());
        }
        let (family, words) = to_words(v.id.addr);
        let shared = |proto: u8| {
            self.entries.get(&VipKey {
                addr: words,
                port: 0,
                proto,
                family,
            })
        };
        if shared(0).is_some_and(|m| m.flags & VIP_F_ICMP_ECHO != 0) {
            flags.push("icmp-echo".to_string());
        }
        let frag_target = v.id.port == 0
            || shared(v.id.proto.number())
                .is_some_and(|m| m.flags & VIP_F_FRAG_ONLY != 0 && m.index == v.meta.index);
        if frag_target {
            flags.push("fragments".to_string());
        }
        let known = VIP_F_SRC_AFFINITY | VIP_F_NO_BACKEND_PASS | VIP_F_ICMP_ECHO | VIP_F_FRAG_ONLY;
        if v.meta.flags & !known != 0 {
            flags.push(format!("{:#x}", v.meta.flags & !known));
        }
        flags
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::inspect::run;
    use crate::cli::inspect::test_support::{Shared, parse, world};

    #[test]
    fn unknown_vip_is_a_clear_error() {
        let w = world();
        let cmd = parse(&["ring", "tcp/203.0.113.10:81"]).unwrap();
        let err = run(&Shared(&w), &cmd, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tcp/203.0.113.10:81 is not in the VIP map (`xlb inspect vips` lists the VIPs)"
        );
    }
}

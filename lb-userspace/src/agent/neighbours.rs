//! Neighbour resolution: the egress interface's MAC and MTU, and each backend's destination
//! MAC, asked of the kernel through netlink. It runs in the background, one run at a time, so
//! the event loop stays responsive while an unresolved neighbour takes seconds.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use futures_util::future::join_all;
use tokio::sync::mpsc;
use tracing::warn;

use crate::netlink::{Link, NetWatch, Netlink};
use crate::reconcile::NetInfo;

/// What one run reports.
pub(super) type Resolved = (NetInfo, Link);

/// Starts resolutions and remembers one asked for while another runs.
pub(super) struct Resolver {
    netlink: Netlink,
    link: Link,
    tx: mpsc::Sender<Resolved>,
    busy: bool,
    again: bool,
}

impl Resolver {
    /// Results of background runs are sent on `tx`.
    pub(super) fn new(netlink: Netlink, link: Link, tx: mpsc::Sender<Resolved>) -> Self {
        Self {
            netlink,
            link,
            tx,
            busy: false,
            again: false,
        }
    }

    /// A new subscription to kernel table changes (after the previous one ended).
    pub(super) fn watch(&self) -> crate::netlink::Result<NetWatch> {
        self.netlink.watch()
    }

    /// Resolves `targets` (address -> reached in dsr-l2) and waits for the result.
    pub(super) async fn resolve_now(&mut self, targets: BTreeMap<IpAddr, bool>) -> NetInfo {
        let (net, link) = self.job(targets).run().await;
        self.link = link;
        net
    }

    /// Starts a resolution of `targets` in the background (one at a time: a request while one
    /// runs is remembered and served when it ends).
    pub(super) fn request(&mut self, targets: BTreeMap<IpAddr, bool>) {
        if self.busy {
            self.again = true;
            return;
        }
        self.busy = true;
        let job = self.job(targets);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(job.run().await).await;
        });
    }

    /// A background run ended with `link`; returns whether another was asked for meanwhile
    /// (the caller then requests it with the targets of that moment).
    pub(super) fn finished(&mut self, link: Link) -> bool {
        self.busy = false;
        self.link = link;
        std::mem::take(&mut self.again)
    }

    fn job(&self, targets: BTreeMap<IpAddr, bool>) -> NetJob {
        NetJob {
            netlink: self.netlink.clone(),
            link: self.link.clone(),
            targets,
        }
    }
}

/// One resolution run.
struct NetJob {
    netlink: Netlink,
    link: Link,
    /// Backend address -> reached in dsr-l2 mode (must be on-link).
    targets: BTreeMap<IpAddr, bool>,
}

impl NetJob {
    /// Resolves the interface and every backend's destination MAC. A backend that cannot be
    /// reached out of the XDP interface gets no MAC (the reconciler keeps it out of the ring).
    async fn run(self) -> Resolved {
        let link = match self.netlink.link_by_name(&self.link.name).await {
            Ok(l) => l,
            Err(e) => {
                warn!("interface {}: {e}", self.link.name);
                self.link
            }
        };
        let lookups = self.targets.keys().map(|a| self.netlink.resolve(*a));
        let results = join_all(lookups).await;
        let mut macs = HashMap::new();
        for ((addr, dsr), r) in self.targets.iter().zip(results) {
            match r {
                Ok(res) if res.next_hop.ifindex != link.index => warn!(
                    backend = %addr,
                    "reached through interface index {}, not {} where xlb is attached: XDP_TX \
                     can only send out of the receiving interface; add a route via {}",
                    res.next_hop.ifindex, link.index, link.name
                ),
                Ok(res) if *dsr && res.next_hop.gateway.is_some() => warn!(
                    backend = %addr,
                    "dsr-l2 backend is behind gateway {:?}: dsr-l2 needs backends on the LB's \
                     own L2 segment (use ipip or gue instead)",
                    res.next_hop.gateway
                ),
                Ok(res) => {
                    macs.insert(*addr, res.mac);
                }
                Err(e) => warn!(backend = %addr, "{e}"),
            }
        }
        let net = NetInfo {
            src_mac: link.mac,
            mtu: u16::try_from(link.mtu).unwrap_or(u16::MAX),
            macs,
        };
        (net, link)
    }
}

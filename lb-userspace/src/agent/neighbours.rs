//! Neighbour resolution: the egress interface's MAC and MTU, and each backend's destination
//! MAC, asked of the kernel through netlink. It runs in the background, one run at a time, so
//! the event loop stays responsive while an unresolved neighbour takes seconds. What a run
//! found is folded into the [`NeighbourBook`] on the event loop, which decides what is
//! programmed and what is logged.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures_util::future::join_all;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::metrics::AgentMetrics;
use crate::netlink::{Link, NetWatch, Netlink, NetlinkError};
use crate::reconcile::NetInfo;

use super::link_watch::{LinkEvent, LinkWatch};
use super::neighbour_book::{NeighbourBook, Outcome};

/// What one run reports: each backend's outcome, the interface as found, and whether an XDP
/// program is attached to it (`None`: could not be asked).
pub(super) struct Resolved {
    outcomes: BTreeMap<IpAddr, Outcome>,
    link: Link,
    xdp: Option<bool>,
}

/// Starts resolutions and remembers one asked for while another runs.
pub(super) struct Resolver {
    netlink: Netlink,
    link: Link,
    tx: mpsc::Sender<Resolved>,
    busy: bool,
    again: bool,
    book: NeighbourBook,
    link_watch: LinkWatch,
    metrics: AgentMetrics,
}

impl Resolver {
    /// Results of background runs are sent on `tx`.
    pub(super) fn new(
        netlink: Netlink,
        link: Link,
        tx: mpsc::Sender<Resolved>,
        metrics: AgentMetrics,
    ) -> Self {
        Self {
            netlink,
            link,
            tx,
            busy: false,
            again: false,
            book: NeighbourBook::default(),
            link_watch: LinkWatch::default(),
            metrics,
        }
    }

    /// A new subscription to kernel table changes (after the previous one ended).
    pub(super) fn watch(&self) -> crate::netlink::Result<NetWatch> {
        self.netlink.watch()
    }

    /// Resolves `targets` (address -> reached in dsr-l2) and waits for the result.
    pub(super) async fn resolve_now(&mut self, targets: BTreeMap<IpAddr, bool>) -> NetInfo {
        let resolved = self.job(targets).run().await;
        self.settle(resolved)
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

    /// A background run ended: returns what to program, and whether another run was asked for
    /// meanwhile (the caller then requests it with the targets of that moment).
    pub(super) fn finished(&mut self, resolved: Resolved) -> (NetInfo, bool) {
        self.busy = false;
        (self.settle(resolved), std::mem::take(&mut self.again))
    }

    /// Folds a run into the book and logs what changed since the last one.
    fn settle(
        &mut self,
        Resolved {
            outcomes,
            link,
            xdp,
        }: Resolved,
    ) -> NetInfo {
        for event in self.link_watch.observe(&link, xdp) {
            self.metrics
                .record_interface_event(&link.name, event.name());
            log_link_event(&link.name, event);
        }
        let (macs, transitions) = self.book.update(outcomes);
        for t in transitions {
            if t.is_problem() {
                warn!("{t}");
            } else {
                info!("{t}");
            }
        }
        let net = NetInfo {
            src_mac: link.mac,
            mtu: u16::try_from(link.mtu).unwrap_or(u16::MAX),
            macs,
        };
        self.link = link;
        net
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
    /// reached out of the XDP interface is unroutable (the book keeps it out of the ring).
    async fn run(self) -> Resolved {
        let (link, xdp) = match self.netlink.link_with_xdp(&self.link.name).await {
            Ok((link, attached)) => (link, Some(attached)),
            Err(e) => {
                warn!("interface {}: {e}", self.link.name);
                (self.link, None)
            }
        };
        let lookups = self.targets.keys().map(|a| self.netlink.resolve(*a));
        let results = join_all(lookups).await;
        let outcomes = self
            .targets
            .iter()
            .zip(results)
            .map(|((addr, dsr), r)| {
                let outcome = match r {
                    Ok(res) if res.next_hop.ifindex != link.index => Outcome::Unroutable(format!(
                        "reached through interface index {}, not {} where xlb is attached: \
                         XDP_TX can only send out of the receiving interface; add a route via {}",
                        res.next_hop.ifindex, link.index, link.name
                    )),
                    Ok(res) if *dsr && res.next_hop.gateway.is_some() => {
                        Outcome::Unroutable(format!(
                            "dsr-l2 backend is behind gateway {:?}: dsr-l2 needs backends on \
                             the LB's own L2 segment (use ipip or gue instead)",
                            res.next_hop.gateway
                        ))
                    }
                    Ok(res) => Outcome::Mac(res.mac),
                    Err(e) => outcome_of_error(e),
                };
                (*addr, outcome)
            })
            .collect();
        Resolved {
            outcomes,
            link,
            xdp,
        }
    }
}

fn log_link_event(name: &str, event: LinkEvent) {
    match event {
        LinkEvent::Down => warn!(
            "interface {name} is down or lost its carrier: nothing is forwarded until it is \
             up again (the XDP program stays attached)"
        ),
        LinkEvent::Up => info!("interface {name} is up again: forwarding resumes"),
        LinkEvent::XdpDetached => error!(
            "interface {name} has no XDP program any more (deleted and re-created, or replaced \
             by another tool): nothing is load-balanced; restart the agent to attach it again"
        ),
        LinkEvent::XdpAttached => info!("interface {name} has an XDP program again"),
    }
}

/// What a failed resolution says about the backend.
fn outcome_of_error(e: NetlinkError) -> Outcome {
    match e {
        NetlinkError::Unresolved { .. } => Outcome::Silent(e.to_string()),
        NetlinkError::NoRoute { .. }
        | NetlinkError::NotUnicast { .. }
        | NetlinkError::NoOutputInterface { .. } => Outcome::Unroutable(e.to_string()),
        _ => Outcome::LookupFailed(e.to_string()),
    }
}

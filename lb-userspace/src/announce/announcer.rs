//! The routes the agent keeps: decisions per VIP folded per address, held down, carried out by
//! a [`Speaker`], with adoption at start, node drain, and the state `xlb status` shows.
//!
//! Never stops forwarding: a speaker error is logged once per distinct error, shown in status
//! and counted, and the change is retried on the next evaluation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::bird_watch::BirdProblem;
use super::decision::{Decision, NodeInputs, VipInputs, WithdrawReason, decide, decide_address};
use super::holddown::{HoldDown, Step};
use super::speaker::Speaker;
use crate::metrics::AgentMetrics;
use crate::model::{AnnounceConfig, VipId};

/// A failed speaker call is retried after this long even without another event.
pub const RETRY: Duration = Duration::from_secs(2);

/// The node's drain state, as `xlb status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum DrainState {
    /// Not draining: addresses are announced as their VIPs allow.
    Active,
    /// Drained by the operator; VIP packets still arrive (or did within drain-quiet).
    Draining { since_secs: u64 },
    /// Drained, and no VIP packet arrived for `quiet_secs` (at least drain-quiet).
    Drained { quiet_secs: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressStatus {
    pub addr: IpAddr,
    /// Whether the route is in place now.
    pub announced: bool,
    /// What the VIPs on it call for.
    pub wanted: Decision,
    /// A change is waiting for the hold-down to end: in this many milliseconds.
    pub held_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipAnnounce {
    #[serde(with = "crate::api::vip_id_serde")]
    pub id: VipId,
    pub decision: Decision,
}

/// `[announce]`'s part of `xlb status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceStatus {
    /// Where the routes go (`kernel table 200 proto 200`).
    pub speaker: String,
    pub node: DrainState,
    pub drain_quiet_secs: u64,
    pub addresses: Vec<AddressStatus>,
    pub vips: Vec<VipAnnounce>,
    /// Routes of others in our table: it is used by something else.
    pub collisions: Vec<String>,
    /// The speaker's last error, until a call succeeds again.
    pub error: Option<String>,
    /// BIRD's checks that are not OK, as last run ([`super::bird_watch`]); `None` until the
    /// first run.
    #[serde(default)]
    pub bird: Option<Vec<BirdProblem>>,
}

#[derive(Clone, Copy, Debug)]
struct Drain {
    since: Instant,
    /// Sum of the VIP packet counters when last looked at, and when it last moved.
    packets: Option<u64>,
    quiet_since: Instant,
}

pub struct Announcer {
    cfg: AnnounceConfig,
    speaker: Box<dyn Speaker>,
    metrics: AgentMetrics,
    routes: BTreeMap<IpAddr, HoldDown>,
    wanted: BTreeMap<IpAddr, Decision>,
    vips: Vec<VipAnnounce>,
    drain: Option<Drain>,
    collisions: Vec<String>,
    error: Option<String>,
    held_until: BTreeMap<IpAddr, Instant>,
    bird: Option<Vec<BirdProblem>>,
}

impl Announcer {
    /// Adopts what the speaker holds (a previous agent's routes stay in place until the first
    /// evaluation decides about them) and reports routes of others in our table.
    pub fn start(cfg: AnnounceConfig, speaker: Box<dyn Speaker>, metrics: AgentMetrics) -> Self {
        let mut a = Self {
            cfg,
            speaker,
            metrics,
            routes: BTreeMap::new(),
            wanted: BTreeMap::new(),
            vips: Vec::new(),
            drain: None,
            collisions: Vec::new(),
            error: None,
            held_until: BTreeMap::new(),
            bird: None,
        };
        match a.speaker.list() {
            Ok(listing) => {
                for addr in &listing.ours {
                    a.routes.insert(*addr, HoldDown::new(true, a.cfg.hold_down));
                }
                if !listing.ours.is_empty() {
                    info!(speaker = %a.speaker.describe(), routes = listing.ours.len(),
                          "adopted the routes of a previous agent");
                }
                if !listing.foreign.is_empty() {
                    error!(
                        speaker = %a.speaker.describe(),
                        "the table holds routes of another protocol ({}): it is used by \
                         something else; set announce.table (and protocol) to numbers of \
                         xlb's own. Forwarding continues.",
                        listing.foreign.join(", ")
                    );
                }
                a.collisions = listing.foreign;
            }
            Err(e) => a.failed(e.to_string()),
        }
        a
    }

    pub fn config(&self) -> &AnnounceConfig {
        &self.cfg
    }

    /// New timings from a reload (table and protocol changes need a new announcer).
    pub fn set_config(&mut self, cfg: AnnounceConfig) {
        for h in self.routes.values_mut() {
            h.set_hold(cfg.hold_down);
        }
        self.cfg = cfg;
    }

    pub fn draining(&self) -> bool {
        self.drain.is_some()
    }

    /// Starts or ends a node drain; returns whether that changed anything.
    pub fn set_draining(&mut self, on: bool, now: Instant) -> bool {
        match (on, self.drain.is_some()) {
            (true, false) => {
                self.drain = Some(Drain {
                    since: now,
                    packets: None,
                    quiet_since: now,
                });
                self.metrics.set_node_draining(true);
                true
            }
            (false, true) => {
                self.drain = None;
                self.metrics.set_node_draining(false);
                true
            }
            _ => false,
        }
    }

    /// The sum of every VIP's packet counter, for the drain's quiet time.
    pub fn observe_packets(&mut self, total: u64, now: Instant) {
        if let Some(d) = &mut self.drain {
            if d.packets.is_some_and(|p| p != total) {
                d.quiet_since = now;
            }
            d.packets = Some(total);
        }
    }

    /// Decides every address and carries out the changes the hold-down allows. `vips` in
    /// config order. Returns when to evaluate again (a held change, a retry), if ever.
    /// `continuity_ready`: flow continuity lets the node take traffic. It only holds back
    /// routes that are not in place: a node that serves (a restarted agent's adopted routes)
    /// keeps serving.
    pub fn evaluate(
        &mut self,
        attached: bool,
        continuity_ready: bool,
        vips: &[(VipId, VipInputs)],
        now: Instant,
    ) -> Option<Instant> {
        let node = NodeInputs {
            attached,
            draining: self.drain.is_some(),
            continuity_ready: continuity_ready || !self.announced().is_empty(),
        };
        self.vips = vips
            .iter()
            .map(|(id, v)| VipAnnounce {
                id: *id,
                decision: decide(node, *v),
            })
            .collect();
        let mut per_addr: BTreeMap<IpAddr, Vec<Decision>> = BTreeMap::new();
        for v in &self.vips {
            per_addr.entry(v.id.addr).or_default().push(v.decision);
        }
        let mut wanted: BTreeMap<IpAddr, Decision> = per_addr
            .into_iter()
            .filter_map(|(addr, ds)| decide_address(ds).map(|d| (addr, d)))
            .collect();
        for addr in self.routes.keys() {
            wanted
                .entry(*addr)
                .or_insert(Decision::Withdraw(WithdrawReason::NotConfigured));
        }
        self.wanted = wanted;
        self.carry_out(now)
    }

    /// Withdraws every route now, hold-down or not (`xlb stop --detach`, announcing turned off
    /// or moved to another table). Returns whether every withdrawal succeeded.
    pub fn withdraw_all(&mut self, reason: WithdrawReason) -> bool {
        let mut ok = true;
        let addrs: Vec<IpAddr> = self.routes.keys().copied().collect();
        for addr in addrs {
            self.wanted.insert(addr, Decision::Withdraw(reason));
            if !self.routes[&addr].announced() {
                continue;
            }
            match self.speaker.withdraw(addr) {
                Ok(()) => {
                    info!(%addr, %reason, "route withdrawn");
                    self.metrics.record_route_change(false);
                    if let Some(h) = self.routes.get_mut(&addr) {
                        h.force(false);
                    }
                }
                Err(e) => {
                    ok = false;
                    self.failed(e.to_string());
                }
            }
        }
        self.publish();
        ok
    }

    fn carry_out(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut failed = false;
        self.held_until.clear();
        let wanted: Vec<(IpAddr, Decision)> = self.wanted.iter().map(|(a, d)| (*a, *d)).collect();
        for (addr, decision) in wanted {
            let want = decision.announced();
            let hold = self
                .routes
                .entry(addr)
                .or_insert_with(|| HoldDown::new(false, self.cfg.hold_down));
            match hold.step(want, now) {
                Step::Steady => {}
                Step::HeldUntil(t) => {
                    self.held_until.insert(addr, t);
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
                Step::Change(to) => {
                    let result = if to {
                        self.speaker.announce(addr)
                    } else {
                        self.speaker.withdraw(addr)
                    };
                    match result {
                        Ok(()) => {
                            if let Some(h) = self.routes.get_mut(&addr) {
                                h.commit(to, now);
                            }
                            self.metrics.record_route_change(to);
                            match decision {
                                Decision::Announce => info!(%addr, "route announced"),
                                Decision::Withdraw(reason) => {
                                    info!(%addr, %reason, "route withdrawn")
                                }
                            }
                        }
                        Err(e) => {
                            failed = true;
                            self.failed(e.to_string());
                        }
                    }
                }
            }
        }
        // Withdrawn routes of addresses no VIP has any more are forgotten.
        let gone: Vec<IpAddr> = self
            .routes
            .iter()
            .filter(|(a, h)| {
                !h.announced()
                    && self.wanted.get(a)
                        == Some(&Decision::Withdraw(WithdrawReason::NotConfigured))
            })
            .map(|(a, _)| *a)
            .collect();
        for a in gone {
            self.routes.remove(&a);
            self.wanted.remove(&a);
        }
        if failed {
            let retry = now + RETRY;
            next = Some(next.map_or(retry, |n| n.min(retry)));
        } else if let Some(e) = self.error.take() {
            info!(speaker = %self.speaker.describe(), "route updates work again (last error: {e})");
        }
        self.publish();
        next
    }

    /// Records a speaker error: logged when it differs from the last one, always counted.
    fn failed(&mut self, message: String) {
        self.metrics.record_speaker_error();
        if self.error.as_deref() != Some(message.as_str()) {
            warn!(speaker = %self.speaker.describe(),
                  "route update failed: {message}; forwarding continues, retrying");
            self.error = Some(message);
        }
    }

    fn publish(&self) {
        let announced: Vec<(VipId, bool, &'static str)> = self
            .vips
            .iter()
            .map(|v| {
                let on = self.routes.get(&v.id.addr).is_some_and(HoldDown::announced);
                let reason = match v.decision {
                    Decision::Announce => "",
                    Decision::Withdraw(r) => r.name(),
                };
                (v.id, on, reason)
            })
            .collect();
        self.metrics.set_announced(announced);
    }

    /// Addresses whose route is in place.
    pub fn announced(&self) -> BTreeSet<IpAddr> {
        self.routes
            .iter()
            .filter(|(_, h)| h.announced())
            .map(|(a, _)| *a)
            .collect()
    }

    /// The result of a run of BIRD's checks: logged when it differs from the last one (a
    /// warning per problem, or that they are gone), kept for `xlb status` and the metrics.
    pub fn set_bird(&mut self, problems: Vec<BirdProblem>) {
        if self.bird.as_ref() == Some(&problems) {
            return;
        }
        for p in &problems {
            let fix = p.fix.join("; ");
            warn!(fix = %fix, "BIRD: {} (forwarding continues; the routers may not hear of \
                  this node's VIPs)", p.headline());
        }
        if problems.is_empty() && self.bird.is_some() {
            info!("BIRD: every check passes again");
        }
        self.metrics.set_bird_problems(problems.len());
        self.bird = Some(problems);
    }

    pub fn status(&self, now: Instant) -> AnnounceStatus {
        let node = match &self.drain {
            None => DrainState::Active,
            Some(d) => {
                let quiet = now.saturating_duration_since(d.quiet_since);
                if d.packets.is_some() && quiet >= self.cfg.drain_quiet {
                    DrainState::Drained {
                        quiet_secs: quiet.as_secs(),
                    }
                } else {
                    DrainState::Draining {
                        since_secs: now.saturating_duration_since(d.since).as_secs(),
                    }
                }
            }
        };
        AnnounceStatus {
            speaker: self.speaker.describe(),
            node,
            drain_quiet_secs: self.cfg.drain_quiet.as_secs(),
            addresses: self
                .wanted
                .iter()
                .map(|(addr, wanted)| AddressStatus {
                    addr: *addr,
                    announced: self.routes.get(addr).is_some_and(HoldDown::announced),
                    wanted: *wanted,
                    held_ms: self
                        .held_until
                        .get(addr)
                        .map(|t| t.saturating_duration_since(now).as_millis() as u64),
                })
                .collect(),
            vips: self.vips.clone(),
            collisions: self.collisions.clone(),
            error: self.error.clone(),
            bird: self.bird.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::SharedFake;

    fn cfg() -> AnnounceConfig {
        AnnounceConfig {
            table: 200,
            protocol: 200,
            min_healthy: 1,
            hold_down: Duration::from_secs(5),
            withdraw_grace: Duration::from_secs(3),
            drain_quiet: Duration::from_secs(10),
            bird_socket: "/run/bird/bird.ctl".into(),
        }
    }

    fn id(s: &str) -> VipId {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ready(up: u32) -> VipInputs {
        VipInputs {
            programmed: true,
            backends_up: up,
            min_healthy: 1,
        }
    }

    #[test]
    fn continuity_holds_back_a_new_route_but_never_withdraws_a_serving_one() {
        let fake = SharedFake::default();
        let mut a = Announcer::start(cfg(), Box::new(fake.clone()), AgentMetrics::new());
        let t0 = Instant::now();
        let web = [(id("tcp/203.0.113.10:80"), ready(1))];
        a.evaluate(true, false, &web, t0);
        assert!(
            a.announced().is_empty(),
            "not announced before the peers' exceptions"
        );
        assert_eq!(
            a.status(t0).vips[0].decision,
            Decision::Withdraw(WithdrawReason::ContinuitySync)
        );
        a.evaluate(true, true, &web, t0);
        assert_eq!(a.announced().len(), 1);
        // Serving already (a restarted agent's adopted route): continuity does not take it away.
        a.evaluate(true, false, &web, t0 + Duration::from_secs(1));
        assert_eq!(a.announced().len(), 1);
        assert_eq!(fake.get().log.len(), 1);
    }

    #[test]
    fn adopted_routes_stay_until_decided_and_unwanted_ones_go_after_the_first_evaluation() {
        let fake = SharedFake::default();
        fake.get()
            .routes
            .extend([ip("203.0.113.10"), ip("203.0.113.99")]);
        let mut a = Announcer::start(cfg(), Box::new(fake.clone()), AgentMetrics::new());
        // Nothing written by the adoption itself.
        assert!(fake.get().log.is_empty());
        let t0 = Instant::now();
        let next = a.evaluate(true, true, &[(id("tcp/203.0.113.10:80"), ready(1))], t0);
        assert_eq!(next, None);
        // The adopted, still wanted route was not re-announced; the stray one was withdrawn
        // at once (adoption opens no hold-down window).
        assert_eq!(fake.get().log, [(false, ip("203.0.113.99"))]);
        assert_eq!(a.announced(), [ip("203.0.113.10")].into());
        let s = a.status(t0);
        assert_eq!(s.addresses.len(), 1, "the withdrawn stray is forgotten");
    }

    #[test]
    fn an_address_follows_its_vips_within_the_hold_down() {
        let fake = SharedFake::default();
        let mut a = Announcer::start(cfg(), Box::new(fake.clone()), AgentMetrics::new());
        let (web, dns) = (id("tcp/203.0.113.10:80"), id("udp/203.0.113.10:53"));
        let t0 = Instant::now();
        a.evaluate(true, true, &[(web, ready(0)), (dns, ready(1))], t0);
        assert_eq!(fake.get().log, [(true, ip("203.0.113.10"))]);
        // Both VIPs lose their backends: withdrawn, but only when the window ends.
        let next = a.evaluate(
            true,
            true,
            &[(web, ready(0)), (dns, ready(0))],
            t0 + Duration::from_secs(1),
        );
        assert_eq!(next, Some(t0 + Duration::from_secs(5)));
        let s = a.status(t0 + Duration::from_secs(1));
        assert_eq!(s.addresses[0].held_ms, Some(4000));
        assert!(s.addresses[0].announced);
        assert_eq!(
            s.addresses[0].wanted,
            Decision::Withdraw(WithdrawReason::TooFewBackends { up: 0, need: 1 })
        );
        let next = a.evaluate(
            true,
            true,
            &[(web, ready(0)), (dns, ready(0))],
            t0 + Duration::from_secs(5),
        );
        assert_eq!(next, None);
        assert!(a.announced().is_empty());
        assert_eq!(fake.get().log.len(), 2);
    }

    #[test]
    fn drain_withdraws_and_reports_drained_after_quiet_packets() {
        let fake = SharedFake::default();
        let mut c = cfg();
        c.hold_down = Duration::ZERO;
        let mut a = Announcer::start(c, Box::new(fake.clone()), AgentMetrics::new());
        let web = [(id("tcp/203.0.113.10:80"), ready(2))];
        let t0 = Instant::now();
        a.evaluate(true, true, &web, t0);
        assert!(a.set_draining(true, t0));
        assert!(!a.set_draining(true, t0));
        a.evaluate(true, true, &web, t0);
        assert!(fake.get().routes.is_empty());
        assert_eq!(
            a.status(t0).vips[0].decision,
            Decision::Withdraw(WithdrawReason::Draining)
        );
        a.observe_packets(100, t0);
        a.observe_packets(150, t0 + Duration::from_secs(3));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            a.status(at(12)).node,
            DrainState::Draining { since_secs: 12 }
        );
        a.observe_packets(150, at(13));
        assert_eq!(
            a.status(at(13)).node,
            DrainState::Drained { quiet_secs: 10 }
        );
        assert!(a.set_draining(false, at(14)));
        a.evaluate(true, true, &web, at(14));
        assert_eq!(a.status(at(14)).node, DrainState::Active);
        assert_eq!(fake.get().routes, [ip("203.0.113.10")].into());
    }

    #[test]
    fn speaker_errors_are_retried_shown_and_cleared() {
        let fake = SharedFake::default();
        fake.get().fail = Some("EPERM".into());
        let mut a = Announcer::start(cfg(), Box::new(fake.clone()), AgentMetrics::new());
        assert_eq!(a.status(Instant::now()).error.as_deref(), Some("EPERM"));
        let t0 = Instant::now();
        let web = [(id("tcp/203.0.113.10:80"), ready(1))];
        assert_eq!(a.evaluate(true, true, &web, t0), Some(t0 + RETRY));
        assert!(a.announced().is_empty());
        fake.get().fail = None;
        assert_eq!(a.evaluate(true, true, &web, t0 + RETRY), None);
        assert_eq!(a.announced(), [ip("203.0.113.10")].into());
        assert_eq!(a.status(t0).error, None);
    }

    #[test]
    fn collisions_are_reported_and_withdraw_all_ignores_the_hold_down() {
        let fake = SharedFake::default();
        fake.get().foreign.push("10.0.0.0/8 proto 4".into());
        let mut a = Announcer::start(cfg(), Box::new(fake.clone()), AgentMetrics::new());
        assert_eq!(a.status(Instant::now()).collisions, ["10.0.0.0/8 proto 4"]);
        let t0 = Instant::now();
        a.evaluate(true, true, &[(id("tcp/203.0.113.10:80"), ready(1))], t0);
        assert!(a.withdraw_all(WithdrawReason::Stopping));
        assert!(fake.get().routes.is_empty());
        assert_eq!(
            a.status(t0).addresses[0].wanted,
            Decision::Withdraw(WithdrawReason::Stopping)
        );
    }

    #[test]
    fn not_attached_withdraws_everything() {
        let fake = SharedFake::default();
        let mut a = Announcer::start(cfg(), Box::new(fake.clone()), AgentMetrics::new());
        a.evaluate(
            false,
            true,
            &[(id("tcp/203.0.113.10:80"), ready(1))],
            Instant::now(),
        );
        assert!(fake.get().log.is_empty());
        assert_eq!(
            a.status(Instant::now()).vips[0].decision,
            Decision::Withdraw(WithdrawReason::NotAttached)
        );
    }
}

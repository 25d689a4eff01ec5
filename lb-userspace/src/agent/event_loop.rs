//! The agent's event loop: one task that owns the state and serialises every change to it
//! (health transitions, kernel table changes, resolutions, API calls, signals).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::announce::BirdProblem;
use crate::api::{ApiCall, Request, Response};
use crate::cli::doctor::BirdExpectation;
use crate::health::{HealthEvent, HealthStats};
use crate::maps::AyaStore;
use crate::metrics::AgentMetrics;
use crate::model::VipId;
use crate::netlink::{NetEvent, NetWatch};

use super::handlers::Answer;
use super::neighbours::{Resolved, Resolver};
use super::state::Agent;

/// How often neighbours are re-resolved even without a kernel notification: frames sent by XDP
/// bypass the kernel's neighbour state machine, so a STALE entry is never re-confirmed.
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Health probe counters are turned into metrics at this pace.
const PROBE_METRICS_INTERVAL: Duration = Duration::from_secs(2);
/// Pace of the drain's packet-counter reads (its quiet time is exact to this).
const ANNOUNCE_TICK: Duration = Duration::from_secs(1);

/// Why the loop ended.
pub(super) enum Exit {
    Signal(&'static str),
    /// `xlb stop`: answered once the teardown is done, so the caller can rely on it.
    Stop {
        detach: bool,
        reply: tokio::sync::oneshot::Sender<Response>,
    },
}

/// What the loop listens to besides signals and timers.
pub(super) struct Inputs {
    pub(super) health: mpsc::Receiver<HealthEvent>,
    pub(super) api: mpsc::Receiver<ApiCall>,
    pub(super) resolved: mpsc::Receiver<Resolved>,
    pub(super) watch: NetWatch,
    /// Results of BIRD's checks ([`crate::announce::bird_watch`]).
    pub(super) bird: mpsc::Receiver<Vec<BirdProblem>>,
    /// What those checks expect, kept in step with the running config.
    pub(super) bird_expect: watch::Sender<Option<BirdExpectation>>,
    /// `[continuity]`: parts peers sent, and the scan thread's results (all `None` without).
    pub(super) continuity: ContinuityInputs,
}

#[derive(Default)]
pub(super) struct ContinuityInputs {
    pub(super) parts: Option<mpsc::Receiver<crate::continuity::channel::Inbound>>,
    pub(super) scans:
        Option<watch::Receiver<std::sync::Arc<crate::continuity::scanner::Published>>>,
    pub(super) refresh: Option<Duration>,
}

/// Waits for a part from a peer (never, without continuity).
async fn next_part(
    parts: &mut Option<mpsc::Receiver<crate::continuity::channel::Inbound>>,
) -> Option<crate::continuity::channel::Inbound> {
    match parts {
        Some(p) => p.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits for a finished scan (never, without continuity).
async fn next_scan<T>(scans: &mut Option<watch::Receiver<T>>) {
    if let Some(s) = scans
        && s.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

pub(super) async fn run(
    agent: &mut Agent<AyaStore>,
    resolver: &mut Resolver,
    inputs: &mut Inputs,
) -> anyhow::Result<Exit> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut refresh = tokio::time::interval(REFRESH_INTERVAL);
    refresh.reset();
    let mut probe_tick = tokio::time::interval(PROBE_METRICS_INTERVAL);
    let mut announce_tick = tokio::time::interval(ANNOUNCE_TICK);
    let continuity_every = inputs
        .continuity
        .refresh
        .unwrap_or(Duration::from_secs(3600));
    let mut continuity_tick = tokio::time::interval(continuity_every);
    continuity_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (VIP, backend) -> probes already reported to metrics.
    let mut probes_seen = HashMap::new();
    // A reload ran in this turn of the loop.
    let mut reloaded = false;
    // The first overrun of the notification socket was logged.
    let mut overrun_logged = false;
    loop {
        tokio::select! {
            Some(ev) = inputs.health.recv() => {
                info!(vip = %ev.vip, backend = %ev.backend, up = ev.up, reason = %ev.reason,
                      "health changed");
                agent.health_changed(ev.vip, ev.backend, ev.up);
            }
            ev = inputs.watch.recv() => {
                match ev {
                    Some(ev) => {
                        debug!(?ev, "kernel table changed");
                        // Coalesce a burst of notifications into one re-resolution.
                        while inputs.watch.try_recv().is_some() {}
                        for (ev, n) in inputs.watch.take_counts() {
                            if ev == NetEvent::Overrun && n > 0 && !overrun_logged {
                                overrun_logged = true;
                                warn!(
                                    "kernel notifications overran their socket buffer (a flood \
                                     of route or neighbour changes): every next hop is resolved \
                                     again; later overruns are only counted \
                                     (xlb_netlink_events_total{{kind=\"overrun\"}})"
                                );
                            }
                            agent.metrics.add_netlink_events(ev.kind(), n);
                        }
                    }
                    None => {
                        warn!("netlink notifications stopped: subscribing again");
                        inputs.watch = resolver.watch()?;
                    }
                }
                agent.request_net();
            }
            _ = refresh.tick() => agent.request_net(),
            Some(resolved) = inputs.resolved.recv() => {
                let (net, again) = resolver.finished(resolved);
                agent.metrics.record_net_resolution();
                agent.net_resolved(net);
                if again {
                    agent.request_net();
                }
            }
            _ = announce_tick.tick() => agent.announce_tick(),
            _ = sleep_until_wake(agent.announce_wake), if agent.announce_wake.is_some() => {
                agent.announce_tick();
            }
            Some(problems) = inputs.bird.recv() => agent.bird_checked(problems),
            Some(part) = next_part(&mut inputs.continuity.parts) => agent.continuity_part(part),
            () = next_scan(&mut inputs.continuity.scans) => agent.continuity_scanned(),
            _ = continuity_tick.tick(), if inputs.continuity.refresh.is_some() => {
                agent.continuity_tick();
            }
            _ = probe_tick.tick() => {
                report_probes(&agent.health_stats, &agent.metrics, &mut probes_seen);
            }
            Some(call) = inputs.api.recv() => {
                reloaded |= matches!(call.request, Request::Reload);
                match agent.answer(call.request) {
                    Answer::Reply(response) => {
                        let _ = call.reply.send(response);
                    }
                    Answer::Stop { detach } => return Ok(Exit::Stop { detach, reply: call.reply }),
                }
            }
            _ = hup.recv() => {
                reloaded = true;
                match agent.reload() {
                    Ok(msg) => info!("reload: {msg}"),
                    Err(e) => error!("reload refused, running state unchanged: {e}"),
                }
            }
            _ = term.recv() => return Ok(Exit::Signal("SIGTERM")),
            _ = int.recv() => return Ok(Exit::Signal("SIGINT")),
        }
        if agent.take_net_request() {
            resolver.request(agent.net_targets());
        }
        // After a reload (signal or API) the checks follow the new config; nothing else
        // changes what they expect.
        if std::mem::take(&mut reloaded) {
            let expect = agent.bird_expectation();
            inputs.bird_expect.send_if_modified(|e| {
                let changed = *e != expect;
                *e = expect;
                changed
            });
        }
    }
}

/// Sleeps until a held route change is due.
async fn sleep_until_wake(at: Option<std::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

/// Feeds probe outcomes since the last tick to the metrics (the health monitor counts them
/// lock-free; latency per probe is the latest one, exact at one probe per tick).
fn report_probes(
    stats: &HealthStats,
    metrics: &AgentMetrics,
    seen: &mut HashMap<(VipId, IpAddr), u64>,
) {
    for h in stats.snapshot() {
        let key = (h.vip, h.backend);
        let total = h.probes_ok + h.probes_failed;
        let before = seen.insert(key, total).unwrap_or(0);
        let latency = h.last_latency.unwrap_or_default();
        for _ in before..total {
            metrics.record_probe(&h.vip, h.backend, h.last_ok, latency);
        }
    }
}

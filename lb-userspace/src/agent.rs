//! `xlb run`: the agent. It owns every map write (through the reconciler) and reacts to:
//! health transitions, kernel neighbour/route changes, API calls, SIGHUP (reload) and
//! SIGINT/SIGTERM (stop, leaving forwarding running unless told to detach).
//!
//! Start-up order: validate the config (no side effects) -> claim the API socket (refuses when
//! another agent runs) -> prepare the pin directory -> load the program on the pinned maps ->
//! attach through pinned links -> adopt and reconcile the maps -> start probes, API, metrics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::future::join_all;
use lb_common::{flows, values::BACKEND_ACTIVE};
use tokio::io::{Interest, unix::AsyncFd};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::api::{
    self, AgentInfo, ApiCall, ApiServer, HealthStatus, ReloadInfo, Request, Response, StatusInputs,
    StatusReport,
};
use crate::config::{self, HostEnvironment};
use crate::health::{self, Health, HealthEvent, HealthMonitor, HealthStats};
use crate::loader::{self, LoadOptions};
use crate::maps::AyaStore;
use crate::metrics::{AgentMetrics, Exporter, MetricsServer, SharedStore};
use crate::model::{BackendSpec, Config, ForwardMode, MAX_WEIGHT, Vip, VipId};
use crate::netlink::{Link, NetWatch, Netlink};
use crate::pinning;
use crate::reconcile::{NetInfo, Overrides, Reconciler};

/// How often neighbours are re-resolved even without a kernel notification: frames sent by XDP
/// bypass the kernel's neighbour state machine, so a STALE entry is never re-confirmed.
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Health probe counters are turned into metrics at this pace.
const PROBE_METRICS_INTERVAL: Duration = Duration::from_secs(2);
/// Bound on teardown: whatever is not done by then is abandoned (forwarding is unaffected).
const TEARDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Why the loop ended.
enum Exit {
    Signal(&'static str),
    /// `xlb stop`: answered once the teardown is done, so the caller can rely on it.
    Stop {
        detach: bool,
        reply: tokio::sync::oneshot::Sender<Response>,
    },
}

struct Agent {
    config_path: PathBuf,
    /// The config as the file says.
    file: Config,
    /// Backends added / removed through the API (until the next reload).
    added: BTreeMap<VipId, Vec<BackendSpec>>,
    removed: BTreeSet<(VipId, IpAddr)>,
    overrides: Overrides,
    net: NetInfo,
    link: Link,
    netlink: Netlink,
    /// Background neighbour resolution: results arrive on the loop's channel.
    net_tx: mpsc::Sender<(NetInfo, Link)>,
    net_busy: bool,
    net_again: bool,
    reconciler: Reconciler<AyaStore>,
    health: HealthMonitor,
    health_stats: HealthStats,
    /// (VIP, backend) -> probes already reported to metrics.
    probes_seen: HashMap<(VipId, IpAddr), u64>,
    metrics: AgentMetrics,
    last_reload: Option<ReloadInfo>,
}

/// Runs the agent until a signal or a stop request.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let validated = config::load(config_path, &HostEnvironment).map_err(|e| anyhow!("{e}"))?;
    for w in &validated.warnings {
        warn!("config: {w}");
    }
    let cfg = validated.config;

    // The socket first: a second agent must be refused before it touches anything.
    let api_server = ApiServer::bind(&cfg.api_socket).await?;

    let netlink = Netlink::new().context("opening netlink")?;
    let watch = netlink
        .watch()
        .context("subscribing to netlink notifications")?;
    let iface = &cfg.interfaces[0].name;
    if cfg.interfaces.len() > 1 {
        warn!(
            "several interfaces configured: forwarded frames carry the MAC of {iface} as source \
             on all of them (one source MAC per program)"
        );
    }
    let link = netlink.link_by_name(iface).await?;

    pinning::prepare(&cfg.pin_dir)?;
    let wanted = LoadOptions {
        max_vips: cfg.max_vips,
        max_backends: cfg.max_backends,
        flow_table_size: cfg.flow_table_size,
    };
    let opts = pinning::adopt_sizes(&cfg.pin_dir, &wanted)?;
    let maps_dir = pinning::maps_dir(&cfg.pin_dir);
    let mut ebpf = loader::load_pinned(&opts, &maps_dir)?;
    for i in &cfg.interfaces {
        let mode = pinning::attach(&mut ebpf, &cfg.pin_dir, &i.name, i.xdp_mode)?;
        info!(iface = %i.name, ?mode, "XDP program attached");
    }
    forward_program_logs(&mut ebpf);
    // The pinned links hold the program from here on; our handle is not needed.
    drop(ebpf);

    let reconciler = Reconciler::adopt(AyaStore::from_pin_dir(&maps_dir)?)?;
    let (health_tx, mut health_rx) = mpsc::channel::<HealthEvent>(1024);
    let health = HealthMonitor::new(health_tx);
    let metrics = AgentMetrics::new();
    metrics.set_flow_table_capacity(flows::flow_capacity(flows::flow_sets(opts.flow_table_size)));
    let (net_tx, mut net_rx) = mpsc::channel::<(NetInfo, Link)>(4);

    let mut agent = Agent {
        config_path: config_path.to_path_buf(),
        health_stats: health.stats(),
        file: cfg,
        added: BTreeMap::new(),
        removed: BTreeSet::new(),
        overrides: Overrides::default(),
        net: NetInfo::default(),
        link,
        netlink,
        net_tx,
        net_busy: false,
        net_again: false,
        reconciler,
        health,
        probes_seen: HashMap::new(),
        metrics,
        last_reload: None,
    };
    agent.start_health();
    // At start-up the first resolution is awaited: applying before it would mark every backend
    // down for want of a MAC.
    let (net, link) = agent.net_job().run().await;
    agent.net = net;
    agent.link = link;
    agent.apply("startup")?;

    if let Some(addr) = agent.file.metrics_listen {
        let store: SharedStore = Arc::new(Mutex::new(AyaStore::from_pin_dir(&maps_dir)?));
        let server = MetricsServer::bind(addr, Exporter::new(store, agent.metrics.clone()))
            .await
            .with_context(|| format!("metrics endpoint on {addr}"))?;
        info!(%addr, "metrics endpoint listening");
        tokio::spawn(async move {
            if let Err(e) = server.run().await {
                error!("metrics endpoint stopped: {e}");
            }
        });
    }
    let (api_tx, mut api_rx) = mpsc::channel::<ApiCall>(64);
    info!(socket = %api_server.path().display(), "control API listening");
    let api_task = tokio::spawn(api_server.serve(api_tx));

    let exit = agent
        .event_loop(&mut health_rx, &mut api_rx, &mut net_rx, watch)
        .await?;
    info!("stopping");
    let (detach, reply) = match exit {
        Exit::Signal(name) => {
            info!(signal = name, "signal received");
            (agent.file.detach_on_exit, None)
        }
        Exit::Stop { detach, reply } => (detach || agent.file.detach_on_exit, Some(reply)),
    };
    let pin_dir = agent.file.pin_dir.clone();
    let _ = tokio::time::timeout(TEARDOWN_LIMIT, agent.health.shutdown()).await;
    let result = if detach {
        pinning::detach(&pin_dir).map(|()| {
            info!("detached: XDP links and maps unpinned, forwarding stopped");
            "stopped; XDP program detached and maps unpinned"
        })
    } else {
        info!("forwarding continues from the pinned program; a new agent will adopt it");
        Ok("stopped; forwarding continues from the pinned program")
    };
    if let Some(reply) = reply {
        let answer = match &result {
            Ok(msg) => Response::ok(*msg),
            Err(e) => Response::error(format!("stopped, but detaching failed: {e}")),
        };
        let _ = reply.send(answer);
    }
    // Closing the API's channel ends its server, which first lets the open connections write
    // their answers (this one included).
    drop(api_rx);
    let _ = tokio::time::timeout(TEARDOWN_LIMIT, api_task).await;
    result?;
    Ok(())
}

/// One neighbour resolution run (see `Agent::request_net`).
struct NetJob {
    netlink: Netlink,
    link: Link,
    /// Backend address -> reached in dsr-l2 mode (must be on-link).
    targets: BTreeMap<IpAddr, bool>,
}

impl NetJob {
    /// Resolves the interface and every backend's destination MAC. A backend that cannot be
    /// reached out of the XDP interface gets no MAC (the reconciler keeps it out of the ring).
    async fn run(self) -> (NetInfo, Link) {
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

/// Forwards the program's aya-log records (it logs only exceptional events, never per packet)
/// into our log, through the `log` -> `tracing` bridge.
fn forward_program_logs(ebpf: &mut aya::Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            warn!("program log forwarding unavailable: {e}");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer's fd for its whole life and always reports the
    // same one; the AsyncFd owns the logger.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            warn!("program log forwarding unavailable: {}", e.into_parts().1);
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

impl Agent {
    /// The config plus API additions and removals.
    fn effective(&self) -> Config {
        let mut cfg = self.file.clone();
        for vip in &mut cfg.vips {
            if let Some(extra) = self.added.get(&vip.id) {
                vip.backends.extend(extra.iter().cloned());
            }
            vip.backends
                .retain(|b| !self.removed.contains(&(vip.id, b.addr)));
            vip.backends.sort_by_key(|b| b.addr);
        }
        cfg
    }

    fn start_health(&mut self) {
        let cfg = self.effective();
        // Backends the adopted maps serve start up (a restart must not pull them out of the
        // ring while the first probes run); others start as their check kind says.
        let active: BTreeSet<(VipId, IpAddr)> = self
            .reconciler
            .backends()
            .into_iter()
            .filter(|b| b.entry.state == BACKEND_ACTIVE)
            .map(|b| (b.vip, b.addr))
            .collect();
        let summary = self.health.update_with(&cfg, |vip, b| {
            if active.contains(&(vip.id, b.addr)) {
                Health::Up
            } else {
                health::default_initial(&vip.health)
            }
        });
        debug!(?summary, "health checks updated");
        // Until a probe says otherwise, the starting state is what the reconciler uses.
        self.overrides.down.clear();
        for vip in &cfg.vips {
            for b in &vip.backends {
                let up = active.contains(&(vip.id, b.addr))
                    || health::default_initial(&vip.health).is_up();
                if !up {
                    self.overrides.down.insert((vip.id, b.addr));
                }
            }
        }
        for h in self.health_stats.snapshot() {
            let key = (h.vip, h.backend);
            if h.probes_ok + h.probes_failed > 0 {
                if h.up {
                    self.overrides.down.remove(&key);
                } else {
                    self.overrides.down.insert(key);
                }
            }
        }
    }

    /// What the resolver needs: the interface, and every backend address (dsr-l2 ones marked).
    fn net_job(&self) -> NetJob {
        let cfg = self.effective();
        let mut targets = BTreeMap::new();
        for vip in &cfg.vips {
            for b in &vip.backends {
                let dsr = targets.entry(b.addr).or_insert(false);
                *dsr |= vip.mode == ForwardMode::DsrL2;
            }
        }
        NetJob {
            netlink: self.netlink.clone(),
            link: self.link.clone(),
            targets,
        }
    }

    /// Starts a resolution in the background (one at a time: a request while one runs is
    /// remembered and served when it ends). The loop stays responsive meanwhile: an unresolved
    /// neighbour can take seconds.
    fn request_net(&mut self) {
        if self.net_busy {
            self.net_again = true;
            return;
        }
        self.net_busy = true;
        let job = self.net_job();
        let tx = self.net_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(job.run().await).await;
        });
    }

    /// A resolution finished: applies it if anything changed.
    fn net_resolved(&mut self, (net, link): (NetInfo, Link)) {
        self.net_busy = false;
        self.link = link;
        if net != self.net {
            self.net = net;
            self.apply_logged("neighbours resolved");
        }
        if std::mem::take(&mut self.net_again) {
            self.request_net();
        }
    }

    fn apply(&mut self, why: &str) -> anyhow::Result<()> {
        let cfg = self.effective();
        let report = self.reconciler.apply(&cfg, &self.overrides, &self.net)?;
        self.metrics.record_apply(&report);
        let indices: Vec<(VipId, u32)> = cfg
            .vips
            .iter()
            .filter_map(|v| self.reconciler.vip_index(&v.id).map(|i| (v.id, i)))
            .collect();
        self.metrics
            .set_topology(indices, self.reconciler.backends());
        if report.wrote_anything() {
            info!(
                why,
                vips_added = report.vips_added,
                vips_removed = report.vips_removed,
                backends = report.backends_written,
                ring_slots = report.ring_slots_written,
                took_us = report.duration.as_micros() as u64,
                "maps updated"
            );
        }
        Ok(())
    }

    /// Applies, logging instead of failing: at runtime a failed write is retried on the next
    /// event (the reconciler re-reads the maps), and forwarding continues meanwhile.
    fn apply_logged(&mut self, why: &str) {
        if let Err(e) = self.apply(why) {
            error!(why, "updating the maps failed: {e:#}");
        }
    }

    async fn event_loop(
        &mut self,
        health_rx: &mut mpsc::Receiver<HealthEvent>,
        api_rx: &mut mpsc::Receiver<ApiCall>,
        net_rx: &mut mpsc::Receiver<(NetInfo, Link)>,
        mut watch: NetWatch,
    ) -> anyhow::Result<Exit> {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut refresh = tokio::time::interval(REFRESH_INTERVAL);
        refresh.reset();
        let mut probe_tick = tokio::time::interval(PROBE_METRICS_INTERVAL);
        loop {
            tokio::select! {
                Some(ev) = health_rx.recv() => {
                    info!(vip = %ev.vip, backend = %ev.backend, up = ev.up, reason = %ev.reason,
                          "health changed");
                    let key = (ev.vip, ev.backend);
                    if ev.up {
                        self.overrides.down.remove(&key);
                    } else {
                        self.overrides.down.insert(key);
                    }
                    self.metrics.set_health(&ev.vip, ev.backend, ev.up);
                    self.apply_logged("health");
                }
                ev = watch.recv() => {
                    match ev {
                        Some(ev) => {
                            debug!(?ev, "kernel table changed");
                            // Coalesce a burst of notifications into one re-resolution.
                            while watch.try_recv().is_some() {}
                        }
                        None => {
                            warn!("netlink notifications stopped: subscribing again");
                            watch = self.netlink.watch()?;
                        }
                    }
                    self.request_net();
                }
                _ = refresh.tick() => self.request_net(),
                Some(resolved) = net_rx.recv() => self.net_resolved(resolved),
                _ = probe_tick.tick() => self.report_probes(),
                Some(call) = api_rx.recv() => {
                    if let Some(exit) = self.handle(call).await {
                        return Ok(exit);
                    }
                }
                _ = hup.recv() => {
                    let r = self.reload().await;
                    match r {
                        Ok(msg) => info!("reload: {msg}"),
                        Err(e) => error!("reload refused, running state unchanged: {e}"),
                    }
                }
                _ = term.recv() => return Ok(Exit::Signal("SIGTERM")),
                _ = int.recv() => return Ok(Exit::Signal("SIGINT")),
            }
        }
    }

    /// Feeds probe outcomes since the last tick to the metrics (the health monitor counts them
    /// lock-free; latency per probe is the latest one, exact at one probe per tick).
    fn report_probes(&mut self) {
        for h in self.health_stats.snapshot() {
            let key = (h.vip, h.backend);
            let total = h.probes_ok + h.probes_failed;
            let seen = self.probes_seen.insert(key, total).unwrap_or(0);
            let latency = h.last_latency.unwrap_or_default();
            for _ in seen..total {
                self.metrics
                    .record_probe(&h.vip, h.backend, h.last_ok, latency);
            }
        }
    }

    /// Re-reads the config file and applies it; a refused config leaves everything as it was.
    async fn reload(&mut self) -> Result<String, String> {
        let result = match config::load(&self.config_path, &HostEnvironment) {
            Err(e) => Err(e.to_string()),
            Ok(v) => {
                for w in &v.warnings {
                    warn!("config: {w}");
                }
                let fixed = restart_only_changes(&self.file, &v.config);
                if !fixed.is_empty() {
                    warn!(
                        "these settings take effect only after a restart (or a detach, for map \
                         sizes): {}",
                        fixed.join(", ")
                    );
                }
                let diff = config::diff(&self.file, &v.config);
                let old = std::mem::replace(&mut self.file, v.config);
                let (old_added, old_removed) = (
                    std::mem::take(&mut self.added),
                    std::mem::take(&mut self.removed),
                );
                self.prune_overrides();
                self.start_health();
                // New backends stay out of the ring until their MAC is resolved (the reply
                // does not wait for that).
                self.request_net();
                match self.apply("reload") {
                    Ok(()) => Ok(if diff.is_empty() {
                        "no changes".to_string()
                    } else {
                        diff.to_string()
                    }),
                    Err(e) => {
                        // Keep what runs: restore the previous config and re-apply it.
                        self.file = old;
                        self.added = old_added;
                        self.removed = old_removed;
                        self.start_health();
                        self.apply_logged("reload rollback");
                        Err(format!("{e:#}"))
                    }
                }
            }
        };
        self.metrics.record_reload(result.is_ok());
        self.last_reload = Some(match &result {
            Ok(m) => ReloadInfo::now(true, m.clone()),
            Err(m) => ReloadInfo::now(false, m.clone()),
        });
        result
    }

    /// Drops weight overrides of backends that left the config.
    fn prune_overrides(&mut self) {
        let cfg = self.effective();
        let present: BTreeSet<(VipId, IpAddr)> = cfg
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(move |b| (v.id, b.addr)))
            .collect();
        self.overrides.weights.retain(|k, _| present.contains(k));
    }

    fn status(&self) -> Result<StatusReport, crate::maps::MapError> {
        let cfg = self.effective();
        let mut health = HashMap::new();
        for h in self.health_stats.snapshot() {
            let s = if h.probes_ok + h.probes_failed == 0 && !h.up {
                HealthStatus::Unknown
            } else if h.up {
                HealthStatus::Up
            } else {
                HealthStatus::Down
            };
            health.insert((h.vip, h.backend), s);
        }
        let assigned = self.reconciler.backends();
        StatusReport::collect(
            &StatusInputs {
                config: &cfg,
                agent: AgentInfo {
                    config_path: self.config_path.clone(),
                    pin_dir: self.file.pin_dir.clone(),
                    interfaces: self
                        .file
                        .interfaces
                        .iter()
                        .map(|i| i.name.clone())
                        .collect(),
                    last_reload: self.last_reload.clone(),
                },
                overrides: &self.overrides,
                health: &health,
                net: &self.net,
                assigned: &assigned,
            },
            self.reconciler.store(),
        )
    }

    fn vip(&self, id: &VipId) -> Result<Vip, String> {
        self.effective()
            .vip(id)
            .cloned()
            .ok_or_else(|| format!("no VIP {id} in the running config"))
    }

    fn backend_known(&self, vip: &Vip, addr: IpAddr) -> Result<(), String> {
        if vip.backends.iter().any(|b| b.addr == addr) {
            Ok(())
        } else {
            Err(format!("{addr} is not a backend of {}", vip.id))
        }
    }

    async fn handle(&mut self, call: ApiCall) -> Option<Exit> {
        let response = match call.request {
            Request::Status => match self.status() {
                Ok(r) => Response::Status(r),
                Err(e) => Response::error(format!("reading the maps: {e}")),
            },
            Request::Reload => match self.reload().await {
                Ok(m) => Response::ok(format!("reloaded: {m}")),
                Err(e) => Response::error(format!("reload refused, running state unchanged: {e}")),
            },
            Request::Drain { vip, addr } => self.set_weight(vip, addr, 0, "drained"),
            Request::SetWeight { vip, addr, weight } => {
                self.set_weight(vip, addr, weight, "weight set")
            }
            Request::AddBackend { vip, addr, weight } => self.add_backend(vip, addr, weight),
            Request::RemoveBackend { vip, addr } => self.remove_backend(vip, addr),
            Request::Shutdown { detach } => {
                return Some(Exit::Stop {
                    detach,
                    reply: call.reply,
                });
            }
        };
        let _ = call.reply.send(response);
        None
    }

    fn set_weight(&mut self, id: VipId, addr: IpAddr, weight: u32, what: &str) -> Response {
        if weight > MAX_WEIGHT {
            return Response::error(format!(
                "weight {weight} is out of range: use 0..={MAX_WEIGHT} (0 drains the backend)"
            ));
        }
        let vip = match self.vip(&id) {
            Ok(v) => v,
            Err(e) => return Response::error(e),
        };
        if let Err(e) = self.backend_known(&vip, addr) {
            return Response::error(e);
        }
        self.overrides.weights.insert((id, addr), weight);
        match self.apply("api") {
            Ok(()) => Response::ok(format!("{id} {addr}: {what} (weight {weight})")),
            Err(e) => Response::error(format!("{e:#}")),
        }
    }

    fn add_backend(&mut self, id: VipId, addr: IpAddr, weight: u32) -> Response {
        if weight > MAX_WEIGHT {
            return Response::error(format!(
                "weight {weight} is out of range: use 0..={MAX_WEIGHT}"
            ));
        }
        let vip = match self.vip(&id) {
            Ok(v) => v,
            Err(e) => return Response::error(e),
        };
        if vip.backends.iter().any(|b| b.addr == addr) {
            return Response::error(format!("{addr} is already a backend of {id}"));
        }
        if let Err(e) = family_ok(&self.file, &vip, addr) {
            return Response::error(e);
        }
        self.removed.remove(&(id, addr));
        if !self
            .file
            .vip(&id)
            .is_some_and(|v| v.backends.iter().any(|b| b.addr == addr))
        {
            self.added.entry(id).or_default().push(BackendSpec {
                addr,
                weight,
                check_port: None,
            });
        }
        self.overrides.weights.insert((id, addr), weight);
        self.start_health();
        self.request_net();
        match self.apply("api") {
            Ok(()) => Response::ok(format!(
                "{id}: backend {addr} added (weight {weight}) until the next reload; it takes \
                 traffic once its next hop resolves and its health check passes"
            )),
            Err(e) => Response::error(format!("{e:#}")),
        }
    }

    fn remove_backend(&mut self, id: VipId, addr: IpAddr) -> Response {
        let vip = match self.vip(&id) {
            Ok(v) => v,
            Err(e) => return Response::error(e),
        };
        if let Err(e) = self.backend_known(&vip, addr) {
            return Response::error(e);
        }
        if let Some(list) = self.added.get_mut(&id) {
            list.retain(|b| b.addr != addr);
        }
        self.removed.insert((id, addr));
        self.overrides.weights.remove(&(id, addr));
        self.start_health();
        match self.apply("api") {
            Ok(()) => Response::ok(format!(
                "{id}: backend {addr} removed until the next reload"
            )),
            Err(e) => Response::error(format!("{e:#}")),
        }
    }
}

/// The family rules of `config::validate` for a backend added at runtime.
fn family_ok(cfg: &Config, vip: &Vip, addr: IpAddr) -> Result<(), String> {
    let same = vip.id.addr.is_ipv4() == addr.is_ipv4();
    match vip.mode {
        ForwardMode::DsrL2 if !same => Err(format!(
            "dsr-l2 rewrites only the MAC: backend {addr} must be of the VIP's address family"
        )),
        ForwardMode::Ipip | ForwardMode::Gue if vip.id.addr.is_ipv6() && addr.is_ipv4() => {
            Err(format!(
                "{} cannot carry IPv6 VIP traffic to IPv4 backend {addr}",
                vip.mode.name()
            ))
        }
        ForwardMode::Ipip | ForwardMode::Gue if addr.is_ipv4() && cfg.lb_src_v4.is_none() => {
            Err("tunnelling to an IPv4 backend needs agent.lb-src-v4 in the config".into())
        }
        ForwardMode::Ipip | ForwardMode::Gue if addr.is_ipv6() && cfg.lb_src_v6.is_none() => {
            Err("tunnelling to an IPv6 backend needs agent.lb-src-v6 in the config".into())
        }
        _ => Ok(()),
    }
}

/// Settings a reload cannot change in place.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.interfaces != new.interfaces {
        out.push("interfaces");
    }
    if old.pin_dir != new.pin_dir {
        out.push("pin-dir");
    }
    if old.api_socket != new.api_socket {
        out.push("api-socket");
    }
    if old.metrics_listen != new.metrics_listen {
        out.push("metrics-listen");
    }
    if (old.max_vips, old.max_backends, old.flow_table_size)
        != (new.max_vips, new.max_backends, new.flow_table_size)
    {
        out.push("max-vips/max-backends/flow-table-size");
    }
    out
}

/// `xlb stop`: asks a running agent to stop; with `detach`, also when none runs (then the pins
/// are removed directly).
pub async fn stop(socket: &Path, pin_dir: &Path, detach: bool) -> anyhow::Result<String> {
    match api::call(socket, &Request::Shutdown { detach }).await {
        Ok(Response::Ok { message }) => Ok(message),
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(other) => bail!("unexpected answer: {other:?}"),
        Err(api::ApiError::NotRunning { .. }) if detach => {
            pinning::detach(pin_dir)?;
            Ok(format!(
                "no agent running; detached and unpinned {}",
                pin_dir.display()
            ))
        }
        Err(e) => Err(e.into()),
    }
}

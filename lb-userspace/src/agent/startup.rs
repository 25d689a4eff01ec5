//! Start-up: validate, claim the API socket, load and attach the program on its pinned maps,
//! adopt and reconcile them, start probes, API and metrics; then run the event loop and tear
//! down.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, anyhow};
use lb_common::flows;
use tokio::io::{Interest, unix::AsyncFd};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::api::{ApiCall, ApiServer};
use crate::config::{self, HostEnvironment};
use crate::continuity::node::Continuity;
use crate::health::{HealthEvent, HealthMonitor};
use crate::loader::{self, LoadOptions};
use crate::maps::AyaStore;
use crate::metrics::{AgentMetrics, Exporter, MetricsServer, SharedStore};
use crate::netlink::Netlink;
use crate::pinning;
use crate::reconcile::Reconciler;

use super::event_loop::{self, ContinuityInputs, Inputs};
use super::neighbours::{Resolved, Resolver};
use super::shutdown;
use super::state::Agent;

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
        peer_flows: cfg
            .continuity
            .as_ref()
            .map_or(lb_common::limits::PEER_FLOWS_OFF, |c| c.max_exceptions),
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
    let (health_tx, health_rx) = mpsc::channel::<HealthEvent>(1024);
    let metrics = AgentMetrics::new();
    metrics.set_flow_table_capacity(flows::flow_capacity(flows::flow_sets(opts.flow_table_size)));
    let (net_tx, net_rx) = mpsc::channel::<Resolved>(4);
    let mut resolver = Resolver::new(netlink, link, net_tx, metrics.clone());

    let mut agent = Agent::new(
        config_path.to_path_buf(),
        Box::new(HostEnvironment),
        cfg,
        reconciler,
        HealthMonitor::new(health_tx),
        metrics,
    );
    // Attaching failed above if any interface refused the program.
    agent.attached = true;
    agent.start_health();
    // Adopt the routes in place before the first apply decides about them: a restarted agent
    // never withdraws what is still wanted.
    agent.start_announce();
    // At start-up the first resolution is awaited: applying before it would mark every backend
    // down for want of a MAC.
    agent.net = resolver.resolve_now(agent.net_targets()).await;
    agent.apply("startup")?;
    let continuity = match agent.file.continuity.clone() {
        Some(cfg) => {
            let rings = agent.reconciler.applied_rings();
            let (c, parts) = Continuity::start(&cfg, &maps_dir, &rings)
                .await
                .context("starting flow continuity ([continuity])")?;
            info!(listen = %cfg.listen, peers = cfg.peers.len(), "flow continuity started");
            let scans = c.scans();
            agent.continuity = Some(c);
            ContinuityInputs {
                parts: Some(parts),
                scans: Some(scans),
                refresh: Some(cfg.refresh),
            }
        }
        None => ContinuityInputs::default(),
    };

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
    let (api_tx, api_rx) = mpsc::channel::<ApiCall>(64);
    info!(socket = %api_server.path().display(), "control API listening");
    let api_task = tokio::spawn(api_server.serve(api_tx));

    let (bird_expect, bird_expect_rx) = tokio::sync::watch::channel(agent.bird_expectation());
    let mut inputs = Inputs {
        health: health_rx,
        api: api_rx,
        resolved: net_rx,
        watch,
        bird: crate::announce::bird_watch::spawn(bird_expect_rx),
        bird_expect,
        continuity,
    };
    let exit = event_loop::run(&mut agent, &mut resolver, &mut inputs).await?;
    shutdown::teardown(agent, exit, inputs.api, api_task).await
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

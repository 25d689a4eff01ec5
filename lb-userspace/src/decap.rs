//! `xlb decap`: the backend side of ipip and gue. Backends need no tunnel module (many kernels,
//! this project's test machines included, have none): an XDP program strips xlb's outer headers
//! from packets sent by the configured LB source addresses and passes the inner packet, whose
//! destination is the VIP (configured on the backend's loopback), to the stack.
//!
//! Like the LB program, it stays attached through a pinned link after `xlb decap attach`
//! returns; `xlb decap detach` removes it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use aya::maps::{Array, MapData, PerCpuArray};
use lb_common::{
    addr::to_words,
    map_names,
    stats::{DecapCounter, GlobalStats},
    values::{CONFIG_F_READY, DecapConfig},
};

use crate::{loader, maps::sum_global, model::XdpMode, pinning};

/// Default pin directory of the decap program (never the LB's).
pub const DEFAULT_PIN_DIR: &str = crate::paths::DEFAULT_DECAP_PIN_DIR;

#[derive(Clone, Debug)]
pub struct DecapOptions {
    pub iface: String,
    pub lb_src_v4: Option<Ipv4Addr>,
    pub lb_src_v6: Option<Ipv6Addr>,
    /// 0 disables GUE decapsulation.
    pub gue_port: u16,
    pub pin_dir: PathBuf,
    pub mode: XdpMode,
}

/// The map value for `opts`.
pub fn decap_config(opts: &DecapOptions) -> DecapConfig {
    DecapConfig {
        lb_v6: opts
            .lb_src_v6
            .map(|a| to_words(IpAddr::V6(a)).1)
            .unwrap_or_default(),
        lb_v4: opts
            .lb_src_v4
            .map(|a| to_words(IpAddr::V4(a)).1[0])
            .unwrap_or_default(),
        gue_port: opts.gue_port.to_be(),
        flags: CONFIG_F_READY,
    }
}

/// Loads, configures, attaches and pins the decap program (again: an existing attachment gets
/// the new program and config swapped in).
pub fn attach(opts: &DecapOptions) -> anyhow::Result<String> {
    if opts.lb_src_v4.is_none() && opts.lb_src_v6.is_none() {
        bail!("give --lb-src-v4 and/or --lb-src-v6: only packets from the LB are decapsulated");
    }
    pinning::prepare(&opts.pin_dir)?;
    let maps_dir = pinning::maps_dir(&opts.pin_dir);
    let mut ebpf = loader::load_decap(Some(&maps_dir))?;
    let mut cfg: Array<MapData, DecapConfig> = Array::try_from(
        ebpf.take_map(map_names::DECAP_CONFIG)
            .context("decap config map missing from the object")?,
    )?;
    cfg.set(0, decap_config(opts), 0)?;
    let mode = pinning::attach_program(
        &mut ebpf,
        map_names::PROG_DECAP,
        &opts.pin_dir,
        &opts.iface,
        opts.mode,
    )?;
    Ok(format!(
        "xlb decap attached to {} ({mode:?} mode) for LB sources {} {}, GUE port {}; pinned in {}",
        opts.iface,
        opts.lb_src_v4.map(|a| a.to_string()).unwrap_or_default(),
        opts.lb_src_v6.map(|a| a.to_string()).unwrap_or_default(),
        opts.gue_port,
        opts.pin_dir.display()
    ))
}

/// Detaches the decap program and removes its pins.
pub fn detach(pin_dir: &Path) -> anyhow::Result<()> {
    pinning::detach(pin_dir)?;
    Ok(())
}

/// The decap program's counters, summed over CPUs.
pub fn stats(pin_dir: &Path) -> anyhow::Result<Vec<(DecapCounter, u64)>> {
    let path = pinning::maps_dir(pin_dir).join(map_names::DECAP_STATS);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("{}: is `xlb decap attach` in place?", path.display()))?;
    let map: PerCpuArray<MapData, GlobalStats> =
        PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))?;
    let total = sum_global(map.get(&0, 0)?.iter().copied());
    Ok(DecapCounter::ALL
        .iter()
        .map(|c| (*c, total.counters[*c as usize]))
        .collect())
}

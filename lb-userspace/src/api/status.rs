//! The status report: the desired state (config, overrides, health, reachability) next to what
//! the maps hold, and its table form.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use lb_common::{addr::from_words, limits::RING_SIZE};

use super::types::{AgentInfo, BackendStatus, HealthStatus, MapState, StatusReport, VipStatus};
use crate::maglev;
use crate::maps::{MapError, MapStore};
use crate::model::{CheckKind, Config, VipId};
use crate::reconcile::{BackendView, NetInfo, Overrides};

/// What [`StatusReport::collect`] compares the maps with.
pub struct StatusInputs<'a> {
    pub config: &'a Config,
    pub agent: AgentInfo,
    pub overrides: &'a Overrides,
    /// Damped health per backend; a backend missing here is `unknown`, except under a check of
    /// kind `none` (always up).
    pub health: &'a HashMap<(VipId, IpAddr), HealthStatus>,
    /// Backends without a neighbour MAC are kept out of the ring by the reconciler.
    pub net: &'a NetInfo,
    /// `Reconciler::backends()`: which id each backend was given. Entry contents and ring
    /// shares are read back from the maps, not taken from here.
    pub assigned: &'a [BackendView],
}

fn mode_name(mode: u8) -> String {
    crate::model::ForwardMode::name_of_number(mode)
}

fn share(slots: u32) -> f64 {
    f64::from(slots) * 100.0 / f64::from(RING_SIZE)
}

impl StatusReport {
    /// Builds the report: desired state from `inputs`, actual state read from `store` (VIP
    /// entries, each assigned backend's entry, each VIP's ring). Costs one VIP-map walk, one
    /// lookup per backend and one ring read per VIP.
    pub fn collect<S: MapStore + ?Sized>(
        inputs: &StatusInputs<'_>,
        store: &S,
    ) -> Result<StatusReport, MapError> {
        let mut in_maps: BTreeMap<VipId, lb_common::VipMeta> = BTreeMap::new();
        for (key, meta) in store.vips()? {
            if let Some(id) = VipId::from_map_entry(&key, &meta) {
                in_maps.insert(id, meta);
            }
        }
        let mut assigned: BTreeMap<VipId, BTreeMap<IpAddr, u32>> = BTreeMap::new();
        for v in inputs.assigned {
            assigned.entry(v.vip).or_default().insert(v.addr, v.id);
        }

        let mut vips = Vec::new();
        for vip in &inputs.config.vips {
            let meta = in_maps.get(&vip.id);
            let index = meta.map(|m| m.index);
            let counts = match index {
                Some(i) => maglev::slot_counts(&store.ring(i)?),
                None => BTreeMap::new(),
            };
            let mut mismatch = match meta {
                None => Some("in config, not in maps".to_string()),
                Some(m) if m.mode != vip.mode.number() => Some(format!(
                    "desired mode {}, map says {}",
                    vip.mode.name(),
                    mode_name(m.mode)
                )),
                Some(_) => None,
            };
            let ids = assigned.get(&vip.id);
            let mut backends = Vec::new();
            for spec in &vip.backends {
                let key = (vip.id, spec.addr);
                let effective = inputs
                    .overrides
                    .weights
                    .get(&key)
                    .copied()
                    .unwrap_or(spec.weight);
                let health = match inputs.health.get(&key) {
                    Some(h) => *h,
                    None if vip.health.kind == CheckKind::None => HealthStatus::Up,
                    None => HealthStatus::Unknown,
                };
                let reachable = inputs.net.macs.contains_key(&spec.addr);
                let desired = if inputs.overrides.down.contains(&key) || !reachable {
                    MapState::Down
                } else if effective == 0 {
                    MapState::Draining
                } else {
                    MapState::Active
                };
                let id = ids.and_then(|m| m.get(&spec.addr)).copied();
                let (state, note) = match id {
                    None => (
                        MapState::Missing,
                        Some("in config, not in maps".to_string()),
                    ),
                    Some(id) => {
                        let entry = store.backend(id)?;
                        let state = MapState::from_raw(entry.state);
                        let owner = from_words(entry.family, &entry.addr);
                        let note = if state == MapState::Empty {
                            None
                        } else if owner != Some(spec.addr) || Some(entry.vip_index) != index {
                            Some(format!(
                                "id {id} holds {} of VIP index {}",
                                owner.map_or("an invalid address".to_string(), |a| a.to_string()),
                                entry.vip_index
                            ))
                        } else if state == MapState::Invalid {
                            Some(format!("map holds unknown state {}", entry.state))
                        } else {
                            None
                        };
                        (state, note)
                    }
                };
                let slots = id.and_then(|id| counts.get(&id)).copied().unwrap_or(0);
                let note = note.or_else(|| {
                    if state != desired {
                        Some(format!(
                            "desired {}, map says {}",
                            desired.name(),
                            state.name()
                        ))
                    } else if state == MapState::Active && slots == 0 {
                        Some("active but owns no ring slots".to_string())
                    } else if state != MapState::Active && slots > 0 {
                        Some(format!("{} but owns {slots} ring slots", state.name()))
                    } else {
                        None
                    }
                });
                backends.push(BackendStatus {
                    addr: spec.addr,
                    id,
                    weight: spec.weight,
                    effective_weight: effective,
                    health,
                    desired,
                    state,
                    ring_slots: slots,
                    ring_share: share(slots),
                    mismatch: note,
                });
            }
            // Backends the reconciler still has for this VIP that the config no longer lists.
            let listed: HashSet<IpAddr> = vip.backends.iter().map(|b| b.addr).collect();
            for (addr, id) in ids.into_iter().flatten() {
                if listed.contains(addr) {
                    continue;
                }
                let entry = store.backend(*id)?;
                let slots = counts.get(id).copied().unwrap_or(0);
                backends.push(BackendStatus {
                    addr: *addr,
                    id: Some(*id),
                    weight: 0,
                    effective_weight: 0,
                    health: inputs
                        .health
                        .get(&(vip.id, *addr))
                        .copied()
                        .unwrap_or(HealthStatus::Unknown),
                    desired: MapState::Empty,
                    state: MapState::from_raw(entry.state),
                    ring_slots: slots,
                    ring_share: share(slots),
                    mismatch: Some("in maps, not in config".to_string()),
                });
            }
            if mismatch.is_none() && meta.is_some() {
                let stray = counts
                    .iter()
                    .filter(|(id, _)| {
                        **id != 0 && !ids.is_some_and(|m| m.values().any(|x| x == *id))
                    })
                    .map(|(_, n)| n)
                    .sum::<u32>();
                if stray > 0 {
                    mismatch = Some(format!(
                        "{stray} ring slots name backends of no VIP backend"
                    ));
                }
            }
            vips.push(VipStatus {
                id: vip.id,
                mode: vip.mode.name().to_string(),
                index,
                backends,
                mismatch,
            });
        }
        for (id, meta) in &in_maps {
            if inputs.config.vip(id).is_none() {
                vips.push(VipStatus {
                    id: *id,
                    mode: mode_name(meta.mode),
                    index: Some(meta.index),
                    backends: Vec::new(),
                    mismatch: Some("in maps, not in config".to_string()),
                });
            }
        }
        Ok(StatusReport {
            agent: inputs.agent.clone(),
            vips,
            announce: None,
            continuity: None,
        })
    }

    /// The report as `xlb status` prints it, in the spirit of `ipvsadm -L -n`: numeric,
    /// one VIP line (`TCP`/`UDP`) followed by its `  -> backend` lines, columns separated by
    /// runs of spaces, a trailing `!N` on a line whose desired and actual state disagree, and
    /// the footnotes `!N <vip> [<backend>]: <what disagrees>` at the end.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let a = &self.agent;
        let _ = writeln!(out, "config:     {}", a.config_path.display());
        let _ = writeln!(out, "pin dir:    {}", a.pin_dir.display());
        let _ = writeln!(
            out,
            "interfaces: {}",
            if a.interfaces.is_empty() {
                "-".to_string()
            } else {
                a.interfaces.join(" ")
            }
        );
        match &a.last_reload {
            None => out.push_str("reload:     none since start\n"),
            Some(r) => {
                let _ = writeln!(
                    out,
                    "reload:     {} at {}: {}",
                    if r.ok { "ok" } else { "FAILED" },
                    rfc3339(r.at_unix),
                    r.message
                );
            }
        }

        // Column widths: the address column fits the longest VIP or backend address.
        let vip_addr = |id: &VipId| {
            let s = id.to_string();
            s.split_once('/')
                .map_or(s.clone(), |(_, rest)| rest.to_string())
        };
        let addr_w = self
            .vips
            .iter()
            .flat_map(|v| {
                std::iter::once(vip_addr(&v.id).len())
                    .chain(v.backends.iter().map(|b| b.addr.to_string().len()))
            })
            .chain(std::iter::once("LocalAddress:Port".len()))
            .max()
            .unwrap_or(0);
        let _ = writeln!(out, "Prot {:<addr_w$}  Mode    Index", "LocalAddress:Port");
        let _ = writeln!(
            out,
            "  -> {:<addr_w$}  Weight  Eff     Health   State     Slots   Share",
            "Backend"
        );
        let mut notes = Vec::new();
        let mark = |notes: &mut Vec<String>, what: String, text: &Option<String>| match text {
            None => String::new(),
            Some(t) => {
                notes.push(format!("{what}: {t}"));
                format!("  !{}", notes.len())
            }
        };
        for v in &self.vips {
            let proto = v.id.proto.name().to_ascii_uppercase();
            let index = v.index.map_or("-".to_string(), |i| i.to_string());
            let m = mark(&mut notes, v.id.to_string(), &v.mismatch);
            let line = format!(
                "{proto:<4} {:<addr_w$}  {:<7} {index}{m}",
                vip_addr(&v.id),
                v.mode
            );
            let _ = writeln!(out, "{}", line.trim_end());
            for b in &v.backends {
                let m = mark(&mut notes, format!("{} {}", v.id, b.addr), &b.mismatch);
                let _ = writeln!(
                    out,
                    "  -> {:<addr_w$}  {:<7} {:<7} {:<8} {:<9} {:<7} {:>6.2}%{m}",
                    b.addr.to_string(),
                    b.weight,
                    b.effective_weight,
                    b.health.name(),
                    b.state.name(),
                    b.ring_slots,
                    b.ring_share,
                );
            }
        }
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(out, "!{} {n}", i + 1);
        }
        if let Some(a) = &self.announce {
            out.push_str(&a.render());
        }
        if let Some(c) = &self.continuity {
            out.push_str(&c.render());
        }
        out
    }
}

/// `2026-04-20T12:00:00Z` from Unix seconds (proleptic Gregorian, UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
pub(super) mod tests {
    use lb_common::Backend;

    use super::*;
    use crate::api::types::ReloadInfo;
    use crate::maps::FakeStore;
    use crate::model::{ForwardMode, Vip};
    use crate::reconcile::Reconciler;

    fn vip_id(s: &str) -> VipId {
        s.parse().unwrap()
    }

    pub(in crate::api) fn sample_report() -> StatusReport {
        StatusReport {
            agent: AgentInfo {
                config_path: "/etc/xlb/xlb.toml".into(),
                pin_dir: "/sys/fs/bpf/xlb".into(),
                interfaces: vec!["eth0".into(), "eth1".into()],
                last_reload: Some(ReloadInfo {
                    ok: true,
                    message: "2 VIPs, 3 backends".into(),
                    at_unix: 1_776_686_400,
                }),
            },
            vips: vec![
                VipStatus {
                    id: vip_id("tcp/203.0.113.10:80"),
                    mode: "ipip".into(),
                    index: Some(0),
                    backends: vec![
                        BackendStatus {
                            addr: "198.51.100.1".parse().unwrap(),
                            id: Some(1),
                            weight: 100,
                            effective_weight: 100,
                            health: HealthStatus::Up,
                            desired: MapState::Active,
                            state: MapState::Active,
                            ring_slots: 65_537,
                            ring_share: 100.0,
                            mismatch: None,
                        },
                        BackendStatus {
                            addr: "198.51.100.2".parse().unwrap(),
                            id: Some(2),
                            weight: 100,
                            effective_weight: 0,
                            health: HealthStatus::Up,
                            desired: MapState::Draining,
                            state: MapState::Draining,
                            ring_slots: 0,
                            ring_share: 0.0,
                            mismatch: None,
                        },
                        BackendStatus {
                            addr: "198.51.100.3".parse().unwrap(),
                            id: Some(3),
                            weight: 50,
                            effective_weight: 50,
                            health: HealthStatus::Down,
                            desired: MapState::Down,
                            state: MapState::Active,
                            ring_slots: 0,
                            ring_share: 0.0,
                            mismatch: Some("desired down, map says active".into()),
                        },
                    ],
                    mismatch: None,
                },
                VipStatus {
                    id: vip_id("udp/[2001:db8::1]:*"),
                    mode: "dsr-l2".into(),
                    index: None,
                    backends: vec![BackendStatus {
                        addr: "2001:db8::53".parse().unwrap(),
                        id: None,
                        weight: 1,
                        effective_weight: 1,
                        health: HealthStatus::Unknown,
                        desired: MapState::Active,
                        state: MapState::Missing,
                        ring_slots: 0,
                        ring_share: 0.0,
                        mismatch: Some("in config, not in maps".into()),
                    }],
                    mismatch: Some("in config, not in maps".into()),
                },
            ],
            announce: None,
            continuity: None,
        }
    }

    #[test]
    fn render_table_golden() {
        let expected = "\
config:     /etc/xlb/xlb.toml
pin dir:    /sys/fs/bpf/xlb
interfaces: eth0 eth1
reload:     ok at 2026-04-20T12:00:00Z: 2 VIPs, 3 backends
Prot LocalAddress:Port  Mode    Index
  -> Backend            Weight  Eff     Health   State     Slots   Share
TCP  203.0.113.10:80    ipip    0
  -> 198.51.100.1       100     100     up       active    65537   100.00%
  -> 198.51.100.2       100     0       up       draining  0         0.00%
  -> 198.51.100.3       50      50      down     active    0         0.00%  !1
UDP  [2001:db8::1]:*    dsr-l2  -  !2
  -> 2001:db8::53       1       1       unknown  missing   0         0.00%  !3
!1 tcp/203.0.113.10:80 198.51.100.3: desired down, map says active
!2 udp/[2001:db8::1]:*: in config, not in maps
!3 udp/[2001:db8::1]:* 2001:db8::53: in config, not in maps
";
        let got = sample_report().render_table();
        assert_eq!(got, expected, "\n{got}");
        let mut r = sample_report();
        r.agent.last_reload = None;
        r.agent.interfaces.clear();
        let got = r.render_table();
        assert!(
            got.contains("interfaces: -\nreload:     none since start\n"),
            "{got}"
        );
        // The JSON form round-trips.
        let json = serde_json::to_string(&sample_report()).unwrap();
        assert!(json.contains(r#""id":"udp/[2001:db8::1]:*""#), "{json}");
        assert_eq!(
            serde_json::from_str::<StatusReport>(&json).unwrap(),
            sample_report()
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_776_686_399), "2026-04-20T11:59:59Z");
    }

    use crate::test_fixtures::config;

    fn vip(id: &str, backends: &[(&str, u32)]) -> Vip {
        let id = vip_id(id);
        let mut v = crate::test_fixtures::vip(&id.addr.to_string(), id.port, id.proto, backends);
        v.health.kind = CheckKind::Tcp;
        v
    }

    /// FakeStore is not Clone; its map contents are public.
    fn copy_of(s: &FakeStore) -> FakeStore {
        let mut c = FakeStore::new(s.max_vips(), s.max_backends());
        c.config = s.config;
        c.vips = s.vips.clone();
        c.backends = s.backends.clone();
        c.rings = s.rings.clone();
        c.filter = s.filter.clone();
        c
    }

    #[test]
    fn collect_compares_desired_with_the_maps() {
        let cfg = config(vec![vip(
            "tcp/203.0.113.10:80",
            &[
                ("198.51.100.1", 100),
                ("198.51.100.2", 100),
                ("198.51.100.3", 100),
            ],
        )]);
        let id = cfg.vips[0].id;
        let a = |s: &str| -> IpAddr { s.parse().unwrap() };
        let net = NetInfo {
            src_mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            macs: ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
                .iter()
                .map(|s| (a(s), [2, 0, 0, 0, 0, 2]))
                .collect(),
        };
        let mut over = Overrides::default();
        over.weights.insert((id, a("198.51.100.2")), 0);
        let mut r = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        r.apply(&cfg, &over, &net).unwrap();
        let assigned = r.backends();
        let mut health = HashMap::new();
        health.insert((id, a("198.51.100.1")), HealthStatus::Up);
        // The health check says .3 is down, but the maps were not updated (yet).
        health.insert((id, a("198.51.100.3")), HealthStatus::Down);
        let mut over_now = over.clone();
        over_now.down.insert((id, a("198.51.100.3")));
        let inputs = StatusInputs {
            config: &cfg,
            agent: AgentInfo {
                config_path: "/etc/xlb/xlb.toml".into(),
                pin_dir: cfg.pin_dir.clone(),
                interfaces: vec!["eth0".into()],
                last_reload: None,
            },
            overrides: &over_now,
            health: &health,
            net: &net,
            assigned: &assigned,
        };
        let report = StatusReport::collect(&inputs, r.store()).unwrap();
        assert_eq!(report.vips.len(), 1);
        let v = &report.vips[0];
        assert_eq!((v.index, v.mismatch.as_deref()), (Some(0), None));
        let b: Vec<_> = v
            .backends
            .iter()
            .map(|b| {
                (
                    b.addr.to_string(),
                    b.effective_weight,
                    b.health,
                    b.state,
                    b.mismatch.clone(),
                )
            })
            .collect();
        assert_eq!(
            b,
            vec![
                (
                    "198.51.100.1".into(),
                    100,
                    HealthStatus::Up,
                    MapState::Active,
                    None
                ),
                (
                    "198.51.100.2".into(),
                    0,
                    HealthStatus::Unknown,
                    MapState::Draining,
                    None
                ),
                (
                    "198.51.100.3".into(),
                    100,
                    HealthStatus::Down,
                    MapState::Active,
                    Some("desired down, map says active".into())
                ),
            ]
        );
        let total: u32 = v.backends.iter().map(|b| b.ring_slots).sum();
        assert_eq!(total, RING_SIZE);
        assert_eq!(v.backends[1].ring_slots, 0);

        // Someone zeroes .1's entry behind the agent's back; a VIP only in the maps shows up.
        let mut tampered = copy_of(r.store());
        tampered.backends[assigned[0].id as usize] = Backend::default();
        let extra = vip_id("udp/192.0.2.99:53");
        tampered.vips.insert(
            extra.map_key(),
            lb_common::VipMeta {
                index: 5,
                flags: 0,
                mode: ForwardMode::Gue.number(),
                _pad: [0; 3],
            },
        );
        let report = StatusReport::collect(&inputs, &tampered).unwrap();
        assert_eq!(
            report.vips[0].backends[0].mismatch.as_deref(),
            Some("desired active, map says empty")
        );
        assert_eq!(report.vips[1].id, extra);
        assert_eq!(report.vips[1].mode, "gue");
        assert_eq!(
            report.vips[1].mismatch.as_deref(),
            Some("in maps, not in config")
        );
        let table = report.render_table();
        assert!(
            table.contains("!3 udp/192.0.2.99:53: in maps, not in config"),
            "{table}"
        );
    }
}

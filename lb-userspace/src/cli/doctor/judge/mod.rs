//! Judging (pure): facts in, checks with their fix out. One file per group of facts: the
//! host (`host`), the interfaces (`iface`), what is deployed on it (`deployment`), BIRD
//! (`bird`).

mod bird;
mod deployment;
mod host;
mod iface;

pub use bird::{judge_bird, kernel_protocol_snippet};
pub use deployment::{judge_agent, judge_pin_dir};
pub use host::{
    MEMCG_KERNEL, MIN_KERNEL, MIN_KERNEL_WHY, judge_bpffs, judge_caps, judge_config, judge_kernel,
    judge_memlock, parse_kernel,
};
pub use iface::{
    CLIENT_MTU, NATIVE_XDP_DRIVERS, driver_has_native_xdp, judge_link, judge_mtu, judge_rp_filter,
    judge_xdp,
};

use super::backend_setup::backend_setup;
use super::facts::HostFacts;
use super::report::{Check, REPORT_VERSION, Report, Status, Summary};

/// Every check, in a fixed order, and the backend set-up.
pub fn judge(f: &HostFacts) -> Report {
    let mut checks = vec![
        judge_kernel(f.kernel_release.as_deref()),
        judge_bpffs(f.bpffs_fstype.as_deref()),
        judge_caps(f.caps),
        judge_memlock(f.kernel_release.as_deref(), f.memlock),
        judge_config(&f.config),
    ];
    if f.ifaces.is_empty() {
        checks.push(
            Check::new(
                "link",
                None,
                Status::Skip,
                "no interface to check: none given and no valid config".into(),
            )
            .fix("name the LB's interfaces: xlb doctor --iface eth0 (or --config FILE)"),
        );
    }
    let cfg = f.config.config();
    for i in &f.ifaces {
        checks.push(judge_link(i));
        checks.push(judge_xdp(i));
        checks.push(judge_mtu(
            i,
            cfg.and_then(|c| c.mtu),
            &f.encaps,
            f.encaps_from_mode,
        ));
        checks.push(judge_rp_filter(i, f.rp_filter_all, cfg));
    }
    checks.push(judge_pin_dir(&f.pin, cfg));
    checks.push(judge_agent(&f.agent, &f.pin, cfg, f.config.path()));
    if let Some(b) = &f.bird {
        checks.extend(judge_bird(b));
    }
    let mut summary = Summary::default();
    for c in &checks {
        match c.status {
            Status::Ok => summary.ok += 1,
            Status::Warn => summary.warn += 1,
            Status::Fail => summary.fail += 1,
            Status::Skip => summary.skip += 1,
        }
    }
    Report {
        version: REPORT_VERSION,
        checks,
        backend_setup: backend_setup(f),
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::doctor::fixtures::*;

    #[test]
    fn report_summary_exit_and_json() {
        let r = judge(&healthy());
        assert!(r.passed(), "{}", r.render_text());
        assert_eq!(r.summary.fail, 0);
        let bad = HostFacts {
            bpffs_fstype: None,
            ..healthy()
        };
        let r = judge(&bad);
        assert!(!r.passed());
        assert_eq!(r.summary.fail, 1);
        let text = r.render_text();
        assert!(text.contains("FAIL  bpffs: no bpf file system"), "{text}");
        assert!(text.contains("      fix: mount -t bpf bpf /sys/fs/bpf"));
        assert!(text.contains("OK    xdp eth0: native XDP works"));
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["summary"]["fail"], 1);
        let bpffs = &json["checks"][1];
        assert_eq!(bpffs["check"], "bpffs");
        assert_eq!(bpffs["status"], "fail");
        assert!(bpffs["subject"].is_null());
        assert!(bpffs["fix"][0].as_str().unwrap().contains("mount -t bpf"));
        let xdp = json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "xdp")
            .unwrap();
        assert_eq!(xdp["subject"], "eth0");
        assert_eq!(json["backend_setup"][0]["mode"], "dsr-l2");
    }

    #[test]
    fn no_interface_is_skipped_with_a_hint() {
        let f = HostFacts {
            ifaces: Vec::new(),
            ..healthy()
        };
        let r = judge(&f);
        let c = r.checks.iter().find(|c| c.check == "link").unwrap();
        assert_eq!(c.status, Status::Skip);
        assert_fix(c, "--iface eth0");
    }
}

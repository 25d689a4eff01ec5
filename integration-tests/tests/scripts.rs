//! The operator scripts of `scripts/`, run for real:
//! - every `scripts/*.sh` passes shellcheck without a single finding;
//! - `install.sh` installs into a temporary root (`--destdir`), a second run changes nothing,
//!   the config is never overwritten, `--uninstall` removes what it installed and keeps the
//!   config; with `--with-bird` also BIRD's node config and the `bird.service` drop-in, which
//!   `systemd-analyze verify` accepts on top of Debian's `bird.service`;
//! - `backend-setup.sh`, per forwarding mode, inside a network namespace of the test's own
//!   (entered with `nsenter --net`, so the sysctls it writes are the namespace's): the VIPs on
//!   `lo`, the sysctls, the decap program with the LB sources; a second run changes nothing;
//!   `--undo` restores exactly what was there before.
//!
//! Needs shellcheck, and root for the namespaces and XDP (with the real eBPF object in the
//! `xlb` binary, so no `AYA_BUILD_SKIP`): fails loudly rather than skip.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use aya::maps::{Array, Map, MapData};
use lb_common::{map_names, values::DecapConfig};
use lb_userspace::{
    decap::{DecapOptions, decap_config},
    model::XdpMode,
    pinning,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests lives in the workspace")
        .to_path_buf()
}

fn script(name: &str) -> PathBuf {
    repo().join("scripts").join(name)
}

fn xlb() -> &'static str {
    env!("CARGO_BIN_EXE_xlb-under-test")
}

fn require_root(what: &str) {
    let uid = fs::metadata("/proc/self").expect("/proc/self").uid();
    assert_eq!(
        uid, 0,
        "{what} needs root (network namespaces, sysctls, XDP): run `sudo -E cargo xtask test`"
    );
}

/// Runs `cmd`; its output, whatever the exit status.
fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd`, which must succeed; its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory removed on drop; `tag` and the pid keep parallel tests and runs apart.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("xlb-scripts-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// shellcheck

#[test]
fn scripts_are_shellcheck_clean_and_strict() {
    let mut scripts: Vec<PathBuf> = fs::read_dir(repo().join("scripts"))
        .expect("scripts/ exists")
        .map(|e| e.expect("reading scripts/").path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty(), "no scripts/*.sh found");
    for s in &scripts {
        let mode = fs::metadata(s).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{} is not executable", s.display());
        let text = fs::read_to_string(s).unwrap();
        assert!(
            text.starts_with("#!/usr/bin/env bash\n") && text.contains("\nset -euo pipefail\n"),
            "{}: a bash script with `set -euo pipefail`",
            s.display()
        );
    }
    let out = Command::new("shellcheck")
        .arg("--severity=style")
        .args(&scripts)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run shellcheck ({e}): `apt-get install shellcheck` (cargo xtask setup installs it)")
        });
    assert!(
        out.status.success(),
        "shellcheck findings:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// install.sh

fn install(args: &[&str]) -> String {
    ok(Command::new(script("install.sh")).args(args))
}

/// (mode, inode, mtime) of each file, to see that a run touched none of them.
fn stamps(paths: &[PathBuf]) -> Vec<(u32, u64, SystemTime)> {
    paths
        .iter()
        .map(|p| {
            let m = fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (
                m.permissions().mode() & 0o7777,
                m.ino(),
                m.modified().unwrap(),
            )
        })
        .collect()
}

fn assert_file(path: &Path, mode: u32, content: &[u8]) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{} not installed: {e}", path.display()));
    assert_eq!(
        m.permissions().mode() & 0o7777,
        mode,
        "mode of {}",
        path.display()
    );
    assert!(
        fs::read(path).unwrap() == content,
        "{} has other content than expected",
        path.display()
    );
}

#[test]
fn install_into_a_destdir_then_again_then_uninstall() {
    let tmp = TempDir::new("install");
    let root = tmp.0.join("root");
    let dest = root.to_str().unwrap();
    let bin = fs::read(xlb()).unwrap();
    let unit = fs::read_to_string(repo().join("dist/xlb.service")).unwrap();
    let mount = fs::read(repo().join("dist/sys-fs-bpf.mount")).unwrap();
    let example = fs::read(repo().join("examples/xlb.toml")).unwrap();
    let bird_conf = fs::read(repo().join("dist/bird/xlb-node.conf")).unwrap();
    let dropin = fs::read(repo().join("dist/systemd/bird-xlb.conf")).unwrap();
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let files = [
        at("/usr/local/bin/xlb"),
        at("/etc/xlb/xlb.toml"),
        at("/etc/systemd/system/xlb.service"),
        at("/etc/systemd/system/sys-fs-bpf.mount"),
        at("/etc/bird/xlb-node.conf"),
        at("/etc/systemd/system/bird.service.d/xlb.conf"),
    ];

    // Everything install.sh can install, into the destdir.
    let everything = [
        "--destdir",
        dest,
        "--bpffs-unit",
        "yes",
        "--with-bird",
        xlb(),
    ];
    let dry = install(&[&["--dry-run"][..], &everything].concat());
    assert!(dry.contains("dry run: "), "{dry}");
    assert!(
        dry.contains("/etc/systemd/system/bird.service.d/xlb.conf"),
        "{dry}"
    );
    assert!(!root.exists(), "--dry-run created {}", root.display());

    let first = install(&everything);
    assert!(first.contains("change(s) made"), "{first}");
    assert!(
        !first.contains("+ systemctl"),
        "--destdir must not call systemctl:\n{first}"
    );
    assert_file(&files[0], 0o755, &bin);
    assert_file(&files[1], 0o644, &example);
    assert_file(&files[2], 0o644, unit.as_bytes());
    assert_file(&files[3], 0o644, &mount);
    // BIRD's config may hold session secrets one day: not world-readable (Debian's is 0640).
    assert_file(&files[4], 0o640, &bird_conf);
    assert_file(&files[5], 0o644, &dropin);
    assert_eq!(
        fs::metadata(at("/etc/xlb")).unwrap().permissions().mode() & 0o7777,
        0o755
    );

    let before = stamps(&files);
    let second = install(&everything);
    assert!(second.contains("nothing changed"), "{second}");
    assert_eq!(
        stamps(&files),
        before,
        "a second run touched a file:\n{second}"
    );

    // Another prefix: the unit runs the binary there; the operator's configs stay.
    fs::write(&files[1], "# the operator's config\n").unwrap();
    fs::write(&files[4], "# the operator's BIRD config\n").unwrap();
    let moved = install(&[
        "--destdir",
        dest,
        "--prefix",
        "/opt/xlb",
        "--bpffs-unit=no",
        "--with-bird",
        xlb(),
    ]);
    assert!(moved.contains("kept: "), "{moved}");
    assert_file(&at("/opt/xlb/bin/xlb"), 0o755, &bin);
    assert_file(&files[1], 0o644, b"# the operator's config\n");
    assert_file(&files[4], 0o640, b"# the operator's BIRD config\n");
    assert_file(&files[5], 0o644, &dropin);
    assert_file(
        &files[2],
        0o644,
        unit.replace("/usr/local/bin/xlb", "/opt/xlb/bin/xlb")
            .as_bytes(),
    );
    assert!(unit.contains("ExecStart=/usr/local/bin/xlb run"), "{unit}");

    // --uninstall removes the drop-in without being told --with-bird, and its directory once
    // empty; the BIRD config stays like the agent's.
    let gone = install(&["--uninstall", "--destdir", dest, "--prefix", "/opt/xlb"]);
    assert!(gone.contains("kept: "), "{gone}");
    for p in [
        &at("/opt/xlb/bin/xlb"),
        &files[2],
        &files[3],
        &files[5],
        &at("/etc/systemd/system/bird.service.d"),
    ] {
        assert!(!p.exists(), "--uninstall left {}:\n{gone}", p.display());
    }
    assert_file(&files[1], 0o644, b"# the operator's config\n");
    assert_file(&files[4], 0o640, b"# the operator's BIRD config\n");
    // The binary of the first prefix is another installation: still there, until its own
    // --uninstall.
    assert!(files[0].exists());
    install(&["--uninstall", "--destdir", dest]);
    assert!(!files[0].exists());
    let again = install(&["--uninstall", "--destdir", dest]);
    assert!(again.contains("nothing changed"), "{again}");
}

#[test]
fn install_rejects_what_it_cannot_do() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "give the xlb binary"),
        (&["/nonexistent/xlb"], "no such file"),
        (
            &["--destdir", "/tmp/x", "--enable", "xlb"],
            "not with --destdir",
        ),
        (&["--prefix", "relative", "xlb"], "must be an absolute path"),
        (&["--bpffs-unit", "maybe", "xlb"], "auto, yes or no"),
        (&["--bogus"], "unknown option"),
    ];
    for (args, message) in cases {
        let out = output(Command::new(script("install.sh")).args(*args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

/// The drop-in is valid on top of the `bird.service` Debian's bird2 ships (installed by
/// `cargo xtask setup`): `systemd-analyze verify` reads the drop-in directory next to a unit
/// found through `SYSTEMD_UNIT_PATH`, and reports unknown keys or missing binaries. And it does
/// what dist/systemd/bird-xlb.conf's comments promise: BIRD runs the config install.sh
/// writes, stops before the agent, and is not restarted with it.
#[test]
fn bird_dropin_verifies_on_debians_bird_service() {
    let debian = Path::new("/lib/systemd/system/bird.service");
    assert!(
        debian.exists(),
        "{} missing: `apt-get install bird2` (cargo xtask setup installs it)",
        debian.display()
    );
    let text = fs::read_to_string(repo().join("dist/systemd/bird-xlb.conf")).unwrap();
    let directives: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for key in ["ExecStartPre=", "ExecStart="] {
        let values: Vec<&str> = directives
            .iter()
            .filter_map(|l| l.strip_prefix(key))
            .collect();
        assert_eq!(values.first(), Some(&""), "{key} must first clear Debian's");
        assert!(
            values
                .iter()
                .any(|v| v.starts_with("/usr/sbin/bird ")
                    && v.contains(" -c /etc/bird/xlb-node.conf")),
            "{key}: {values:?}"
        );
    }
    assert!(directives.contains(&"After=xlb.service"), "{directives:?}");
    for tie in ["Requires=", "BindsTo=", "PartOf=", "Wants="] {
        assert!(
            !directives.iter().any(|l| l.starts_with(tie)),
            "{tie}: an agent restart must not touch BIRD"
        );
    }

    let tmp = TempDir::new("bird-dropin");
    let units = &tmp.0;
    fs::copy(debian, units.join("bird.service")).unwrap();
    fs::create_dir(units.join("bird.service.d")).unwrap();
    fs::write(units.join("bird.service.d/xlb.conf"), &text).unwrap();
    let xlb_unit = fs::read_to_string(repo().join("dist/xlb.service")).unwrap();
    fs::write(
        units.join("xlb.service"),
        xlb_unit.replace("/usr/local/bin/xlb", xlb()),
    )
    .unwrap();
    // The trailing ':' keeps systemd's own directories after ours (for the targets named).
    let out = output(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(units.join("bird.service"))
            .arg(units.join("xlb.service"))
            .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display())),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify ({}):\n{}{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// systemd ignores a mount unit whose name is not its escaped mount point. (systemd 238 and
/// later mount /sys/fs/bpf themselves and refuse any unit for it, so `systemd-analyze verify`
/// cannot judge this file on such hosts: install.sh installs it only on older ones.)
#[test]
fn bpffs_mount_unit_is_named_after_its_mount_point() {
    let path = repo().join("dist/sys-fs-bpf.mount");
    let text = fs::read_to_string(&path).unwrap();
    let key = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{}: no {k}=", path.display()))
    };
    let where_ = key("Where");
    assert!(
        where_.starts_with('/') && where_.chars().all(|c| c.is_ascii_lowercase() || c == '/'),
        "Where={where_} would need systemd-escape's \\x escapes"
    );
    let name = format!("{}.mount", where_.trim_start_matches('/').replace('/', "-"));
    assert_eq!(path.file_name().unwrap().to_str().unwrap(), name);
    assert_eq!(where_, "/sys/fs/bpf");
    assert_eq!(key("Type"), "bpf");
    assert_eq!(key("What"), "bpffs");
}

// ---------------------------------------------------------------------------------------------
// backend-setup.sh

const IFACE: &str = "xlbs0";
const PEER: &str = "xlbs1";
const LB_V4: &str = "192.0.2.1";
const LB_V6: &str = "2001:db8::1";
/// Added by the script.
const VIPS: [&str; 2] = ["203.0.113.10", "2001:db8:10::53"];
/// On `lo` before the script runs: it must stay after `--undo`.
const OWN_VIP: &str = "203.0.113.11";
const CONFS: [&str; 3] = ["all", IFACE, PEER];
const KEYS: [&str; 3] = ["rp_filter", "arp_ignore", "arp_announce"];

/// A network namespace of this test, removed on drop (with its interfaces), and the decap pin
/// directory (on the host's bpffs, which `nsenter --net` keeps).
struct Backend {
    name: String,
    pin_dir: PathBuf,
    state: TempDir,
}

impl Backend {
    fn new(mode: &str) -> Backend {
        require_root("backend-setup.sh's test");
        let name = format!("xlbs-{mode}-{}", std::process::id());
        let out = output(Command::new("ip").args(["netns", "add", &name]));
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/xlbs-{mode}-{}", std::process::id()));
        let b = Backend {
            name,
            pin_dir,
            state: TempDir::new(&format!("backend-{mode}")),
        };
        b.ns(&["ip", "link", "set", "lo", "up"]);
        b.ns(&[
            "ip", "link", "add", IFACE, "type", "veth", "peer", "name", PEER,
        ]);
        b.ns(&["ip", "addr", "add", "198.51.100.11/24", "dev", IFACE]);
        b.ns(&["ip", "link", "set", IFACE, "up"]);
        b.ns(&["ip", "link", "set", PEER, "up"]);
        b.ns(&["ip", "addr", "add", &format!("{OWN_VIP}/32"), "dev", "lo"]);
        b
    }

    fn nsenter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name));
        cmd
    }

    /// Runs ARGS in the namespace; its stdout.
    fn ns(&self, args: &[&str]) -> String {
        ok(self.nsenter().args(args))
    }

    fn setup(&self, args: &[&str]) -> String {
        let state = self.state.0.to_str().unwrap();
        let pin = self.pin_dir.to_str().unwrap();
        ok(self
            .nsenter()
            .arg(script("backend-setup.sh"))
            .args(args)
            .args(["--state-dir", state, "--pin-dir", pin]))
    }

    fn state_file(&self) -> PathBuf {
        self.state.0.join("backend-setup.state")
    }

    fn set_sysctl(&self, conf: &str, key: &str, value: u8) {
        self.ns(&[
            "sh",
            "-c",
            &format!("echo {value} > /proc/sys/net/ipv4/conf/{conf}/{key}"),
        ]);
    }

    /// Every (conf, key) of [`CONFS`] x [`KEYS`], as the namespace sees it.
    fn sysctls(&self) -> BTreeMap<String, String> {
        let mut args = vec!["grep".to_string(), "-H".into(), ".".into()];
        for c in CONFS {
            for k in KEYS {
                args.push(format!("/proc/sys/net/ipv4/conf/{c}/{k}"));
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ns(&args)
            .lines()
            .map(|l| {
                let (path, value) = l.split_once(':').expect("grep -H");
                let path = path.trim_start_matches("/proc/sys/net/ipv4/conf/");
                (path.replace('/', "."), value.to_string())
            })
            .collect()
    }

    fn lo_addrs(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ns(&["ip", "-o", "addr", "show", "dev", "lo"])
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
            .filter(|a| a != "127.0.0.1/8" && a != "::1/128")
            .collect();
        v.sort();
        v
    }

    /// The id of the XDP program on IFACE, if any.
    fn xdp_prog(&self) -> Option<u32> {
        let link = self.ns(&["ip", "-d", "-o", "link", "show", "dev", IFACE]);
        let at = link.find("prog/xdp id ")?;
        let id = link[at + "prog/xdp id ".len()..]
            .split_whitespace()
            .next()?;
        Some(id.parse().expect("program id"))
    }

    fn decap_config(&self) -> DecapConfig {
        let path = pinning::maps_dir(&self.pin_dir).join(map_names::DECAP_CONFIG);
        let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let map: Array<MapData, DecapConfig> = Array::try_from(Map::Array(data)).unwrap();
        map.get(&0, 0).unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Unpinning the link detaches the program; deleting the namespace removes the veth.
        let _ = fs::remove_dir_all(&self.pin_dir);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn expected_decap(gue_port: u16) -> DecapConfig {
    decap_config(&DecapOptions {
        iface: IFACE.into(),
        lb_src_v4: Some(LB_V4.parse::<Ipv4Addr>().unwrap()),
        lb_src_v6: Some(LB_V6.parse::<Ipv6Addr>().unwrap()),
        gue_port,
        pin_dir: PathBuf::new(),
        mode: XdpMode::Auto,
    })
}

/// Sets up a backend for `mode` from a namespace with every sysctl at a value the mode must
/// change (and one already right), checks, runs again, undoes, checks that all is as before.
fn round_trip(mode: &str, extra: &[&str], gue_port: Option<u16>) {
    let b = Backend::new(mode);
    let tunnel = mode != "dsr-l2";
    for c in ["all", IFACE] {
        b.set_sysctl(c, "rp_filter", 1);
        b.set_sysctl(c, "arp_ignore", 0);
        b.set_sysctl(c, "arp_announce", 0);
    }
    // Already right for dsr-l2: left alone, and so not "restored" by --undo.
    b.set_sysctl(IFACE, "arp_announce", 2);
    // Another interface of the host: never touched.
    b.set_sysctl(PEER, "rp_filter", 1);
    let sysctls_before = b.sysctls();
    let lo_before = b.lo_addrs();
    assert_eq!(lo_before, [format!("{OWN_VIP}/32")]);

    let mut args = vec![
        "--mode", mode, "--vip", VIPS[0], "--vip", VIPS[1], "--iface", IFACE,
    ];
    if tunnel {
        args.extend(["--lb-src", LB_V4, "--lb-src", LB_V6, "--xlb", xlb()]);
    }
    args.extend_from_slice(extra);

    let dry = b.setup(&[args.as_slice(), &["--dry-run"]].concat());
    assert!(
        dry.contains("+ ip addr add 203.0.113.10/32 dev lo"),
        "{dry}"
    );
    assert_eq!(b.sysctls(), sysctls_before, "--dry-run changed a sysctl");
    assert_eq!(b.lo_addrs(), lo_before, "--dry-run added an address");
    assert!(!b.state_file().exists() && b.xdp_prog().is_none());

    let first = b.setup(&args);
    assert!(first.contains("change(s) made"), "{first}");
    let mut want = sysctls_before.clone();
    want.insert("all.rp_filter".to_string(), "2".into());
    want.insert(format!("{IFACE}.rp_filter"), "2".into());
    if !tunnel {
        want.insert("all.arp_ignore".to_string(), "1".into());
        want.insert(format!("{IFACE}.arp_ignore"), "1".into());
        want.insert("all.arp_announce".to_string(), "2".into());
    }
    assert_eq!(b.sysctls(), want, "sysctls after setup:\n{first}");
    let mut lo_want = vec![
        format!("{OWN_VIP}/32"),
        format!("{}/32", VIPS[0]),
        format!("{}/128", VIPS[1]),
    ];
    lo_want.sort();
    assert_eq!(b.lo_addrs(), lo_want, "{first}");
    let prog = b.xdp_prog();
    if tunnel {
        assert!(prog.is_some(), "no XDP program on {IFACE} after:\n{first}");
        assert!(b.pin_dir.join(format!("link-{IFACE}")).exists());
        assert_eq!(b.decap_config(), expected_decap(gue_port.unwrap_or(6080)));
        let pin = b.pin_dir.to_str().unwrap();
        ok(Command::new(xlb()).args(["decap", "stats", "--pin-dir", pin]));
    } else {
        assert_eq!(prog, None, "dsr-l2 needs no XDP program on the backend");
        assert!(!b.pin_dir.exists());
    }

    let state = fs::read(b.state_file()).expect("state file");
    let second = b.setup(&args);
    assert!(second.contains("nothing changed"), "{second}");
    assert_eq!(b.sysctls(), want);
    assert_eq!(b.lo_addrs(), lo_want);
    assert_eq!(b.xdp_prog(), prog, "a second run replaced the XDP program");
    assert_eq!(fs::read(b.state_file()).unwrap(), state);

    // Someone changes a value the script set: --undo leaves that one alone.
    b.set_sysctl(IFACE, "rp_filter", 0);
    // No --xlb: --undo detaches with the binary that attached.
    let undone = b.setup(&["--undo"]);
    assert!(undone.contains("left alone"), "{undone}");
    let mut restored = sysctls_before.clone();
    restored.insert(format!("{IFACE}.rp_filter"), "0".into());
    assert_eq!(b.sysctls(), restored, "sysctls after --undo:\n{undone}");
    assert_eq!(b.lo_addrs(), lo_before, "{undone}");
    assert_eq!(b.xdp_prog(), None, "{undone}");
    assert!(!b.pin_dir.exists(), "{undone}");
    assert!(!b.state_file().exists());
    let again = b.setup(&["--undo"]);
    assert!(again.contains("nothing to undo"), "{again}");
}

#[test]
fn backend_setup_ipip() {
    round_trip("ipip", &[], None);
}

#[test]
fn backend_setup_gue() {
    round_trip("gue", &["--gue-port", "7080"], Some(7080));
}

#[test]
fn backend_setup_dsr_l2() {
    round_trip("dsr-l2", &[], None);
}

#[test]
fn backend_setup_rejects_what_it_cannot_do() {
    // One string per case, split at spaces: the flags the cases share stay readable on one
    // line (as arrays, one flag a line, they repeat for screens).
    let cases = [
        (
            "--vip 203.0.113.10 --iface lo".to_owned(),
            "--mode is required",
        ),
        (
            "--mode vxlan --vip 203.0.113.10 --iface lo".into(),
            "unknown --mode",
        ),
        (
            "--mode ipip --vip 203.0.113.10 --iface lo".into(),
            "needs --lb-src",
        ),
        (
            format!("--mode dsr-l2 --vip 203.0.113.10 --iface lo --lb-src {LB_V4}"),
            "dsr-l2 has no tunnel",
        ),
        (
            "--mode dsr-l2 --vip 203.0.113.300 --iface lo".into(),
            "not an IPv4 or IPv6",
        ),
        (
            "--mode dsr-l2 --vip 203.0.113.0/24 --iface lo".into(),
            "no /prefix",
        ),
        (
            "--mode dsr-l2 --vip 203.0.113.10".into(),
            "--iface is required",
        ),
        (
            "--mode dsr-l2 --vip 203.0.113.10 --iface xlb-none0".into(),
            "no interface 'xlb-none0'",
        ),
        (
            format!(
                "--mode ipip --vip 203.0.113.10 --iface lo --lb-src {LB_V4} --lb-src 192.0.2.2"
            ),
            "two IPv4 --lb-src",
        ),
        (
            format!("--mode gue --vip 203.0.113.10 --iface lo --lb-src {LB_V4} --gue-port 70000"),
            "not a port",
        ),
        (
            format!(
                "--mode ipip --vip 203.0.113.10 --iface lo --lb-src {LB_V4} --xlb /nonexistent/xlb"
            ),
            "xlb binary not found",
        ),
        ("--undo --mode ipip".into(), "give no --mode"),
    ];
    for (args, message) in cases {
        let args: Vec<&str> = args.split_whitespace().collect();
        // --dry-run: were a case accepted, it still would change nothing.
        let out = output(
            Command::new(script("backend-setup.sh"))
                .args(&args)
                .arg("--dry-run"),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

//! `cargo xtask setup`: install what building and testing xlb need, and nothing that is there.
//!
//! Every item is checked first (cheap: rustup/dpkg queries, `bpf-linker --version`, /proc/mounts),
//! so a second run does nothing. `cargo xtask build` runs the build-time checks without installing;
//! `cargo xtask bench` adds the packages only the benchmark uses.

use std::{
    env, fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    cmd::{cargo, find_on_path, is_root, output, run as run_cmd, timed},
    toolchain::{BPF_LINKER_LLVM_MAJORS, EbpfToolchain},
};

/// What the tests and the demo testbed run besides our own binaries.
const TEST_PACKAGES: &[&str] = &[
    // ip netns, veth, bridge, addresses and routes of every namespace test and the testbed.
    "iproute2",
    // Offloads off on the testbed's veths.
    "ethtool",
    // The testbed's backends (xlb-testkit/src/backend.py).
    "python3",
    // HTTP requests of the demo.
    "curl",
    // Lints scripts/*.sh in integration-tests/tests/scripts.rs.
    "shellcheck",
    // BGP+BFD between the router and the LB nodes of the multi-LB testbed (dist/bird/).
    "bird2",
];
/// What only `cargo xtask bench` runs: the end-to-end comparison (its charts are drawn by
/// xtask itself). Installed by the bench, not by `cargo xtask test`.
const BENCH_PACKAGES: &[&str] = &["haproxy", "nginx", "wrk", "iperf3"];
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPFFS: &str = "/sys/fs/bpf";
/// Host-toolchain components `cargo xtask test` uses.
const HOST_COMPONENTS: &[&str] = &["rustfmt", "clippy"];

/// Something missing and the way to get it.
struct Missing {
    what: String,
    fix: Fix,
}

enum Fix {
    /// `rustup component add`; `toolchain` None = the active (host) toolchain.
    Components {
        toolchain: Option<String>,
        names: Vec<&'static str>,
    },
    BpfLinker,
    Packages(Vec<&'static str>),
    MountBpffs,
}

enum Status {
    Ok(String),
    Missing(Missing),
}

/// Which checks to run: `build` needs only the first group, `test` adds what the tests need,
/// `bench` adds the benchmark's own packages to that.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Build,
    Test,
    Bench,
}

/// `cargo xtask setup` (also the first stage of `cargo xtask test`): what building and testing
/// need.
pub fn run() -> Result<()> {
    run_scope(Scope::Test)
}

/// Setup for `cargo xtask bench`: that of the tests plus the benchmark's packages.
pub fn run_for_bench() -> Result<()> {
    run_scope(Scope::Bench)
}

fn run_scope(scope: Scope) -> Result<()> {
    let (result, elapsed) = timed(|| setup(scope));
    match result {
        Ok(done) if done.is_empty() => {
            println!("setup: nothing to do ({:.1}s)", elapsed.as_secs_f64());
            Ok(())
        }
        Ok(done) => {
            println!(
                "setup: done: {} ({:.1}s)",
                done.join("; "),
                elapsed.as_secs_f64()
            );
            Ok(())
        }
        Err(e) => {
            println!("setup: failed after {:.1}s", elapsed.as_secs_f64());
            Err(e)
        }
    }
}

/// Checks everything, installs what is missing; returns what it did.
fn setup(scope: Scope) -> Result<Vec<String>> {
    let tc = EbpfToolchain::detect()?;
    println!("setup: eBPF toolchain {}", tc.describe());
    let root = is_root();
    let mut done = Vec::new();
    let mut for_root = Vec::new();
    for (label, status) in checks(&tc, scope)? {
        match status {
            Status::Ok(detail) => println!("setup: ok       {label}: {detail}"),
            Status::Missing(m) if m.fix.needs_root() && !root => {
                println!("setup: MISSING  {label}: {} (needs root)", m.what);
                for_root.push(m.fix.command_line(&tc));
            }
            Status::Missing(m) => {
                println!("setup: install  {label}: {}", m.what);
                m.fix
                    .apply(&tc)
                    .with_context(|| format!("installing {label}"))?;
                done.push(label);
            }
        }
    }
    if !for_root.is_empty() {
        bail!(
            "setup is not root (euid != 0); run these as root, or run `cargo xtask setup` as root:\n    {}",
            for_root.join("\n    ")
        );
    }
    Ok(done)
}

/// For `cargo xtask build`: fails, naming the fixes, if the eBPF object cannot be built.
pub fn check_build_prerequisites(tc: &EbpfToolchain) -> Result<()> {
    let mut problems = Vec::new();
    for (label, status) in checks(tc, Scope::Build)? {
        if let Status::Missing(m) = status {
            problems.push(format!(
                "{label}: {}\n    fix: {}",
                m.what,
                m.fix.command_line(tc)
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "the eBPF build prerequisites are incomplete (`cargo xtask setup` installs them all):\n  {}",
            problems.join("\n  ")
        );
    }
    tc.check_build_rs_support()
}

fn checks(tc: &EbpfToolchain, scope: Scope) -> Result<Vec<(String, Status)>> {
    let mut ebpf_components = vec!["rust-src"];
    if scope != Scope::Build {
        // `cargo xtask clippy` lints the eBPF crate with this toolchain.
        ebpf_components.push("clippy");
    }
    let mut out = vec![
        (
            format!("{} on {}", ebpf_components.join(", "), tc.name),
            check_components(Some(&tc.name), &ebpf_components)?,
        ),
        ("bpf-linker".to_owned(), check_bpf_linker()),
    ];
    if scope != Scope::Build {
        out.push((
            format!("{} on the host toolchain", HOST_COMPONENTS.join(", ")),
            check_components(None, HOST_COMPONENTS)?,
        ));
        out.push(("Debian packages".to_owned(), check_packages(TEST_PACKAGES)?));
        if scope == Scope::Bench {
            out.push((
                "Debian packages of the bench".to_owned(),
                check_packages(BENCH_PACKAGES)?,
            ));
        }
        out.push(("bpffs".to_owned(), check_bpffs()?));
    }
    Ok(out)
}

fn check_components(toolchain: Option<&str>, wanted: &[&'static str]) -> Result<Status> {
    let mut cmd = Command::new("rustup");
    cmd.args(["component", "list", "--installed"]);
    if let Some(tc) = toolchain {
        cmd.args(["--toolchain", tc]);
    }
    let installed = output(&mut cmd)?;
    // Entries are `rust-src` or `<name>-<host triple>`.
    let has = |name: &str| {
        installed.lines().any(|l| {
            let l = l.trim();
            l == name
                || l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('-'))
        })
    };
    let missing: Vec<&'static str> = wanted.iter().copied().filter(|c| !has(c)).collect();
    Ok(if missing.is_empty() {
        Status::Ok("installed".to_owned())
    } else {
        Status::Missing(Missing {
            what: format!("{} not installed", missing.join(", ")),
            fix: Fix::Components {
                toolchain: toolchain.map(str::to_owned),
                names: missing,
            },
        })
    })
}

fn check_bpf_linker() -> Status {
    let missing = |what| {
        Status::Missing(Missing {
            what,
            fix: Fix::BpfLinker,
        })
    };
    let Some(path) = find_on_path("bpf-linker") else {
        return missing("not on PATH".to_owned());
    };
    match output(Command::new(&path).arg("--version")) {
        Ok(v) if v.split_whitespace().any(|w| w == BPF_LINKER_VERSION) => {
            Status::Ok(format!("{} ({})", v.trim(), path.display()))
        }
        Ok(v) => missing(format!(
            "{} reports `{}`, want {BPF_LINKER_VERSION}",
            path.display(),
            v.trim()
        )),
        // Typically a libLLVM that moved: a nightly update removes the one it was linked to.
        Err(e) => missing(format!("{} does not run: {e:#}", path.display())),
    }
}

fn check_packages(wanted: &[&'static str]) -> Result<Status> {
    if find_on_path("dpkg-query").is_none() {
        bail!(
            "no dpkg-query: not a Debian-based system; install these by hand: {}",
            wanted.join(" ")
        );
    }
    // Exits 1 when a package is unknown to dpkg; the status lines of the others still print.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package}\t${Status}\n"])
        .args(wanted)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running dpkg-query")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let installed = |pkg: &str| {
        listing
            .lines()
            .any(|l| l.split_once('\t') == Some((pkg, "install ok installed")))
    };
    let missing: Vec<&'static str> = wanted.iter().copied().filter(|p| !installed(p)).collect();
    Ok(if missing.is_empty() {
        Status::Ok(format!("{} installed", wanted.len()))
    } else {
        Status::Missing(Missing {
            what: format!("{} not installed", missing.join(" ")),
            fix: Fix::Packages(missing),
        })
    })
}

fn check_bpffs() -> Result<Status> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace().skip(1);
        f.next() == Some(BPFFS) && f.next() == Some("bpf")
    });
    Ok(if mounted {
        Status::Ok(format!("mounted on {BPFFS}"))
    } else {
        Status::Missing(Missing {
            what: format!("not mounted on {BPFFS}"),
            fix: Fix::MountBpffs,
        })
    })
}

impl Fix {
    fn needs_root(&self) -> bool {
        matches!(self, Self::Packages(_) | Self::MountBpffs)
    }

    /// The command a human would type.
    fn command_line(&self, tc: &EbpfToolchain) -> String {
        match self {
            Self::Components { toolchain, names } => {
                let mut line = format!("rustup component add {}", names.join(" "));
                if let Some(tc) = toolchain {
                    line.push_str(&format!(" --toolchain {tc}"));
                }
                line
            }
            Self::BpfLinker => {
                let feature = tc
                    .llvm_major()
                    .map_or_else(|_| "llvm-<major>".to_owned(), |m| format!("llvm-{m}"));
                format!(
                    "LLVM_PREFIX={prefix} cargo install bpf-linker --version {BPF_LINKER_VERSION} \
                     --locked --no-default-features --features {feature} --force \
                     (with {prefix}/lib/libLLVM.so and its soname linked to {sysroot}/lib/libLLVM.so.*)",
                    prefix = llvm_prefix().display(),
                    sysroot = tc.sysroot.display(),
                )
            }
            Self::Packages(pkgs) => format!(
                "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
                 --no-install-recommends {}",
                pkgs.join(" ")
            ),
            Self::MountBpffs => format!("mount -t bpf bpf {BPFFS}"),
        }
    }

    fn apply(&self, tc: &EbpfToolchain) -> Result<()> {
        match self {
            Self::Components { toolchain, names } => {
                let mut cmd = Command::new("rustup");
                cmd.args(["component", "add"]).args(names);
                if let Some(tc) = toolchain {
                    cmd.args(["--toolchain", tc]);
                }
                run_cmd(&mut cmd)
            }
            Self::BpfLinker => install_bpf_linker(tc),
            Self::Packages(pkgs) => install_packages(pkgs),
            Self::MountBpffs => {
                fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
                run_cmd(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
            }
        }
    }
}

/// Where bpf-linker's build finds libLLVM. bpf-linker links the toolchain's libLLVM dynamically
/// and records this directory as its RUNPATH, so it must outlive the build (not /tmp) and must
/// hold the library under its soname too, not only as `libLLVM.so`, or the installed binary
/// fails with "error while loading shared libraries".
fn llvm_prefix() -> PathBuf {
    cargo_home().join("xlb").join("llvm-prefix")
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
}

fn install_bpf_linker(tc: &EbpfToolchain) -> Result<()> {
    let major = tc.llvm_major()?;
    ensure!(
        BPF_LINKER_LLVM_MAJORS.contains(&major),
        "toolchain {} uses LLVM {major}; bpf-linker {BPF_LINKER_VERSION} supports LLVM {}..={}",
        tc.name,
        BPF_LINKER_LLVM_MAJORS.start(),
        BPF_LINKER_LLVM_MAJORS.end()
    );
    let sysroot_lib = tc.sysroot.join("lib");
    let mut libs: Vec<PathBuf> = fs::read_dir(&sysroot_lib)
        .with_context(|| format!("listing {}", sysroot_lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .collect();
    libs.sort();
    let Some(lib) = libs.pop() else {
        bail!(
            "no libLLVM.so.* in {} (toolchain {})",
            sysroot_lib.display(),
            tc.name
        );
    };
    let lib_dir = llvm_prefix().join("lib");
    if lib_dir.exists() {
        fs::remove_dir_all(&lib_dir).with_context(|| format!("removing {}", lib_dir.display()))?;
    }
    fs::create_dir_all(&lib_dir).with_context(|| format!("creating {}", lib_dir.display()))?;
    let soname = lib.file_name().context("libLLVM path has no file name")?;
    for link in [lib_dir.join("libLLVM.so"), lib_dir.join(soname)] {
        symlink(&lib, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), lib.display()))?;
    }
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute)",
        lib.display()
    );
    run_cmd(
        cargo()
            .env("LLVM_PREFIX", llvm_prefix())
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--locked", "--no-default-features", "--force"])
            .args(["--features", &format!("llvm-{major}")]),
    )?;
    match check_bpf_linker() {
        Status::Ok(detail) => {
            println!("setup: bpf-linker now {detail}");
            Ok(())
        }
        Status::Missing(m) => bail!(
            "bpf-linker still unusable after installing it: {} (is {} on PATH?)",
            m.what,
            cargo_home().join("bin").display()
        ),
    }
}

fn install_packages(pkgs: &[&str]) -> Result<()> {
    // Without a policy-rc.d, installing nginx/haproxy starts system daemons on port 80 that would
    // get in the way of the testbed; we only want the binaries.
    const POLICY: &str = "/usr/sbin/policy-rc.d";
    let own_policy = !Path::new(POLICY).exists();
    if own_policy {
        fs::write(
            POLICY,
            "#!/bin/sh\n# xtask setup: do not start services\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY}"))?;
        fs::set_permissions(POLICY, fs::Permissions::from_mode(0o755))?;
    }
    let result = run_cmd(Command::new("apt-get").args(["update", "-q"])).and_then(|()| {
        run_cmd(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(pkgs),
        )
    });
    if own_policy {
        fs::remove_file(POLICY).with_context(|| format!("removing {POLICY}"))?;
    }
    result
}

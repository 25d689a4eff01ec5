//! Which rustup toolchain compiles the eBPF crate, and how that choice reaches aya-build.
//!
//! aya-build runs `rustup run <toolchain> cargo build -Z build-std=core` for the BPF target, with
//! `Toolchain::default()` = `nightly`. Without a nightly toolchain we fall back to stable
//! (same LLVM major today) with `RUSTC_BOOTSTRAP=1`, which aya-build honours for `-Z build-std`;
//! the toolchain name then has to reach `lb-userspace/build.rs` through `XLB_EBPF_TOOLCHAIN`.

use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd::{find_on_path, output, workspace_root};

/// Names the rustup toolchain for the eBPF build; read here and by `lb-userspace/build.rs`.
pub const ENV_TOOLCHAIN: &str = "XLB_EBPF_TOOLCHAIN";
/// The LLVM majors bpf-linker 0.13.0 has a cargo feature for (`llvm-21` .. `llvm-23`).
pub const BPF_LINKER_LLVM_MAJORS: std::ops::RangeInclusive<u32> = 21..=23;

pub struct EbpfToolchain {
    /// The rustup toolchain name, as given to `rustup run`.
    pub name: String,
    /// Why this one was picked.
    pub why: &'static str,
    /// `release:` of `rustc -vV`, e.g. `1.97.0-nightly`.
    pub release: String,
    /// `LLVM version:` of `rustc -vV`, e.g. `22.1.4`.
    pub llvm: String,
    pub sysroot: PathBuf,
}

impl EbpfToolchain {
    /// `XLB_EBPF_TOOLCHAIN` if set, else `nightly` if installed, else `stable`.
    pub fn detect() -> Result<Self> {
        if find_on_path("rustup").is_none() {
            bail!(
                "rustup is not on PATH (source ~/.cargo/env, or install it from https://rustup.rs): \
                 the eBPF build runs `rustup run <toolchain> cargo`"
            );
        }
        let installed = output(Command::new("rustup").args(["toolchain", "list"]))?;
        let installed: Vec<&str> = installed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let is_installed = |name: &str| {
            installed.iter().any(|t| {
                *t == name
                    || t.strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix('-'))
                        // `nightly-2026-01-01-<host>` is not `nightly`.
                        .is_some_and(|host| !host.starts_with(|c: char| c.is_ascii_digit()))
            })
        };
        let (name, why) = match env::var(ENV_TOOLCHAIN) {
            Ok(name) if !name.is_empty() => (name, "chosen by XLB_EBPF_TOOLCHAIN"),
            _ if is_installed("nightly") => ("nightly".to_owned(), "default"),
            _ => (
                "stable".to_owned(),
                "fallback: no nightly toolchain, so stable with RUSTC_BOOTSTRAP=1",
            ),
        };
        if !is_installed(&name) {
            bail!(
                "the eBPF toolchain `{name}` ({why}) is not installed: \
                 rustup toolchain install {name} --profile minimal --component rust-src"
            );
        }
        let vv = output(Command::new("rustup").args(["run", &name, "rustc", "-vV"]))?;
        let field = |key: &str| {
            vv.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| anyhow!("`rustc -vV` of toolchain {name} has no `{key}` line"))
        };
        let release = field("release:")?;
        let llvm = field("LLVM version:")?;
        let sysroot =
            output(Command::new("rustup").args(["run", &name, "rustc", "--print", "sysroot"]))?;
        Ok(Self {
            release,
            llvm,
            sysroot: PathBuf::from(sysroot.trim()),
            name,
            why,
        })
    }

    /// A nightly compiler allows `-Z` flags; any other needs `RUSTC_BOOTSTRAP=1`.
    pub fn needs_bootstrap(&self) -> bool {
        !self.release.contains("nightly")
    }

    pub fn llvm_major(&self) -> Result<u32> {
        self.llvm
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .with_context(|| format!("cannot read the LLVM major version of `{}`", self.llvm))
    }

    /// `rustup run <toolchain> <program>`, with `RUSTC_BOOTSTRAP=1` when the toolchain needs it.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("rustup");
        cmd.args(["run", &self.name, program])
            .current_dir(workspace_root());
        if self.needs_bootstrap() {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        cmd
    }

    /// Sets what a host `cargo build` of lb-userspace needs so that aya-build uses this toolchain.
    pub fn configure_ebpf_build(&self, cmd: &mut Command) {
        if self.name != "nightly" {
            cmd.env(ENV_TOOLCHAIN, &self.name);
        }
        if self.needs_bootstrap() {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
    }

    /// aya-build defaults to nightly; any other toolchain only works if build.rs passes ours on.
    pub fn check_build_rs_support(&self) -> Result<()> {
        if self.name == "nightly" {
            return Ok(());
        }
        let path = workspace_root().join("lb-userspace/build.rs");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if !text.contains(ENV_TOOLCHAIN) {
            bail!(
                "the eBPF toolchain is `{}` ({}), but {} always asks aya-build for nightly \
                 (it does not read {ENV_TOOLCHAIN}); install nightly instead: \
                 rustup toolchain install nightly --profile minimal --component rust-src",
                self.name,
                self.why,
                path.display()
            );
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (rustc {}, LLVM {}; {})",
            self.name, self.release, self.llvm, self.why
        )
    }
}

//! Builds the eBPF object (lb-ebpf, for bpfel-unknown-none on the nightly toolchain) and leaves it
//! in OUT_DIR for `include_bytes_aligned!`.
//!
//! `AYA_BUILD_SKIP=1` skips it so host-only `cargo check`/`clippy` work without the eBPF
//! toolchain; the binary then carries an empty object and refuses to load it with a message.

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

const EBPF_PACKAGE: &str = "lb-ebpf";
const EBPF_BIN: &str = "xlb-ebpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = std::env::var("AYA_BUILD_SKIP")
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    if skip {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join(EBPF_BIN);
        std::fs::write(&out, []).with_context(|| format!("writing {}", out.display()))?;
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("{EBPF_PACKAGE} not found in the workspace"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", pkg.manifest_path))?;
    // `cargo xtask setup` picks the toolchain: nightly when installed, else stable with
    // RUSTC_BOOTSTRAP=1 (same LLVM); it exports the choice here.
    println!("cargo:rerun-if-env-changed=XLB_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("XLB_EBPF_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty());
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: root.as_str(),
            ..Default::default()
        }],
        toolchain
            .as_deref()
            .map_or_else(Toolchain::default, Toolchain::Custom),
    )
}

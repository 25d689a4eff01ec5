//! `cargo xtask build`: check the eBPF prerequisites, build lb-userspace (whose build script
//! compiles lb-ebpf through aya-build and embeds it), and say where the results are.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result, bail, ensure};
use cargo_metadata::Message;

use crate::{
    cmd::{cargo, run_capturing_stdout},
    setup,
    toolchain::EbpfToolchain,
};

#[derive(clap::Args)]
pub struct Args {
    /// Build with the release profile.
    #[arg(long)]
    release: bool,
}

/// The file name aya-build gives the eBPF object in lb-userspace's OUT_DIR.
const EBPF_OBJECT: &str = "xlb-ebpf";
const EM_BPF: u16 = 247;

pub fn run(args: &Args) -> Result<()> {
    let tc = EbpfToolchain::detect()?;
    println!("build: eBPF toolchain {}", tc.describe());
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        bail!("AYA_BUILD_SKIP is set: the binary would carry an empty eBPF object; unset it");
    }
    setup::check_build_prerequisites(&tc)?;

    let mut cmd = cargo();
    cmd.args([
        "build",
        "--package",
        "lb-userspace",
        "--message-format=json-render-diagnostics",
    ]);
    if args.release {
        cmd.arg("--release");
    }
    tc.configure_ebpf_build(&mut cmd);
    let json = run_capturing_stdout(&mut cmd)?;

    let (xlb, out_dir) = find_outputs(&json)?;
    let object = out_dir.join(EBPF_OBJECT);
    let summary = check_bpf_elf(&object)?;
    println!("build: xlb binary:  {}", xlb.display());
    println!("build: eBPF object: {} ({summary})", object.display());
    Ok(())
}

/// The `xlb` executable and the OUT_DIR of the build script of the package that owns it.
fn find_outputs(json: &str) -> Result<(PathBuf, PathBuf)> {
    let messages = Message::parse_stream(json.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing cargo's JSON messages")?;
    let (xlb, package) = messages
        .iter()
        .find_map(|m| match m {
            Message::CompilerArtifact(a) if a.target.name == "xlb" => a
                .executable
                .as_ref()
                .map(|exe| (exe.clone().into_std_path_buf(), &a.package_id)),
            _ => None,
        })
        .context("cargo reported no `xlb` executable")?;
    let out_dir = messages
        .iter()
        .find_map(|m| match m {
            Message::BuildScriptExecuted(b) if &b.package_id == package => {
                Some(b.out_dir.clone().into_std_path_buf())
            }
            _ => None,
        })
        .context("cargo reported no build-script run for lb-userspace")?;
    Ok((xlb, out_dir))
}

/// The object must be a non-empty 64-bit little-endian ELF file for EM_BPF.
fn check_bpf_elf(path: &PathBuf) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        !bytes.is_empty(),
        "{} is empty (was the eBPF build skipped?)",
        path.display()
    );
    ensure!(
        bytes.len() >= 64 && bytes.starts_with(b"\x7fELF"),
        "{} is not an ELF file",
        path.display()
    );
    ensure!(
        bytes[4] == 2 && bytes[5] == 1,
        "{} is not a 64-bit little-endian ELF file (class {}, data {})",
        path.display(),
        bytes[4],
        bytes[5]
    );
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    ensure!(
        machine == EM_BPF,
        "{} is an ELF file for machine {machine}, not BPF ({EM_BPF})",
        path.display()
    );
    Ok(format!("{} bytes, ELF64 LE, EM_BPF", bytes.len()))
}

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
    let mode: &[&str] = if args.release { &["--release"] } else { &[] };
    let built = with_ebpf(&tc, &[&["--package", "lb-userspace"], mode].concat())?;
    let xlb = built.executable("xlb")?;
    let object = built.build_script_out_dir("xlb")?.join(EBPF_OBJECT);
    let summary = check_bpf_elf(&object)?;
    println!("build: xlb binary:  {}", xlb.display());
    println!("build: eBPF object: {} ({summary})", object.display());
    Ok(())
}

/// What one `cargo build` reported.
pub struct Built {
    messages: Vec<Message>,
}

/// `cargo build ARGS` (which name the packages) with the eBPF toolchain set up: lb-userspace's
/// build script compiles the XDP programs, and every tool that links lb-userspace embeds them.
/// Diagnostics go to stderr as usual.
pub fn with_ebpf(tc: &EbpfToolchain, args: &[&str]) -> Result<Built> {
    setup::check_build_prerequisites(tc)?;
    let mut cmd = cargo();
    cmd.args(["build", "--message-format=json-render-diagnostics"])
        .args(args);
    tc.configure_ebpf_build(&mut cmd);
    let json = run_capturing_stdout(&mut cmd)?;
    let messages = Message::parse_stream(json.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing cargo's JSON messages")?;
    Ok(Built { messages })
}

impl Built {
    fn artifact(&self, target: &str) -> Result<&cargo_metadata::Artifact> {
        self.messages
            .iter()
            .find_map(|m| match m {
                Message::CompilerArtifact(a)
                    if a.target.name == target && a.executable.is_some() =>
                {
                    Some(a)
                }
                _ => None,
            })
            .with_context(|| format!("cargo reported no `{target}` executable"))
    }

    /// The executable named `target`.
    pub fn executable(&self, target: &str) -> Result<PathBuf> {
        let exe = self.artifact(target)?.executable.as_ref();
        Ok(exe
            .expect("checked by artifact")
            .clone()
            .into_std_path_buf())
    }

    /// `OUT_DIR` of the build script of the package that built `target` (where the eBPF object is).
    fn build_script_out_dir(&self, target: &str) -> Result<PathBuf> {
        let package = &self.artifact(target)?.package_id;
        self.messages
            .iter()
            .find_map(|m| match m {
                Message::BuildScriptExecuted(b) if &b.package_id == package => {
                    Some(b.out_dir.clone().into_std_path_buf())
                }
                _ => None,
            })
            .context("cargo reported no build-script run for lb-userspace")
    }
}

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

use which::which;

/// bpf-linker is an undeclared build dependency; rebuild when the binary on PATH changes.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not on PATH: run `cargo xtask setup`"),
    }
}

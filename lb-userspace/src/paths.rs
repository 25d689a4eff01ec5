//! Where xlb looks for and puts things when not told otherwise: the CLI's defaults, the config
//! keys' defaults and the advice `xlb doctor` prints all name these, so they cannot disagree.

/// The agent's config file (`xlb run --config`, `xlb check-config`).
pub const DEFAULT_CONFIG: &str = "/etc/xlb/xlb.toml";
/// Where bpffs is mounted; every pin directory must be below it.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// The load balancer's pins (`agent.pin-dir`, `--pin-dir`).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xlb";
/// The backend-side decapsulation program's pins (`xlb decap --pin-dir`): apart from the load
/// balancer's, so a host can run both.
pub const DEFAULT_DECAP_PIN_DIR: &str = "/sys/fs/bpf/xlb-decap";
/// The agent's API socket (`agent.api-socket`, `--socket`).
pub const DEFAULT_API_SOCKET: &str = "/run/xlb/xlb.sock";

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn pin_dirs_are_below_bpffs() {
        for dir in [DEFAULT_PIN_DIR, DEFAULT_DECAP_PIN_DIR] {
            let dir = Path::new(dir);
            assert!(
                dir.starts_with(BPFFS_ROOT) && dir != Path::new(BPFFS_ROOT),
                "{dir:?}"
            );
        }
    }
}

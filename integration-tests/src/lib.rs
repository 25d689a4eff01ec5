//! Nothing: the suites are in `tests/`. They need root (XDP programs, bpffs, network namespaces)
//! and fail rather than skip without it, so this crate is left out of the workspace's
//! default members: a plain `cargo test` runs the unit tests, `cargo xtask test` runs these too
//! (the split aya makes with its `test/integration-test`).

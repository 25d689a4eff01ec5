#![no_std]
// The programs live in the `xlb-ebpf` binary target; this library exists so lb-userspace can name
// the crate as a build dependency (cargo then rebuilds the agent when the programs change).

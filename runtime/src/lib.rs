//! Basalt's own OCI low-level runtime: the library the pod monitor calls to create containers, and the
//! runc-compatible CLI (`basalt runtime …`, or the binary named `basalt-runc`).
//!
//! It must never link C for policy (no libseccomp: its seccomp BPF compiler is pure Rust) and must never leave
//! a cgroup, mount, state directory or process behind after a failure or `delete`.
//!
//! Not built yet: issue #3.

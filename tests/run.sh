#!/usr/bin/env bash
# The whole test suite: system packages first (if missing), then every crate's unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh
# The CRI suite runs every case against our agent too; a missing `agent --cri-only` is a failure, not a skip.
export BASALT_CRI_REQUIRED=1
# Likewise the cgroup v2 test VM: deps.sh installs qemu and a kernel, so a VM that cannot boot is a failure.
export BASALT_VM_REQUIRED=1
cargo test --workspace --all-targets --locked --exclude basalt-seccomp "$@"
# The seccomp compiler's differential test links the reference, libseccomp (C). Linked into a static non-PIE
# program (.cargo/config.toml) that aborts in glibc's start-up before main, so this one crate's tests are
# built the ordinary way (dynamic PIE: RUSTFLAGS set, even empty, replaces the config's), in a target dir of
# their own so that neither build undoes the other.
RUSTFLAGS="" cargo test -p basalt-seccomp --all-targets --locked --target-dir target/reference "$@"

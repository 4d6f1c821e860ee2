#!/usr/bin/env bash
# The benchmarks: each measures ours against the reference peer in the same run and prints the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh
# Every benchmark prints a ratio against its peer measured in the same run: a side that cannot run here is a
# failure, never a ratio quietly left out.
export BASALT_CRI_REQUIRED=1 BASALT_VM_REQUIRED=1
cargo bench --locked --bench runtime            # runtime: ours vs runc (host) and vs runc + crun (cgroup v2 VM, TCG)
# pod startup through the CRI: our agent (the release build the line above made) vs containerd 1.6 + runc
cargo bench --locked -p basalt-cri-tests --bench pod_startup
cargo bench --locked --bench node_image         # node image (release basalt): size and boot-to-pod-serving time
cargo bench --locked -p basalt-images --bench pull   # image pull+unpack: release `basalt image pull` vs `ctr`
cargo bench --locked -p basalt-cni --bench add_del   # CNI ADD+DEL: release basalt as `bridge` vs the reference
cargo bench --locked --bench csi                # CSI plugin: Create+Publish+Unpublish+Delete medians, fs and block
cargo bench --locked --bench apiserver     # apiserver: SQLite vs three etcd members (creates/s, list, watch, RSS)
cargo bench --locked --bench scheduler          # scheduler: pods/s on 5,000 fake nodes (plain, spread, node and pod affinity)

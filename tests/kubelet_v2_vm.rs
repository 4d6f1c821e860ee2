//! The kubelet's QoS cgroups on a pure cgroup v2 host (issue #7): the real `basalt agent` (built-in CRI and
//! kubelet) runs in the test VM with a Burstable and a Guaranteed static pod; the pod cgroups under
//! `/kubepods` must carry the pods' summed limits and request-derived weights, and go away with the manifest.
//!
//! The guest part is a busybox shell script: it polls (with a deadline) for each pod cgroup to hold a running
//! container, prints the cgroup files, removes the manifests one by one and waits for each pod cgroup to be
//! removed. The host part checks the printed values against the manifests' resources.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Duration;

use basalt_initramfs::testvm::{TestVm, VmError};

/// Burstable: requests below limits.
const BURST: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: burst}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: docker.io/library/busybox:latest
    imagePullPolicy: Never
    command: [sleep, "3600"]
    resources: {requests: {cpu: 100m, memory: 32Mi}, limits: {cpu: 300m, memory: 64Mi}}
"#;

/// Guaranteed: two containers with requests equal to limits, summed at the pod level.
const GUARANTEED: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: guar}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: a
    image: docker.io/library/busybox:latest
    imagePullPolicy: Never
    command: [sleep, "3600"]
    resources: {requests: {cpu: 200m, memory: 48Mi}, limits: {cpu: 200m, memory: 48Mi}}
  - name: b
    image: docker.io/library/busybox:latest
    imagePullPolicy: Never
    command: [sleep, "3600"]
    resources: {requests: {cpu: 100m, memory: 16Mi}, limits: {cpu: 100m, memory: 16Mi}}
"#;

/// Runs in the guest (busybox sh). Prints `<label> <file> <value>` lines, `gone <label>` once a removed pod's
/// cgroup is gone, and `FAIL: …` with the agent's log tail when a deadline passes.
const GUEST: &str = r#"
H="$BASALT_VM_HOST_DIR"
D=/tmp/basalt-kubelet-vm
K=/sys/fs/cgroup/kubepods
mkdir -p $D && mount -t tmpfs -o size=400m tmpfs $D || { echo "FAIL: tmpfs at $D"; exit 2; }
mkdir -p $D/data/images $D/run $D/manifests $D/cni
cp $H/busybox.oci.tar $D/data/images/ && cp $H/burst.yaml $H/guar.yaml $D/manifests/ || exit 2
"$BASALT" --config $H/basalt.yaml --data-dir $D/data --run-dir $D/run agent \
  --manifest-dir $D/manifests --kubelet-address 127.0.0.1:0 --pod-log-dir $D/logs --cni-conf-dir $D/cni \
  > $D/agent.log 2>&1 &
AGENT=$!
deadline=$(( $(date +%s) + $BASALT_VM_WAIT ))
fail() { echo "FAIL: $*"; echo "--- agent log"; tail -n 60 $D/agent.log; find $K -maxdepth 3 -type d; kill $AGENT; exit 1; }
bpod() { ls -d $K/burstable/pod* 2>/dev/null | head -n 1; }
gpod() { ls -d $K/pod* 2>/dev/null | head -n 1; }
# The container cgroups of a pod cgroup that hold a process: the containers are running inside it.
running() { [ -n "$1" ] || return 0; for d in "$1"/*/; do [ -n "$(cat "$d/cgroup.procs" 2>/dev/null)" ] && echo "$d"; done; }
# Polls until the command prints something (or, with `!`, nothing); shell sleeps only pace the poll.
until_out() { what="$1"; shift
  while [ -z "$("$@")" ]; do
    [ $(date +%s) -lt $deadline ] || fail "waiting for $what"
    kill -0 $AGENT 2>/dev/null || fail "the agent exited while waiting for $what"
    sleep 0.5
  done; }
until_gone() { what="$1"
  while [ -e "$2" ]; do [ $(date +%s) -lt $deadline ] || fail "waiting for $what to go"; sleep 0.5; done; }
both() { b=$(running "$(bpod)" | wc -l); g=$(running "$(gpod)" | wc -l); [ "$b" -ge 1 ] && [ "$g" -ge 2 ] && echo ok; }
until_out "both pods running in their pod cgroups" both
show() { for f in cpu.max cpu.weight memory.max memory.min memory.high; do echo "$1 $f $(cat "$2/$f")"; done; }
B=$(bpod); G=$(gpod)
show burstable "$B"; show guaranteed "$G"
for d in $(running "$B") $(running "$G"); do echo "container $(cat $d/memory.max) $(cat $d/cpu.max | tr ' ' /)"; done
rm $D/manifests/burst.yaml
until_gone "the burstable pod cgroup" "$B"; echo "gone burstable"
rm $D/manifests/guar.yaml
until_gone "the guaranteed pod cgroup" "$G"; echo "gone guaranteed"
kill -TERM $AGENT
while kill -0 $AGENT 2>/dev/null && [ -z "$(grep -s '^State:.*Z' /proc/$AGENT/status)" ]; do
  [ $(date +%s) -lt $deadline ] || fail "the agent did not stop on SIGTERM"; sleep 0.5; done
wait $AGENT; echo "agent exit $?"
"#;

/// cpu.weight for a cpu request, as kubelet and the OCI runtimes derive it: millicores → cpu.shares
/// (1024 per core, at least 2) → the v2 weight `1 + (shares - 2) * 9999 / 262142`.
fn weight(millicores: u64) -> u64 {
    let shares = (millicores * 1024 / 1000).max(2);
    1 + (shares - 2) * 9999 / 262142
}

#[test]
fn qos_pod_cgroups_on_cgroup_v2() {
    let vm = match TestVm::new() {
        Ok(vm) => vm,
        Err(VmError::Unavailable(why)) => {
            basalt_testsupport::vm_unavailable("qos_pod_cgroups_on_cgroup_v2", &why);
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let fx = basalt_testsupport::Fixtures::build().unwrap();
    let host = tempfile::Builder::new()
        .prefix("basalt-kubelet-vm-")
        .tempdir()
        .unwrap();
    let h = host.path();
    std::fs::copy(&fx.get("busybox").oci_archive, h.join("busybox.oci.tar")).unwrap();
    std::fs::write(h.join("burst.yaml"), BURST).unwrap();
    std::fs::write(h.join("guar.yaml"), GUARANTEED).unwrap();
    // An empty config of our own: the guest must not pick up the host's /etc/basalt/config.yaml.
    std::fs::write(h.join("basalt.yaml"), "{}\n").unwrap();
    std::fs::write(h.join("guest.sh"), GUEST).unwrap();
    let out = vm
        .memory_mb(1536)
        .timeout(Duration::from_secs(1500))
        .env("BASALT", env!("CARGO_BIN_EXE_basalt"))
        .env("BASALT_VM_HOST_DIR", h.to_str().unwrap())
        .env("BASALT_VM_WAIT", "900")
        .run(&[OsString::from("sh"), OsString::from("guest.sh")], h)
        .unwrap();
    let report = format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.exit_code, out.stdout, out.stderr
    );
    assert_eq!(out.exit_code, 0, "{report}");
    let mut files: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut containers: Vec<String> = Vec::new();
    for l in out.stdout.lines() {
        let w: Vec<&str> = l.splitn(3, ' ').collect();
        match w.as_slice() {
            ["container", rest @ ..] => containers.push(rest.join(" ")),
            [label @ ("burstable" | "guaranteed"), file, value] => {
                files.insert((label.to_string(), file.to_string()), value.to_string());
            }
            _ => {}
        }
    }
    let get = |label: &str, file: &str| {
        files
            .get(&(label.to_owned(), file.to_owned()))
            .unwrap_or_else(|| panic!("{label} {file} not printed\n{report}"))
            .as_str()
    };
    // Burstable: the pod's limits are its container's; the weight comes from the request.
    assert_eq!(get("burstable", "cpu.max"), "30000 100000", "{report}");
    assert_eq!(get("burstable", "memory.max"), (64u64 << 20).to_string());
    assert_eq!(get("burstable", "cpu.weight"), weight(100).to_string());
    // Guaranteed: both containers summed.
    assert_eq!(get("guaranteed", "cpu.max"), "30000 100000", "{report}");
    assert_eq!(get("guaranteed", "memory.max"), (64u64 << 20).to_string());
    assert_eq!(get("guaranteed", "cpu.weight"), weight(300).to_string());
    // No memory protection or throttling at the pod level (upstream sets them only under MemoryQoS).
    for label in ["burstable", "guaranteed"] {
        assert_eq!(get(label, "memory.min"), "0", "{report}");
        assert_eq!(get(label, "memory.high"), "max", "{report}");
    }
    // Each container runs inside its pod cgroup with its own limits.
    containers.sort();
    let mut want = vec![
        format!("{} 30000/100000", 64u64 << 20),
        format!("{} 20000/100000", 48u64 << 20),
        format!("{} 10000/100000", 16u64 << 20),
    ];
    want.sort();
    assert_eq!(containers, want, "{report}");
    // Removing a manifest removes its pod cgroup; the agent then stops cleanly.
    assert!(out.stdout.contains("gone burstable\n"), "{report}");
    assert!(out.stdout.contains("gone guaranteed\n"), "{report}");
    assert!(out.stdout.contains("agent exit 0\n"), "{report}");
}

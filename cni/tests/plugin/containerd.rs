//! Debian's containerd (`ctr run --cni`) using our plugin.

use std::path::Path;

use serde_json::json;

use crate::common::*;
use crate::support::*;

/// Debian's containerd runs a `ctr run --cni` container through our plugin, and the container sees its
/// address; `ctr run --rm` then DELs and nothing is left. Everything runs in the node namespace (entered
/// with nsenter: `ip netns exec` would remount /sys and hide the cgroup mounts runc needs) and in a
/// private mount namespace where /etc (a copy), /opt, /run/containerd and /var/lib/cni are replaced, so
/// the host's CNI directories and containerd state are never touched.
pub fn containerd_ctr_run_cni() {
    let fixtures = basalt_testsupport::Fixtures::build().expect("fixtures");
    let archive = &fixtures.get("busybox").docker_archive;
    let t = std::path::PathBuf::from(format!("/tmp/bcctr-{}", pid()));
    let _ = std::fs::remove_dir_all(&t);
    std::fs::create_dir_all(&t).unwrap();
    let _tmp_guard = TempDir(t.clone());
    let node = Netns::new(&format!("bcn-ctr-{}", pid()));
    let exe = std::env::current_exe().unwrap();
    let data = t.join("ipam");
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "ctrnet",
        "plugins": [{"type": "bridge", "bridge": "br-ctr", "isGateway": true, "isDefaultGateway": true,
                      "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.199.4.0/24"}]]}}]
    });
    std::fs::write(t.join("10-basalt.conflist"), conflist.to_string()).unwrap();
    std::fs::write(
        t.join("config.toml"),
        format!(
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}/opt\"\n",
            t.display()
        ),
    )
    .unwrap();
    let script = format!(
        r#"set -e
export T={t}
mkdir -p $T/etc && mount -t tmpfs tmpfs $T/etc && cp -a /etc/. $T/etc/
mkdir -p $T/etc/cni/net.d && cp $T/10-basalt.conflist $T/etc/cni/net.d/ && mount --bind $T/etc /etc
mount -t tmpfs tmpfs /opt && mkdir -p /opt/cni/bin && ln -s {exe} /opt/cni/bin/bridge
# The shim keeps runc state and sockets under /run/containerd whatever --state says: keep them private.
mkdir -p /run/containerd && mount -t tmpfs tmpfs /run/containerd
# ctr's libcni caches results under /var/lib/cni: private too.
mkdir -p /var/lib/cni && mount -t tmpfs tmpfs /var/lib/cni
exec nsenter --net=/var/run/netns/{node} sh -c '
  containerd --root $T/root --state $T/state --address $T/sock --config $T/config.toml >$T/containerd.log 2>&1 &
  CPID=$!
  trap "kill $CPID; wait $CPID" EXIT
  i=0; while [ ! -S $T/sock ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
  ctr -a $T/sock -n basalt image import --snapshotter native {archive} >/dev/null
  ctr -a $T/sock -n basalt run --rm --cni --snapshotter native docker.io/library/busybox:latest basalt-cni-ctr ip -o -4 addr show eth0
'
"#,
        t = t.display(),
        exe = exe.display(),
        node = node.name,
        archive = archive.display()
    );
    let run_containerd_existed = Path::new("/run/containerd").exists();
    let var_lib_cni_existed = Path::new("/var/lib/cni").exists();
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(t.join("containerd.log")).unwrap_or_default();
    if !run_containerd_existed {
        // Only the empty mount point is left on the host side; remove it.
        let _ = std::fs::remove_dir("/run/containerd");
    }
    if !var_lib_cni_existed {
        let _ = std::fs::remove_dir("/var/lib/cni");
    }
    assert!(
        out.status.success() && stdout.contains("inet 10.199.4."),
        "ctr run --cni: {stdout}\n{}\ncontainerd log tail: {}",
        String::from_utf8_lossy(&out.stderr),
        log.lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );
    // ctr --rm ran DEL: nothing left.
    assert!(node.veths().is_empty(), "veths left: {:?}", node.veths());
    assert!(
        reservations(&data.join("ctrnet")).is_empty(),
        "reservation left"
    );
}

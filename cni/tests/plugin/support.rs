//! Helpers shared by the test cases: configurations, invocations, error decoding, namespace threads.

use std::path::Path;

use serde_json::json;

use crate::common::*;

pub fn pid() -> u32 {
    std::process::id()
}

pub fn bridge_conf(
    version: &str,
    name: &str,
    br: &str,
    data: &Path,
    extra: serde_json::Value,
) -> String {
    let mut c = json!({
        "cniVersion": version,
        "name": name,
        "type": "bridge",
        "bridge": br,
        "isGateway": true,
        "isDefaultGateway": true,
        "ipam": {
            "type": "host-local",
            "dataDir": data,
            "ranges": [[{"subnet": "10.199.0.0/24"}]]
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        if k == "ipam" {
            for (ik, iv) in v.as_object().unwrap() {
                c["ipam"][ik] = iv.clone();
            }
        } else {
            c[k] = v.clone();
        }
    }
    c.to_string()
}

pub fn inv<'a>(
    plugin: &'a Path,
    node: &'a Netns,
    command: &'a str,
    id: &'a str,
    ns: Option<&'a Path>,
    conf: &'a str,
) -> Invocation<'a> {
    Invocation {
        plugin,
        node,
        command,
        container_id: id,
        netns: ns,
        ifname: "eth0",
        conf,
        cni_path: None,
    }
}

pub fn error_of(out: &std::process::Output) -> (u64, String) {
    assert!(
        !out.status.success(),
        "expected failure, got {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("error JSON on stdout");
    (
        v["code"].as_u64().unwrap(),
        v["msg"].as_str().unwrap().to_string(),
    )
}

/// Runs `f` on a thread inside `ns`: the caller's children then start in that namespace, never the host's.
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(ns.path()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this short-lived thread only, with a descriptor that stays open meanwhile.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0);
            f()
        })
        .join()
        .unwrap()
    })
}

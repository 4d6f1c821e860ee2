//! The libcni-like caller: config loading, chains, capabilities, cache, timeouts, reference plugins.

use std::path::Path;

use serde_json::json;

use crate::common::*;
use crate::support::*;

/// Conflists load lowest name first; invalid ones are skipped.
pub fn caller_load_dir() {
    let tmp = TempDir::new("confdir");
    let d = &tmp.0;
    std::fs::write(
        d.join("30-b.conflist"),
        r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("10-bad.conflist"),
        r#"{"cniVersion":"1.0.0","name":"bad","plugins":[{}]}"#,
    )
    .unwrap();
    std::fs::write(d.join("05-notjson.conf"), "{").unwrap();
    std::fs::write(
        d.join("20-a.conf"),
        r#"{"cniVersion":"0.4.0","name":"a","type":"bridge"}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("40-old.conf"),
        r#"{"cniVersion":"0.2.0","name":"old","type":"bridge"}"#,
    )
    .unwrap();
    std::fs::write(d.join("README.md"), "not a config").unwrap();
    let lists = basalt_cni::caller::load_dir(d).unwrap();
    let names: Vec<_> = lists.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let err = basalt_cni::caller::NetworkConfigList::from_bytes(
        Path::new("x"),
        br#"{"name":"x","plugins":[{}]}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("plugins[0].type"), "{err}");
}

/// A hung plugin is killed at the deadline and reported as such.
pub fn caller_timeout() {
    let tmp = TempDir::new("hang");
    let pidfile = tmp.0.join("pid");
    let script = tmp.0.join("hang");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep 600 &\necho $! > {p}.child\necho $$ > {p}\nexec sleep 600\n",
            p = pidfile.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&script).unwrap().permissions(),
        0o755,
    );
    sh(&format!("chmod 755 {}", script.display()));
    let cni = basalt_cni::caller::Cni {
        plugin_dirs: vec![tmp.0.clone()],
        cache_dir: tmp.0.join("cache"),
        timeout: std::time::Duration::from_secs(2),
    };
    let net = basalt_cni::caller::NetworkConfigList::from_bytes(
        Path::new("hang.conflist"),
        br#"{"cniVersion":"1.0.0","name":"hang","plugins":[{"type":"hang"}]}"#,
    )
    .unwrap();
    let rt = basalt_cni::caller::RuntimeConf {
        container_id: "c".into(),
        netns: "/nonexistent".into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    let mut bad = rt.clone();
    bad.container_id = "../../etc".into();
    let err = cni.add(&net, &bad).unwrap_err();
    assert!(err.to_string().contains("container ID"), "{err}");
    assert!(
        !pidfile.exists(),
        "the plugin ran for an invalid container ID"
    );
    let err = cni.add(&net, &rt).unwrap_err();
    assert!(
        matches!(err, basalt_cni::caller::CallerError::Timeout { .. }),
        "{err}"
    );
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_for(10, || !Path::new(&format!("/proc/{pid}")).exists()),
        "hung plugin {pid} still alive"
    );
    let child: u32 = std::fs::read_to_string(format!("{}.child", pidfile.display()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_for(10, || !Path::new(&format!("/proc/{child}")).exists()),
        "the hung plugin's child {child} still alive"
    );
    assert!(cni.cached_result(&net, &rt).is_none());
}

/// The caller passes CNI_ARGS with the Kubernetes pod identity, and runtimeConfig only for declared
/// capabilities.
pub fn caller_args_and_capabilities() {
    let tmp = TempDir::new("args");
    let dump = tmp.0.join("dump");
    let script = tmp.0.join("dumper");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$CNI_COMMAND $CNI_ARGS\" >> {d}.env\ncat >> {d}.stdin\necho >> {d}.stdin\necho '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"192.0.2.9/24\"}}]}}'\n",
            d = dump.display()
        ),
    )
    .unwrap();
    sh(&format!("chmod 755 {}", script.display()));
    let cni = basalt_cni::caller::Cni {
        plugin_dirs: vec![tmp.0.clone()],
        cache_dir: tmp.0.join("cache"),
        timeout: std::time::Duration::from_secs(10),
    };
    let net = basalt_cni::caller::NetworkConfigList::from_bytes(
        Path::new("dump.conflist"),
        br#"{"cniVersion":"1.0.0","name":"dump","plugins":[
            {"type":"dumper","capabilities":{"portMappings":true}},
            {"type":"dumper","capabilities":{"bandwidth":true}}]}"#,
    )
    .unwrap();
    let mut rt = basalt_cni::caller::RuntimeConf {
        container_id: "c1".into(),
        netns: "/var/run/netns/x".into(),
        ifname: "eth0".into(),
        ..Default::default()
    }
    .with_pod("kube-system", "coredns-1", "c1", "uid-42");
    rt.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 53, "containerPort": 53}]),
    );
    let res = cni.add(&net, &rt).unwrap();
    assert_eq!(res["ips"][0]["address"], "192.0.2.9/24");
    cni.check(&net, &rt).unwrap();
    cni.del(&net, &rt).unwrap();
    let env = std::fs::read_to_string(tmp.0.join("dump.env")).unwrap();
    assert!(
        env.lines().all(|l| l.contains("K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=uid-42")),
        "{env}"
    );
    let commands: Vec<&str> = env.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(commands, ["ADD", "ADD", "CHECK", "CHECK", "DEL", "DEL"]);
    let stdins: Vec<serde_json::Value> = std::fs::read_to_string(tmp.0.join("dump.stdin"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        stdins[0]["runtimeConfig"]["portMappings"][0]["hostPort"],
        53
    );
    assert!(
        stdins[1].get("runtimeConfig").is_none(),
        "undeclared capability passed: {}",
        stdins[1]
    );
    assert_eq!(stdins[1]["prevResult"]["ips"][0]["address"], "192.0.2.9/24");
    assert_eq!(stdins[0]["name"], "dump");
    // CHECK and DEL get the cached result.
    assert_eq!(stdins[2]["prevResult"]["ips"][0]["address"], "192.0.2.9/24");
    assert_eq!(stdins[5]["prevResult"]["ips"][0]["address"], "192.0.2.9/24");
    assert!(cni.cached_result(&net, &rt).is_none());
}

/// Our caller drives Debian's reference bridge + host-local + portmap: two pods ping, a hostPort reaches
/// a pod from an outside namespace, CHECK passes, DEL cleans up (cache, reservations, veths).
pub fn caller_reference_plugins() {
    let tmp = TempDir::new("refcall");
    let node = Netns::new(&format!("bcn-ref-{}", pid()));
    let outside = Netns::new(&format!("bco-ref-{}", pid()));
    let a = Netns::new(&format!("bcp-ra-{}", pid()));
    let b = Netns::new(&format!("bcp-rb-{}", pid()));
    sh(&format!(
        "ip -n {} link add up0 type veth peer name up1 netns {}",
        node.name, outside.name
    ));
    node.exec("ip addr add 192.168.252.1/24 dev up0");
    node.exec("ip link set up0 up");
    outside.exec("ip addr add 192.168.252.2/24 dev up1");
    outside.exec("ip link set up1 up");
    let data = tmp.0.join("ipam");
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "refnet",
        "plugins": [
            {"type": "bridge", "bridge": "br-ref", "isGateway": true, "isDefaultGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.199.2.0/24"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    let dir = tmp.0.join("net.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("10-ref.conflist"), conflist.to_string()).unwrap();
    let net = basalt_cni::caller::load_dir(&dir).unwrap().remove(0);
    let cni = basalt_cni::caller::Cni {
        plugin_dirs: vec!["/usr/lib/cni".into()],
        cache_dir: tmp.0.join("cache"),
        timeout: std::time::Duration::from_secs(30),
    };
    let rt = |ns: &Netns, id: &str| {
        let mut r = basalt_cni::caller::RuntimeConf {
            container_id: id.into(),
            netns: ns.path(),
            ifname: "eth0".into(),
            ..Default::default()
        }
        .with_pod("default", id, id, &format!("uid-{id}"));
        r.capability_args.insert(
            "portMappings".into(),
            json!([{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]),
        );
        r
    };
    let (rta, rtb) = (rt(&a, "refa"), rt(&b, "refb"));
    let ra = in_netns(&node, || cni.add(&net, &rta)).unwrap();
    let mut rtb_noport = rtb.clone();
    rtb_noport.capability_args.clear();
    let rb = in_netns(&node, || cni.add(&net, &rtb_noport)).unwrap();
    let (ipa, ipb) = (
        addr_only(&result_ips(&ra)[0]),
        addr_only(&result_ips(&rb)[0]),
    );
    assert_ne!(ipa, ipb);
    assert!(
        a.exec_ok(&format!("busybox ping -c1 -W2 {ipb}")),
        "pods do not reach each other"
    );
    assert!(a.exec_ok("busybox ping -c1 -W2 10.199.2.1"), "gateway");
    assert_eq!(cni.cached_result(&net, &rta).as_ref(), Some(&ra));
    // CHECK of an attachment without port mappings: Debian's portmap 1.1.1 fails CHECK of an IPv4-only
    // mapping looking for an IPv6 chain it never made (a reference-plugin bug, not ours).
    in_netns(&node, || cni.check(&net, &rtb_noport)).unwrap();
    // hostPort through the reference portmap.
    let www = tmp.0.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "ref pod\n").unwrap();
    let mut httpd = std::process::Command::new("ip")
        .args([
            "netns", "exec", &a.name, "busybox", "httpd", "-f", "-p", "80", "-h",
        ])
        .arg(&www)
        .spawn()
        .unwrap();
    let got = wait_for(10, || {
        outside
            .exec_ok("timeout 5 busybox wget -q -O /dev/null http://192.168.252.1:8081/index.html")
    });
    let _ = httpd.kill();
    let _ = httpd.wait();
    assert!(got, "hostPort via reference portmap failed");
    in_netns(&node, || cni.del(&net, &rta)).unwrap();
    in_netns(&node, || cni.del(&net, &rtb_noport)).unwrap();
    // DEL is idempotent without a cache.
    in_netns(&node, || cni.del(&net, &rta)).unwrap();
    assert!(cni.cached_result(&net, &rta).is_none());
    assert!(node.veths() == ["up0"], "veths left: {:?}", node.veths());
    assert!(reservations(&data.join("refnet")).is_empty());
}

/// Our caller chains our bridge with the reference `tuning` plugin (which reads our prevResult).
pub fn caller_chains_our_bridge() {
    let tmp = TempDir::new("chain");
    let bin = our_plugin_dir(&tmp);
    let node = Netns::new(&format!("bcn-chain-{}", pid()));
    let a = Netns::new(&format!("bcp-ch-{}", pid()));
    let data = tmp.0.join("ipam");
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "chainnet",
        "plugins": [
            {"type": "bridge", "bridge": "br-chain", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.199.3.0/24"}]]}},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}
        ]
    });
    let net = basalt_cni::caller::NetworkConfigList::from_bytes(
        Path::new("chain"),
        conflist.to_string().as_bytes(),
    )
    .unwrap();
    let cni = basalt_cni::caller::Cni {
        plugin_dirs: vec![bin, "/usr/lib/cni".into()],
        cache_dir: tmp.0.join("cache"),
        timeout: std::time::Duration::from_secs(30),
    };
    let rt = basalt_cni::caller::RuntimeConf {
        container_id: "chain-a".into(),
        netns: a.path(),
        ifname: "eth0".into(),
        ..Default::default()
    }
    .with_pod("ns1", "pod1", "chain-a", "uid-1");
    let res = in_netns(&node, || cni.add(&net, &rt)).unwrap();
    assert_eq!(res["interfaces"][2]["name"], "eth0", "{res}");
    assert_eq!(
        a.exec("cat /proc/sys/net/ipv4/conf/eth0/arp_notify").trim(),
        "1"
    );
    in_netns(&node, || cni.check(&net, &rt)).unwrap();
    in_netns(&node, || cni.del(&net, &rt)).unwrap();
    assert!(node.veths().is_empty());
    assert!(reservations(&data.join("chainnet")).is_empty());
    assert!(!node.ruleset().contains("chain-a"));
}

/// STATUS and GC through the caller (1.1.0 list with our bridge): GC releases the address, rules and
/// cached result of an attachment the runtime no longer knows, and keeps the valid one.
pub fn caller_gc_status() {
    let tmp = TempDir::new("cgc");
    let bin = our_plugin_dir(&tmp);
    let node = Netns::new(&format!("bcn-cgc-{}", pid()));
    let a = Netns::new(&format!("bcp-cga-{}", pid()));
    let b = Netns::new(&format!("bcp-cgb-{}", pid()));
    let data = tmp.0.join("ipam");
    let conflist = json!({
        "cniVersion": "1.1.0",
        "name": "cgcnet",
        "plugins": [{"type": "bridge", "bridge": "br-cgc", "isGateway": true, "ipMasq": true,
                     "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.199.7.0/24"}]]}}]
    });
    let net = basalt_cni::caller::NetworkConfigList::from_bytes(
        Path::new("cgc"),
        conflist.to_string().as_bytes(),
    )
    .unwrap();
    let cni = basalt_cni::caller::Cni {
        plugin_dirs: vec![bin],
        cache_dir: tmp.0.join("cache"),
        timeout: std::time::Duration::from_secs(30),
    };
    let rt = |ns: &Netns, id: &str| basalt_cni::caller::RuntimeConf {
        container_id: id.into(),
        netns: ns.path(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    let (rta, rtb) = (rt(&a, "gc-a"), rt(&b, "gc-b"));
    in_netns(&node, || cni.status(&net)).unwrap();
    in_netns(&node, || cni.add(&net, &rta)).unwrap();
    in_netns(&node, || cni.add(&net, &rtb)).unwrap();
    drop(b);
    in_netns(&node, || cni.gc(&net, &[("gc-a".into(), "eth0".into())])).unwrap();
    assert_eq!(reservations(&data.join("cgcnet")).len(), 1);
    assert!(cni.cached_result(&net, &rta).is_some());
    assert!(cni.cached_result(&net, &rtb).is_none());
    let rules = node.ruleset();
    assert!(rules.contains("gc-a") && !rules.contains("gc-b"), "{rules}");
    in_netns(&node, || cni.del(&net, &rta)).unwrap();
    // gc-b's veth goes with its namespace, which the kernel tears down asynchronously.
    assert!(
        wait_for(10, || node.veths().is_empty()),
        "veths left: {:?}",
        node.veths()
    );
    assert!(reservations(&data.join("cgcnet")).is_empty());
}

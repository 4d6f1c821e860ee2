//! The `bridge` and `host-local` plugins driven directly, as a runtime would.

use std::collections::HashSet;
use std::path::Path;

use serde_json::json;

use crate::common::*;
use crate::support::*;

/// VERSION, and errors with the spec's codes and a message naming the bad field.
pub fn version_and_errors() {
    let tmp = TempDir::new("errors");
    let bin = our_plugin_dir(&tmp);
    let node = Netns::new(&format!("bcn-err-{}", pid()));
    let bridge = bin.join("bridge");
    let v = run_ok(&inv(
        &bridge,
        &node,
        "VERSION",
        "",
        None,
        r#"{"cniVersion":"1.0.0"}"#,
    ));
    assert_eq!(v["cniVersion"], "1.0.0");
    let sv: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(sv, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);

    let pod = Netns::new(&format!("bcp-err-{}", pid()));
    let p = pod.path();
    let data = tmp.0.join("ipam");
    let cases: Vec<(String, u64, &str)> = vec![
        (
            bridge_conf("0.2.0", "n", "brx", &data, json!({})),
            1,
            "cniVersion",
        ),
        (r#"{"cniVersion":"1.0.0","#.into(), 6, "JSON"),
        (
            json!({"cniVersion":"1.0.0","type":"bridge"}).to_string(),
            7,
            "name",
        ),
        (
            bridge_conf("1.0.0", "n", "a-very-long-bridge-name", &data, json!({})),
            7,
            "bridge",
        ),
        (
            bridge_conf(
                "1.0.0",
                "n",
                "brx",
                &data,
                json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/33"}]]}}),
            ),
            7,
            "subnet",
        ),
        (
            bridge_conf(
                "1.0.0",
                "n",
                "brx",
                &data,
                json!({"ipam": {"type": "dhcp"}}),
            ),
            2,
            "ipam.type",
        ),
        (
            bridge_conf("1.0.0", "n", "brx", &data, json!({"mtu": 10})),
            7,
            "mtu",
        ),
    ];
    for (conf, code, needle) in &cases {
        let out = run_plugin(&inv(&bridge, &node, "ADD", "c1", Some(&p), conf));
        let (got, msg) = error_of(&out);
        assert_eq!(got, *code, "conf {conf}: msg {msg}");
        assert!(
            msg.contains(needle),
            "message {msg:?} should name {needle:?}"
        );
    }
    let conf = bridge_conf("1.0.0", "n", "brx", &data, json!({}));
    let mut i = inv(&bridge, &node, "ADD", "c1", None, &conf);
    let (code, msg) = error_of(&run_plugin(&i));
    assert_eq!((code, msg.contains("CNI_NETNS")), (4, true), "{msg}");
    i.netns = Some(Path::new("/var/run/netns/does-not-exist-basalt"));
    assert_eq!(error_of(&run_plugin(&i)).0, 4);
    // CHECK needs 0.4.0.
    let old = bridge_conf(
        "0.3.1",
        "n",
        "brx",
        &data,
        json!({"prevResult": {"cniVersion": "0.3.1"}}),
    );
    let (code, msg) = error_of(&run_plugin(&inv(
        &bridge,
        &node,
        "CHECK",
        "c1",
        Some(&p),
        &old,
    )));
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("0.4.0"), "{msg}");
    // An interface of that name already in the pod (another network's): refused, and left alone.
    pod.exec("ip link add eth0 type veth peer name eth0peer");
    let ok_conf = bridge_conf("1.0.0", "n", "brx", &data, json!({}));
    let (code, msg) = error_of(&run_plugin(&inv(
        &bridge,
        &node,
        "ADD",
        "c1",
        Some(&p),
        &ok_conf,
    )));
    assert_eq!(code, 4, "{msg}");
    assert!(msg.contains("CNI_IFNAME"), "{msg}");
    assert!(
        pod.exec("ip -o link show eth0").contains("eth0"),
        "the existing eth0 was removed"
    );
    pod.exec("ip link del eth0");
    // Nothing may be left by the failed ADDs.
    assert!(node.veths().is_empty());
    assert!(reservations(&data.join("n")).is_empty());
}

/// Two pods on one bridge reach each other and the gateway; CHECK passes; DEL is idempotent (also when the
/// netns is gone) and leaves nothing behind. Also result formats for 0.3.1 and 1.0.0.
pub fn two_pods_ping() {
    let tmp = TempDir::new("ping");
    let bin = our_plugin_dir(&tmp);
    let bridge = bin.join("bridge");
    let node = Netns::new(&format!("bcn-ping-{}", pid()));
    let a = Netns::new(&format!("bcp-a-{}", pid()));
    let b = Netns::new(&format!("bcp-b-{}", pid()));
    let data = tmp.0.join("ipam");
    let conf1 = bridge_conf(
        "1.0.0",
        "pingnet",
        "br-ping",
        &data,
        json!({"hairpinMode": true, "mtu": 1400}),
    );
    let conf03 = bridge_conf(
        "0.3.1",
        "pingnet",
        "br-ping",
        &data,
        json!({"hairpinMode": true, "mtu": 1400}),
    );
    let (pa, pb) = (a.path(), b.path());
    let ra = run_ok(&inv(&bridge, &node, "ADD", "ctr-a", Some(&pa), &conf1));
    let rb = run_ok(&inv(&bridge, &node, "ADD", "ctr-b", Some(&pb), &conf03));
    assert_eq!(ra["cniVersion"], "1.0.0");
    assert!(
        ra["ips"][0].get("version").is_none(),
        "1.0 results carry no ip version"
    );
    assert_eq!(rb["cniVersion"], "0.3.1");
    assert_eq!(rb["ips"][0]["version"], "4");
    assert_eq!(ra["interfaces"][2]["name"], "eth0");
    assert_eq!(ra["interfaces"][2]["sandbox"], pa.display().to_string());
    let (ipa, ipb) = (
        addr_only(&result_ips(&ra)[0]),
        addr_only(&result_ips(&rb)[0]),
    );
    assert_ne!(ipa, ipb);
    assert_eq!(ra["ips"][0]["gateway"], "10.199.0.1");
    // The reservation file has the reference layout.
    assert_eq!(
        std::fs::read_to_string(data.join("pingnet").join(&ipa)).unwrap(),
        "ctr-a\r\neth0"
    );
    assert!(
        a.exec_ok(&format!("busybox ping -c1 -W2 {ipb}")),
        "pod a cannot reach pod b"
    );
    assert!(
        b.exec_ok(&format!("busybox ping -c1 -W2 {ipa}")),
        "pod b cannot reach pod a"
    );
    assert!(
        a.exec_ok("busybox ping -c1 -W2 10.199.0.1"),
        "pod a cannot reach the gateway"
    );
    assert!(a.exec("ip route show default").contains("via 10.199.0.1"));
    assert!(a.exec("ip link show eth0").contains("mtu 1400"), "pod MTU");
    assert!(
        node.exec("ip link show br-ping").contains("mtu 1400"),
        "bridge MTU"
    );
    let ports = node.exec("ip -d link show master br-ping");
    assert!(ports.contains("hairpin on"), "{ports}");

    // CHECK passes with the ADD result, and fails when the pod's address is gone.
    let mut chk: serde_json::Value = serde_json::from_str(&conf1).unwrap();
    chk["prevResult"] = ra.clone();
    let chk = chk.to_string();
    run_ok(&inv(&bridge, &node, "CHECK", "ctr-a", Some(&pa), &chk));
    a.exec("ip route del default");
    let (code, msg) = error_of(&run_plugin(&inv(
        &bridge,
        &node,
        "CHECK",
        "ctr-a",
        Some(&pa),
        &chk,
    )));
    assert_eq!(code, 103, "{msg}");
    assert!(msg.contains("route to 0.0.0.0/0"), "{msg}");
    a.exec("ip route add default via 10.199.0.1");
    run_ok(&inv(&bridge, &node, "CHECK", "ctr-a", Some(&pa), &chk));
    a.exec(&format!("ip addr del {} dev eth0", result_ips(&ra)[0]));
    let (code, msg) = error_of(&run_plugin(&inv(
        &bridge,
        &node,
        "CHECK",
        "ctr-a",
        Some(&pa),
        &chk,
    )));
    assert_eq!(code, 103, "{msg}");

    // DEL, twice; then DEL of b after its netns is gone.
    run_ok(&inv(&bridge, &node, "DEL", "ctr-a", Some(&pa), &conf1));
    run_ok(&inv(&bridge, &node, "DEL", "ctr-a", Some(&pa), &conf1));
    drop(b);
    run_ok(&inv(&bridge, &node, "DEL", "ctr-b", Some(&pb), &conf03));
    run_ok(&inv(&bridge, &node, "DEL", "ctr-b", None, &conf03));
    assert!(node.veths().is_empty(), "veths left: {:?}", node.veths());
    assert!(reservations(&data.join("pingnet")).is_empty());
    assert!(a
        .exec("ip -o link show")
        .lines()
        .all(|l| !l.contains("eth0")));
}

/// ipMasq: a pod reaches an "outside" namespace that has no route back to the pod subnet; hostPort DNAT
/// reaches a listener in the pod from outside; IPv6 works alongside IPv4. DEL removes every nft rule.
pub fn masq_hostport_dual_stack() {
    let tmp = TempDir::new("masq");
    let bin = our_plugin_dir(&tmp);
    let bridge = bin.join("bridge");
    let node = Netns::new(&format!("bcn-masq-{}", pid()));
    let outside = Netns::new(&format!("bco-masq-{}", pid()));
    let a = Netns::new(&format!("bcp-ma-{}", pid()));
    let b = Netns::new(&format!("bcp-mb-{}", pid()));
    sh(&format!(
        "ip -n {} link add up0 type veth peer name up1 netns {}",
        node.name, outside.name
    ));
    node.exec("ip addr add 192.168.251.1/24 dev up0");
    node.exec("ip link set up0 up");
    outside.exec("ip addr add 192.168.251.2/24 dev up1");
    outside.exec("ip link set up1 up");
    node.exec("ip addr add fd00:251::1/64 dev up0 nodad");
    outside.exec("ip addr add fd00:251::2/64 dev up1 nodad");
    let data = tmp.0.join("ipam");
    let conf = bridge_conf(
        "1.1.0",
        "masqnet",
        "br-masq",
        &data,
        json!({
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {"ranges": [[{"subnet": "10.199.1.0/24"}], [{"subnet": "fd00:199:1::/64"}]]},
            "runtimeConfig": {"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 8082, "containerPort": 80, "protocol": "tcp", "hostIP": "192.168.251.1"},
                {"hostPort": 8083, "containerPort": 80, "protocol": "tcp", "hostIP": "192.168.99.1"}
            ]}
        }),
    );
    let (pa, pb) = (a.path(), b.path());
    let ra = run_ok(&inv(&bridge, &node, "ADD", "ctr-ma", Some(&pa), &conf));
    let conf_b = bridge_conf(
        "1.1.0",
        "masqnet",
        "br-masq",
        &data,
        json!({"ipMasq": true, "ipam": {"ranges": [[{"subnet": "10.199.1.0/24"}], [{"subnet": "fd00:199:1::/64"}]]}}),
    );
    let rb = run_ok(&inv(&bridge, &node, "ADD", "ctr-mb", Some(&pb), &conf_b));
    let ips_a = result_ips(&ra);
    let ips_b = result_ips(&rb);
    assert_eq!(ips_a.len(), 2, "dual stack gives two addresses: {ra}");
    assert!(ips_a[1].starts_with("fd00:199:1::"), "{ips_a:?}");
    // IPv6 between pods and to the gateway.
    assert!(
        a.exec_ok(&format!("busybox ping -6 -c1 -W2 {}", addr_only(&ips_b[1]))),
        "v6 pod to pod"
    );
    assert!(
        a.exec_ok("busybox ping -6 -c1 -W2 fd00:199:1::1"),
        "v6 gateway"
    );
    assert!(a.exec("ip -6 route show default").contains("fd00:199:1::1"));
    // Masquerade: outside has no route to 10.199.1.0/24, so only a masqueraded ping can be answered.
    assert!(!outside.exec("ip route").contains("10.199.1"));
    assert!(
        a.exec_ok("busybox ping -c1 -W2 192.168.251.2"),
        "pod cannot reach outside through masquerade"
    );
    assert!(!outside.exec("ip -6 route").contains("fd00:199:1"));
    assert!(
        a.exec_ok("busybox ping -6 -c1 -W2 fd00:251::2"),
        "pod cannot reach outside over IPv6 masquerade"
    );
    // hostPort: outside -> node:8080 -> pod a:80.
    let www = tmp.0.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from pod a\n").unwrap();
    // busybox httpd on pod a's port 80, serving `www`.
    let serve_in_a = || {
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &a.name, "busybox", "httpd", "-f", "-p", "80", "-h",
            ])
            .arg(&www)
            .spawn()
            .unwrap()
    };
    let mut httpd = serve_in_a();
    let got = wait_for(10, || {
        outside
            .exec_ok("timeout 5 busybox wget -q -O /dev/null http://192.168.251.1:8080/index.html")
    });
    // hostIP-restricted mappings: one to the node's address works, one to another address does not match.
    let via_host_ip = got
        && outside
            .exec_ok("timeout 5 busybox wget -q -O /dev/null http://192.168.251.1:8082/index.html");
    let via_other_ip = outside
        .exec_ok("timeout 5 busybox wget -q -O /dev/null http://192.168.251.1:8083/index.html");
    let body = if got {
        outside.exec("timeout 5 busybox wget -q -O - http://192.168.251.1:8080/index.html")
    } else {
        String::new()
    };
    let _ = httpd.kill();
    let _ = httpd.wait();
    assert!(
        got && body.contains("hello from pod a"),
        "hostPort did not reach the pod: {body:?}\n{}",
        node.ruleset()
    );
    assert!(via_host_ip, "hostIP mapping to the node's address failed");
    assert!(
        !via_other_ip,
        "a mapping for hostIP 192.168.99.1 answered on 192.168.251.1"
    );
    assert!(node.ruleset().contains("basalt-cni ctr-ma eth0"));
    // The node itself reaches the hostPort on its own address (output chain).
    let mut httpd = serve_in_a();
    let from_node = wait_for(10, || {
        node.exec_ok("timeout 5 busybox wget -q -O /dev/null http://192.168.251.1:8080/index.html")
    });
    let _ = httpd.kill();
    let _ = httpd.wait();
    assert!(from_node, "hostPort from the node itself failed");
    // And on the node's loopback, as clients test `http://127.0.0.1:<hostPort>` (route_localnet on the
    // bridge, the loopback source masqueraded); and hairpin, the pod through its own hostPort on the node's
    // address (its source masqueraded, or it would answer itself over lo).
    let mut httpd = serve_in_a();
    let from_loopback = wait_for(10, || {
        node.exec_ok("timeout 5 busybox wget -q -O /dev/null http://127.0.0.1:8080/index.html")
    });
    let hairpin =
        a.exec_ok("timeout 5 busybox wget -q -O /dev/null http://192.168.251.1:8080/index.html");
    let _ = httpd.kill();
    let _ = httpd.wait();
    assert!(
        from_loopback,
        "hostPort on 127.0.0.1 failed\n{}",
        node.ruleset()
    );
    assert!(hairpin, "hostPort from the pod itself (hairpin) failed");
    // Port 8080 on another host is not hijacked: pod b reaches the outside's own 8080.
    let www_out = tmp.0.join("www-out");
    std::fs::create_dir_all(&www_out).unwrap();
    std::fs::write(www_out.join("index.html"), "outside\n").unwrap();
    let mut httpd_out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &outside.name,
            "busybox",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
        ])
        .arg(&www_out)
        .spawn()
        .unwrap();
    let mut body = String::new();
    let got = wait_for(10, || {
        body = b.exec(
            "sh -c 'timeout 5 busybox wget -q -O - http://192.168.251.2:8080/index.html || true'",
        );
        !body.is_empty()
    });
    let _ = httpd_out.kill();
    let _ = httpd_out.wait();
    assert!(
        got && body.contains("outside"),
        "pod b's connection to outside:8080 was redirected: {body:?}"
    );

    run_ok(&inv(&bridge, &node, "DEL", "ctr-ma", Some(&pa), &conf));
    let rules = node.ruleset();
    assert!(!rules.contains("ctr-ma"), "rules of a left: {rules}");
    assert!(rules.contains("ctr-mb"), "rules of b must stay: {rules}");
    run_ok(&inv(&bridge, &node, "DEL", "ctr-mb", Some(&pb), &conf_b));
    let rules = node.ruleset();
    assert!(
        !rules.contains("masquerade") && !rules.contains("dnat"),
        "rules left: {rules}"
    );
    assert!(node.veths() == ["up0"], "veths left: {:?}", node.veths());
    assert!(reservations(&data.join("masqnet")).is_empty());
}

/// 50 concurrent ADDs in 50 namespaces get 50 distinct addresses; 50 DELs leave no veth, reservation or rule.
pub fn concurrent_50() {
    let tmp = TempDir::new("conc");
    let bin = our_plugin_dir(&tmp);
    let bridge = bin.join("bridge");
    let node = Netns::new(&format!("bcn-conc-{}", pid()));
    let data = tmp.0.join("ipam");
    let conf = bridge_conf(
        "1.0.0",
        "concnet",
        "br-conc",
        &data,
        json!({"ipMasq": true}),
    );
    let pods: Vec<Netns> = (0..50)
        .map(|i| Netns::new(&format!("bcp-c{i}-{}", pid())))
        .collect();
    let paths: Vec<_> = pods.iter().map(Netns::path).collect();
    let ids: Vec<String> = (0..50).map(|i| format!("conc-{i}")).collect();
    let children: Vec<_> = (0..50)
        .map(|i| spawn_plugin(&inv(&bridge, &node, "ADD", &ids[i], Some(&paths[i]), &conf)))
        .collect();
    let mut ips = HashSet::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ips.insert(result_ips(&v)[0].clone());
    }
    assert_eq!(ips.len(), 50, "distinct addresses");
    assert_eq!(node.veths().len(), 50);
    assert_eq!(reservations(&data.join("concnet")).len(), 50);
    let children: Vec<_> = (0..50)
        .map(|i| spawn_plugin(&inv(&bridge, &node, "DEL", &ids[i], Some(&paths[i]), &conf)))
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(node.veths().is_empty(), "veths left: {:?}", node.veths());
    assert!(reservations(&data.join("concnet")).is_empty());
    assert!(!node.ruleset().contains("masquerade"), "{}", node.ruleset());
}

/// SIGKILL at varying moments of ADD (and of DEL), then DEL: nothing is leaked; ADD works again.
pub fn sigkill_during_add() {
    let tmp = TempDir::new("kill");
    let bin = our_plugin_dir(&tmp);
    let bridge = bin.join("bridge");
    let node = Netns::new(&format!("bcn-kill-{}", pid()));
    let pod = Netns::new(&format!("bcp-kill-{}", pid()));
    let p = pod.path();
    let data = tmp.0.join("ipam");
    let conf = bridge_conf(
        "1.0.0",
        "killnet",
        "br-kill",
        &data,
        json!({"ipMasq": true}),
    );
    let mut killed_midway = 0;
    for step in 0..24u64 {
        let mut child = spawn_plugin(&inv(&bridge, &node, "ADD", "victim", Some(&p), &conf));
        // Spread the kill over the plugin's run time (a few ms): each iteration checks cleanup wherever it hit.
        std::thread::sleep(std::time::Duration::from_micros(step * 400));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            killed_midway += 1;
        }
        run_ok(&inv(&bridge, &node, "DEL", "victim", Some(&p), &conf));
        assert!(
            node.veths().is_empty(),
            "step {step}: veths left {:?}",
            node.veths()
        );
        assert!(
            pod.exec("ip -o link show")
                .lines()
                .all(|l| !l.contains("eth0")),
            "step {step}: eth0 left"
        );
        assert!(
            reservations(&data.join("killnet")).is_empty(),
            "step {step}: reservation left"
        );
        assert!(!node.ruleset().contains("victim"), "step {step}: rule left");
        let leftovers: Vec<_> = std::fs::read_dir(data.join("killnet"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(leftovers
            .iter()
            .all(|n| n == "lock" || n.starts_with("last_reserved_ip") || n.starts_with(".tmp-")));
    }
    assert!(killed_midway > 0, "no ADD was interrupted");
    // SIGKILL during DEL, then DEL again: same guarantee.
    let mut dels_killed = 0;
    for step in 0..12u64 {
        run_ok(&inv(&bridge, &node, "ADD", "victim", Some(&p), &conf));
        let mut child = spawn_plugin(&inv(&bridge, &node, "DEL", "victim", Some(&p), &conf));
        std::thread::sleep(std::time::Duration::from_micros(step * 800));
        let _ = child.kill();
        if !child.wait_with_output().unwrap().status.success() {
            dels_killed += 1;
        }
        run_ok(&inv(&bridge, &node, "DEL", "victim", Some(&p), &conf));
        assert!(
            node.veths().is_empty(),
            "DEL step {step}: veths left {:?}",
            node.veths()
        );
        assert!(
            reservations(&data.join("killnet")).is_empty(),
            "DEL step {step}: reservation left"
        );
        assert!(
            !node.ruleset().contains("victim"),
            "DEL step {step}: rule left"
        );
    }
    assert!(dels_killed > 0, "no DEL was interrupted");
}

/// GC releases reservations and rules of attachments not in the valid list; STATUS succeeds.
pub fn gc_and_status() {
    let tmp = TempDir::new("gc");
    let bin = our_plugin_dir(&tmp);
    let bridge = bin.join("bridge");
    let node = Netns::new(&format!("bcn-gc-{}", pid()));
    let a = Netns::new(&format!("bcp-ga-{}", pid()));
    let b = Netns::new(&format!("bcp-gb-{}", pid()));
    let data = tmp.0.join("ipam");
    let conf = bridge_conf("1.1.0", "gcnet", "br-gc", &data, json!({"ipMasq": true}));
    let (pa, pb) = (a.path(), b.path());
    let ra = run_ok(&inv(&bridge, &node, "ADD", "keep", Some(&pa), &conf));
    run_ok(&inv(&bridge, &node, "ADD", "stale", Some(&pb), &conf));
    run_ok(&inv(&bridge, &node, "STATUS", "", None, &conf));
    // STATUS reports an unusable reservation store with code 50.
    let broken = bridge_conf(
        "1.1.0",
        "gcnet",
        "br-gc",
        &tmp.0.join("bin/bridge"),
        json!({}),
    );
    let (code, msg) = error_of(&run_plugin(&inv(
        &bridge, &node, "STATUS", "", None, &broken,
    )));
    assert_eq!(code, 50, "{msg}");
    let mut gc: serde_json::Value = serde_json::from_str(&conf).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    run_ok(&inv(&bridge, &node, "GC", "", None, &gc.to_string()));
    assert_eq!(
        reservations(&data.join("gcnet")),
        vec![addr_only(&result_ips(&ra)[0])]
    );
    let rules = node.ruleset();
    assert!(
        rules.contains("keep") && !rules.contains("stale"),
        "{rules}"
    );
    // GC needs 1.1.0.
    let old = bridge_conf("1.0.0", "gcnet", "br-gc", &data, json!({}));
    assert_eq!(
        error_of(&run_plugin(&inv(&bridge, &node, "GC", "", None, &old))).0,
        1
    );
    run_ok(&inv(&bridge, &node, "DEL", "keep", Some(&pa), &conf));
    run_ok(&inv(&bridge, &node, "DEL", "stale", Some(&pb), &conf));
    assert!(node.veths().is_empty());
    assert!(reservations(&data.join("gcnet")).is_empty());
}

/// ADD with a prevResult (bridge after another plugin) extends that result instead of replacing it.
pub fn prev_result_chaining() {
    let tmp = TempDir::new("prev");
    let bin = our_plugin_dir(&tmp);
    let bridge = bin.join("bridge");
    let node = Netns::new(&format!("bcn-prev-{}", pid()));
    let a = Netns::new(&format!("bcp-pv-{}", pid()));
    let data = tmp.0.join("ipam");
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "dummy0", "sandbox": a.path()}],
                      "ips": [{"address": "192.0.2.5/32", "interface": 0}], "dns": {"nameservers": ["192.0.2.53"]}});
    let conf = bridge_conf(
        "1.0.0",
        "prevnet",
        "br-prev",
        &data,
        json!({"prevResult": prev}),
    );
    let pa = a.path();
    let r = run_ok(&inv(&bridge, &node, "ADD", "ctr-pv", Some(&pa), &conf));
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 4, "{r}");
    assert_eq!(r["interfaces"][0]["name"], "dummy0");
    assert_eq!(r["interfaces"][3]["name"], "eth0");
    assert_eq!(r["ips"][0]["address"], "192.0.2.5/32");
    assert_eq!(r["ips"][1]["interface"], 3);
    assert_eq!(r["dns"]["nameservers"][0], "192.0.2.53");
    run_ok(&inv(&bridge, &node, "DEL", "ctr-pv", Some(&pa), &conf));
    assert!(node.veths().is_empty());
    assert!(reservations(&data.join("prevnet")).is_empty());
}

/// Our `host-local` as a plugin of its own: driven directly (ADD/CHECK/DEL) and as the IPAM that Debian's
/// reference `bridge` delegates to through CNI_PATH.
pub fn host_local_plugin() {
    let tmp = TempDir::new("hl");
    let bin = our_plugin_dir(&tmp);
    let node = Netns::new(&format!("bcn-hl-{}", pid()));
    let a = Netns::new(&format!("bcp-hl-{}", pid()));
    let data = tmp.0.join("ipam");
    let pa = a.path();
    let hl = bin.join("host-local");
    let conf = json!({"cniVersion": "1.0.0", "name": "hlnet", "type": "host-local",
        "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.199.6.0/24"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}});
    let r = run_ok(&inv(
        &hl,
        &node,
        "ADD",
        "hl-1",
        Some(&pa),
        &conf.to_string(),
    ));
    assert_eq!(result_ips(&r), ["10.199.6.2/24"]);
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    let mut chk = conf.clone();
    chk["prevResult"] = r.clone();
    run_ok(&inv(
        &hl,
        &node,
        "CHECK",
        "hl-1",
        Some(&pa),
        &chk.to_string(),
    ));
    run_ok(&inv(
        &hl,
        &node,
        "DEL",
        "hl-1",
        Some(&pa),
        &conf.to_string(),
    ));
    assert!(reservations(&data.join("hlnet")).is_empty());
    let (code, _) = error_of(&run_plugin(&inv(
        &hl,
        &node,
        "CHECK",
        "hl-1",
        Some(&pa),
        &chk.to_string(),
    )));
    assert_eq!(code, 103);

    // Same on-disk layout as the reference: a reservation the reference host-local made is seen (not
    // handed out again) and released by ours, and the reference's file content matches what we write.
    let refhl = Path::new("/usr/lib/cni/host-local");
    let r = run_ok(&inv(
        refhl,
        &node,
        "ADD",
        "ref-1",
        Some(&pa),
        &conf.to_string(),
    ));
    let ref_ip = addr_only(&result_ips(&r)[0]);
    assert_eq!(
        std::fs::read_to_string(data.join("hlnet").join(&ref_ip)).unwrap(),
        "ref-1\r\neth0"
    );
    let r = run_ok(&inv(
        &hl,
        &node,
        "ADD",
        "ours-1",
        Some(&pa),
        &conf.to_string(),
    ));
    assert_ne!(addr_only(&result_ips(&r)[0]), ref_ip);
    run_ok(&inv(
        &hl,
        &node,
        "DEL",
        "ref-1",
        Some(&pa),
        &conf.to_string(),
    ));
    run_ok(&inv(
        refhl,
        &node,
        "DEL",
        "ours-1",
        Some(&pa),
        &conf.to_string(),
    ));
    assert!(reservations(&data.join("hlnet")).is_empty());

    // The reference bridge finds `host-local` on CNI_PATH: ours.
    let refconf = json!({"cniVersion": "1.0.0", "name": "hlnet", "type": "bridge", "bridge": "br-hl", "isGateway": true,
        "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.199.6.0/24"}]]}});
    let refconf = refconf.to_string();
    let mut i = inv(
        Path::new("/usr/lib/cni/bridge"),
        &node,
        "ADD",
        "hl-2",
        Some(&pa),
        &refconf,
    );
    i.cni_path = Some(&bin);
    let r = run_ok(&i);
    let ip = addr_only(&result_ips(&r)[0]);
    assert_eq!(
        std::fs::read_to_string(data.join("hlnet").join(&ip)).unwrap(),
        "hl-2\r\neth0"
    );
    assert!(a.exec_ok("busybox ping -c1 -W2 10.199.6.1"));
    i.command = "DEL";
    run_ok(&i);
    assert!(reservations(&data.join("hlnet")).is_empty());
    assert!(node.veths().is_empty());
}

//! The scheduler of `basalt server`, driven as a user drives it: kubectl against the server, fake nodes
//! (Node objects with capacity that nothing runs; the test plays the kubelet where one is needed, by
//! force-deleting pods the scheduler evicted). Each scenario of the issue's acceptance list runs on the
//! embedded SQLite and on a three-member etcd; leader election runs two servers on one etcd and SIGKILLs
//! the leader.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use basalt_testsupport::kube::{Datastore, KubeServer};
use basalt_testsupport::EtcdCluster;
use serde_json::{json, Value};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_basalt"))
}

fn kubectl(s: &KubeServer, args: &[&str]) -> Result<String> {
    let out = s.run(args);
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn apply(s: &KubeServer, objects: &[Value]) -> Result<()> {
    // A YAML stream of JSON documents: a `List` would make kubectl validate against /openapi/v2 in
    // protobuf, which the apiserver does not serve (406).
    let docs: Vec<String> = objects.iter().map(Value::to_string).collect();
    let out = s.run_with_input(&["apply", "-f", "-"], &docs.join("\n---\n"));
    ensure!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn get(s: &KubeServer, args: &[&str]) -> Result<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend(["-o", "json"]);
    Ok(serde_json::from_str(&kubectl(s, &a)?)?)
}

/// Polls `f` until it gives a value (the condition is the test's; the deadline only bounds a failure).
fn wait<T>(what: &str, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node(name: &str, cpu: &str, mem: &str, labels: Value, taints: Value) -> Value {
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = name.into();
    let res = json!({"cpu": cpu, "memory": mem, "pods": "110"});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
        "status": {"capacity": res, "allocatable": res},
    })
}

fn pod(ns: &str, name: &str, cpu: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "c", "image": "registry.invalid/pause:3.10",
        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]);
    json!({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": name, "namespace": ns, "labels": spec.get("labels").cloned().unwrap_or(json!({}))},
    "spec": spec.as_object().map(|o| {
        let mut o = o.clone();
        o.remove("labels");
        Value::Object(o)
    })})
}

fn namespace(s: &KubeServer, ns: &str) -> Result<()> {
    apply(
        s,
        &[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})],
    )
}

fn node_of(s: &KubeServer, ns: &str, name: &str) -> Result<Option<String>> {
    let p = get(s, &["pod", "-n", ns, name])?;
    Ok(p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .map(str::to_string))
}

fn bound(s: &KubeServer, ns: &str, name: &str) -> Result<String> {
    wait(&format!("{ns}/{name} to be bound"), || node_of(s, ns, name))
}

/// The message of the FailedScheduling event of `ns/name`, once there is one.
fn failed_scheduling(s: &KubeServer, ns: &str, name: &str) -> Result<String> {
    wait(&format!("FailedScheduling for {ns}/{name}"), || {
        let events = get(s, &["events", "-n", ns])?;
        Ok(events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e.pointer("/involvedObject/name") == Some(&json!(name))
                    && e["reason"] == "FailedScheduling"
            })
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .next_back())
    })
}

/// Removes what a scenario made: its pods (forced, as no kubelet confirms) and its nodes.
fn cleanup(s: &KubeServer, ns: &str, nodes: &[&str]) -> Result<()> {
    kubectl(
        s,
        &[
            "delete",
            "pods",
            "--all",
            "-n",
            ns,
            "--force",
            "--grace-period=0",
        ],
    )?;
    let mut args = vec!["delete", "node"];
    args.extend_from_slice(nodes);
    kubectl(s, &args)?;
    Ok(())
}

fn cpu_milli(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => q.parse::<i64>().unwrap() * 1000,
    }
}

/// Three nodes of different sizes: each pod goes where it fits, no node is ever over-committed, and the
/// pod that fits nowhere gets upstream's message.
fn resources_fit(s: &KubeServer) -> Result<()> {
    let ns = "fit";
    namespace(s, ns)?;
    apply(
        s,
        &[
            node("fit-1", "1", "1Gi", json!({}), json!([])),
            node("fit-2", "2", "2Gi", json!({}), json!([])),
            node("fit-3", "4", "4Gi", json!({}), json!([])),
        ],
    )?;
    let placements = [("big", "3", Some("fit-3")), ("mid", "1500m", Some("fit-2"))];
    for (name, cpu, want) in placements {
        apply(s, &[pod(ns, name, cpu, json!({}))])?;
        let n = bound(s, ns, name)?;
        ensure!(Some(n.as_str()) == want, "{name} on {n}, want {want:?}");
    }
    // 900m fits on fit-1 (1 CPU free) and fit-3 (1 CPU free), not on fit-2 (500m free).
    apply(
        s,
        &[
            pod(ns, "small-1", "900m", json!({})),
            pod(ns, "small-2", "900m", json!({})),
        ],
    )?;
    let mut got = vec![bound(s, ns, "small-1")?, bound(s, ns, "small-2")?];
    got.sort();
    ensure!(got == ["fit-1", "fit-3"], "small pods on {got:?}");
    apply(s, &[pod(ns, "small-3", "900m", json!({}))])?;
    let msg = failed_scheduling(s, ns, "small-3")?;
    ensure!(
        msg == "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
        "message: {msg}"
    );
    let p = get(s, &["pod", "-n", ns, "small-3"])?;
    let cond = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .context("PodScheduled condition")?;
    ensure!(
        cond["status"] == "False"
            && cond["reason"] == "Unschedulable"
            && cond["message"] == msg.as_str(),
        "condition {cond}"
    );
    // No node holds more than it has.
    let pods = get(s, &["pods", "-n", ns])?;
    for (node, cap) in [("fit-1", 1000), ("fit-2", 2000), ("fit-3", 4000)] {
        let used: i64 = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p.pointer("/spec/nodeName") == Some(&json!(node)))
            .map(|p| {
                cpu_milli(
                    p.pointer("/spec/containers/0/resources/requests/cpu")
                        .and_then(Value::as_str)
                        .unwrap(),
                )
            })
            .sum();
        ensure!(used <= cap, "{node}: {used}m requested of {cap}m");
    }
    let describe = kubectl(s, &["describe", "pod", "-n", ns, "small-3"])?;
    ensure!(
        describe.contains("Warning  FailedScheduling")
            && describe.contains("default-scheduler  0/3 nodes are available: 3 Insufficient cpu."),
        "describe:\n{describe}"
    );
    cleanup(s, ns, &["fit-1", "fit-2", "fit-3"])
}

/// A tainted node takes no pod without a toleration; the message names both reasons of a pod too big
/// for the untainted node.
fn taints(s: &KubeServer) -> Result<()> {
    let ns = "taints";
    namespace(s, ns)?;
    let taint = json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
    apply(
        s,
        &[
            node("taint-1", "4", "4Gi", json!({}), taint),
            node("taint-2", "4", "4Gi", json!({}), json!([])),
        ],
    )?;
    let plain: Vec<Value> = (0..4)
        .map(|i| pod(ns, &format!("plain-{i}"), "100m", json!({})))
        .collect();
    apply(s, &plain)?;
    for i in 0..4 {
        let n = bound(s, ns, &format!("plain-{i}"))?;
        ensure!(n == "taint-2", "plain-{i} on the tainted node {n}");
    }
    let pinned = json!({"nodeSelector": {"kubernetes.io/hostname": "taint-1"}});
    apply(s, &[pod(ns, "pinned", "100m", pinned.clone())])?;
    let msg = failed_scheduling(s, ns, "pinned")?;
    ensure!(
        msg == "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint(s). preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.",
        "message: {msg}"
    );
    let mut tolerant = pinned;
    tolerant["tolerations"] =
        json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    apply(s, &[pod(ns, "tolerant", "100m", tolerant)])?;
    ensure!(bound(s, ns, "tolerant")? == "taint-1");
    apply(s, &[pod(ns, "huge", "64", json!({}))])?;
    let msg = failed_scheduling(s, ns, "huge")?;
    ensure!(
        msg == "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint(s). preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.",
        "message: {msg}"
    );
    cleanup(s, ns, &["taint-1", "taint-2"])
}

/// Required node affinity: only matching nodes; a pod no node matches waits, and is scheduled as soon as
/// a node is labelled to match (the queue's requeue on a node label change).
fn node_affinity(s: &KubeServer) -> Result<()> {
    let ns = "affinity";
    namespace(s, ns)?;
    apply(
        s,
        &[
            node("aff-1", "4", "4Gi", json!({"disk": "ssd"}), json!([])),
            node("aff-2", "4", "4Gi", json!({"disk": "hdd"}), json!([])),
            node("aff-3", "4", "4Gi", json!({}), json!([])),
        ],
    )?;
    let affinity = |disk: &str| {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": [disk]}]}]}}}})
    };
    let pods: Vec<Value> = (0..3)
        .map(|i| pod(ns, &format!("ssd-{i}"), "100m", affinity("ssd")))
        .collect();
    apply(s, &pods)?;
    for i in 0..3 {
        ensure!(bound(s, ns, &format!("ssd-{i}"))? == "aff-1");
    }
    apply(s, &[pod(ns, "nvme", "100m", affinity("nvme"))])?;
    let msg = failed_scheduling(s, ns, "nvme")?;
    ensure!(
        msg == "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
        "message: {msg}"
    );
    kubectl(s, &["label", "node", "aff-3", "disk=nvme"])?;
    ensure!(bound(s, ns, "nvme")? == "aff-3");
    cleanup(s, ns, &["aff-1", "aff-2", "aff-3"])
}

/// Nine pods spread over three zones with maxSkew 1, although one zone has two nodes (by resources
/// alone it would take more).
fn topology_spread(s: &KubeServer) -> Result<()> {
    let ns = "spread";
    namespace(s, ns)?;
    let zone = |z: &str| json!({"topology.kubernetes.io/zone": z});
    apply(
        s,
        &[
            node("sp-a1", "8", "8Gi", zone("a"), json!([])),
            node("sp-a2", "8", "8Gi", zone("a"), json!([])),
            node("sp-b1", "8", "8Gi", zone("b"), json!([])),
            node("sp-c1", "8", "8Gi", zone("c"), json!([])),
        ],
    )?;
    let spec = json!({"labels": {"app": "web"}, "topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}}}]});
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..9 {
        apply(s, &[pod(ns, &format!("web-{i}"), "100m", spec.clone())])?;
        let n = bound(s, ns, &format!("web-{i}"))?;
        let z = if n.starts_with("sp-a") {
            "a"
        } else if n == "sp-b1" {
            "b"
        } else {
            "c"
        };
        *counts.entry(z).or_insert(0) += 1;
        let max = counts.values().max().copied().unwrap_or(0);
        let min = ["a", "b", "c"]
            .iter()
            .map(|z| counts.get(z).copied().unwrap_or(0))
            .min()
            .unwrap();
        ensure!(
            max - min <= 1,
            "skew {} after web-{i}: {counts:?}",
            max - min
        );
    }
    ensure!(counts.values().all(|c| *c == 3), "{counts:?}");
    cleanup(s, ns, &["sp-a1", "sp-a2", "sp-b1", "sp-c1"])
}

/// A high-priority pod preempts a low one; of two equal candidates the one whose eviction would break a
/// PodDisruptionBudget is spared although its node comes first.
fn preemption(s: &KubeServer) -> Result<()> {
    let ns = "preempt";
    namespace(s, ns)?;
    apply(
        s,
        &[
            node("pre-1", "1", "1Gi", json!({}), json!([])),
            node("pre-2", "1", "1Gi", json!({}), json!([])),
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "low"}, "value": 100}),
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000}),
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "guarded", "namespace": ns},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}}),
        ],
    )?;
    // The budget allows no disruption: written here, and what the disruption controller finds too (no
    // kubelet makes the pod Ready).
    kubectl(
        s,
        &[
            "patch",
            "pdb",
            "guarded",
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"currentHealthy":1,"desiredHealthy":1,"expectedPods":1,"disruptionsAllowed":0,"observedGeneration":1}}"#,
        ],
    )?;
    apply(
        s,
        &[
            pod(
                ns,
                "guarded",
                "1",
                json!({"labels": {"app": "guarded"}, "priorityClassName": "low", "nodeName": "pre-1"}),
            ),
            pod(
                ns,
                "plain",
                "1",
                json!({"labels": {"app": "plain"}, "priorityClassName": "low", "nodeName": "pre-2"}),
            ),
        ],
    )?;
    apply(
        s,
        &[pod(ns, "vip", "1", json!({"priorityClassName": "high"}))],
    )?;
    let nominated = wait("vip's nominated node", || {
        let p = get(s, &["pod", "-n", ns, "vip"])?;
        Ok(p.pointer("/status/nominatedNodeName")
            .and_then(Value::as_str)
            .map(str::to_string))
    })?;
    ensure!(nominated == "pre-2", "nominated {nominated}");
    // The victim is being deleted, with upstream's condition; the kubelet's part is the test's.
    let victim = wait("plain to be evicted", || {
        let p = get(s, &["pod", "-n", ns, "plain"])?;
        Ok(p.pointer("/metadata/deletionTimestamp").map(|_| p.clone()))
    })?;
    ensure!(
        victim["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "DisruptionTarget" && c["reason"] == "PreemptionByScheduler"),
        "victim conditions: {}",
        victim["status"]
    );
    let guarded = get(s, &["pod", "-n", ns, "guarded"])?;
    ensure!(
        guarded.pointer("/metadata/deletionTimestamp").is_none(),
        "the budget's pod was evicted"
    );
    kubectl(
        s,
        &[
            "delete",
            "pod",
            "plain",
            "-n",
            ns,
            "--force",
            "--grace-period=0",
        ],
    )?;
    ensure!(bound(s, ns, "vip")? == "pre-2");
    let events = get(s, &["events", "-n", ns])?;
    ensure!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "Preempted"
                && e.pointer("/involvedObject/name") == Some(&json!("plain"))),
        "no Preempted event"
    );
    cleanup(s, ns, &["pre-1", "pre-2"])?;
    kubectl(s, &["delete", "priorityclass", "low", "high"])?;
    Ok(())
}

/// VolumeBinding: a claim of an `Immediate` class that is not bound keeps its pod waiting; a
/// `WaitForFirstConsumer` claim sends the pod to the node its only fitting volume is reachable from,
/// and the scheduler binds the volume before the pod (the test plays the volume controller's part).
fn volumes(s: &KubeServer) -> Result<()> {
    let ns = "volumes";
    namespace(s, ns)?;
    let class = |name: &str, mode: &str| {
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": mode})
    };
    let claim = |name: &str, class: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                "resources": {"requests": {"storage": "1Gi"}}}})
    };
    let with_claim =
        |c: &str| json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": c}}]});
    apply(
        s,
        &[
            node("vol-1", "4", "4Gi", json!({}), json!([])),
            node("vol-2", "4", "4Gi", json!({}), json!([])),
            class("now", "Immediate"),
            class("later", "WaitForFirstConsumer"),
            claim("immediate", "now"),
            claim("delayed", "later"),
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "local-vol-2"},
                "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "later", "local": {"path": "/mnt/disk"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["vol-2"]}]}]}}}}),
        ],
    )?;
    apply(s, &[pod(ns, "waits", "100m", with_claim("immediate"))])?;
    let msg = failed_scheduling(s, ns, "waits")?;
    ensure!(
        msg == "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.",
        "message: {msg}"
    );
    apply(s, &[pod(ns, "consumer", "100m", with_claim("delayed"))])?;
    // The scheduler claims the volume reachable from the node it chose, with the claim's uid …
    let uid = get(s, &["pvc", "-n", ns, "delayed"])?["metadata"]["uid"].clone();
    wait("the volume's claimRef", || {
        let pv = get(s, &["pv", "local-vol-2"])?;
        Ok((pv.pointer("/spec/claimRef/name") == Some(&json!("delayed"))).then_some(pv))
    })
    .and_then(|pv| {
        ensure!(
            pv.pointer("/spec/claimRef/uid") == Some(&uid),
            "claimRef {}",
            pv["spec"]
        );
        Ok(())
    })?;
    ensure!(
        node_of(s, ns, "consumer")?.is_none(),
        "bound before its volume"
    );
    // … the volume controller (the test) completes the claim's side, and only then is the pod bound.
    kubectl(
        s,
        &[
            "patch",
            "pvc",
            "delayed",
            "-n",
            ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"volumeName":"local-vol-2"}}"#,
        ],
    )?;
    ensure!(bound(s, ns, "consumer")? == "vol-2");
    cleanup(s, ns, &["vol-1", "vol-2"])?;
    kubectl(s, &["delete", "pvc", "--all", "-n", ns, "--wait=false"])?;
    kubectl(s, &["delete", "pv", "local-vol-2", "--wait=false"])?;
    kubectl(s, &["delete", "storageclass", "now", "later"])?;
    Ok(())
}

/// The KubeSchedulerConfiguration's second profile packs pods (MostAllocated, the only score) where the
/// default profile spreads them (LeastAllocated); a pod naming no profile is left alone.
fn profiles(s: &KubeServer) -> Result<()> {
    let ns = "profiles";
    namespace(s, ns)?;
    apply(
        s,
        &[
            node("prof-1", "4", "4Gi", json!({}), json!([])),
            node("prof-2", "4", "4Gi", json!({}), json!([])),
        ],
    )?;
    let mut packed = std::collections::BTreeSet::new();
    for i in 0..4 {
        let name = format!("packed-{i}");
        apply(
            s,
            &[pod(
                ns,
                &name,
                "500m",
                json!({"schedulerName": "bin-packer"}),
            )],
        )?;
        packed.insert(bound(s, ns, &name)?);
    }
    ensure!(packed.len() == 1, "bin-packer used {packed:?}");
    // The default profile prefers the emptier node.
    apply(s, &[pod(ns, "spread", "1", json!({}))])?;
    let n = bound(s, ns, "spread")?;
    ensure!(
        !packed.contains(&n),
        "default-scheduler chose the packed node {n}"
    );
    apply(
        s,
        &[pod(
            ns,
            "other",
            "100m",
            json!({"schedulerName": "someone-else"}),
        )],
    )?;
    // Not ours: after the next pod of ours is bound, it is still untouched, without events.
    apply(s, &[pod(ns, "marker", "100m", json!({}))])?;
    bound(s, ns, "marker")?;
    ensure!(
        node_of(s, ns, "other")?.is_none(),
        "another scheduler's pod was bound"
    );
    let events = get(s, &["events", "-n", ns])?;
    ensure!(
        !events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.pointer("/involvedObject/name") == Some(&json!("other"))),
        "events about another scheduler's pod"
    );
    cleanup(s, ns, &["prof-1", "prof-2"])
}

const PROFILES: &str = "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packer
  plugins:
    score:
      disabled: [{name: '*'}]
      enabled: [{name: NodeResourcesFit, weight: 5}]
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy: {type: MostAllocated}
";

/// Crash-only: SIGKILLed and restarted on the same data, the server schedules again.
fn restart(s: &mut KubeServer) -> Result<()> {
    let ns = "restart";
    namespace(s, ns)?;
    apply(s, &[node("rs-1", "4", "4Gi", json!({}), json!([]))])?;
    apply(s, &[pod(ns, "before", "100m", json!({}))])?;
    bound(s, ns, "before")?;
    s.restart()?;
    apply(s, &[pod(ns, "after", "100m", json!({}))])?;
    ensure!(bound(s, ns, "after")? == "rs-1");
    cleanup(s, ns, &["rs-1"])
}

fn scenarios(mut s: KubeServer) -> Result<()> {
    resources_fit(&s).context("resources fit")?;
    taints(&s).context("taints")?;
    node_affinity(&s).context("node affinity")?;
    topology_spread(&s).context("topology spread")?;
    preemption(&s).context("preemption")?;
    volumes(&s).context("volumes")?;
    profiles(&s).context("profiles")?;
    restart(&mut s).context("restart")?;
    Ok(())
}

fn server(datastore: Datastore) -> Result<(KubeServer, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("scheduler.yaml");
    std::fs::write(&cfg, PROFILES)?;
    // The volume scenario plays the volume controller itself, to see what the scheduler does before
    // the claim is bound (tests/controllers.rs runs the scheduler with the real binder).
    let s = KubeServer::start_with(
        bin(),
        datastore,
        &[
            "--scheduler-config",
            cfg.to_str().unwrap(),
            "--controllers",
            "*,-persistentvolume-binder",
        ],
    )?;
    Ok((s, dir))
}

#[test]
fn scheduling_on_sqlite() -> Result<()> {
    let (s, _cfg) = server(Datastore::Sqlite)?;
    scenarios(s)
}

#[test]
fn scheduling_on_etcd() -> Result<()> {
    let (s, _cfg) = server(Datastore::Etcd(3))?;
    scenarios(s)
}

/// A configuration file with a mistake stops the server at once, naming the field and the value, with
/// nothing written; `--disable scheduler` runs no scheduler (no identity of its own is made).
#[test]
fn scheduler_flags_and_bad_configuration() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- plugins:\n    filter:\n      enabled: [{name: Nope}]\n",
    )?;
    let data = dir.path().join("data");
    let out = std::process::Command::new(bin())
        .arg("server")
        .arg("--data-dir")
        .arg(&data)
        .args(["--bind-address", "127.0.0.1", "--https-listen-port", "0"])
        .arg("--scheduler-config")
        .arg(&cfg)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(!out.status.success(), "started with a bad configuration");
    ensure!(
        text.contains(r#"profiles[0].plugins.filter.enabled[0]: plugin "Nope" does not exist"#),
        "output: {text}"
    );
    ensure!(
        !data.join("server").exists(),
        "state written before the refusal"
    );

    let s = KubeServer::start_with(bin(), Datastore::Sqlite, &["--disable", "scheduler"])?;
    ensure!(!s.data_dir().join("server/scheduler.kubeconfig").exists());
    ensure!(!s.data_dir().join("server/scheduler.id").exists());
    let on = KubeServer::start(bin(), Datastore::Sqlite)?;
    ensure!(on.data_dir().join("server/scheduler.kubeconfig").exists());
    Ok(())
}

fn identity(s: &KubeServer) -> Result<String> {
    let id = std::fs::read_to_string(s.data_dir().join("server/scheduler.id"))?;
    Ok(format!("basalt-test_{}", id.trim()))
}

/// Two servers on one three-member etcd: one scheduler leads; SIGKILLed, the other takes the lease once
/// it expires and schedules the next pod.
#[test]
fn leader_election_two_servers_on_etcd() -> Result<()> {
    const LEASE: u64 = 6;
    const RETRY: u64 = 1;
    let etcd = EtcdCluster::start(3)?;
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("scheduler.yaml");
    std::fs::write(
        &cfg,
        format!(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
             leaderElection:\n  leaseDuration: {LEASE}s\n  renewDeadline: 4s\n  retryPeriod: {RETRY}s\n"
        ),
    )?;
    let args = ["--scheduler-config", cfg.to_str().unwrap()];
    let endpoint = etcd.datastore_endpoint();
    let mut servers = [
        KubeServer::start_with(bin(), Datastore::Endpoint(endpoint.clone()), &args)?,
        KubeServer::start_with(bin(), Datastore::Endpoint(endpoint), &args)?,
    ];
    let ids = [identity(&servers[0])?, identity(&servers[1])?];
    let (holder, transitions) = wait("a scheduler to lead", || {
        servers[1].lease_holder("kube-scheduler")
    })?;
    let leader = ids
        .iter()
        .position(|i| *i == holder)
        .context("the lease holder is one of the servers")?;
    let follower = 1 - leader;
    let ns = "election";
    namespace(&servers[follower], ns)?;
    apply(
        &servers[follower],
        &[node("le-1", "4", "4Gi", json!({}), json!([]))],
    )?;
    apply(&servers[follower], &[pod(ns, "first", "100m", json!({}))])?;
    bound(&servers[follower], ns, "first")?;

    servers[leader].kill()?;
    let killed = Instant::now();
    apply(&servers[follower], &[pod(ns, "second", "100m", json!({}))])?;
    ensure!(bound(&servers[follower], ns, "second")? == "le-1");
    let took = killed.elapsed();
    let (holder, after) = servers[follower]
        .lease_holder("kube-scheduler")?
        .context("lease")?;
    ensure!(holder == ids[follower], "lease held by {holder}");
    ensure!(
        after > transitions,
        "lease transitions {transitions} → {after}"
    );
    println!("leader killed → next pod bound by the other server in {took:?} (lease {LEASE}s, retry {RETRY}s)");
    // The lease runs out at most LEASE after the last renewal (≤ RETRY before the kill); the candidate
    // notices within RETRY; a little more for its watches to list and for one binding.
    ensure!(
        took < Duration::from_secs(LEASE + 2 * RETRY + 3),
        "took {took:?}"
    );
    Ok(())
}

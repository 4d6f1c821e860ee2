//! Pods, and the pod template every workload kind embeds: upstream's defaults, the validation users meet
//! most, what an update may change, graceful deletion, and `kubectl get pods`' columns.

use std::collections::BTreeSet;

use basalt_apimachinery::names;
use basalt_apimachinery::quantity::Quantity;
use basalt_apimachinery::validate::{ErrorKind, FieldError};
use serde_json::{json, Value};

use super::table::{self, col, wide, AGE, NAME};
use super::{default_at, field_str, FieldValue, StatusPolicy, Strategy, Table};

pub struct Pods;

const RESTART_POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
const DNS_POLICIES: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
const PULL_POLICIES: [&str; 3] = ["Always", "Never", "IfNotPresent"];

/// Upstream's pod-spec defaults (SetDefaults_PodSpec, _Container, _Probe, _Volume…).
pub fn default_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default_at(spec, "/dnsPolicy", json!("ClusterFirst"));
    default_at(spec, "/restartPolicy", json!("Always"));
    default_at(spec, "/terminationGracePeriodSeconds", json!(30));
    default_at(spec, "/securityContext", json!({}));
    default_at(spec, "/schedulerName", json!("default-scheduler"));
    default_at(spec, "/enableServiceLinks", json!(true));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                default_container(c, list != "ephemeralContainers");
            }
        }
    }
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols {
            for source in ["configMap", "secret", "downwardAPI", "projected"] {
                if v.get(source).is_some_and(Value::is_object) {
                    default_at(v, &format!("/{source}/defaultMode"), json!(420));
                }
            }
            if v.get("hostPath").is_some_and(Value::is_object) {
                default_at(v, "/hostPath/type", json!(""));
            }
            if let Some(items) = v
                .pointer_mut("/downwardAPI/items")
                .and_then(Value::as_array_mut)
            {
                for i in items {
                    if i.get("fieldRef").is_some() {
                        default_at(i, "/fieldRef/apiVersion", json!("v1"));
                    }
                }
            }
            if let Some(sources) = v
                .pointer_mut("/projected/sources")
                .and_then(Value::as_array_mut)
            {
                for s in sources {
                    if s.get("serviceAccountToken").is_some() {
                        default_at(s, "/serviceAccountToken/expirationSeconds", json!(3600));
                    }
                    if let Some(items) = s
                        .pointer_mut("/downwardAPI/items")
                        .and_then(Value::as_array_mut)
                    {
                        for i in items {
                            if i.get("fieldRef").is_some() {
                                default_at(i, "/fieldRef/apiVersion", json!("v1"));
                            }
                        }
                    }
                }
            }
        }
    }
}

fn default_probe(p: &mut Value) {
    if !p.is_object() {
        return;
    }
    default_at(p, "/timeoutSeconds", json!(1));
    default_at(p, "/periodSeconds", json!(10));
    default_at(p, "/successThreshold", json!(1));
    default_at(p, "/failureThreshold", json!(3));
    if p.get("httpGet").is_some() {
        default_at(p, "/httpGet/scheme", json!("HTTP"));
        default_at(p, "/httpGet/path", json!("/"));
    }
    if p.get("grpc").is_some() {
        default_at(p, "/grpc/service", json!(""));
    }
}

/// Always for `:latest` or an untagged image, IfNotPresent otherwise (SetDefaults_Container).
fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(c: &mut Value, regular: bool) {
    if !c.is_object() {
        return;
    }
    default_at(c, "/terminationMessagePath", json!("/dev/termination-log"));
    default_at(c, "/terminationMessagePolicy", json!("File"));
    if let Some(image) = c.get("image").and_then(Value::as_str) {
        let p = pull_policy(image);
        default_at(c, "/imagePullPolicy", json!(p));
    }
    if regular {
        default_at(c, "/resources", json!({}));
    }
    // Requests default to the limits they lack (SetDefaults_ResourceRequirements via the container).
    if let Some(limits) = c
        .pointer("/resources/limits")
        .and_then(Value::as_object)
        .cloned()
    {
        for (k, v) in limits {
            default_at(c, &format!("/resources/requests/{k}"), v);
        }
    }
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            default_at(p, "/protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe) {
            default_probe(p);
        }
    }
    for hook in ["postStart", "preStop"] {
        if c.pointer(&format!("/lifecycle/{hook}/httpGet")).is_some() {
            default_at(
                c,
                &format!("/lifecycle/{hook}/httpGet/scheme"),
                json!("HTTP"),
            );
            default_at(c, &format!("/lifecycle/{hook}/httpGet/path"), json!("/"));
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if e.pointer("/valueFrom/fieldRef").is_some() {
                default_at(e, "/valueFrom/fieldRef/apiVersion", json!("v1"));
            }
        }
    }
}

/// The QoS class kubectl shows and the kubelet enforces (upstream's GetPodQOS).
pub fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            spec.get("initContainers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        for r in ["cpu", "memory"] {
            let req = requests.and_then(|m| m.get(r)).and_then(quantity);
            let lim = limits.and_then(|m| m.get(r)).and_then(quantity);
            if req.is_some_and(|q| !q.is_zero()) || lim.is_some_and(|q| !q.is_zero()) {
                any = true;
            }
            match (req, lim) {
                (Some(q), Some(l)) if q == l && !l.is_zero() => {}
                (None, Some(l)) if !l.is_zero() => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn quantity(v: &Value) -> Option<Quantity> {
    match v {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    }
}

/// Validation of a pod spec at `path` (`spec`, `spec.template.spec`).
pub fn validate_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let volumes: BTreeSet<String> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let mut volume_names = BTreeSet::new();
    for (i, v) in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let vp = format!("{path}.volumes[{i}]");
        match v.get("name").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required(format!("{vp}.name"), "")),
            Some(n) => {
                if let Err(e) = names::dns1123_label(n) {
                    errs.push(FieldError::invalid(format!("{vp}.name"), json!(n), e));
                }
                if !volume_names.insert(n.to_string()) {
                    errs.push(FieldError::new(
                        format!("{vp}.name"),
                        ErrorKind::Duplicate,
                        Some(json!(n)),
                        "",
                    ));
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cp = format!("{path}.{list}[{i}]");
            match c.get("name").and_then(Value::as_str) {
                None | Some("") => errs.push(FieldError::required(format!("{cp}.name"), "")),
                Some(n) => {
                    if let Err(e) = names::dns1123_label(n) {
                        errs.push(FieldError::invalid(format!("{cp}.name"), json!(n), e));
                    }
                    if !seen.insert(n.to_string()) {
                        errs.push(FieldError::new(
                            format!("{cp}.name"),
                            ErrorKind::Duplicate,
                            Some(json!(n)),
                            "",
                        ));
                    }
                }
            }
            if c.get("image")
                .and_then(Value::as_str)
                .is_none_or(|s| s.trim().is_empty())
            {
                errs.push(FieldError::required(format!("{cp}.image"), ""));
            }
            if let Some(p) = c.get("imagePullPolicy").and_then(Value::as_str) {
                if !PULL_POLICIES.contains(&p) {
                    errs.push(FieldError::not_supported(
                        format!("{cp}.imagePullPolicy"),
                        json!(p),
                        &PULL_POLICIES,
                    ));
                }
            }
            for (j, p) in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let pp = format!("{cp}.ports[{j}]");
                match p.get("containerPort").and_then(Value::as_i64) {
                    Some(n) if (1..=65535).contains(&n) => {}
                    Some(n) => errs.push(FieldError::invalid(
                        format!("{pp}.containerPort"),
                        json!(n),
                        "must be between 1 and 65535, inclusive",
                    )),
                    None => errs.push(FieldError::required(format!("{pp}.containerPort"), "")),
                }
                if let Some(proto) = p.get("protocol").and_then(Value::as_str) {
                    if !PROTOCOLS.contains(&proto) {
                        errs.push(FieldError::not_supported(
                            format!("{pp}.protocol"),
                            json!(proto),
                            &PROTOCOLS,
                        ));
                    }
                }
            }
            for (j, m) in c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let mp = format!("{cp}.volumeMounts[{j}]");
                let n = m.get("name").and_then(Value::as_str).unwrap_or_default();
                if !volumes.contains(n) {
                    errs.push(FieldError::new(
                        format!("{mp}.name"),
                        ErrorKind::NotFound,
                        Some(json!(n)),
                        "",
                    ));
                }
                if m.get("mountPath")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errs.push(FieldError::required(format!("{mp}.mountPath"), ""));
                }
            }
            validate_resources(c, &cp, errs);
        }
    }
    if let Some(p) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !RESTART_POLICIES.contains(&p) {
            errs.push(FieldError::not_supported(
                format!("{path}.restartPolicy"),
                json!(p),
                &RESTART_POLICIES,
            ));
        }
    }
    if let Some(p) = spec.get("dnsPolicy").and_then(Value::as_str) {
        if !DNS_POLICIES.contains(&p) {
            errs.push(FieldError::not_supported(
                format!("{path}.dnsPolicy"),
                json!(p),
                &DNS_POLICIES,
            ));
        }
    }
    if let Some(g) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
    {
        if g < 0 {
            errs.push(FieldError::invalid(
                format!("{path}.terminationGracePeriodSeconds"),
                json!(g),
                "must be greater than or equal to 0",
            ));
        }
    }
}

fn validate_resources(c: &Value, cp: &str, errs: &mut Vec<FieldError>) {
    let requests = c.pointer("/resources/requests").and_then(Value::as_object);
    let limits = c.pointer("/resources/limits").and_then(Value::as_object);
    for (section, m) in [("requests", requests), ("limits", limits)] {
        for (k, v) in m.into_iter().flatten() {
            if let Some(q) = quantity(v) {
                if q < Quantity::default() {
                    errs.push(FieldError::invalid(
                        format!("{cp}.resources.{section}[{k}]"),
                        v.clone(),
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
    }
    if let (Some(req), Some(lim)) = (requests, limits) {
        for (k, r) in req {
            let (Some(rq), Some(lq)) = (quantity(r), lim.get(k).and_then(quantity)) else {
                continue;
            };
            if rq.cmp_value(&lq) == std::cmp::Ordering::Greater {
                errs.push(FieldError::invalid(
                    format!("{cp}.resources.requests"),
                    json!(rq.to_string()),
                    format!("must be less than or equal to {k} limit of {lq}"),
                ));
            }
        }
    }
}

/// Pod spec fields an update may change: images, the active deadline, added tolerations, and scheduling
/// gates being removed (upstream's ValidatePodSpecificUpdate).
fn mutable_view(spec: &Value) -> Value {
    let mut s = spec.clone();
    for list in ["containers", "initContainers"] {
        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(m) = c.as_object_mut() {
                    m.remove("image");
                    m.remove("resources");
                }
            }
        }
    }
    if let Some(m) = s.as_object_mut() {
        for f in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
            "schedulingGates",
            "ephemeralContainers",
        ] {
            m.remove(f);
        }
    }
    s
}

impl Strategy for Pods {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            default_spec(spec);
        }
    }

    fn prepare_create(&self, obj: &mut Value) {
        let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }

    fn prepare_update(&self, new: &mut Value, old: &Value) {
        // The QoS class is computed once, at creation.
        if let Some(q) = old.pointer("/status/qosClass") {
            default_at(new, "/status/qosClass", q.clone());
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        super::validate_labels(obj, "metadata", &mut errs);
        validate_spec(obj.get("spec").unwrap_or(&Value::Null), "spec", &mut errs);
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        let (ns, os) = (
            new.get("spec").unwrap_or(&Value::Null),
            old.get("spec").unwrap_or(&Value::Null),
        );
        if mutable_view(ns) != mutable_view(os) {
            errs.push(FieldError::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
        let containers = |s: &Value| {
            s.get("containers")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0)
        };
        if containers(ns) != containers(os) {
            errs.push(FieldError::forbidden(
                "spec.containers",
                "pod updates may not add or remove containers",
            ));
        }
        errs
    }

    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
                col("Status", "string", "The aggregate status of the containers in this pod."),
                col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
                AGE,
                wide("IP", "string", "The IP address assigned to the pod"),
                wide("Node", "string", "The name of the node to which the pod is assigned"),
                wide("Nominated Node", "string", "The name of the node where the pod is nominated to run"),
                wide("Readiness Gates", "string", "The number of readiness gates that the pod has and how many of them are ready"),
            ],
            pod_row,
        )
    }

    fn field(&self, obj: &Value, field: &str) -> FieldValue {
        match field {
            "spec.nodeName" => field_str(obj, "/spec/nodeName"),
            "spec.restartPolicy" => field_str(obj, "/spec/restartPolicy"),
            "spec.schedulerName" => field_str(obj, "/spec/schedulerName"),
            "spec.serviceAccountName" => field_str(obj, "/spec/serviceAccountName"),
            "spec.hostNetwork" => FieldValue::Value(Some(
                obj.pointer("/spec/hostNetwork")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string(),
            )),
            "status.phase" => field_str(obj, "/status/phase"),
            "status.podIP" => field_str(obj, "/status/podIP"),
            "status.nominatedNodeName" => field_str(obj, "/status/nominatedNodeName"),
            _ => FieldValue::Unsupported,
        }
    }

    /// Pods on a node are deleted gracefully: the kubelet stops them and then removes them. A pod no node
    /// runs, or one already finished, goes at once.
    fn grace_period(&self, obj: &Value, requested: Option<i64>) -> Option<i64> {
        let bound = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let phase = obj
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !bound || phase == "Succeeded" || phase == "Failed" {
            return Some(0);
        }
        let grace = requested
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30);
        Some(grace.max(0))
    }
}

/// One `kubectl get pods` row (upstream's printPod).
fn pod_row(pod: &Value) -> Vec<Value> {
    let statuses = |k: &str| -> Vec<Value> {
        pod.pointer(&format!("/status/{k}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let init_specs = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let sidecars: BTreeSet<String> = init_specs
        .iter()
        .filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"))
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0)
        + sidecars.len();
    let mut reason = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(r) = pod.pointer("/status/reason").and_then(Value::as_str) {
        if !r.is_empty() {
            reason = r.to_string();
        }
    }
    let mut restarts = 0;
    let mut ready = 0;
    let mut last_restart: Option<String> = None;
    let mut note_restart = |c: &Value| {
        if let Some(t) = c
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
        {
            if last_restart.as_deref().is_none_or(|l| l < t) {
                last_restart = Some(t.to_string());
            }
        }
    };
    let mut initializing = false;
    let inits = statuses("initContainerStatuses");
    for (i, c) in inits.iter().enumerate() {
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        note_restart(c);
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        if sidecars.contains(name) && c.get("started").and_then(Value::as_bool) == Some(true) {
            if c.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        let term = c.pointer("/state/terminated");
        if term.and_then(|t| t.get("exitCode")).and_then(Value::as_i64) == Some(0) {
            continue;
        }
        initializing = true;
        reason = if let Some(t) = term {
            match t.get("reason").and_then(Value::as_str) {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ => match t.get("signal").and_then(Value::as_i64) {
                    Some(s) if s != 0 => format!("Init:Signal:{s}"),
                    _ => format!(
                        "Init:ExitCode:{}",
                        t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                    ),
                },
            }
        } else {
            match c.pointer("/state/waiting/reason").and_then(Value::as_str) {
                Some(r) if !r.is_empty() && r != "PodInitializing" => format!("Init:{r}"),
                _ => format!("Init:{i}/{}", init_specs.len()),
            }
        };
        break;
    }
    let initialized = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Initialized")
                && c.get("status").and_then(Value::as_str) == Some("True")
        });
    if !initializing || initialized {
        let mut has_running = false;
        for c in statuses("containerStatuses").iter().rev() {
            restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
            note_restart(c);
            let waiting = c
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty());
            let term = c.pointer("/state/terminated");
            if let Some(w) = waiting {
                reason = w.to_string();
            } else if let Some(t) = term {
                reason = match t
                    .get("reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                {
                    Some(r) => r.to_string(),
                    None => match t.get("signal").and_then(Value::as_i64) {
                        Some(s) if s != 0 => format!("Signal:{s}"),
                        _ => format!(
                            "ExitCode:{}",
                            t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                        ),
                    },
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Ready")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                });
            reason = if pod_ready {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if crate::meta::is_deleting(pod) {
        reason = if pod.pointer("/status/reason").and_then(Value::as_str) == Some("NodeLost") {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    let restarts_text = match &last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", table::age_of(t)),
        _ => restarts.to_string(),
    };
    let ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("<none>");
    let nominated = pod
        .pointer("/status/nominatedNodeName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("<none>");
    let gates = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    let gates_text = if gates == 0 {
        "<none>".to_string()
    } else {
        let conds = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ok = pod
            .pointer("/spec/readinessGates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|g| {
                let t = g.get("conditionType");
                conds.iter().any(|c| {
                    c.get("type") == t && c.get("status").and_then(Value::as_str) == Some("True")
                })
            })
            .count();
        format!("{ok}/{gates}")
    };
    vec![
        json!(crate::meta::name(pod)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_text),
        table::age(pod),
        json!(ip),
        json!(node),
        json!(nominated),
        json!(gates_text),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_qos() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b", "image": "busybox:1.36", "livenessProbe": {"httpGet": {"port": 8080}}}
        ]}});
        Pods.default(&mut pod);
        let a = &pod["spec"]["containers"][0];
        assert_eq!(a["imagePullPolicy"], "Always");
        assert_eq!(a["ports"][0]["protocol"], "TCP");
        assert_eq!(
            a["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
        let b = &pod["spec"]["containers"][1];
        assert_eq!(b["imagePullPolicy"], "IfNotPresent");
        assert_eq!(b["livenessProbe"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(b["livenessProbe"]["periodSeconds"], 10);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(qos_class(&pod["spec"]), "Burstable");
        let guaranteed = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        assert_eq!(qos_class(&json!({"containers": [{}]})), "BestEffort");
    }

    #[test]
    fn validation_names_the_fields() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a"}, {"name": "a", "image": "x", "volumeMounts": [{"name": "nope", "mountPath": "/x"}], "ports": [{"containerPort": 70000}]}
        ], "restartPolicy": "Sometimes"}});
        let errs: Vec<String> = Pods
            .validate(&pod)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errs.contains(&"spec.containers[0].image: Required value".to_string()),
            "{errs:?}"
        );
        assert!(
            errs.contains(&"spec.containers[1].name: Duplicate value: \"a\"".to_string()),
            "{errs:?}"
        );
        assert!(
            errs.contains(
                &"spec.containers[1].volumeMounts[0].name: Not found: \"nope\"".to_string()
            ),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e
                .starts_with("spec.containers[1].ports[0].containerPort: Invalid value: 70000")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.restartPolicy: Unsupported value: \"Sometimes\"")),
            "{errs:?}"
        );
    }

    #[test]
    fn status_column_like_kubectl() {
        let pod = |statuses: Value| {
            json!({"metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running", "containerStatuses": statuses}})
        };
        let running = pod_row(&pod(
            json!([{"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}}]),
        ));
        assert_eq!(
            (running[1].clone(), running[2].clone(), running[3].clone()),
            (json!("1/1"), json!("Running"), json!("0"))
        );
        let crash = pod_row(&pod(
            json!([{"name": "a", "ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),
        ));
        assert_eq!(
            (crash[1].clone(), crash[2].clone()),
            (json!("0/1"), json!("CrashLoopBackOff"))
        );
        assert_eq!(crash[3], json!("3"));
    }
}

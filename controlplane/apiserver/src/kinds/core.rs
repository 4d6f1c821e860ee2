//! The core group's kinds other than pods.

use basalt_apimachinery::names;
use basalt_apimachinery::validate::{ErrorKind, FieldError};
use base64::Engine;
use serde_json::{json, Value};

use super::table::{self, col, wide, AGE, NAME};
use super::{
    default_at, field_str, immutable, FieldValue, NameRule, StatusPolicy, Strategy, Table,
};
use crate::meta;

pub struct Namespaces;

impl Strategy for Namespaces {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn tracks_generation(&self) -> bool {
        false
    }
    fn name_rule(&self) -> NameRule {
        NameRule::Label
    }
    fn default(&self, obj: &mut Value) {
        // Every namespace is selectable by its own name (upstream sets this label on every write).
        let name = meta::name(obj).to_string();
        if !name.is_empty() {
            default_at(obj, "/metadata/labels", json!({}));
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
    }
    fn prepare_create(&self, obj: &mut Value) {
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        obj["status"] = json!({"phase": "Active"});
    }
    fn prepare_update(&self, new: &mut Value, old: &Value) {
        // spec.finalizers change only through the finalize subresource.
        new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        super::validate_labels(obj, "metadata", &mut errs);
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Status", "string", "The status of the namespace"),
                AGE,
            ],
            |o| {
                vec![
                    json!(meta::name(o)),
                    table::s(o.pointer("/status/phase")),
                    table::age(o),
                ]
            },
        )
    }
    fn field(&self, obj: &Value, field: &str) -> FieldValue {
        match field {
            "status.phase" => field_str(obj, "/status/phase"),
            _ => FieldValue::Unsupported,
        }
    }
}

pub struct Services;

const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

impl Strategy for Services {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn tracks_generation(&self) -> bool {
        false
    }
    fn default(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec") else {
            return;
        };
        default_at(spec, "/type", json!("ClusterIP"));
        let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
        if ty != "ExternalName" {
            default_at(spec, "/sessionAffinity", json!("None"));
            default_at(spec, "/internalTrafficPolicy", json!("Cluster"));
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            default_at(spec, "/externalTrafficPolicy", json!("Cluster"));
        }
        if ty == "LoadBalancer" {
            default_at(spec, "/allocateLoadBalancerNodePorts", json!(true));
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                default_at(p, "/protocol", json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    default_at(p, "/targetPort", port);
                }
            }
        }
    }
    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({"loadBalancer": {}});
    }
    fn prepare_update(&self, new: &mut Value, old: &Value) {
        // What the server allocated stays when an update leaves it out (upstream's service registry).
        for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(v) = old.pointer(&format!("/spec/{f}")) {
                default_at(new, &format!("/spec/{f}"), v.clone());
            }
        }
        let old_ports: Vec<Value> = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let new_type = new
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports {
                if p.get("nodePort").is_none() && new_type != "ClusterIP" {
                    if let Some(np) = old_ports
                        .iter()
                        .find(|o| o.get("port") == p.get("port"))
                        .and_then(|o| o.get("nodePort"))
                    {
                        p["nodePort"] = np.clone();
                    }
                }
            }
        }
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Err(e) = names::dns1035_label(meta::name(obj)) {
            errs.push(FieldError::invalid(
                "metadata.name",
                json!(meta::name(obj)),
                e,
            ));
        }
        super::validate_labels(obj, "metadata", &mut errs);
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        if !SERVICE_TYPES.contains(&ty) {
            errs.push(FieldError::not_supported(
                "spec.type",
                json!(ty),
                &SERVICE_TYPES,
            ));
        }
        let ports = spec
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
        if ports.is_empty() && ty != "ExternalName" && !headless {
            errs.push(FieldError::required("spec.ports", ""));
        }
        let mut names_seen = std::collections::BTreeSet::new();
        for (i, p) in ports.iter().enumerate() {
            let pp = format!("spec.ports[{i}]");
            match p.get("port").and_then(Value::as_i64) {
                Some(n) if (1..=65535).contains(&n) => {}
                Some(n) => errs.push(FieldError::invalid(
                    format!("{pp}.port"),
                    json!(n),
                    "must be between 1 and 65535, inclusive",
                )),
                None => errs.push(FieldError::required(format!("{pp}.port"), "")),
            }
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(format!("{pp}.name"), ""));
            }
            if !name.is_empty() && !names_seen.insert(name.to_string()) {
                errs.push(FieldError::new(
                    format!("{pp}.name"),
                    ErrorKind::Duplicate,
                    Some(json!(name)),
                    "",
                ));
            }
            if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                if ty == "ClusterIP" {
                    errs.push(FieldError::forbidden(
                        format!("{pp}.nodePort"),
                        "may not be used when `type` is 'ClusterIP'",
                    ));
                } else if !(30000..=32767).contains(&np) {
                    errs.push(FieldError::invalid(format!("{pp}.nodePort"), json!(np), "provided port is not in the valid range. The range of valid ports is 30000-32767"));
                }
            }
        }
        if ty == "ExternalName"
            && spec
                .get("externalName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required("spec.externalName", ""));
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        let old_ip = old
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let new_ip = new
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !old_ip.is_empty()
            && new_ip != old_ip
            && new.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName")
        {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                json!(new_ip),
                "may not change once set",
            ));
        }
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Type", "string", "The type of the service"),
                col("Cluster-IP", "string", "The cluster IP of the service"),
                col("External-IP", "string", "The external IP of the service"),
                col("Port(s)", "string", "The ports of the service"),
                AGE,
                wide("Selector", "string", "The label selector of the service"),
            ],
            |o| {
                let spec = o.get("spec").cloned().unwrap_or_default();
                let ty = spec
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("ClusterIP");
                let cluster_ip = match spec.get("clusterIP").and_then(Value::as_str) {
                    Some(ip) if !ip.is_empty() => ip.to_string(),
                    _ => {
                        if ty == "ExternalName" {
                            "<none>".into()
                        } else {
                            "<pending>".into()
                        }
                    }
                };
                let external = match ty {
                    "ExternalName" => spec
                        .get("externalName")
                        .and_then(Value::as_str)
                        .unwrap_or("<none>")
                        .to_string(),
                    "LoadBalancer" => {
                        let ips: Vec<String> = o
                            .pointer("/status/loadBalancer/ingress")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|i| {
                                i.get("ip")
                                    .or(i.get("hostname"))
                                    .and_then(Value::as_str)
                                    .map(str::to_string)
                            })
                            .collect();
                        if ips.is_empty() {
                            "<pending>".into()
                        } else {
                            ips.join(",")
                        }
                    }
                    _ => {
                        let ext: Vec<String> = spec
                            .get("externalIPs")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|i| i.as_str().map(str::to_string))
                            .collect();
                        if ext.is_empty() {
                            "<none>".into()
                        } else {
                            ext.join(",")
                        }
                    }
                };
                let ports: Vec<String> = spec
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                        match p.get("nodePort").and_then(Value::as_i64) {
                            Some(np) => format!("{port}:{np}/{proto}"),
                            None => format!("{port}/{proto}"),
                        }
                    })
                    .collect();
                let selector = table::map_text(spec.get("selector"));
                vec![
                    json!(meta::name(o)),
                    json!(ty),
                    json!(cluster_ip),
                    json!(external),
                    table::or_none(ports.join(",")),
                    table::age(o),
                    table::or_none(selector),
                ]
            },
        )
    }
    fn field(&self, obj: &Value, field: &str) -> FieldValue {
        match field {
            "spec.clusterIP" => field_str(obj, "/spec/clusterIP"),
            "spec.type" => field_str(obj, "/spec/type"),
            _ => FieldValue::Unsupported,
        }
    }
}

pub struct Nodes;

impl Strategy for Nodes {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::SubresourceSetOnCreate
    }
    fn tracks_generation(&self) -> bool {
        false
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        super::validate_labels(obj, "metadata", &mut errs);
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Status", "string", "The status of the node"),
                col("Roles", "string", "The roles of the node"),
                AGE,
                col("Version", "string", "Kubelet Version reported by the node."),
                wide("Internal-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses"),
                wide("External-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses"),
                wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
                wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
                wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
            ],
            |o| {
                let ready = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                    .and_then(|c| c.get("status").and_then(Value::as_str))
                    .map(|s| match s {
                        "True" => "Ready",
                        "False" => "NotReady",
                        _ => "Unknown",
                    })
                    .unwrap_or("Unknown");
                let mut status = ready.to_string();
                if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                    status.push_str(",SchedulingDisabled");
                }
                let mut roles: Vec<String> = meta::labels(o)
                    .iter()
                    .filter_map(|(k, v)| {
                        if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                            Some(r.to_string())
                        } else if k == "kubernetes.io/role" {
                            Some(v.clone())
                        } else {
                            None
                        }
                    })
                    .filter(|r| !r.is_empty())
                    .collect();
                roles.sort();
                let addr = |t: &str| {
                    o.pointer("/status/addresses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
                        .and_then(|a| a.get("address").and_then(Value::as_str))
                        .unwrap_or("<none>")
                        .to_string()
                };
                let info = |k: &str| table::s(o.pointer(&format!("/status/nodeInfo/{k}")));
                vec![
                    json!(meta::name(o)),
                    json!(status),
                    table::or_none(roles.join(",")),
                    table::age(o),
                    json!(o.pointer("/status/nodeInfo/kubeletVersion").and_then(Value::as_str).unwrap_or("")),
                    json!(addr("InternalIP")),
                    json!(addr("ExternalIP")),
                    info("osImage"),
                    info("kernelVersion"),
                    info("containerRuntimeVersion"),
                ]
            },
        )
    }
    fn field(&self, obj: &Value, field: &str) -> FieldValue {
        match field {
            "spec.unschedulable" => FieldValue::Value(Some(
                obj.pointer("/spec/unschedulable")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string(),
            )),
            _ => FieldValue::Unsupported,
        }
    }
}

pub struct ConfigMaps;

fn valid_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && !k.starts_with("..")
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn validate_keys(obj: &Value, sections: &[&str], errs: &mut Vec<FieldError>) {
    for section in sections {
        for k in obj
            .get(*section)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !valid_config_key(k) {
                errs.push(FieldError::invalid(format!("{section}[{k}]"), json!(k), "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
            }
        }
    }
}

impl Strategy for ConfigMaps {
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        super::validate_labels(obj, "metadata", &mut errs);
        validate_keys(obj, &["data", "binaryData"], &mut errs);
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if old.get("immutable").and_then(Value::as_bool) == Some(true) {
            for f in ["data", "binaryData", "immutable"] {
                if new.get(f) != old.get(f) {
                    errs.push(FieldError::forbidden(
                        f,
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
        }
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Data", "integer", "Data contains the configuration data."),
                AGE,
            ],
            |o| {
                let n = o
                    .get("data")
                    .and_then(Value::as_object)
                    .map(|m| m.len())
                    .unwrap_or(0)
                    + o.get("binaryData")
                        .and_then(Value::as_object)
                        .map(|m| m.len())
                        .unwrap_or(0);
                vec![json!(meta::name(o)), json!(n), table::age(o)]
            },
        )
    }
}

pub struct Secrets;

impl Strategy for Secrets {
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/type", json!("Opaque"));
        // stringData is write-only: merged into data (base64) and dropped.
        if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
            for (k, v) in sd {
                let text = v.as_str().unwrap_or_default().to_string();
                default_at(obj, "/data", json!({}));
                obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
            }
        }
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        super::validate_labels(obj, "metadata", &mut errs);
        validate_keys(obj, &["data"], &mut errs);
        for (k, v) in obj
            .get("data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(s) = v.as_str() {
                if let Err(e) = base64::engine::general_purpose::STANDARD.decode(s) {
                    errs.push(FieldError::invalid(
                        format!("data[{k}]"),
                        json!(s),
                        format!("illegal base64 data: {e}"),
                    ));
                }
            }
        }
        let ty = obj.get("type").and_then(Value::as_str).unwrap_or_default();
        if ty == "kubernetes.io/service-account-token"
            && meta::annotation(obj, "kubernetes.io/service-account.name").is_none()
        {
            errs.push(FieldError::required(
                "metadata.annotations[kubernetes.io/service-account.name]",
                "",
            ));
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        errs.extend(immutable(new, old, "/type", "type"));
        if old.get("immutable").and_then(Value::as_bool) == Some(true)
            && (new.get("data") != old.get("data") || new.get("immutable") != old.get("immutable"))
        {
            errs.push(FieldError::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Type", "string", "The type of the secret"),
                col(
                    "Data",
                    "integer",
                    "The number of data entries in the secret",
                ),
                AGE,
            ],
            |o| {
                vec![
                    json!(meta::name(o)),
                    json!(o.get("type").and_then(Value::as_str).unwrap_or_default()),
                    json!(o
                        .get("data")
                        .and_then(Value::as_object)
                        .map(|m| m.len())
                        .unwrap_or(0)),
                    table::age(o),
                ]
            },
        )
    }
    fn field(&self, obj: &Value, field: &str) -> FieldValue {
        match field {
            "type" => field_str(obj, "/type"),
            _ => FieldValue::Unsupported,
        }
    }
}

pub struct ServiceAccounts;

impl Strategy for ServiceAccounts {
    fn table(&self) -> Table {
        Table::new(
            vec![NAME, col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."), AGE],
            |o| {
                vec![
                    json!(meta::name(o)),
                    json!(o.get("secrets").and_then(Value::as_array).map(Vec::len).unwrap_or(0)),
                    table::age(o),
                ]
            },
        )
    }
}

pub struct Events;

impl Strategy for Events {
    fn create_on_update(&self) -> bool {
        true
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                col("Last Seen", "string", "Time when last occurrence was observed"),
                col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future."),
                col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
                col("Object", "string", "The object that this event is about."),
                wide("Subobject", "string", "The subobject the event is about."),
                wide("Source", "string", "The component reporting this event."),
                col("Message", "string", "A human-readable description of the status of this operation."),
                wide("First Seen", "string", "The time at which the event was first recorded."),
                wide("Count", "string", "The number of times this event has occurred."),
                wide("Name", "string", "The name of the event."),
            ],
            |o| {
                let last = o
                    .get("lastTimestamp")
                    .and_then(Value::as_str)
                    .or_else(|| o.get("eventTime").and_then(Value::as_str))
                    .or_else(|| o.pointer("/metadata/creationTimestamp").and_then(Value::as_str))
                    .map(table::age_of)
                    .unwrap_or_else(|| "<unknown>".into());
                let first = o.get("firstTimestamp").and_then(Value::as_str).map(table::age_of).unwrap_or_else(|| "<unknown>".into());
                let kind = o.pointer("/involvedObject/kind").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
                let name = o.pointer("/involvedObject/name").and_then(Value::as_str).unwrap_or_default();
                let source = o
                    .pointer("/source/component")
                    .and_then(Value::as_str)
                    .or_else(|| o.get("reportingComponent").and_then(Value::as_str))
                    .unwrap_or_default();
                vec![
                    json!(last),
                    json!(o.get("type").and_then(Value::as_str).unwrap_or_default()),
                    json!(o.get("reason").and_then(Value::as_str).unwrap_or_default()),
                    json!(format!("{kind}/{name}")),
                    json!(o.pointer("/involvedObject/fieldPath").and_then(Value::as_str).unwrap_or_default()),
                    json!(source),
                    json!(o.get("message").and_then(Value::as_str).unwrap_or_default().trim()),
                    json!(first),
                    json!(o.get("count").and_then(Value::as_i64).unwrap_or(1)),
                    json!(meta::name(o)),
                ]
            },
        )
    }
    fn field(&self, obj: &Value, field: &str) -> FieldValue {
        match field {
            "involvedObject.kind"
            | "involvedObject.namespace"
            | "involvedObject.name"
            | "involvedObject.uid"
            | "involvedObject.apiVersion"
            | "involvedObject.resourceVersion"
            | "involvedObject.fieldPath" => {
                field_str(obj, &format!("/{}", field.replace('.', "/")))
            }
            "reason" | "reportingComponent" | "type" => field_str(obj, &format!("/{field}")),
            "source" => field_str(obj, "/source/component"),
            _ => FieldValue::Unsupported,
        }
    }
}

pub struct Endpoints;

impl Strategy for Endpoints {
    fn create_on_update(&self) -> bool {
        true
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Endpoints", "string", "Endpoints of the service"),
                AGE,
            ],
            |o| {
                let mut eps = Vec::new();
                for s in o
                    .get("subsets")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let ports: Vec<i64> = s
                        .get("ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.get("port").and_then(Value::as_i64))
                        .collect();
                    for a in s
                        .get("addresses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let ip = a.get("ip").and_then(Value::as_str).unwrap_or_default();
                        if ports.is_empty() {
                            eps.push(ip.to_string());
                        }
                        for p in &ports {
                            eps.push(format!("{ip}:{p}"));
                        }
                    }
                }
                let shown = if eps.len() > 3 {
                    format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
                } else {
                    eps.join(",")
                };
                vec![json!(meta::name(o)), table::or_none(shown), table::age(o)]
            },
        )
    }
}

pub struct PersistentVolumes;

fn access_modes(v: Option<&Value>) -> String {
    let modes: Vec<&str> = v
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    modes.join(",")
}

impl Strategy for PersistentVolumes {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn tracks_generation(&self) -> bool {
        false
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/spec/persistentVolumeReclaimPolicy", json!("Retain"));
        default_at(obj, "/spec/volumeMode", json!("Filesystem"));
    }
    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if obj
            .pointer("/spec/accessModes")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
        {
            errs.push(FieldError::required("spec.accessModes", ""));
        }
        if obj.pointer("/spec/capacity/storage").is_none() {
            errs.push(FieldError::required("spec.capacity", ""));
        }
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
                col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
                col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
                col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
                col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
                col("StorageClass", "string", "storageClassName is the name of StorageClass to which this persistent volume belongs."),
                col("VolumeAttributesClass", "string", "Name of VolumeAttributesClass to which this persistent volume belongs."),
                col("Reason", "string", "reason is a brief CamelCase string that describes any failure."),
                AGE,
                wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state."),
            ],
            |o| {
                let claim = match (o.pointer("/spec/claimRef/namespace").and_then(Value::as_str), o.pointer("/spec/claimRef/name").and_then(Value::as_str)) {
                    (Some(ns), Some(n)) => format!("{ns}/{n}"),
                    _ => String::new(),
                };
                vec![
                    json!(meta::name(o)),
                    json!(o.pointer("/spec/capacity/storage").and_then(Value::as_str).unwrap_or_default()),
                    json!(access_modes(o.pointer("/spec/accessModes"))),
                    json!(o.pointer("/spec/persistentVolumeReclaimPolicy").and_then(Value::as_str).unwrap_or_default()),
                    json!(o.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default()),
                    json!(claim),
                    json!(o.pointer("/spec/storageClassName").and_then(Value::as_str).unwrap_or_default()),
                    table::s(o.pointer("/spec/volumeAttributesClassName")),
                    json!(o.pointer("/status/reason").and_then(Value::as_str).unwrap_or_default()),
                    table::age(o),
                    json!(o.pointer("/spec/volumeMode").and_then(Value::as_str).unwrap_or("Filesystem")),
                ]
            },
        )
    }
}

pub struct PersistentVolumeClaims;

impl Strategy for PersistentVolumeClaims {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn tracks_generation(&self) -> bool {
        false
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/spec/volumeMode", json!("Filesystem"));
    }
    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if obj
            .pointer("/spec/accessModes")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
        {
            errs.push(FieldError::required(
                "spec.accessModes",
                "at least 1 access mode is required",
            ));
        }
        if obj.pointer("/spec/resources/requests/storage").is_none() {
            errs.push(FieldError::required("spec.resources[storage]", ""));
        }
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
                col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
                col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
                col("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has."),
                col("StorageClass", "string", "storageClassName is the name of the StorageClass required by the claim."),
                col("VolumeAttributesClass", "string", "volumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim."),
                AGE,
                wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim."),
            ],
            |o| {
                vec![
                    json!(meta::name(o)),
                    json!(o.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default()),
                    json!(o.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or_default()),
                    json!(o.pointer("/status/capacity/storage").and_then(Value::as_str).unwrap_or_default()),
                    json!(access_modes(o.pointer("/status/accessModes"))),
                    json!(o.pointer("/spec/storageClassName").and_then(Value::as_str).unwrap_or_default()),
                    table::s(o.pointer("/spec/volumeAttributesClassName")),
                    table::age(o),
                    json!(o.pointer("/spec/volumeMode").and_then(Value::as_str).unwrap_or("Filesystem")),
                ]
            },
        )
    }
}

pub struct ResourceQuotas;

impl Strategy for ResourceQuotas {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn tracks_generation(&self) -> bool {
        false
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                AGE,
                col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
                col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
            ],
            |o| {
                let hard = o.pointer("/status/hard").or(o.pointer("/spec/hard")).and_then(Value::as_object).cloned().unwrap_or_default();
                let used = o.pointer("/status/used").and_then(Value::as_object).cloned().unwrap_or_default();
                let mut req = Vec::new();
                let mut lim = Vec::new();
                let mut keys: Vec<&String> = hard.keys().collect();
                keys.sort();
                for k in keys {
                    let u = used.get(k).and_then(Value::as_str).unwrap_or("0");
                    let h = hard.get(k).and_then(Value::as_str).unwrap_or("0");
                    let text = format!("{k}: {u}/{h}");
                    if k.starts_with("limits.") {
                        lim.push(text);
                    } else {
                        req.push(text);
                    }
                }
                vec![json!(meta::name(o)), table::age(o), json!(req.join(", ")), json!(lim.join(", "))]
            },
        )
    }
}

pub struct ReplicationControllers;

impl Strategy for ReplicationControllers {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/spec/replicas", json!(1));
        if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
            super::pods::default_spec(spec);
        }
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col(
                    "Desired",
                    "integer",
                    "Replicas is the number of desired replicas.",
                ),
                col(
                    "Current",
                    "integer",
                    "Replicas is the most recently observed number of replicas.",
                ),
                col(
                    "Ready",
                    "integer",
                    "The number of ready replicas for this replication controller.",
                ),
                AGE,
            ],
            |o| {
                vec![
                    json!(meta::name(o)),
                    table::int(o.pointer("/spec/replicas")),
                    table::int(o.pointer("/status/replicas")),
                    table::int(o.pointer("/status/readyReplicas")),
                    table::age(o),
                ]
            },
        )
    }
    fn field(&self, obj: &Value, field: &str) -> FieldValue {
        match field {
            "status.replicas" => FieldValue::Value(Some(
                obj.pointer("/status/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    .to_string(),
            )),
            _ => FieldValue::Unsupported,
        }
    }
}

pub struct PodTemplates;

impl Strategy for PodTemplates {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.pointer_mut("/template/spec") {
            super::pods::default_spec(spec);
        }
    }
}

pub struct LimitRanges;

impl Strategy for LimitRanges {}

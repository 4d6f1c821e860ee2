//! The smaller kinds: leases, endpoint slices, disruption budgets, priority classes, certificate signing
//! requests, networking, runtime classes, autoscalers, and custom resource definitions.

use basalt_apimachinery::validate::FieldError;
use serde_json::{json, Value};

use super::table::{self, col, AGE, NAME};
use super::{default_at, field_str, immutable, FieldValue, StatusPolicy, Strategy, Table};
use crate::meta;

pub struct Leases;

impl Strategy for Leases {
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Holder", "string", "The holder of the lease"),
                AGE,
            ],
            |o| {
                vec![
                    json!(meta::name(o)),
                    table::s(o.pointer("/spec/holderIdentity")),
                    table::age(o),
                ]
            },
        )
    }
}

pub struct EndpointSlices;

impl Strategy for EndpointSlices {
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        match obj.get("addressType").and_then(Value::as_str) {
            Some("IPv4" | "IPv6" | "FQDN") => {}
            Some(t) => errs.push(FieldError::not_supported(
                "addressType",
                json!(t),
                &["IPv4", "IPv6", "FQDN"],
            )),
            None => errs.push(FieldError::required("addressType", "")),
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        errs.extend(immutable(new, old, "/addressType", "addressType"));
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("AddressType", "string", "The IP protocol for this slice"),
                col("Ports", "string", "The ports in this slice"),
                col("Endpoints", "string", "The endpoints in this slice"),
                AGE,
            ],
            |o| {
                let ports: Vec<String> = o
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.get("port").and_then(Value::as_i64).map(|n| n.to_string()))
                    .collect();
                let eps: Vec<String> = o
                    .get("endpoints")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|e| {
                        e.get("addresses")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default()
                    })
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect();
                let shown = if eps.len() > 3 {
                    format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
                } else {
                    eps.join(",")
                };
                vec![
                    json!(meta::name(o)),
                    json!(o
                        .get("addressType")
                        .and_then(Value::as_str)
                        .unwrap_or_default()),
                    table::or_none(ports.join(",")),
                    table::or_none(shown),
                    table::age(o),
                ]
            },
        )
    }
}

pub struct DisruptionBudgets;

impl Strategy for DisruptionBudgets {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if obj.pointer("/spec/minAvailable").is_some()
            && obj.pointer("/spec/maxUnavailable").is_some()
        {
            errs.push(FieldError::invalid(
                "spec",
                obj["spec"].clone(),
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col(
                    "Min Available",
                    "string",
                    "The minimum number of pods that must be available simultaneously",
                ),
                col(
                    "Max Unavailable",
                    "string",
                    "The maximum number of pods that may be unavailable simultaneously",
                ),
                col(
                    "Allowed Disruptions",
                    "integer",
                    "Calculated number of pods that may be disrupted at this time",
                ),
                AGE,
            ],
            |o| {
                let v = |k: &str| match o.pointer(&format!("/spec/{k}")) {
                    Some(Value::String(s)) => json!(s),
                    Some(Value::Number(n)) => json!(n.to_string()),
                    _ => json!("N/A"),
                };
                vec![
                    json!(meta::name(o)),
                    v("minAvailable"),
                    v("maxUnavailable"),
                    table::int(o.pointer("/status/disruptionsAllowed")),
                    table::age(o),
                ]
            },
        )
    }
}

pub struct PriorityClasses;

impl Strategy for PriorityClasses {
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/preemptionPolicy", json!("PreemptLowerPriority"));
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let name = meta::name(obj);
        let value = obj.get("value").and_then(Value::as_i64);
        match value {
            None => errs.push(FieldError::required("value", "")),
            Some(v) if v > 1_000_000_000 && !name.starts_with("system-") => {
                errs.push(FieldError::forbidden(
                    "value",
                    "maximum allowed value of a user defined priority is 1000000000",
                ))
            }
            _ => {}
        }
        if name.starts_with("system-")
            && !["system-node-critical", "system-cluster-critical"].contains(&name)
        {
            errs.push(FieldError::forbidden(
                "metadata.name",
                "priority class names with 'system-' prefix are reserved for system use only",
            ));
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        errs.extend(
            immutable(new, old, "/value", "value")
                .map(|e| FieldError::forbidden(e.path, "may not be changed in an update.")),
        );
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Value", "integer", "The value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec."),
                col("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class."),
                AGE,
                col("PreemptionPolicy", "string", "PreemptionPolicy is the Policy for preempting pods with lower priority."),
            ],
            |o| {
                vec![
                    json!(meta::name(o)),
                    table::int(o.get("value")),
                    json!(o.get("globalDefault").and_then(Value::as_bool).unwrap_or(false)),
                    table::age(o),
                    json!(o.get("preemptionPolicy").and_then(Value::as_str).unwrap_or("PreemptLowerPriority")),
                ]
            },
        )
    }
}

pub struct CertificateSigningRequests;

/// The key usages a request may name (certificates.k8s.io/v1's KeyUsage).
const KEY_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// The subject organizations of a request's `spec.request` (base64 of a PEM PKCS#10 request), or why it
/// is not one.
pub fn request_organizations(request_b64: &str) -> Result<Vec<String>, String> {
    use x509_parser::prelude::FromDer;
    let pem = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, request_b64)
        .map_err(|e| format!("not base64: {e}"))?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("the request could not be parsed: {e}"))?;
    Ok(csr
        .certification_request_info
        .subject
        .iter_organization()
        .map(|o| o.as_str().unwrap_or_default().to_string())
        .collect())
}

/// Approved and Denied: set only through the `approval` subresource.
pub const APPROVAL_CONDITIONS: [&str; 2] = ["Approved", "Denied"];

/// The conditions of `from` that `pick` keeps, by type.
pub fn conditions_where(from: &Value, pick: impl Fn(&str) -> bool) -> Vec<Value> {
    from.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| pick(c.get("type").and_then(Value::as_str).unwrap_or_default()))
        .cloned()
        .collect()
}

impl Strategy for CertificateSigningRequests {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    /// As upstream's status strategy: a signer writes the certificate and its own conditions, never the
    /// approval (which takes `approve` on the signer, through `approval`).
    fn prepare_status_update(&self, new: &mut Value, old: &Value) {
        let mut conds = conditions_where(new, |t| !APPROVAL_CONDITIONS.contains(&t));
        conds.extend(conditions_where(old, |t| APPROVAL_CONDITIONS.contains(&t)));
        new["status"]["conditions"] = json!(conds);
    }
    fn tracks_generation(&self) -> bool {
        false
    }
    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if obj
            .pointer("/spec/request")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required("spec.request", ""));
        }
        match obj.pointer("/spec/signerName").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required("spec.signerName", "")),
            Some(s @ "kubernetes.io/legacy-unknown") => errs.push(FieldError::invalid(
                "spec.signerName",
                json!(s),
                "the legacy signerName is not allowed via this API version",
            )),
            Some(s) if !s.split_once('/').is_some_and(|(d, p)| d.contains('.') && !p.is_empty()) => {
                errs.push(FieldError::invalid(
                    "spec.signerName",
                    json!(s),
                    "must be a fully qualified domain and path of the form 'example.com/signer-name'",
                ))
            }
            Some(_) => {}
        }
        if let Some(req) = obj.pointer("/spec/request").and_then(Value::as_str) {
            if let Err(why) = request_organizations(req) {
                errs.push(FieldError::invalid("spec.request", json!(req), why));
            }
        }
        if let Some(secs) = obj
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
        {
            if secs < 600 {
                errs.push(FieldError::invalid(
                    "spec.expirationSeconds",
                    json!(secs),
                    "may not specify a duration less than 600 seconds (10 minutes)",
                ));
            }
        }
        for (i, u) in obj
            .pointer("/spec/usages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if !u.as_str().is_some_and(|u| KEY_USAGES.contains(&u)) {
                errs.push(FieldError::not_supported(
                    format!("spec.usages[{i}]"),
                    u.clone(),
                    KEY_USAGES,
                ));
            }
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        errs.extend(immutable(new, old, "/spec", "spec"));
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                AGE,
                col("SignerName", "string", "Name of the signer"),
                col("Requestor", "string", "Name of the requestor"),
                col(
                    "RequestedDuration",
                    "string",
                    "Requested duration of the certificate",
                ),
                col("Condition", "string", "Condition of the certificate"),
            ],
            |o| {
                let conds: Vec<String> = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.get("type").and_then(Value::as_str).map(str::to_string))
                    .collect();
                let mut cond = if conds.is_empty() {
                    "Pending".to_string()
                } else {
                    conds.join(",")
                };
                if o.pointer("/status/certificate")
                    .and_then(Value::as_str)
                    .is_some_and(|c| !c.is_empty())
                {
                    cond.push_str(",Issued");
                }
                let dur = o
                    .pointer("/spec/expirationSeconds")
                    .and_then(Value::as_u64)
                    .map(|s| {
                        basalt_apimachinery::duration::human(std::time::Duration::from_secs(s))
                    })
                    .unwrap_or_else(|| "<none>".into());
                vec![
                    json!(meta::name(o)),
                    table::age(o),
                    json!(o
                        .pointer("/spec/signerName")
                        .and_then(Value::as_str)
                        .unwrap_or_default()),
                    json!(o
                        .pointer("/spec/username")
                        .and_then(Value::as_str)
                        .unwrap_or_default()),
                    json!(dur),
                    json!(cond),
                ]
            },
        )
    }
    fn field(&self, obj: &Value, field: &str) -> FieldValue {
        match field {
            "spec.signerName" => field_str(obj, "/spec/signerName"),
            _ => FieldValue::Unsupported,
        }
    }
}

pub struct Ingresses;

impl Strategy for Ingresses {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Class", "string", "The name of the IngressClass resource that should be used for ingress with this name."),
                col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
                col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
                col("Ports", "string", "Ports of TLS configurations that open"),
                AGE,
            ],
            |o| {
                let hosts: Vec<&str> = o.pointer("/spec/rules").and_then(Value::as_array).into_iter().flatten().filter_map(|r| r.get("host").and_then(Value::as_str)).collect();
                let addrs: Vec<&str> = o.pointer("/status/loadBalancer/ingress").and_then(Value::as_array).into_iter().flatten().filter_map(|i| i.get("ip").or(i.get("hostname")).and_then(Value::as_str)).collect();
                let ports = if o.pointer("/spec/tls").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) { "80, 443" } else { "80" };
                vec![
                    json!(meta::name(o)),
                    table::s(o.pointer("/spec/ingressClassName")),
                    json!(if hosts.is_empty() { "*".to_string() } else { hosts.join(",") }),
                    json!(addrs.join(",")),
                    json!(ports),
                    table::age(o),
                ]
            },
        )
    }
}

pub struct IngressClasses;

impl Strategy for IngressClasses {
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col(
                    "Controller",
                    "string",
                    "Controller that is responsible for handling this class",
                ),
                col(
                    "Parameters",
                    "string",
                    "A reference to a resource with additional parameters",
                ),
                AGE,
            ],
            |o| {
                vec![
                    json!(meta::name(o)),
                    json!(o
                        .pointer("/spec/controller")
                        .and_then(Value::as_str)
                        .unwrap_or_default()),
                    table::s(o.pointer("/spec/parameters/name")),
                    table::age(o),
                ]
            },
        )
    }
}

pub struct NetworkPolicies;

impl Strategy for NetworkPolicies {
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col(
                    "Pod-Selector",
                    "string",
                    "Selects the pods to which this NetworkPolicy object applies.",
                ),
                AGE,
            ],
            |o| {
                let sel = o
                    .pointer("/spec/podSelector")
                    .and_then(|s| basalt_apimachinery::selector::LabelSelector::from_object(s).ok())
                    .map(|s| s.to_query())
                    .unwrap_or_default();
                vec![json!(meta::name(o)), table::or_none(sel), table::age(o)]
            },
        )
    }
}

pub struct RuntimeClasses;

impl Strategy for RuntimeClasses {
    fn table(&self) -> Table {
        Table::new(
            vec![NAME, col("Handler", "string", "Handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class."), AGE],
            |o| vec![json!(meta::name(o)), json!(o.get("handler").and_then(Value::as_str).unwrap_or_default()), table::age(o)],
        )
    }
}

pub struct Autoscalers;

impl Strategy for Autoscalers {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/spec/minReplicas", json!(1));
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Reference", "string", "reference to scaled resource"),
                col("Targets", "string", "the current and target metrics"),
                col("MinPods", "string", "lower limit for the number of pods"),
                col("MaxPods", "integer", "upper limit for the number of pods"),
                col(
                    "Replicas",
                    "integer",
                    "current number of replicas of pods managed by this autoscaler",
                ),
                AGE,
            ],
            |o| {
                vec![
                    json!(meta::name(o)),
                    json!(format!(
                        "{}/{}",
                        o.pointer("/spec/scaleTargetRef/kind")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                        o.pointer("/spec/scaleTargetRef/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                    )),
                    json!("<unknown>"),
                    json!(o
                        .pointer("/spec/minReplicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                        .to_string()),
                    table::int(o.pointer("/spec/maxReplicas")),
                    table::int(o.pointer("/status/currentReplicas")),
                    table::age(o),
                ]
            },
        )
    }
}

pub struct CustomResourceDefinitions;

impl Strategy for CustomResourceDefinitions {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/spec/conversion/strategy", json!("None"));
        default_at(
            obj,
            "/spec/names/singular",
            json!(obj
                .pointer("/spec/names/kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_lowercase()),
        );
        default_at(
            obj,
            "/spec/names/listKind",
            json!(format!(
                "{}List",
                obj.pointer("/spec/names/kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )),
        );
    }
    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({"acceptedNames": {"kind": "", "plural": ""}, "conditions": [], "storedVersions": []});
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        crate::crd::validate(obj)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        errs.extend(immutable(new, old, "/spec/group", "spec.group"));
        errs.extend(immutable(
            new,
            old,
            "/spec/names/plural",
            "spec.names.plural",
        ));
        errs.extend(immutable(new, old, "/spec/scope", "spec.scope"));
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                super::table::Column {
                    name: "Created At",
                    kind: "date",
                    format: "",
                    description: AGE.description,
                    priority: 0,
                },
            ],
            |o| {
                vec![
                    json!(meta::name(o)),
                    o.pointer("/metadata/creationTimestamp")
                        .cloned()
                        .unwrap_or(Value::Null),
                ]
            },
        )
    }
}

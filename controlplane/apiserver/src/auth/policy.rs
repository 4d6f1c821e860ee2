//! Upstream's default RBAC policy: the cluster roles and bindings every cluster starts with, written at
//! start-up when missing or changed (kube-apiserver's bootstrap reconciliation), labelled as upstream labels
//! them.

use serde_json::{json, Value};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn meta(name: &str, labels: Value) -> Value {
    let mut l = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    if let (Some(dst), Some(src)) = (l.as_object_mut(), labels.as_object()) {
        dst.extend(src.clone());
    }
    json!({
        "name": name,
        "labels": l,
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

fn role(name: &str, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name, json!({})), "rules": rules})
}

/// A role made of the roles labelled `aggregate-to-<to>`, itself labelled `aggregate-to-<into>` when it is
/// part of a wider one (view is part of edit, edit of admin, as upstream).
fn aggregated(name: &str, to: &str, into: Option<&str>) -> Value {
    let labels = match into {
        Some(i) => json!({format!("rbac.authorization.k8s.io/aggregate-to-{i}"): "true"}),
        None => json!({}),
    };
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": meta(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"}}]},
        "rules": [],
    })
}

fn aggregate_to(name: &str, to: &str, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": meta(name, json!({format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"})),
        "rules": rules,
    })
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, n)| json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": n}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": meta(name, json!({})),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// The default cluster roles.
pub fn cluster_roles() -> Vec<Value> {
    let discovery_urls = [
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/openapi",
        "/openapi/*",
        "/readyz",
        "/version",
        "/version/",
    ];
    let health = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    vec![
        role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        aggregated("admin", "admin", None),
        aggregated("edit", "edit", Some("admin")),
        aggregated("view", "view", Some("edit")),
        aggregate_to(
            "system:aggregate-to-admin",
            "admin",
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(
                    READ_WRITE,
                    &["rbac.authorization.k8s.io"],
                    &["roles", "rolebindings"],
                ),
            ],
        ),
        aggregate_to(
            "system:aggregate-to-edit",
            "edit",
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                    ],
                ),
                rule(&["create"], &[""], &["pods/eviction"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                        "persistentvolumeclaims",
                        "configmaps",
                        "secrets",
                        "events",
                    ],
                ),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "statefulsets",
                        "statefulsets/scale",
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "replicasets",
                        "replicasets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["jobs", "cronjobs"]),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    WRITE,
                    &["networking.k8s.io"],
                    &["networkpolicies", "ingresses"],
                ),
                rule(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        aggregate_to(
            "system:aggregate-to-view",
            "view",
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "configmaps",
                    ],
                ),
                rule(
                    READ,
                    &[""],
                    &[
                        "limitranges",
                        "resourcequotas",
                        "bindings",
                        "events",
                        "pods/status",
                        "resourcequotas/status",
                        "namespaces/status",
                        "replicationcontrollers/status",
                        "pods/log",
                    ],
                ),
                rule(READ, &[""], &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["jobs", "jobs/status", "cronjobs", "cronjobs/status"],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
            ],
        ),
        role("system:discovery", vec![urls(&["get"], &discovery_urls)]),
        role("system:public-info-viewer", vec![urls(&["get"], &health)]),
        role(
            "system:basic-user",
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        role(
            "system:monitoring",
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/readyz",
                    "/readyz/*",
                    "/metrics",
                    "/metrics/slis",
                ],
            )],
        ),
        role(
            "system:service-account-issuer-discovery",
            vec![urls(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
        role(
            "system:auth-delegator",
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        role(
            "system:node-bootstrapper",
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        role(
            "system:node-proxier",
            vec![
                rule(READ, &[""], &["endpoints", "services", "nodes"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
            ],
        ),
        role(
            "system:persistent-volume-provisioner",
            vec![
                rule(
                    &["create", "delete", "get", "list", "watch"],
                    &[""],
                    &["persistentvolumes"],
                ),
                rule(
                    &["get", "list", "update", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(
                    &["create", "patch", "update", "watch"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
            ],
        ),
        role(
            "system:kubelet-api-admin",
            vec![
                rule(&["get", "list", "watch", "proxy"], &[""], &["nodes"]),
                rule(
                    &["*"],
                    &[""],
                    &[
                        "nodes/log",
                        "nodes/metrics",
                        "nodes/proxy",
                        "nodes/stats",
                        "nodes/spec",
                        "nodes/configz",
                        "nodes/healthz",
                        "nodes/pods",
                    ],
                ),
            ],
        ),
        // What the scheduler's VolumeBinding needs to bind a delayed claim on the node it chose.
        role(
            "system:volume-scheduler",
            vec![
                rule(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumes", "persistentvolumeclaims"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
            ],
        ),
        role(
            "system:kube-scheduler",
            vec![
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                rule(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
                rule(&["delete", "get", "list", "watch"], &[""], &["pods"]),
                rule(&["create"], &[""], &["pods/binding", "bindings"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(
                    READ,
                    &[""],
                    &[
                        "nodes",
                        "namespaces",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "replicationcontrollers",
                        "services",
                    ],
                ),
                rule(READ, &["apps"], &["replicasets", "statefulsets"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    READ,
                    &["storage.k8s.io"],
                    &[
                        "storageclasses",
                        "csinodes",
                        "csidrivers",
                        "csistoragecapacities",
                    ],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        role(
            "system:kube-controller-manager",
            vec![
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(
                    &["create", "get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(&["create"], &[""], &["secrets", "serviceaccounts"]),
                rule(&["delete", "get", "update"], &[""], &["secrets"]),
                rule(&["get"], &[""], &["serviceaccounts"]),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                rule(&["list", "watch"], &["*"], &["*"]),
            ],
        ),
    ]
    .into_iter()
    .chain(controller_roles())
    .collect()
}

/// The loops of kube-controller-manager that basalt runs, each on the service account
/// `kube-system/<name>` with the role `system:controller:<name>` (upstream's controller policy).
const CONTROLLERS: &[&str] = &[
    "replicaset-controller",
    "deployment-controller",
    "statefulset-controller",
    "daemon-set-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "node-controller",
    "taint-eviction-controller",
    "generic-garbage-collector",
    "pod-garbage-collector",
    "endpoint-controller",
    "endpointslice-controller",
    "disruption-controller",
    "certificate-controller",
    "persistent-volume-binder",
    "resourcequota-controller",
];

fn controller_roles() -> Vec<Value> {
    let events = rule(
        &["create", "patch", "update"],
        &["", "events.k8s.io"],
        &["events"],
    );
    let apps = &["apps", "extensions"];
    CONTROLLERS
        .iter()
        .map(|c| {
            let rules = match *c {
                "replicaset-controller" => vec![
                    rule(&["get", "list", "update", "watch"], apps, &["replicasets"]),
                    rule(&["update"], apps, &["replicasets/status"]),
                    rule(&["update"], apps, &["replicasets/finalizers"]),
                    rule(
                        &["create", "delete", "list", "patch", "watch"],
                        &[""],
                        &["pods"],
                    ),
                    events.clone(),
                ],
                "deployment-controller" => vec![
                    rule(&["get", "list", "update", "watch"], apps, &["deployments"]),
                    rule(&["update"], apps, &["deployments/status"]),
                    rule(&["update"], apps, &["deployments/finalizers"]),
                    rule(
                        &[
                            "create", "delete", "get", "list", "patch", "update", "watch",
                        ],
                        apps,
                        &["replicasets"],
                    ),
                    // Recreate waits for the old pods to be gone; adoption patches them.
                    rule(&["get", "list", "update", "watch"], &[""], &["pods"]),
                    events.clone(),
                ],
                "statefulset-controller" => vec![
                    rule(&["get", "list", "watch"], apps, &["statefulsets"]),
                    rule(&["update"], apps, &["statefulsets/status"]),
                    rule(&["update"], apps, &["statefulsets/finalizers"]),
                    rule(
                        &[
                            "create", "delete", "get", "list", "patch", "update", "watch",
                        ],
                        &[""],
                        &["pods"],
                    ),
                    rule(
                        &[
                            "create", "delete", "get", "list", "patch", "update", "watch",
                        ],
                        apps,
                        &["controllerrevisions"],
                    ),
                    rule(
                        &["create", "delete", "get", "update"],
                        &[""],
                        &["persistentvolumeclaims"],
                    ),
                    events.clone(),
                ],
                "daemon-set-controller" => vec![
                    rule(&["get", "list", "watch"], apps, &["daemonsets"]),
                    rule(&["update"], apps, &["daemonsets/status"]),
                    rule(&["update"], apps, &["daemonsets/finalizers"]),
                    rule(&["get", "list", "watch"], &[""], &["nodes"]),
                    rule(
                        &["create", "delete", "list", "patch", "watch"],
                        &[""],
                        &["pods"],
                    ),
                    rule(&["create"], &[""], &["pods/binding"]),
                    rule(
                        &[
                            "create", "delete", "get", "list", "patch", "update", "watch",
                        ],
                        apps,
                        &["controllerrevisions"],
                    ),
                    events.clone(),
                ],
                "endpoint-controller" => vec![
                    rule(&["get", "list", "watch"], &[""], &["services", "pods"]),
                    rule(
                        &["create", "delete", "get", "list", "update"],
                        &[""],
                        &["endpoints"],
                    ),
                    rule(&["create"], &[""], &["endpoints/restricted"]),
                    events.clone(),
                ],
                "endpointslice-controller" => vec![
                    rule(
                        &["get", "list", "watch"],
                        &[""],
                        &["services", "pods", "nodes"],
                    ),
                    rule(&["update"], &[""], &["services/finalizers"]),
                    rule(
                        &["create", "delete", "get", "list", "update"],
                        &["discovery.k8s.io"],
                        &["endpointslices"],
                    ),
                    events.clone(),
                ],
                "disruption-controller" => vec![
                    rule(
                        &["get", "list", "watch"],
                        apps,
                        &["deployments", "replicasets", "statefulsets"],
                    ),
                    rule(
                        &["get", "list", "watch"],
                        &[""],
                        &["replicationcontrollers"],
                    ),
                    rule(
                        &["get", "list", "watch"],
                        &["policy"],
                        &["poddisruptionbudgets"],
                    ),
                    rule(&["update"], &["policy"], &["poddisruptionbudgets/status"]),
                    rule(&["get"], &["*"], &["*/scale"]),
                    events.clone(),
                ],
                "pod-garbage-collector" => vec![
                    rule(&["delete", "list", "watch"], &[""], &["pods"]),
                    rule(&["patch"], &[""], &["pods/status"]),
                    rule(&["get", "list"], &[""], &["nodes"]),
                ],
                "job-controller" => vec![
                    rule(&["get", "list", "update", "watch"], &["batch"], &["jobs"]),
                    rule(&["update"], &["batch"], &["jobs/status"]),
                    rule(&["update"], &["batch"], &["jobs/finalizers"]),
                    rule(
                        &["create", "delete", "list", "patch", "watch"],
                        &[""],
                        &["pods"],
                    ),
                    events.clone(),
                ],
                "cronjob-controller" => vec![
                    rule(
                        &["get", "list", "update", "watch"],
                        &["batch"],
                        &["cronjobs"],
                    ),
                    rule(
                        &[
                            "create", "delete", "get", "list", "patch", "update", "watch",
                        ],
                        &["batch"],
                        &["jobs"],
                    ),
                    rule(&["update"], &["batch"], &["cronjobs/status"]),
                    rule(&["update"], &["batch"], &["cronjobs/finalizers"]),
                    rule(&["delete", "list"], &[""], &["pods"]),
                    events.clone(),
                ],
                "ttl-after-finished-controller" => vec![
                    rule(&["delete", "get", "list", "watch"], &["batch"], &["jobs"]),
                    events.clone(),
                ],
                // Upstream's rules, and the watches that upstream's shared informers make as the manager
                // itself: here each loop watches with its own credentials.
                "node-controller" => vec![
                    rule(
                        &["delete", "get", "list", "patch", "update", "watch"],
                        &[""],
                        &["nodes"],
                    ),
                    rule(&["patch", "update"], &[""], &["nodes/status"]),
                    rule(&["patch", "update"], &[""], &["pods/status"]),
                    rule(&["delete", "list", "watch"], &[""], &["pods"]),
                    rule(
                        &["get", "list", "watch"],
                        &["coordination.k8s.io"],
                        &["leases"],
                    ),
                    events.clone(),
                ],
                "resourcequota-controller" => vec![
                    rule(&["list", "watch"], &["*"], &["*"]),
                    rule(&["update"], &[""], &["resourcequotas/status"]),
                    events.clone(),
                ],
                "persistent-volume-binder" => vec![
                    rule(
                        &["create", "delete", "get", "list", "update", "watch"],
                        &[""],
                        &["persistentvolumes"],
                    ),
                    rule(&["update"], &[""], &["persistentvolumes/status"]),
                    rule(
                        &["get", "list", "update", "watch"],
                        &[""],
                        &["persistentvolumeclaims"],
                    ),
                    rule(&["update"], &[""], &["persistentvolumeclaims/status"]),
                    rule(
                        &["create", "delete", "get", "list", "watch"],
                        &[""],
                        &["pods"],
                    ),
                    rule(
                        &["get", "list", "watch"],
                        &["storage.k8s.io"],
                        &["storageclasses"],
                    ),
                    rule(&["get", "list"], &[""], &["nodes"]),
                    events.clone(),
                ],
                "certificate-controller" => vec![
                    rule(
                        &["delete", "get", "list", "watch"],
                        &["certificates.k8s.io"],
                        &["certificatesigningrequests"],
                    ),
                    rule(
                        &["update"],
                        &["certificates.k8s.io"],
                        &[
                            "certificatesigningrequests/approval",
                            "certificatesigningrequests/status",
                        ],
                    ),
                    json!({"verbs": ["approve"], "apiGroups": ["certificates.k8s.io"], "resources": ["signers"],
                        "resourceNames": ["kubernetes.io/kube-apiserver-client-kubelet"]}),
                    json!({"verbs": ["sign"], "apiGroups": ["certificates.k8s.io"], "resources": ["signers"],
                        "resourceNames": ["kubernetes.io/kube-apiserver-client", "kubernetes.io/kube-apiserver-client-kubelet",
                            "kubernetes.io/kubelet-serving", "kubernetes.io/legacy-unknown"]}),
                    rule(
                        &["create"],
                        &["authorization.k8s.io"],
                        &["subjectaccessreviews"],
                    ),
                    events.clone(),
                ],
                "taint-eviction-controller" => vec![
                    rule(&["patch"], &[""], &["pods/status"]),
                    rule(&["delete", "get", "list", "watch"], &[""], &["pods"]),
                    rule(&["get", "list", "watch"], &[""], &["nodes"]),
                    events.clone(),
                ],
                _ => vec![rule(
                    &["delete", "get", "list", "patch", "update", "watch"],
                    &["*"],
                    &["*"],
                )],
            };
            role(&format!("system:controller:{c}"), rules)
        })
        .collect()
}

fn controller_binding(c: &str) -> Value {
    let name = format!("system:controller:{c}");
    let mut b = binding(&name, &name, &[]);
    b["subjects"] = json!([{"kind": "ServiceAccount", "name": c, "namespace": "kube-system"}]);
    b
}

/// The default cluster role bindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            &[("Group", "system:masters")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            &[("Group", "system:monitoring")],
        ),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts")],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:volume-scheduler",
            "system:volume-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            &[("User", "system:kube-proxy")],
        ),
        // The apiserver reaching kubelets for logs, exec, attach and port-forward (kubeadm binds the same).
        binding(
            "basalt:kube-apiserver-kubelet-client",
            "system:kubelet-api-admin",
            &[("User", crate::kubelet::CLIENT_USER)],
        ),
        // Nodes joining with a bootstrap token may ask for their client certificate (kubeadm and k3s bind
        // the same roles).
        binding(
            "basalt:kubelet-bootstrap",
            "system:node-bootstrapper",
            &[("Group", "system:bootstrappers")],
        ),
        binding(
            "basalt:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[("Group", "system:bootstrappers")],
        ),
        binding(
            "basalt:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[("Group", "system:nodes")],
        ),
    ]
    .into_iter()
    .chain(CONTROLLERS.iter().map(|c| controller_binding(c)))
    .collect()
}

/// Upstream's roles that live in one namespace, with their bindings: the token cleaner may delete only
/// the Secrets of `kube-system`, where bootstrap tokens are kept.
pub fn namespaced_roles() -> Vec<(Value, Value)> {
    let (ns, name) = ("kube-system", "system:controller:token-cleaner");
    let mut role = role(
        name,
        vec![
            rule(&["delete", "get", "list", "watch"], &[""], &["secrets"]),
            rule(
                &["create", "patch", "update"],
                &["", "events.k8s.io"],
                &["events"],
            ),
        ],
    );
    role["kind"] = json!("Role");
    role["metadata"]["namespace"] = json!(ns);
    let mut b = controller_binding("token-cleaner");
    b["kind"] = json!("RoleBinding");
    b["metadata"]["namespace"] = json!(ns);
    b["roleRef"]["kind"] = json!("Role");
    vec![(role, b)]
}

/// The two system priority classes every cluster has.
pub fn priority_classes() -> Vec<Value> {
    [("system-node-critical", 2_000_001_000i64, "Used for system critical pods that must not be moved from their current node."),
     ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.")]
        .iter()
        .map(|(name, value, desc)| json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": desc, "preemptionPolicy": "PreemptLowerPriority",
        }))
        .collect()
}

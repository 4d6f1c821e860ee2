//! apps/v1 workloads and batch/v1 jobs: defaults, selector rules, scale, and their `kubectl get` columns.

use basalt_apimachinery::selector::LabelSelector;
use basalt_apimachinery::validate::FieldError;
use serde_json::{json, Value};

use super::table::{self, col, wide, AGE, NAME};
use super::{default_at, FieldValue, StatusPolicy, Strategy, Table};
use crate::meta;

/// Defaults of a pod template at `/spec/template`.
fn default_template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        super::pods::default_spec(spec);
    }
}

/// The selector/template rules every controller kind shares.
fn validate_selector(obj: &Value, restart: Option<&[&str]>, errs: &mut Vec<FieldError>) {
    super::validate_labels(obj, "metadata", errs);
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match spec.get("selector") {
        None | Some(Value::Null) => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => match LabelSelector::from_object(sel) {
            Err(e) => errs.push(FieldError::invalid("spec.selector", sel.clone(), e.0)),
            Ok(s) if s.is_empty() => errs.push(FieldError::invalid(
                "spec.selector",
                sel.clone(),
                "empty selector is invalid for deployment",
            )),
            Ok(s) => {
                let labels = spec
                    .pointer("/template/metadata/labels")
                    .cloned()
                    .unwrap_or(json!({}));
                if !s.matches_object(&json!({"metadata": {"labels": labels}})) {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        labels,
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        },
    }
    if let Some(r) = spec.get("replicas").and_then(Value::as_i64) {
        if r < 0 {
            errs.push(FieldError::invalid(
                "spec.replicas",
                json!(r),
                "must be greater than or equal to 0",
            ));
        }
    }
    match spec.pointer("/template/spec") {
        Some(ps) => {
            // A StatefulSet's containers mount its claim templates too: they become the pods' volumes.
            let mut ps = ps.clone();
            for t in spec
                .get("volumeClaimTemplates")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(name), Some(volumes)) = (
                    t.pointer("/metadata/name").and_then(Value::as_str),
                    ps.as_object_mut()
                        .map(|m| m.entry("volumes").or_insert(json!([]))),
                ) {
                    if let Some(v) = volumes.as_array_mut() {
                        v.retain(|v| v.get("name").and_then(Value::as_str) != Some(name));
                        v.push(json!({"name": name, "persistentVolumeClaim": {"claimName": name}}));
                    }
                }
            }
            let ps = &ps;
            super::pods::validate_spec(ps, "spec.template.spec", errs);
            if let (Some(allowed), Some(p)) =
                (restart, ps.get("restartPolicy").and_then(Value::as_str))
            {
                if !allowed.contains(&p) {
                    errs.push(FieldError::not_supported(
                        "spec.template.spec.restartPolicy",
                        json!(p),
                        allowed,
                    ));
                }
            }
        }
        None => errs.push(FieldError::required("spec.template", "")),
    }
}

fn selector_immutable(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    if let Some(e) = super::immutable(new, old, "/spec/selector", "spec.selector") {
        errs.push(e);
    }
}

fn containers_and_images(o: &Value) -> (String, String) {
    let cs: Vec<&Value> = o
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let names: Vec<&str> = cs
        .iter()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let images: Vec<&str> = cs
        .iter()
        .filter_map(|c| c.get("image").and_then(Value::as_str))
        .collect();
    (names.join(","), images.join(","))
}

fn selector_text(o: &Value) -> String {
    o.pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_object(s).ok())
        .map(|s| s.to_query())
        .unwrap_or_default()
}

pub struct Deployments;

impl Strategy for Deployments {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/spec/replicas", json!(1));
        default_at(obj, "/spec/strategy/type", json!("RollingUpdate"));
        if obj.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
            default_at(
                obj,
                "/spec/strategy/rollingUpdate/maxUnavailable",
                json!("25%"),
            );
            default_at(obj, "/spec/strategy/rollingUpdate/maxSurge", json!("25%"));
        }
        default_at(obj, "/spec/revisionHistoryLimit", json!(10));
        default_at(obj, "/spec/progressDeadlineSeconds", json!(600));
        default_template(obj);
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_selector(obj, Some(&["Always"]), &mut errs);
        let ty = obj
            .pointer("/spec/strategy/type")
            .and_then(Value::as_str)
            .unwrap_or("RollingUpdate");
        if ty == "Recreate" && obj.pointer("/spec/strategy/rollingUpdate").is_some() {
            errs.push(FieldError::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
        if !["Recreate", "RollingUpdate"].contains(&ty) {
            errs.push(FieldError::not_supported(
                "spec.strategy.type",
                json!(ty),
                &["Recreate", "RollingUpdate"],
            ));
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        selector_immutable(new, old, &mut errs);
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Ready", "string", "Number of the pod with ready state"),
                col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
                col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
                AGE,
                wide("Containers", "string", "Names of each container in the template."),
                wide("Images", "string", "Images referenced by each container in the template."),
                wide("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
            ],
            |o| {
                let (c, i) = containers_and_images(o);
                vec![
                    json!(meta::name(o)),
                    json!(format!(
                        "{}/{}",
                        o.pointer("/status/readyReplicas").and_then(Value::as_i64).unwrap_or(0),
                        o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)
                    )),
                    table::int(o.pointer("/status/updatedReplicas")),
                    table::int(o.pointer("/status/availableReplicas")),
                    table::age(o),
                    json!(c),
                    json!(i),
                    json!(selector_text(o)),
                ]
            },
        )
    }
}

pub struct ReplicaSets;

impl Strategy for ReplicaSets {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/spec/replicas", json!(1));
        default_template(obj);
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_selector(obj, Some(&["Always"]), &mut errs);
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        selector_immutable(new, old, &mut errs);
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Desired", "integer", "Replicas is the number of desired pods."),
                col("Current", "integer", "Replicas is the most recently observed number of non-terminating pods."),
                col("Ready", "integer", "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
                AGE,
                wide("Containers", "string", "Names of each container in the template."),
                wide("Images", "string", "Images referenced by each container in the template."),
                wide("Selector", "string", "Selector is a label query over pods that should match the replica count."),
            ],
            |o| {
                let (c, i) = containers_and_images(o);
                vec![
                    json!(meta::name(o)),
                    table::int(o.pointer("/spec/replicas")),
                    table::int(o.pointer("/status/replicas")),
                    table::int(o.pointer("/status/readyReplicas")),
                    table::age(o),
                    json!(c),
                    json!(i),
                    json!(selector_text(o)),
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

pub struct DaemonSets;

impl Strategy for DaemonSets {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/spec/updateStrategy/type", json!("RollingUpdate"));
        if obj
            .pointer("/spec/updateStrategy/type")
            .and_then(Value::as_str)
            == Some("RollingUpdate")
        {
            default_at(
                obj,
                "/spec/updateStrategy/rollingUpdate/maxUnavailable",
                json!(1),
            );
            default_at(obj, "/spec/updateStrategy/rollingUpdate/maxSurge", json!(0));
        }
        default_at(obj, "/spec/revisionHistoryLimit", json!(10));
        default_template(obj);
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_selector(obj, Some(&["Always"]), &mut errs);
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        selector_immutable(new, old, &mut errs);
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
                col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
                col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
                col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
                col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
                col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
                AGE,
                wide("Containers", "string", "Names of each container in the template."),
                wide("Images", "string", "Images referenced by each container in the template."),
                wide("Selector", "string", "A label query over pods that are managed by the daemon set."),
            ],
            |o| {
                let (c, i) = containers_and_images(o);
                vec![
                    json!(meta::name(o)),
                    table::int(o.pointer("/status/desiredNumberScheduled")),
                    table::int(o.pointer("/status/currentNumberScheduled")),
                    table::int(o.pointer("/status/numberReady")),
                    table::int(o.pointer("/status/updatedNumberScheduled")),
                    table::int(o.pointer("/status/numberAvailable")),
                    table::or_none(table::map_text(o.pointer("/spec/template/spec/nodeSelector"))),
                    table::age(o),
                    json!(c),
                    json!(i),
                    json!(selector_text(o)),
                ]
            },
        )
    }
}

pub struct StatefulSets;

impl Strategy for StatefulSets {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/spec/replicas", json!(1));
        default_at(obj, "/spec/podManagementPolicy", json!("OrderedReady"));
        default_at(obj, "/spec/updateStrategy/type", json!("RollingUpdate"));
        if obj
            .pointer("/spec/updateStrategy/type")
            .and_then(Value::as_str)
            == Some("RollingUpdate")
        {
            default_at(
                obj,
                "/spec/updateStrategy/rollingUpdate/partition",
                json!(0),
            );
        }
        default_at(obj, "/spec/revisionHistoryLimit", json!(10));
        default_at(
            obj,
            "/spec/persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
        if let Some(ts) = obj
            .pointer_mut("/spec/volumeClaimTemplates")
            .and_then(Value::as_array_mut)
        {
            for t in ts {
                default_at(t, "/spec/volumeMode", json!("Filesystem"));
                default_at(t, "/status/phase", json!("Pending"));
                default_at(t, "/apiVersion", json!("v1"));
                default_at(t, "/kind", json!("PersistentVolumeClaim"));
            }
        }
        default_template(obj);
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_selector(obj, Some(&["Always"]), &mut errs);
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        selector_immutable(new, old, &mut errs);
        for f in ["serviceName", "podManagementPolicy", "volumeClaimTemplates"] {
            if let Some(e) = super::immutable(new, old, &format!("/spec/{f}"), &format!("spec.{f}"))
            {
                errs.push(FieldError::forbidden("spec", format!("updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden ({})", e.path)));
            }
        }
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Ready", "string", "Number of the pod with ready state"),
                AGE,
                wide(
                    "Containers",
                    "string",
                    "Names of each container in the template.",
                ),
                wide(
                    "Images",
                    "string",
                    "Images referenced by each container in the template.",
                ),
            ],
            |o| {
                let (c, i) = containers_and_images(o);
                vec![
                    json!(meta::name(o)),
                    json!(format!(
                        "{}/{}",
                        o.pointer("/status/readyReplicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0),
                        o.pointer("/spec/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                    )),
                    table::age(o),
                    json!(c),
                    json!(i),
                ]
            },
        )
    }
}

pub struct ControllerRevisions;

impl Strategy for ControllerRevisions {
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Controller", "string", "Controller of the object"),
                col(
                    "Revision",
                    "string",
                    "Revision indicates the revision of the state represented by Data.",
                ),
                AGE,
            ],
            |o| {
                let owner = crate::meta::owner_references(o)
                    .into_iter()
                    .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
                    .map(|r| {
                        let kind = r
                            .get("kind")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_ascii_lowercase();
                        let api = r
                            .get("apiVersion")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let group = crate::meta::split_api_version(api).0;
                        let kind = if group.is_empty() {
                            kind
                        } else {
                            format!("{kind}.{group}")
                        };
                        format!(
                            "{kind}/{}",
                            r.get("name").and_then(Value::as_str).unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| "<none>".into());
                vec![
                    json!(meta::name(o)),
                    json!(owner),
                    table::int(o.get("revision")),
                    table::age(o),
                ]
            },
        )
    }
}

pub struct Jobs;

impl Strategy for Jobs {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn default(&self, obj: &mut Value) {
        let completions = obj.pointer("/spec/completions").cloned();
        let parallelism = obj.pointer("/spec/parallelism").cloned();
        if completions.is_none() && parallelism.is_none() {
            default_at(obj, "/spec/completions", json!(1));
        }
        default_at(obj, "/spec/parallelism", json!(1));
        default_at(obj, "/spec/backoffLimit", json!(6));
        default_at(obj, "/spec/completionMode", json!("NonIndexed"));
        default_at(obj, "/spec/suspend", json!(false));
        default_at(
            obj,
            "/spec/podReplacementPolicy",
            json!("TerminatingOrFailed"),
        );
        default_at(obj, "/spec/manualSelector", Value::Null);
        if obj
            .pointer("/spec/manualSelector")
            .is_some_and(Value::is_null)
        {
            obj["spec"]
                .as_object_mut()
                .map(|m| m.remove("manualSelector"));
        }
        default_template(obj);
    }
    fn prepare_create(&self, obj: &mut Value) {
        // Without a manual selector the job selects its pods by its own uid (upstream's generated selector).
        if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) != Some(true) {
            let uid = meta::uid(obj).to_string();
            let name = meta::name(obj).to_string();
            obj["spec"]["selector"] =
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            for (k, v) in [
                ("batch.kubernetes.io/controller-uid", uid.clone()),
                ("batch.kubernetes.io/job-name", name.clone()),
                ("controller-uid", uid.clone()),
                ("job-name", name.clone()),
            ] {
                default_at(obj, "/spec/template/metadata/labels", json!({}));
                obj["spec"]["template"]["metadata"]["labels"][k] = json!(v);
            }
        }
        obj["status"] = json!({});
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        super::validate_labels(obj, "metadata", &mut errs);
        match obj.pointer("/spec/template/spec") {
            Some(ps) => {
                super::pods::validate_spec(ps, "spec.template.spec", &mut errs);
                let p = ps
                    .get("restartPolicy")
                    .and_then(Value::as_str)
                    .unwrap_or("Always");
                if !["OnFailure", "Never"].contains(&p) {
                    errs.push(FieldError::not_supported(
                        "spec.template.spec.restartPolicy",
                        json!(p),
                        &["OnFailure", "Never"],
                    ));
                }
            }
            None => errs.push(FieldError::required("spec.template", "")),
        }
        for f in ["parallelism", "completions", "backoffLimit"] {
            if let Some(n) = obj.pointer(&format!("/spec/{f}")).and_then(Value::as_i64) {
                if n < 0 {
                    errs.push(FieldError::invalid(
                        format!("spec.{f}"),
                        json!(n),
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        selector_immutable(new, old, &mut errs);
        errs.extend(
            super::immutable(new, old, "/spec/completions", "spec.completions").filter(|_| {
                new.pointer("/spec/completionMode").and_then(Value::as_str) != Some("Indexed")
            }),
        );
        if new.pointer("/spec/template") != old.pointer("/spec/template")
            && new.pointer("/spec/suspend").and_then(Value::as_bool) != Some(true)
        {
            errs.push(FieldError::invalid(
                "spec.template",
                new.pointer("/spec/template").cloned().unwrap_or_default(),
                "field is immutable",
            ));
        }
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Status", "string", "Status of the job."),
                col(
                    "Completions",
                    "string",
                    "The desired number of successfully finished pods the job should be run with.",
                ),
                col("Duration", "string", "Time required to complete the job."),
                AGE,
                wide(
                    "Containers",
                    "string",
                    "Names of each container in the template.",
                ),
                wide(
                    "Images",
                    "string",
                    "Images referenced by each container in the template.",
                ),
                wide(
                    "Selector",
                    "string",
                    "A label query over pods that should match the pod count.",
                ),
            ],
            |o| {
                let (c, i) = containers_and_images(o);
                let succeeded = o
                    .pointer("/status/succeeded")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
                    Some(n) => format!("{succeeded}/{n}"),
                    None => {
                        let p = o
                            .pointer("/spec/parallelism")
                            .and_then(Value::as_i64)
                            .unwrap_or(1);
                        if p > 1 {
                            format!("{succeeded}/1 of {p}")
                        } else {
                            format!("{succeeded}/1")
                        }
                    }
                };
                let cond = |t: &str| {
                    o.pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .any(|c| {
                            c.get("type").and_then(Value::as_str) == Some(t)
                                && c.get("status").and_then(Value::as_str) == Some("True")
                        })
                };
                let status = if cond("Complete") {
                    "Complete"
                } else if cond("Failed") {
                    "Failed"
                } else if meta::is_deleting(o) {
                    "Terminating"
                } else if cond("Suspended") {
                    "Suspended"
                } else if cond("FailureTarget") {
                    "FailureTarget"
                } else if cond("SuccessCriteriaMet") {
                    "SuccessCriteriaMet"
                } else {
                    "Running"
                };
                let duration = match (
                    o.pointer("/status/startTime").and_then(Value::as_str),
                    o.pointer("/status/completionTime").and_then(Value::as_str),
                ) {
                    (Some(s), Some(e)) => match (crate::clock::parse(s), crate::clock::parse(e)) {
                        (Some(s), Some(e)) => basalt_apimachinery::duration::human(
                            e.duration_since(s).unwrap_or_default(),
                        ),
                        _ => String::new(),
                    },
                    (Some(s), None) => table::age_of(s),
                    _ => String::new(),
                };
                vec![
                    json!(meta::name(o)),
                    json!(status),
                    json!(completions),
                    json!(duration),
                    table::age(o),
                    json!(c),
                    json!(i),
                    json!(selector_text(o)),
                ]
            },
        )
    }
    fn field(&self, obj: &Value, field: &str) -> FieldValue {
        match field {
            "status.successful" => FieldValue::Value(Some(
                obj.pointer("/status/succeeded")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    .to_string(),
            )),
            _ => FieldValue::Unsupported,
        }
    }
}

pub struct CronJobs;

impl Strategy for CronJobs {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::Subresource
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/spec/concurrencyPolicy", json!("Allow"));
        default_at(obj, "/spec/suspend", json!(false));
        default_at(obj, "/spec/successfulJobsHistoryLimit", json!(3));
        default_at(obj, "/spec/failedJobsHistoryLimit", json!(1));
        if let Some(spec) = obj.pointer_mut("/spec/jobTemplate/spec/template/spec") {
            super::pods::default_spec(spec);
        }
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        super::validate_labels(obj, "metadata", &mut errs);
        match obj.pointer("/spec/schedule").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required("spec.schedule", "")),
            Some(s) => {
                let fields = s.split_whitespace().count();
                if fields != 5 && !s.starts_with('@') {
                    errs.push(FieldError::invalid(
                        "spec.schedule",
                        json!(s),
                        format!("expected exactly 5 fields, found {fields}: {s}"),
                    ));
                }
            }
        }
        if let Some(p) = obj
            .pointer("/spec/concurrencyPolicy")
            .and_then(Value::as_str)
        {
            if !["Allow", "Forbid", "Replace"].contains(&p) {
                errs.push(FieldError::not_supported(
                    "spec.concurrencyPolicy",
                    json!(p),
                    &["Allow", "Forbid", "Replace"],
                ));
            }
        }
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
                col("Timezone", "string", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
                col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false."),
                col("Active", "integer", "A list of pointers to currently running jobs."),
                col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
                AGE,
                wide("Containers", "string", "Names of each container in the template."),
                wide("Images", "string", "Images referenced by each container in the template."),
                wide("Selector", "string", "A label query over pods that should match the pod count."),
            ],
            |o| {
                let cs: Vec<&Value> = o.pointer("/spec/jobTemplate/spec/template/spec/containers").and_then(Value::as_array).into_iter().flatten().collect();
                let names: Vec<&str> = cs.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).collect();
                let images: Vec<&str> = cs.iter().filter_map(|c| c.get("image").and_then(Value::as_str)).collect();
                vec![
                    json!(meta::name(o)),
                    json!(o.pointer("/spec/schedule").and_then(Value::as_str).unwrap_or_default()),
                    table::s(o.pointer("/spec/timeZone")),
                    json!(o.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false)),
                    json!(o.pointer("/status/active").and_then(Value::as_array).map(Vec::len).unwrap_or(0)),
                    match o.pointer("/status/lastScheduleTime").and_then(Value::as_str) {
                        Some(t) => json!(table::age_of(t)),
                        None => json!("<none>"),
                    },
                    table::age(o),
                    json!(names.join(",")),
                    json!(images.join(",")),
                    json!("<none>"),
                ]
            },
        )
    }
}

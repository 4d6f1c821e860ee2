//! storage.k8s.io/v1.

use basalt_apimachinery::validate::FieldError;
use serde_json::{json, Value};

use super::table::{self, col, AGE, NAME};
use super::{default_at, immutable, StatusPolicy, Strategy, Table};
use crate::meta;

pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

pub struct StorageClasses;

impl Strategy for StorageClasses {
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/reclaimPolicy", json!("Delete"));
        default_at(obj, "/volumeBindingMode", json!("Immediate"));
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if obj
            .get("provisioner")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required("provisioner", ""));
        }
        if let Some(p) = obj.get("reclaimPolicy").and_then(Value::as_str) {
            if !["Delete", "Retain"].contains(&p) {
                errs.push(FieldError::not_supported(
                    "reclaimPolicy",
                    json!(p),
                    &["Delete", "Retain"],
                ));
            }
        }
        if let Some(m) = obj.get("volumeBindingMode").and_then(Value::as_str) {
            if !["Immediate", "WaitForFirstConsumer"].contains(&m) {
                errs.push(FieldError::not_supported(
                    "volumeBindingMode",
                    json!(m),
                    &["Immediate", "WaitForFirstConsumer"],
                ));
            }
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        for f in [
            "provisioner",
            "parameters",
            "reclaimPolicy",
            "volumeBindingMode",
        ] {
            errs.extend(
                immutable(new, old, &format!("/{f}"), f)
                    .map(|e| FieldError::forbidden(e.path, "updates to parameters are forbidden.")),
            );
        }
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
                col("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class."),
                col("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound."),
                col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
                AGE,
            ],
            |o| {
                let mut name = meta::name(o).to_string();
                if meta::annotation(o, DEFAULT_CLASS_ANNOTATION) == Some("true") {
                    name.push_str(" (default)");
                }
                vec![
                    json!(name),
                    json!(o.get("provisioner").and_then(Value::as_str).unwrap_or_default()),
                    json!(o.get("reclaimPolicy").and_then(Value::as_str).unwrap_or("Delete")),
                    json!(o.get("volumeBindingMode").and_then(Value::as_str).unwrap_or("Immediate")),
                    json!(o.get("allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false).to_string()),
                    table::age(o),
                ]
            },
        )
    }
}

pub struct CsiDrivers;

impl Strategy for CsiDrivers {
    fn default(&self, obj: &mut Value) {
        default_at(obj, "/spec/attachRequired", json!(true));
        default_at(obj, "/spec/podInfoOnMount", json!(false));
        default_at(obj, "/spec/storageCapacity", json!(false));
        default_at(obj, "/spec/fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
        default_at(obj, "/spec/requiresRepublish", json!(false));
        default_at(obj, "/spec/volumeLifecycleModes", json!(["Persistent"]));
        default_at(obj, "/spec/seLinuxMount", json!(false));
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        for f in [
            "attachRequired",
            "podInfoOnMount",
            "volumeLifecycleModes",
            "fsGroupPolicy",
        ] {
            errs.extend(immutable(
                new,
                old,
                &format!("/spec/{f}"),
                &format!("spec.{f}"),
            ));
        }
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("AttachRequired", "boolean", "attachRequired indicates this CSI volume driver requires an attach operation."),
                col("PodInfoOnMount", "boolean", "podInfoOnMount indicates this CSI volume driver requires additional pod information during mount operations."),
                col("StorageCapacity", "boolean", "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity."),
                col("TokenRequests", "string", "tokenRequests indicates the CSI driver needs pods' service account tokens."),
                col("RequiresRepublish", "boolean", "requiresRepublish indicates the CSI driver wants NodePublishVolume being periodically called."),
                col("Modes", "string", "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports."),
                AGE,
            ],
            |o| {
                let b = |k: &str| json!(o.pointer(&format!("/spec/{k}")).and_then(Value::as_bool).unwrap_or(false));
                let tokens: Vec<&str> = o.pointer("/spec/tokenRequests").and_then(Value::as_array).into_iter().flatten().filter_map(|t| t.get("audience").and_then(Value::as_str)).collect();
                let modes: Vec<&str> = o.pointer("/spec/volumeLifecycleModes").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
                vec![
                    json!(meta::name(o)),
                    b("attachRequired"),
                    b("podInfoOnMount"),
                    b("storageCapacity"),
                    table::or_none(tokens.join(",")),
                    b("requiresRepublish"),
                    json!(modes.join(",")),
                    table::age(o),
                ]
            },
        )
    }
}

pub struct CsiNodes;

impl Strategy for CsiNodes {
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col(
                    "Drivers",
                    "integer",
                    "Drivers indicates the number of CSI drivers registered on the node",
                ),
                AGE,
            ],
            |o| {
                vec![
                    json!(meta::name(o)),
                    json!(o
                        .pointer("/spec/drivers")
                        .and_then(Value::as_array)
                        .map(Vec::len)
                        .unwrap_or(0)),
                    table::age(o),
                ]
            },
        )
    }
}

pub struct VolumeAttachments;

impl Strategy for VolumeAttachments {
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
                col("Attacher", "string", "Attacher indicates the name of the volume driver that MUST handle this request."),
                col("PV", "string", "Name of the persistent volume to attach."),
                col("Node", "string", "The node that the volume should be attached to."),
                col("Attached", "boolean", "Indicates the volume is successfully attached."),
                AGE,
            ],
            |o| {
                vec![
                    json!(meta::name(o)),
                    json!(o.pointer("/spec/attacher").and_then(Value::as_str).unwrap_or_default()),
                    json!(o.pointer("/spec/source/persistentVolumeName").and_then(Value::as_str).unwrap_or_default()),
                    json!(o.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default()),
                    json!(o.pointer("/status/attached").and_then(Value::as_bool).unwrap_or(false)),
                    table::age(o),
                ]
            },
        )
    }
}

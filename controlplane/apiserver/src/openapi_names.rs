//! The OpenAPI definition names of built-in kinds (`io.k8s.api.apps.v1.Deployment`).

use basalt_apimachinery::schema::Schemas;

pub fn definition(group: &str, version: &str, kind: &str) -> String {
    Schemas::builtin()
        .kinds()
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
        .map(|k| k.definition.clone())
        .unwrap_or_else(|| format!("{group}.{version}.{kind}"))
}

//! The Kubernetes API's machinery, without HTTP: what the apiserver (and the controllers) need to treat
//! objects as kube-apiserver does.
//!
//! - [`schema`]: the type graph of the built-in kinds (upstream's OpenAPI definitions, generated from
//!   k8s-openapi at build time) and of custom resources (their structural schemas), with list and map merge
//!   semantics.
//! - [`validate`]: decoding checks against a schema: unknown and duplicate fields (field validation), wrong
//!   types, and the structural-schema constraints of custom resources; pruning.
//! - [`smp`]: strategic merge patch, with upstream's merge keys and directives.
//! - [`managed`]: managed fields (FieldsV1) and server-side apply.
//! - [`selector`]: label and field selectors.
//! - [`quantity`]: resource quantities.
//! - [`quota`]: what an object counts against a ResourceQuota.
//! - [`names`]: object name rules.
//! - [`duration`]: the short human durations of `kubectl get`'s AGE column.
//! - [`openapi`]: the embedded definitions, for /openapi/v2 and /openapi/v3.
//! - [`protobuf`]: Kubernetes' protobuf encoding of built-in kinds, decoded to JSON.

pub mod duration;
pub mod managed;
pub mod names;
pub mod openapi;
pub mod protobuf;
pub mod quantity;
pub mod quota;
pub mod schema;
pub mod selector;
pub mod smp;
pub mod validate;

pub use schema::{KindInfo, ListType, Node, Schemas, Scope};

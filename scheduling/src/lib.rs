//! Which nodes a pod may run on, as upstream's `component-helpers/scheduling/corev1`: the scheduler's
//! filters, the kubelet's admission of a bound pod and the DaemonSet controller's placement all ask
//! these, so a pod the scheduler places is one the kubelet admits.
//!
//! - [`taints`]: whether tolerations tolerate a node's taints.
//! - [`affinity`]: a pod's node selector and required node affinity, parsed once and matched against a
//!   node's labels and name.

pub mod affinity;
pub mod taints;

pub use affinity::{NodeSelectorTerm, RequiredNodeAffinity};
pub use taints::{tolerated, tolerates, untolerated};

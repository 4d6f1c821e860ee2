//! Wire protocols of the node: the Kubernetes CRI v1 and CSI gRPC services, compiled with tonic/prost.
//!
//! Generated types and thin conversions only. This crate must never hold behaviour: servers and clients live in
//! the crates that own the behaviour (agent, csi), so that a protocol bump is a change here and nowhere else.
//!
//! Not built yet: the CRI issue (#6) adds the protos, compiled without a system `protoc`.

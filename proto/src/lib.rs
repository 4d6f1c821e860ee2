//! Wire protocols of the node: the Kubernetes CRI v1 and CSI gRPC services, compiled with tonic/prost.
//!
//! Generated types and thin conversions only. This crate must never hold behaviour: servers and clients live in
//! the crates that own the behaviour (agent, csi), so that a protocol bump is a change here and nowhere else.
//!
//! `proto/cri-api-v1.proto` is `k8s.io/cri-api/pkg/apis/runtime/v1/api.proto` as published by the Kubernetes
//! authors (Apache-2.0), unchanged; it is compiled by `build.rs` with protox, without a system `protoc`.
//! `proto/csi.proto` is our own copy of the CSI spec v1.12 services and messages (same names, field numbers and
//! enum values as the spec, our comments), compiled the same way.

/// CRI v1 (`runtime.v1`): `RuntimeService` and `ImageService`, their clients and servers.
pub mod cri {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("runtime.v1");
}

pub use cri::{
    image_service_client::ImageServiceClient, image_service_server::ImageServiceServer,
    runtime_service_client::RuntimeServiceClient, runtime_service_server::RuntimeServiceServer,
};

/// CSI v1 (`csi.v1`): Identity, Controller, GroupController, SnapshotMetadata and Node, clients and servers.
pub mod csi {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("csi.v1");
}

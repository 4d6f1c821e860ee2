//! Compiles the vendored protocol files with protox (pure Rust), so building needs no `protoc` on the host.

fn main() {
    let fds =
        protox::compile(["cri-api-v1.proto"], ["proto"]).expect("parse proto/cri-api-v1.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The agent keeps the requests it was given on disk as JSON, to recover them after a restart.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        .compile_fds(fds)
        .expect("generate CRI v1 code");
    // CSI apart: its messages hold well-known types (Timestamp, wrappers) that have no serde impls, and
    // nothing keeps CSI requests on disk.
    let fds = protox::compile(["csi.proto"], ["proto"]).expect("parse proto/csi.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("generate CSI v1 code");
    println!("cargo:rerun-if-changed=proto");
}

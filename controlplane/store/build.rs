//! Compiles etcd's v3 API (our trimmed copy) with protox, pure Rust like the CRI proto: building the store
//! needs no `protoc` on the machine (the etcd-client crate's build does, which is why the client is ours).

fn main() {
    let fds = protox::compile(["etcd-v3.proto"], ["proto"]).expect("parse proto/etcd-v3.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)
        .expect("generate the etcd v3 client");
    println!("cargo:rerun-if-changed=proto");
}

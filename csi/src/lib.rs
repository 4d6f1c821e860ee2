//! Storage: the hostpath CSI plugin (`basalt csi`), Identity, Controller and Node services of CSI v1.12 on a
//! unix socket, for volumes on the node's own disk. Later joined by the kubelet side (plugin registration,
//! PVC-backed and inline CSI volumes) and the control-plane side (dynamic provisioning).
//!
//! It must never delete or mount outside its configured base directory: IDs are only ever our own hex names,
//! and every file beneath the base directory is opened with openat2 refusing `..` and symlinks.
//!
//! | module    | what it holds                                                                           |
//! |-----------|-----------------------------------------------------------------------------------------|
//! | `args`    | the `csi:` config section and `basalt csi` flags, the listen address                    |
//! | `server`  | `basalt csi`: open the store, serve the three services until SIGTERM                    |
//! | `service` | the gRPC services: request checks and the spec's codes, topology (`TOPOLOGY_KEY`)       |
//! | `store`   | volumes and snapshots beneath the base directory: project quotas or ext4 images, block  |
//! | `index`   | the volume index on disk, written atomically                                            |
//! | `sys`     | openat2, quotactl, loop devices, ext4 resize, sparse copies, mountinfo                  |
//! | `client`  | a client on the plugin's address (tests, benchmark, later the kubelet)                  |
//! | `testing` | the plugin as a child process, a prjquota ext4 on a loop device, the leak check          |
//!
//! The node ID is the node name; `TOPOLOGY_KEY` = `topology.basalt.io/node` is the one topology segment.

pub mod args;
pub mod client;
pub mod index;
pub mod server;
pub mod service;
pub mod store;
pub mod sys;
pub mod testing;

pub use basalt_proto::csi as api;

pub use args::{CsiArgs, CsiConfig};
pub use client::Client;
pub use server::main;
pub use service::TOPOLOGY_KEY;

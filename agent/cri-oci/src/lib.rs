//! CRI `CreateContainer` → OCI runtime spec: everything the kubelet asks for in a `ContainerConfig`, merged with
//! the image config and the pod sandbox, as containerd and CRI-O translate it.
//!
//! There is no pause container: a container joins its sandbox's pinned namespace files by path.
//!
//! This crate must never change the host: it only reads (the image's /etc/passwd and /etc/group, mount and
//! device sources, seccomp profiles). Host paths containerd would create are returned in
//! [`Generated::missing_host_paths`] for the caller to create once the whole request is known to be valid.
//! Every rejected request is an [`Error`] whose message names the CRI field path and its value.
//!
//! Modules: [`user`] (uid, gid, groups), [`process`] (command, env, cwd), [`security`] (capabilities,
//! seccomp, AppArmor, masked paths), [`namespaces`], [`mounts`], [`devices`], [`resources`] (cgroups).

pub mod devices;
pub mod error;
mod generate;
pub mod mounts;
pub mod namespaces;
pub mod process;
mod request;
pub mod resources;
pub mod security;
pub mod user;

pub use error::{Error, ErrorKind, Result};
pub use generate::container_spec;
pub use request::{Container, Generated, Image, Options, Sandbox};
pub use user::EffectiveUser;

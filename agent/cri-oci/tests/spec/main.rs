//! `container_spec` on a real root filesystem (a tempdir with etc/passwd and etc/group), one module per part of
//! the spec. Every rejected request is checked for its error kind and for naming the CRI field and value.

mod fixture;
mod linux;
mod mounts;
mod process;
mod security;
mod user;

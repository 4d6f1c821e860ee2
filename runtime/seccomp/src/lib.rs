//! A pure-Rust compiler from the OCI `linux.seccomp` section to classic BPF, and the code that installs it.
//!
//! We own this piece because libseccomp (C, LGPL) is what keeps runc, crun and youki from building statically
//! for small images. It must never accept a profile it cannot compile exactly: an unknown syscall, action or
//! operator is an error naming the JSON path, never a silently weaker filter. It must never link libseccomp
//! (that crate is a dev-dependency, used only to check our output against it).
//!
//! The path of a profile: [`profile`] checks the OCI section and turns it into typed rules, [`compile`] turns
//! those into a [`bpf`] program (per [`arch`] syscall numbers), [`cache`] keeps compiled programs on disk,
//! [`install`] hands them to the kernel and [`notify`] passes a user-notification fd to the seccomp agent.
//! [`interp`] runs a program in user space (for tests here and in the runtime), [`default_profile`] is the
//! profile used when a pod asks for `RuntimeDefault`.

pub mod arch;
pub mod bpf;
pub mod cache;
pub mod compile;
pub mod default_profile;
pub mod error;
pub mod install;
pub mod interp;
pub mod notify;
pub mod profile;

pub use arch::Arch;
pub use bpf::SockFilter;
pub use cache::compile_cached;
pub use compile::compile;
pub use default_profile::runtime_default;
pub use error::{Error, Result};
pub use install::install;
pub use profile::{Action, Cond, CondOp, Profile, Rule};

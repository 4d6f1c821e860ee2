//! A pure-Rust compiler from the OCI `linux.seccomp` section to classic BPF, and the code that installs it.
//!
//! We own this piece because libseccomp (C, LGPL) is what keeps runc, crun and youki from building statically
//! for small images. It must never accept a profile it cannot compile exactly: an unknown syscall, action or
//! operator is an error naming the JSON path, never a silently weaker filter.
//!
//! Not built yet: issue #3.

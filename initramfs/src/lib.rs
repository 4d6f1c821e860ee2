//! Bootable images built from the host's Debian kernel: the node image (`basalt node-image`) and the
//! throw-away cgroup v2 test VM that tests run commands in.
//!
//! Both are a kernel plus a newc cpio initramfs holding the modules resolved from `modules.dep`. Images must be
//! reproducible (same inputs, same bytes), so nothing here may put the time, a random value or host-specific
//! ownership into an archive.
//!
//! The node image builder and `basalt init` come with issue #8; the kernel/module/cpio pieces and the test VM
//! are here now because every cgroup v2 test depends on them.

pub mod cli;
pub mod cpio;
pub mod kernel;
pub mod pid1;
pub mod testvm;

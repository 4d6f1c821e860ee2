//! Bootable images built from the host's Debian kernel: the node image (`basalt node-image build|boot`, with
//! `basalt init` as its PID 1) and the throw-away cgroup v2 test VM that tests run commands in.
//!
//! Both are a kernel plus a newc cpio initramfs holding the modules resolved from `modules.dep`. Images must be
//! reproducible (same inputs, same bytes), so nothing here may put the time, a random value or host-specific
//! ownership into an archive. PID 1 must never exit or panic on bad input: it shows the problem and carries on.

/// The CLI of `basalt node-image build` and `basalt node-image boot`.
pub mod cli;
/// A reproducible newc cpio writer.
pub mod cpio;
/// The host kernel and module resolution through `modules.dep`.
pub mod kernel;
/// The throw-away cgroup v2 test VM.
pub mod testvm;

/// The node image builder.
pub mod builder;
/// Runtime needs of a dynamically linked program (interpreter, DT_NEEDED), read from its ELF headers.
pub mod elf;
/// Paths inside the image shared by builder and PID 1.
pub mod layout;
/// Naming preloaded image archives.
pub mod preload;

/// Booting an image in qemu, with a QMP power button.
pub mod boot;
/// The DHCPv4 client PID 1 runs on the node's uplink.
pub mod dhcp;
/// `basalt init`, PID 1 of the node image.
pub mod pid1;
/// The rtnetlink requests PID 1 and the DHCP client make.
mod rtnl;

/// Helpers for tests that boot a node image (used by this crate's tests and the root end-to-end tests).
pub mod testing;

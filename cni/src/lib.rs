//! Container networking: a CNI 1.1 `bridge` plugin with built-in `host-local` IPAM, and the CNI caller the
//! CRI server uses to run any plugin chain (ours or the reference plugins), as libcni does.
//!
//! It must never call `ip`, `iptables` or `nft` binaries (an appliance may not have them: netlink only)
//! and never leave a veth, IP reservation or nftables rule behind after DEL.
//!
//! Not built yet: issue #5.

use std::process::ExitCode;

/// Which plugin this process is, from `argv[0]` or `basalt cni --plugin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Bridge,
    HostLocal,
}

/// Runs one CNI plugin invocation (`CNI_COMMAND` and friends in the environment, config on stdin).
pub fn plugin_main(kind: PluginKind) -> ExitCode {
    let name = match kind {
        PluginKind::Bridge => "bridge",
        PluginKind::HostLocal => "host-local",
    };
    eprintln!("basalt: the CNI plugin `{name}` (issue #5) is not built yet");
    ExitCode::from(69)
}

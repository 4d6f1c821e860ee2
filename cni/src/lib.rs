//! Container networking: a CNI 1.1 `bridge` plugin with built-in `host-local` IPAM, and the CNI caller the
//! CRI server uses to run any plugin chain (ours or the reference plugins), as libcni does.
//!
//! It must never call `ip`, `iptables` or `nft` binaries (an appliance may not have them: netlink only),
//! never touch a network namespace other than the one it runs in and the pod's `CNI_NETNS`, and never
//! leave a veth, IP reservation or nftables rule behind after DEL (nor after a failed ADD).

/// The plugin entry point: `CNI_*` environment + stdin in, result or error JSON out.
mod plugin;
pub use plugin::{plugin_main, PluginKind};

/// The validated `CNI_*` environment.
pub mod env;
/// CNI errors with the spec's codes.
pub mod error;
/// CNI wire types: network configuration, results per spec version and their conversion.
pub mod spec;

/// The `bridge` verbs: bridge, veth pair, addresses, routes, NAT rules.
pub mod bridge;
/// `host-local` as a plugin of its own.
pub mod hostlocal;
/// host-local address allocation with reservations on disk (reference layout, flock, crash-safe).
pub mod ipam;

/// A small synchronous netlink client (netlink-sys socket, netlink-packet-core framing) and the rtnetlink
/// link/address/route operations (netlink-packet-route messages).
pub mod netlink;
/// Acting inside a pod's network namespace without switching the process.
pub mod netns;
/// nftables masquerade and hostPort DNAT rules over netlink.
pub mod nft;

/// The libcni-like caller: conflist loading, plugin lookup, chains, result cache, timeouts.
pub mod caller;

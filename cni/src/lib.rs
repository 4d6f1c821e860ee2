//! Container networking: a CNI 1.1 `bridge` plugin with built-in `host-local` IPAM, and the CNI caller the
//! CRI server uses to run any plugin chain (ours or the reference plugins), as libcni does.
//!
//! It must never call `ip`, `iptables` or `nft` binaries (an appliance may not have them: netlink only)
//! and never leave a veth, IP reservation or nftables rule behind after DEL.
//!
//! Not built yet: issue #5.

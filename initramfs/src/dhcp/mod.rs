//! A DHCPv4 client (RFC 2131) for the node's uplink, as udhcpc and systemd-networkd behave: it acquires an
//! address, renews it at T1 with its server and rebinds at T2 with any server, retransmits on randomized
//! exponential back-off, follows a changed address (the old address and default route replaced by the new),
//! drops an address the server refuses or that expires and starts over, and gives the lease back on request.
//!
//! It runs on a thread of its own in whatever network namespace it was started in, so PID 1 uses it for the
//! node and tests run it on the host against a real server in a throw-away namespace.

/// The running client and what it reports.
mod client;
/// Putting a lease on the interface and taking it off.
mod link;
/// The states and timers, without I/O.
mod machine;
/// Messages on the wire.
mod message;
/// The UDP socket on port 68.
mod socket;

pub use client::{Client, Config, Event};
pub use machine::{Lease, Loss};

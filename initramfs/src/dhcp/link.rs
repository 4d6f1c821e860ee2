//! Putting a lease on the interface: its address (with the lease's remaining time as the kernel lifetime) and
//! the default route through its gateway, and taking them off again.

use std::io;
use std::time::Instant;

use super::machine::Lease;
use crate::rtnl::{self, Rtnl};

pub struct Link {
    rtnl: Rtnl,
    index: u32,
    /// What this client put on the interface, to replace or remove later.
    applied: Option<Lease>,
}

impl Link {
    pub fn new(rtnl: Rtnl, index: u32) -> Link {
        Link {
            rtnl,
            index,
            applied: None,
        }
    }

    /// Configures `lease` (at `now`, for the lifetime left): a new address replaces the one configured
    /// before; the same address gets its lifetime refreshed and its route set again, which also heals a
    /// failed earlier attempt.
    pub fn apply(&mut self, lease: &Lease, now: Instant) -> io::Result<()> {
        let mut removing = Ok(());
        if let Some(old) = self
            .applied
            .take_if(|old| (old.addr, old.prefix) != (lease.addr, lease.prefix))
        {
            // Old first: deleting a primary address deletes its secondaries in the same subnet (unless the
            // interface promotes them), and the new address would be one. A failure here must not keep the
            // new address off the interface.
            removing = self.remove_lease(&old);
        }
        self.rtnl
            .replace_addr(self.index, lease.addr, lease.prefix, lease.remaining(now))?;
        match (lease.gateway, self.applied.as_ref().and_then(|a| a.gateway)) {
            (Some(gw), _) => self.rtnl.replace_default_route(
                gw,
                self.index,
                lease.addr,
                lease.prefix,
                rtnl::RTPROT_DHCP,
            )?,
            (None, Some(old_gw)) => self.rtnl.del_default_route(old_gw, self.index)?,
            (None, None) => {}
        }
        self.applied = Some(lease.clone());
        removing
    }

    /// Removes what [`Link::apply`] configured.
    pub fn remove(&mut self) -> io::Result<()> {
        match self.applied.take() {
            Some(old) => self.remove_lease(&old),
            None => Ok(()),
        }
    }

    fn remove_lease(&mut self, old: &Lease) -> io::Result<()> {
        let route = match old.gateway {
            Some(gw) => self.rtnl.del_default_route(gw, self.index),
            None => Ok(()),
        };
        self.rtnl
            .del_addr(self.index, old.addr, old.prefix)
            .and(route)
    }
}

//! The node IPAM controller, as upstream's range allocator (`node-ipam-controller`, service account
//! `node-controller`): each node without `spec.podCIDRs` is given the lowest free block of each cluster
//! CIDR (`--cluster-cidr`, k3s's default `10.42.0.0/16`; IPv4 and IPv6 side by side for dual-stack),
//! `--node-cidr-mask-size` long (24 for IPv4, 64 for IPv6). What is free is read from the nodes
//! themselves at every allocation, so a deleted node's block is free again and a restart loses nothing.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

use crate::informers::Informer;
use crate::owners;

/// One cluster CIDR and the size of the blocks cut from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    base: IpAddr,
    prefix: u8,
    mask: u8,
}

impl Range {
    /// `cidr` cut into blocks of `mask` bits; the error names what is wrong.
    pub fn new(cidr: &str, mask: u8) -> Result<Range, String> {
        let (ip, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("--cluster-cidr {cidr:?}: not a CIDR"))?;
        let base: IpAddr = ip
            .parse()
            .map_err(|_| format!("--cluster-cidr {cidr:?}: {ip:?} is not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("--cluster-cidr {cidr:?}: {prefix:?} is not a prefix length"))?;
        let bits = if base.is_ipv4() { 32 } else { 128 };
        if prefix > bits || mask > bits || mask < prefix {
            return Err(format!(
                "--node-cidr-mask-size {mask} does not fit in --cluster-cidr {cidr}"
            ));
        }
        if mask - prefix > 24 {
            return Err(format!(
                "--node-cidr-mask-size {mask} cuts --cluster-cidr {cidr} into more than 2^24 blocks"
            ));
        }
        Ok(Range {
            base: from_bits(to_bits(base) & !host_mask(bits, prefix), base.is_ipv4()),
            prefix,
            mask,
        })
    }

    fn bits(&self) -> u8 {
        if self.base.is_ipv4() {
            32
        } else {
            128
        }
    }

    pub fn blocks(&self) -> u32 {
        1 << (self.mask - self.prefix)
    }

    /// The `i`th block, as text.
    pub fn block(&self, i: u32) -> String {
        let step = 1u128 << (self.bits() - self.mask);
        let ip = from_bits(
            to_bits(self.base) + u128::from(i) * step,
            self.base.is_ipv4(),
        );
        format!("{ip}/{}", self.mask)
    }

    /// Which block `cidr` is, if it is one of this range's.
    pub fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, len) = cidr.split_once('/')?;
        let ip: IpAddr = ip.parse().ok()?;
        if ip.is_ipv4() != self.base.is_ipv4() || len.parse::<u8>().ok()? != self.mask {
            return None;
        }
        let offset = to_bits(ip).checked_sub(to_bits(self.base))?;
        let i = offset >> (self.bits() - self.mask);
        (i < u128::from(self.blocks())).then_some(i as u32)
    }
}

fn host_mask(bits: u8, prefix: u8) -> u128 {
    if prefix >= bits {
        0
    } else {
        (1u128 << (bits - prefix)) - 1
    }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_bits(b: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4((b as u32).into())
    } else {
        IpAddr::V6(b.into())
    }
}

/// The ranges of `--cluster-cidr` (comma-separated) with upstream's default mask sizes.
pub fn ranges(cluster_cidr: &str, mask_v4: u8, mask_v6: u8) -> Result<Vec<Range>, String> {
    cluster_cidr
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| Range::new(c, if c.contains(':') { mask_v6 } else { mask_v4 }))
        .collect()
}

/// The lowest block of `range` that no node holds.
pub fn lowest_free<'a>(range: &Range, held: impl Iterator<Item = &'a str>) -> Option<String> {
    let taken: std::collections::BTreeSet<u32> = held.filter_map(|c| range.index_of(c)).collect();
    (0..range.blocks())
        .find(|i| !taken.contains(i))
        .map(|i| range.block(i))
}

struct Ctx {
    client: Client,
    nodes: Store<Node>,
    ranges: Vec<Range>,
    /// Blocks handed out (to the named node) that the store may not show yet: one allocation at a time,
    /// and these count as held while their node is there without them.
    given: Mutex<Vec<(String, String)>>,
}

/// Runs the allocator until the future is dropped.
pub async fn run(client: Client, ranges: Vec<Range>, nodes: Arc<Informer<Node>>) {
    if ranges.is_empty() {
        return;
    }
    let controller = Controller::for_shared_stream(nodes.subscribe(), nodes.store());
    let ctx = Arc::new(Ctx {
        client,
        nodes: nodes.store(),
        ranges,
        given: Mutex::new(Vec::new()),
    });
    let run = controller.run(reconcile, owners::retry, ctx);
    owners::drive("node-ipam", run).await;
}

fn cidrs(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| {
            s.pod_cidrs
                .clone()
                .or_else(|| s.pod_cidr.clone().map(|c| vec![c]))
        })
        .unwrap_or_default()
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    if !cidrs(&node).is_empty() || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut given = ctx.given.lock().await;
    let all = ctx.nodes.state();
    // Once the store shows the node with its blocks (or without the node) they are no longer ours to
    // remember.
    given.retain(|(name, _)| {
        all.iter()
            .any(|n| n.name_any() == *name && cidrs(n).is_empty())
    });
    let held: Vec<String> = all
        .iter()
        .flat_map(|n| cidrs(n))
        .chain(given.iter().map(|(_, c)| c.clone()))
        .collect();
    let mut blocks = Vec::new();
    for r in &ctx.ranges {
        match lowest_free(r, held.iter().map(String::as_str)) {
            Some(b) => blocks.push(b),
            None => {
                tracing::warn!(node = %node.name_any(), range = %r.block(0), "CIDRNotAvailable: the cluster CIDR is used up");
                return Ok(Action::requeue(std::time::Duration::from_secs(30)));
            }
        }
    }
    let patch = json!({"spec": {"podCIDR": blocks[0], "podCIDRs": blocks}});
    let api: Api<Node> = Api::all(ctx.client.clone());
    match api
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(node = %node.name_any(), cidrs = ?blocks, "pod CIDRs allocated");
            given.extend(blocks.into_iter().map(|b| (node.name_any(), b)));
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_cut_in_order_and_found_again() {
        let r = Range::new("10.42.0.0/16", 24).unwrap();
        assert_eq!(r.blocks(), 256);
        assert_eq!(r.block(0), "10.42.0.0/24");
        assert_eq!(r.block(255), "10.42.255.0/24");
        assert_eq!(r.index_of("10.42.7.0/24"), Some(7));
        assert_eq!(r.index_of("10.43.0.0/24"), None);
        assert_eq!(r.index_of("10.42.7.0/25"), None);
        let held = ["10.42.0.0/24", "10.42.2.0/24"];
        assert_eq!(
            lowest_free(&r, held.into_iter()).as_deref(),
            Some("10.42.1.0/24")
        );
        let v6 = Range::new("fd00:42::/56", 64).unwrap();
        assert_eq!(v6.block(3), "fd00:42:0:3::/64");
        assert_eq!(v6.index_of("fd00:42:0:3::/64"), Some(3));
    }

    #[test]
    fn a_full_range_gives_nothing_and_bad_flags_are_named() {
        let r = Range::new("10.0.0.0/30", 31).unwrap();
        assert_eq!(
            lowest_free(&r, ["10.0.0.0/31", "10.0.0.2/31"].into_iter()),
            None
        );
        assert_eq!(
            Range::new("10.42.0.0/16", 8).unwrap_err(),
            "--node-cidr-mask-size 8 does not fit in --cluster-cidr 10.42.0.0/16"
        );
        assert!(Range::new("nope", 24).unwrap_err().contains("not a CIDR"));
        let both = ranges("10.42.0.0/16, fd00:42::/56", 24, 64).unwrap();
        assert_eq!(both.len(), 2);
    }
}

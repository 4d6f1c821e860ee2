//! `host-local` as a plugin of its own (the IPAM a delegating plugin calls): same store as the built-in one.

use std::collections::HashSet;

use crate::env::Env;
use crate::error::{CniError, Code, Result};
use crate::ipam::Ipam;
use crate::spec::{CniResult, NetConf};

fn ipam(conf: &NetConf) -> Result<Ipam> {
    let i = conf
        .ipam
        .as_ref()
        .ok_or_else(|| CniError::config("field \"ipam\" is missing"))?;
    Ipam::from_conf(i)
}

pub fn add(env: &Env, conf: &NetConf) -> Result<CniResult> {
    let ipam = ipam(conf)?;
    let ips = ipam.allocate(&conf.name, &env.container_id, &env.ifname)?;
    Ok(CniResult {
        interfaces: Vec::new(),
        ips,
        routes: ipam.result_routes(),
        dns: conf.dns.clone(),
    })
}

pub fn del(env: &Env, conf: &NetConf) -> Result<()> {
    ipam(conf)?
        .store(&conf.name)?
        .release(&env.container_id, &env.ifname)
        .map(drop)
}

pub fn check(env: &Env, conf: &NetConf) -> Result<()> {
    let ipam = ipam(conf)?;
    let held = ipam
        .store(&conf.name)?
        .held_by(&env.container_id, &env.ifname)?;
    if held.is_empty() {
        return Err(CniError::new(
            Code::CheckFailed,
            format!("no address is reserved for {}", env.container_id),
        ));
    }
    if let Some(prev) = conf
        .prev_result
        .as_ref()
        .map(CniResult::from_json)
        .transpose()?
    {
        for ip in prev.ips {
            if !held.contains(&ip.address.addr) {
                return Err(CniError::new(
                    Code::CheckFailed,
                    format!("{} is not reserved for this container", ip.address),
                ));
            }
        }
    }
    Ok(())
}

pub fn gc(conf: &NetConf) -> Result<()> {
    let valid: HashSet<(String, String)> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    ipam(conf)?.store(&conf.name)?.retain(&valid).map(drop)
}

pub fn status(conf: &NetConf) -> Result<()> {
    ipam(conf)?.store(&conf.name).map(drop).map_err(|e| {
        CniError::new(Code::PluginNotAvailable, "IPAM store is not usable").with_details(e)
    })
}

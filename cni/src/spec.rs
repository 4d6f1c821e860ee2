//! CNI wire types: network configuration, results per spec version, and the conversions between
//! the 1.x result format and the 0.3/0.4 one (which carries a per-IP `version` field).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{CniError, Code, Result};

/// The spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A spec version we accept; anything else is rejected when the config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    pub fn parse(s: &str) -> Result<Version> {
        Ok(match s {
            "0.3.0" => Version::V0_3_0,
            "0.3.1" => Version::V0_3_1,
            "0.4.0" => Version::V0_4_0,
            "1.0.0" => Version::V1_0_0,
            "1.1.0" => Version::V1_1_0,
            other => {
                return Err(CniError::new(
                    Code::IncompatibleVersion,
                    format!("cniVersion {other:?} is not supported"),
                )
                .with_details(format!(
                    "supported versions: {}",
                    SUPPORTED_VERSIONS.join(", ")
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK appeared in 0.4.0.
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// STATUS and GC appeared in 1.1.0.
    pub fn has_status_gc(self) -> bool {
        self >= Version::V1_1_0
    }
}

/// An address with a prefix length, e.g. `10.1.0.5/24`; the address need not be the network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        (prefix <= max_prefix(addr)).then_some(IpNet { addr, prefix })
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn network(&self) -> IpNet {
        IpNet {
            addr: from_u128(self.addr, to_u128(self.addr) & self.mask()),
            prefix: self.prefix,
        }
    }

    /// Host-part bits set: the IPv4 broadcast address, the last IPv6 address.
    pub fn last(&self) -> IpAddr {
        from_u128(
            self.addr,
            (to_u128(self.addr) & self.mask()) | !self.mask() & width_mask(self.addr),
        )
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && (to_u128(ip) & self.mask()) == (to_u128(self.addr) & self.mask())
    }

    /// The mask in the low bits of a u128 (IPv4 uses the low 32).
    pub fn mask(&self) -> u128 {
        let width = max_prefix(self.addr) as u32;
        let host_bits = width - self.prefix as u32;
        let ones = if host_bits >= 128 {
            0
        } else {
            u128::MAX << host_bits
        };
        ones & width_mask(self.addr)
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn width_mask(ip: IpAddr) -> u128 {
    if ip.is_ipv4() {
        u32::MAX as u128
    } else {
        u128::MAX
    }
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Builds an address of the same family as `like`.
pub fn from_u128(like: IpAddr, v: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<IpNet, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IP address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("{s:?}: {p:?} is not a prefix length"))?;
        IpNet::new(addr, prefix).ok_or_else(|| format!("{s:?}: prefix length {prefix} is too long"))
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<IpNet, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `ipam` section of host-local.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub ranges: Vec<Vec<RangeConf>>,
    /// Legacy single-range form.
    pub subnet: Option<IpNet>,
    pub range_start: Option<IpAddr>,
    pub range_end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub routes: Vec<Route>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    pub subnet: IpNet,
    pub range_start: Option<IpAddr>,
    pub range_end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

fn default_protocol() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The network configuration the `bridge` and `host-local` plugins read from stdin.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default)]
    pub is_gateway: bool,
    #[serde(default)]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub ip_masq: bool,
    #[serde(default)]
    pub hairpin_mode: bool,
    pub mtu: Option<u32>,
    pub ipam: Option<IpamConf>,
    #[serde(default)]
    pub dns: Dns,
    pub prev_result: Option<Value>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

fn default_bridge() -> String {
    "cni0".into()
}

impl NetConf {
    /// Parses and validates stdin; errors name the field.
    pub fn parse(raw: &[u8]) -> Result<NetConf> {
        let v: Value = serde_json::from_slice(raw).map_err(|e| {
            CniError::new(Code::Decode, "network configuration is not valid JSON").with_details(e)
        })?;
        let version = v.get("cniVersion").and_then(Value::as_str).unwrap_or("");
        Version::parse(version)?;
        let conf: NetConf = serde_path_to_error::deserialize(v).map_err(|e| {
            CniError::config(format!(
                "invalid network configuration: field \"{}\": {}",
                e.path(),
                e.inner()
            ))
        })?;
        if conf.name.is_empty() || conf.name.contains(['/', '\0']) || conf.name.starts_with('.') {
            return Err(CniError::config(format!(
                "field \"name\": {:?} is not a valid network name",
                conf.name
            )));
        }
        if conf.bridge.is_empty()
            || conf.bridge.len() > 15
            || conf.bridge.contains(['/', ' ', '\0'])
        {
            return Err(CniError::config(format!(
                "field \"bridge\": {:?} is not a valid interface name (1-15 characters, no '/' or space)",
                conf.bridge
            )));
        }
        if let Some(mtu) = conf.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(CniError::config(format!(
                    "field \"mtu\": {mtu} is out of range 68-65535"
                )));
            }
        }
        Ok(conf)
    }

    pub fn version(&self) -> Version {
        Version::parse(&self.cni_version).expect("checked in parse")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// A result in the version-independent (1.x) shape; `to_json` renders it for a given version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a result of any supported version (0.3/0.4 `version` fields are ignored: the address says it).
    pub fn from_json(v: &Value) -> Result<CniResult> {
        serde_json::from_value(v.clone())
            .map_err(|e| CniError::new(Code::Decode, format!("field \"prevResult\": {e}")))
    }

    pub fn to_json(&self, version: Version) -> Value {
        let mut v = serde_json::to_value(self).expect("plain struct serialises");
        let obj = v.as_object_mut().expect("struct is an object");
        obj.insert("cniVersion".into(), Value::String(version.as_str().into()));
        if version < Version::V1_0_0 {
            for ip in obj
                .get_mut("ips")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let fam = if ip["address"].as_str().is_some_and(|a| a.contains(':')) {
                    "6"
                } else {
                    "4"
                };
                ip.as_object_mut()
                    .expect("ip is an object")
                    .insert("version".into(), fam.into());
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_versions() {
        let r = CniResult {
            ips: vec![
                IpConfig {
                    interface: Some(2),
                    address: "10.1.0.5/24".parse().unwrap(),
                    gateway: None,
                },
                IpConfig {
                    interface: Some(2),
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: None,
                },
            ],
            ..Default::default()
        };
        let old = r.to_json(Version::V0_3_1);
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        let new = r.to_json(Version::V1_1_0);
        assert!(new["ips"][0].get("version").is_none());
        // A 0.3/0.4 prevResult reads back into the same result.
        assert_eq!(CniResult::from_json(&old).unwrap(), r);
    }

    #[test]
    fn ipnet() {
        let n: IpNet = "10.1.2.3/20".parse().unwrap();
        assert_eq!(n.network().to_string(), "10.1.0.0/20");
        assert_eq!(n.last().to_string(), "10.1.15.255");
        assert!(
            n.contains("10.1.15.1".parse().unwrap()) && !n.contains("10.1.16.1".parse().unwrap())
        );
        let v6: IpNet = "fd00:1::7/64".parse().unwrap();
        assert_eq!(v6.network().to_string(), "fd00:1::/64");
        assert!("10.0.0.0/33"
            .parse::<IpNet>()
            .unwrap_err()
            .contains("too long"));
        assert_eq!("0.0.0.0/0".parse::<IpNet>().unwrap().mask(), 0);
    }

    #[test]
    fn versions() {
        assert_eq!(Version::parse("0.2.0").unwrap_err().code, 1);
        assert!(Version::parse("0.4.0").unwrap().has_check());
        assert!(!Version::parse("1.0.0").unwrap().has_status_gc());
    }
}

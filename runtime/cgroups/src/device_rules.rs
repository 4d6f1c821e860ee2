//! `linux.resources.devices` as the cgroup v1 devices controller would end up after the rules were written to
//! it one by one: a default (allow or deny) and exceptions to it. cgroup v2 has no such controller, so this
//! final state is what [`super::device_filter`] compiles to eBPF; runc's devices emulator does the same.
//!
//! The v1 semantics kept here, because they decide what "later rules win" means:
//! - a rule of type `a` (any device) is a reset: the default becomes its `allow`, every exception is dropped;
//! - a rule that goes against the default adds (or widens) an exception for exactly its type/major/minor;
//! - a rule that agrees with the default takes its access away from the exception with exactly that
//!   type/major/minor. Taking it from a wider wildcard exception is impossible in v1 (it would have to be
//!   split); runc refuses that, and so do we, rather than silently keep the access;
//! - with a deny default a request must be covered by one allow exception; with an allow default any
//!   overlap with a deny exception denies it.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, Result};

/// The device kinds a cgroup rule can name. The values are the kernel's `BPF_DEVCG_DEV_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Block = 1,
    Char = 2,
}

/// A set of `r`, `w`, `m`, as bits with the kernel's `BPF_DEVCG_ACC_*` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Access(u8);

impl Access {
    pub const MKNOD: Access = Access(1);
    pub const READ: Access = Access(2);
    pub const WRITE: Access = Access(4);
    pub const ALL: Access = Access(7);

    /// The set with these `BPF_DEVCG_ACC_*` bits (others are dropped).
    pub fn from_bits(bits: u8) -> Access {
        Access(bits & 7)
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersects(self, other: Access) -> bool {
        self.0 & other.0 != 0
    }

    pub fn union(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }

    pub fn without(self, other: Access) -> Access {
        Access(self.0 & !other.0)
    }

    /// Parses an OCI `access` string. A missing one means all three, as in crun and youki: a rule without
    /// access would otherwise match nothing.
    pub fn parse(s: Option<&str>) -> std::result::Result<Access, String> {
        let Some(s) = s else { return Ok(Access::ALL) };
        let mut a = Access::default();
        for c in s.chars() {
            a = a.union(match c {
                'r' => Access::READ,
                'w' => Access::WRITE,
                'm' => Access::MKNOD,
                _ => return Err(format!("{s:?}: {c:?} is not r, w or m")),
            });
        }
        if a.is_empty() {
            return Err(format!("{s:?} names no access (use r, w and/or m)"));
        }
        Ok(a)
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (bit, c) in [
            (Access::READ, 'r'),
            (Access::WRITE, 'w'),
            (Access::MKNOD, 'm'),
        ] {
            if self.contains(bit) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Which devices an exception covers; `None` is the `*` wildcard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Match {
    pub kind: Kind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

impl Match {
    fn covers(&self, kind: Kind, major: u32, minor: u32) -> bool {
        self.kind == kind
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
    }
}

impl std::fmt::Display for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let num = |n: Option<u32>| n.map_or("*".to_owned(), |n| n.to_string());
        let kind = match self.kind {
            Kind::Block => 'b',
            Kind::Char => 'c',
        };
        write!(f, "{kind} {}:{}", num(self.major), num(self.minor))
    }
}

/// One checked OCI rule: `None` target is type `a`, every device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub target: Option<Match>,
    pub access: Access,
}

/// The final state: requests are decided by `default_allow` unless an exception says otherwise. Every
/// exception has the opposite sign of the default, so their order does not matter (it is kept stable only so
/// the same rules always give the same program).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub default_allow: bool,
    pub exceptions: Vec<(Match, Access)>,
}

impl Default for Policy {
    /// Deny everything, as a fresh runc/crun container starts before the rules are applied.
    fn default() -> Policy {
        Policy {
            default_allow: false,
            exceptions: Vec::new(),
        }
    }
}

/// Devices runc allows in every container, after the spec's own rules: the default nodes (null, zero, full,
/// tty, random, urandom, console, ptmx), the pty slaves, tun, and mknod of anything (creating a node is
/// harmless without read/write access to it).
pub fn default_rules() -> Vec<Rule> {
    let all = Access::ALL;
    let c = |major, minor, access| Rule {
        allow: true,
        target: Some(Match {
            kind: Kind::Char,
            major,
            minor,
        }),
        access,
    };
    let mut rules = vec![
        c(None, None, Access::MKNOD),
        Rule {
            allow: true,
            target: Some(Match {
                kind: Kind::Block,
                major: None,
                minor: None,
            }),
            access: Access::MKNOD,
        },
    ];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        rules.push(c(Some(major), Some(minor), all));
    }
    rules.push(c(Some(136), None, all));
    rules.push(c(Some(10), Some(200), all));
    rules
}

/// Checks one OCI rule; `field` is its JSON path (`linux.resources.devices[2]`).
pub fn check(d: &LinuxDeviceCgroup, field: &str) -> Result<Rule> {
    let access = Access::parse(d.access().as_deref())
        .map_err(|m| Error::spec(format!("{field}.access"), m))?;
    let kind = match d.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => None,
        LinuxDeviceType::B => Some(Kind::Block),
        LinuxDeviceType::C => Some(Kind::Char),
        t @ (LinuxDeviceType::U | LinuxDeviceType::P) => {
            return Err(Error::spec(
                format!("{field}.type"),
                format!("{:?} is not a, b or c", t.as_str()),
            ))
        }
    };
    let number = |n: Option<i64>, name: &str| match n {
        None | Some(-1) => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            Error::spec(
                format!("{field}.{name}"),
                format!("{n} is not a device number (0 to 4294967295, or -1 for any)"),
            )
        }),
    };
    let major = number(d.major(), "major")?;
    let minor = number(d.minor(), "minor")?;
    Ok(Rule {
        allow: d.allow(),
        target: kind.map(|kind| Match { kind, major, minor }),
        access,
    })
}

/// Checks every rule of `linux.resources.devices`, naming the first bad one.
pub fn check_all(rules: &[LinuxDeviceCgroup], field: &str) -> Result<Vec<Rule>> {
    rules
        .iter()
        .enumerate()
        .map(|(i, d)| check(d, &format!("{field}[{i}]")))
        .collect()
}

impl Policy {
    /// The state after the spec's rules and then runc's [`default_rules`], starting from deny-all. Errors
    /// name the spec rule that cannot be expressed.
    pub fn for_container(rules: &[LinuxDeviceCgroup], field: &str) -> Result<Policy> {
        let checked = check_all(rules, field)?;
        let mut p = Policy::default();
        for (i, r) in checked.into_iter().enumerate() {
            p.apply(r)
                .map_err(|m| Error::spec(format!("{field}[{i}]"), m))?;
        }
        for r in default_rules() {
            p.apply(r).map_err(|m| {
                Error::spec(
                    field.to_owned(),
                    format!("the default device rules cannot be added after these: {m}"),
                )
            })?;
        }
        Ok(p)
    }

    /// Applies one rule as the v1 controller would (see the module comment).
    pub fn apply(&mut self, r: Rule) -> std::result::Result<(), String> {
        let Some(target) = r.target else {
            self.default_allow = r.allow;
            self.exceptions.clear();
            return Ok(());
        };
        if r.allow != self.default_allow {
            match self.exceptions.iter_mut().find(|(m, _)| *m == target) {
                Some((_, a)) => *a = a.union(r.access),
                None => self.exceptions.push((target, r.access)),
            }
            return Ok(());
        }
        // Taking access away: only an exception for exactly this target can shrink. A wider one that
        // still grants (or denies) it would make the rule silently ineffective.
        if let Some((wider, a)) = self.exceptions.iter().find(|(m, a)| {
            *m != target
                && m.kind == target.kind
                && (m.major.is_none() || m.major == target.major)
                && (m.minor.is_none() || m.minor == target.minor)
                && a.intersects(r.access)
        }) {
            return Err(format!(
                "{} {target} {} cannot be carved out of the earlier {} {wider} {a} (cgroup device rules \
                 only remove exact matches)",
                if r.allow { "allow" } else { "deny" },
                r.access,
                if self.default_allow { "deny" } else { "allow" },
            ));
        }
        if let Some(pos) = self.exceptions.iter().position(|(m, _)| *m == target) {
            let left = self.exceptions[pos].1.without(r.access);
            if left.is_empty() {
                self.exceptions.remove(pos);
            } else {
                self.exceptions[pos].1 = left;
            }
        }
        Ok(())
    }

    /// The decision for one request, as the kernel's v1 controller makes it. This is the reference the
    /// compiled program is tested against.
    pub fn allows(&self, kind: Kind, major: u32, minor: u32, access: Access) -> bool {
        let mut hits = self
            .exceptions
            .iter()
            .filter(|(m, _)| m.covers(kind, major, minor));
        if self.default_allow {
            !hits.any(|(_, a)| a.intersects(access))
        } else {
            hits.any(|(_, a)| a.contains(access))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_str(json).unwrap()
    }

    fn policy(json: &str) -> Policy {
        Policy::for_container(&rules(json), "linux.resources.devices").unwrap()
    }

    const R: Access = Access::READ;
    const W: Access = Access::WRITE;
    const M: Access = Access::MKNOD;
    const RW: Access = Access(6);

    #[test]
    fn access_strings_parse_and_print() {
        assert_eq!(Access::parse(Some("mwr")).unwrap(), Access::ALL);
        assert_eq!(Access::parse(Some("rr")).unwrap(), R);
        assert_eq!(Access::parse(None).unwrap(), Access::ALL);
        assert_eq!(Access::ALL.to_string(), "rwm");
        assert!(Access::parse(Some("rwx")).unwrap_err().contains("'x'"));
        assert!(Access::parse(Some("")).is_err());
    }

    #[test]
    fn the_usual_deny_all_spec_keeps_the_default_devices() {
        let p = policy(r#"[{"allow": false, "access": "rwm"}]"#);
        assert!(!p.default_allow);
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (136, 4),
        ] {
            assert!(p.allows(Kind::Char, major, minor, RW), "{major}:{minor}");
        }
        // mknod of anything, but no reading or writing what was made.
        assert!(p.allows(Kind::Block, 8, 0, M));
        assert!(p.allows(Kind::Char, 4, 1, M));
        assert!(!p.allows(Kind::Block, 8, 0, R));
        assert!(!p.allows(Kind::Char, 4, 1, W));
        assert!(!p.allows(Kind::Char, 4, 1, Access::ALL));
        // An empty list is deny-all too, as runc's emulator starts from.
        assert_eq!(policy("[]"), p);
    }

    #[test]
    fn later_rules_win() {
        // An allow after the reset adds access; a later exact deny takes part of it away again.
        let p = policy(
            r#"[{"allow": false, "access": "rwm"},
                {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "rw"},
                {"allow": false, "type": "b", "major": 8, "minor": 0, "access": "w"}]"#,
        );
        assert!(p.allows(Kind::Block, 8, 0, R));
        assert!(!p.allows(Kind::Block, 8, 0, W));
        assert!(!p.allows(Kind::Block, 8, 0, RW));
        assert!(!p.allows(Kind::Block, 8, 1, R));
        // A reset drops what came before it.
        let p = policy(
            r#"[{"allow": true, "type": "b", "major": 8, "minor": 0, "access": "rw"},
                {"allow": false, "access": "rwm"}]"#,
        );
        assert!(!p.allows(Kind::Block, 8, 0, R));
        // Accesses granted by separate rules for the same device combine, as in v1.
        let p = policy(
            r#"[{"allow": true, "type": "b", "major": 8, "minor": 0, "access": "r"},
                {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "w"}]"#,
        );
        assert!(p.allows(Kind::Block, 8, 0, RW));
        // Wildcards: a major of -1 or none at all is any major.
        let p = policy(r#"[{"allow": true, "type": "b", "major": -1, "minor": 3, "access": "r"}]"#);
        assert!(p.allows(Kind::Block, 259, 3, R));
        assert!(!p.allows(Kind::Block, 259, 4, R));
        assert!(!p.allows(Kind::Char, 259, 3, R));
    }

    #[test]
    fn an_allow_all_spec_denies_only_its_exceptions() {
        let p = policy(
            r#"[{"allow": true, "access": "rwm"},
                {"allow": false, "type": "c", "major": 4, "access": "w"},
                {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]"#,
        );
        assert!(p.default_allow);
        assert!(p.allows(Kind::Block, 8, 0, RW));
        assert!(p.allows(Kind::Char, 4, 1, R));
        // Any overlap with a deny exception denies.
        assert!(!p.allows(Kind::Char, 4, 1, RW));
        // The default rules come last and take /dev/null back (the exact deny exception is removed).
        assert!(p.allows(Kind::Char, 1, 3, RW));
    }

    #[test]
    fn a_hole_in_a_wider_exception_is_refused_naming_the_rule() {
        let e = Policy::for_container(
            &rules(
                r#"[{"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "access": "rw"},
                    {"allow": false, "type": "c", "major": 4, "minor": 1, "access": "w"}]"#,
            ),
            "linux.resources.devices",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("linux.resources.devices[2]")
                && e.contains("c 4:1 w")
                && e.contains("c *:* rw"),
            "{e}"
        );
    }

    #[test]
    fn bad_rules_name_the_field_and_value() {
        for (json, field, value) in [
            (
                r#"{"allow": true, "type": "p", "access": "r"}"#,
                "devices[1].type",
                "\"p\" is not a, b or c",
            ),
            (
                r#"{"allow": true, "type": "c", "access": "rwx"}"#,
                "devices[1].access",
                "\"rwx\"",
            ),
            (
                r#"{"allow": true, "type": "c", "major": -2, "access": "r"}"#,
                "devices[1].major",
                "-2",
            ),
            (
                r#"{"allow": true, "type": "c", "minor": 4294967296, "access": "r"}"#,
                "devices[1].minor",
                "4294967296",
            ),
        ] {
            let list = rules(&format!(r#"[{{"allow": false, "access": "rwm"}}, {json}]"#));
            let e = Policy::for_container(&list, "linux.resources.devices")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("linux.resources.{field}")) && e.contains(value),
                "{json}: {e}"
            );
        }
    }
}

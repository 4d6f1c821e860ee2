//! The OCI `linux.seccomp` section, checked and turned into typed rules. Everything the compiler cannot honour
//! exactly is rejected here, with the JSON path of the field.

use std::path::PathBuf;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::arch::Arch;
use crate::bpf::*;
use crate::error::{Error, Result};

/// Where the JSON paths in errors start, as the section sits in `config.json`.
const ROOT: &str = "linux.seccomp";

/// The largest errno the kernel returns from a filter.
pub const MAX_ERRNO: u32 = 4095;

/// What a filter tells the kernel to do with a syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    KillThread,
    KillProcess,
    Trap,
    Errno(u16),
    Notify,
    Trace(u16),
    Log,
    Allow,
}

impl Action {
    /// The 32-bit `SECCOMP_RET_*` value.
    pub const fn ret(self) -> u32 {
        match self {
            Action::KillThread => SECCOMP_RET_KILL_THREAD,
            Action::KillProcess => SECCOMP_RET_KILL_PROCESS,
            Action::Trap => SECCOMP_RET_TRAP,
            Action::Errno(e) => SECCOMP_RET_ERRNO | e as u32,
            Action::Notify => SECCOMP_RET_USER_NOTIF,
            Action::Trace(d) => SECCOMP_RET_TRACE | d as u32,
            Action::Log => SECCOMP_RET_LOG,
            Action::Allow => SECCOMP_RET_ALLOW,
        }
    }

    /// `errnoRet` (or `defaultErrnoRet`) applies to errno and, as in runc, to trace's data; both default to
    /// EPERM.
    fn from_oci(action: LinuxSeccompAction, errno_ret: Option<u32>, path: &str) -> Result<Action> {
        use LinuxSeccompAction as A;
        // The kernel caps an errno at MAX_ERRNO (and libseccomp refuses more); trace data has 16 bits.
        let data = |max: u32| -> Result<u16> {
            let v = errno_ret.unwrap_or(libc::EPERM as u32);
            if v > max {
                return Err(Error::invalid(
                    path,
                    format!("{v} is above the largest allowed value {max}"),
                ));
            }
            Ok(v as u16)
        };
        Ok(match action {
            A::ScmpActKill | A::ScmpActKillThread => Action::KillThread,
            A::ScmpActKillProcess => Action::KillProcess,
            A::ScmpActTrap => Action::Trap,
            A::ScmpActErrno => Action::Errno(data(MAX_ERRNO)?),
            A::ScmpActNotify => Action::Notify,
            A::ScmpActTrace => Action::Trace(data(0xffff)?),
            A::ScmpActLog => Action::Log,
            A::ScmpActAllow => Action::Allow,
        })
    }
}

/// A comparison of one 64-bit syscall argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CondOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `arg & mask == value` (`value` is stored masked).
    MaskedEq {
        mask: u64,
    },
}

/// `args[arg] <op> value`, with `arg` in `0..6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cond {
    pub arg: u8,
    pub op: CondOp,
    pub value: u64,
}

impl Cond {
    /// Evaluates the condition on an argument the way the kernel-side filter does on `arch`: 32-bit ABIs
    /// only look at the low word, of both the argument and the operands.
    pub fn matches(&self, arch: Arch, arg: u64) -> bool {
        let narrow = |v: u64| {
            if arch.args_are_64bit() {
                v
            } else {
                v & 0xffff_ffff
            }
        };
        let (a, v) = (narrow(arg), narrow(self.value));
        match self.op {
            CondOp::Eq => a == v,
            CondOp::Ne => a != v,
            CondOp::Lt => a < v,
            CondOp::Le => a <= v,
            CondOp::Gt => a > v,
            CondOp::Ge => a >= v,
            CondOp::MaskedEq { mask } => a & narrow(mask) == v,
        }
    }
}

/// One syscall's rule: when all `conds` hold (an empty list always holds), return `action`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub syscall: String,
    pub action: Action,
    pub conds: Vec<Cond>,
}

/// A checked profile, ready to compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub default_action: Action,
    /// Deduplicated; the native architecture always comes first.
    pub arches: Vec<Arch>,
    /// `SECCOMP_FILTER_FLAG_*` for seccomp(2), including NEW_LISTENER when a rule notifies.
    pub filter_flags: u32,
    pub listener_path: Option<PathBuf>,
    pub listener_metadata: Option<String>,
    /// Rules whose action equals the default are dropped (libseccomp refuses them and runc skips them).
    pub rules: Vec<Rule>,
}

pub const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;
pub const SECCOMP_FILTER_FLAG_LOG: u32 = 2;
pub const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 4;
pub const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = 8;
pub const SECCOMP_FILTER_FLAG_TSYNC_ESRCH: u32 = 16;
pub const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: u32 = 32;

impl Profile {
    /// Parses the JSON of a `linux.seccomp` section; a bad field is named by its JSON path.
    pub fn from_json(bytes: &[u8]) -> Result<Profile> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let oci: LinuxSeccomp = serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.path().to_string();
            Error::Parse {
                path: if inner == "." || inner == "?" {
                    ROOT.to_string()
                } else {
                    format!("{ROOT}.{inner}")
                },
                source: e.into_inner(),
            }
        })?;
        Profile::from_oci(&oci)
    }

    /// Checks an OCI section for the architecture this binary runs on.
    pub fn from_oci(oci: &LinuxSeccomp) -> Result<Profile> {
        Profile::from_oci_for(oci, Arch::native())
    }

    /// Checks an OCI section as if `native` were the architecture we run on.
    pub fn from_oci_for(oci: &LinuxSeccomp, native: Arch) -> Result<Profile> {
        let default_action = Action::from_oci(
            oci.default_action(),
            oci.default_errno_ret(),
            &format!("{ROOT}.defaultErrnoRet"),
        )?;
        if default_action == Action::Notify {
            return Err(Error::invalid(
                format!("{ROOT}.defaultAction"),
                "SCMP_ACT_NOTIFY cannot be the default action (the agent's own syscalls would block)",
            ));
        }

        let mut arches = vec![native];
        for (i, a) in oci.architectures().iter().flatten().enumerate() {
            let arch = Arch::from_oci(*a).ok_or_else(|| {
                Error::invalid(
                    format!("{ROOT}.architectures[{i}]"),
                    format!(
                        "architecture {a:?} is not supported (x86_64, x86, x32, aarch64, arm are)"
                    ),
                )
            })?;
            if !arches.contains(&arch) {
                arches.push(arch);
            }
        }

        let mut filter_flags = 0;
        for f in oci.flags().iter().flatten() {
            filter_flags |= match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                    SECCOMP_FILTER_FLAG_SPEC_ALLOW
                }
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                    SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
                }
            };
        }

        let mut rules = Vec::new();
        for (si, sc) in oci.syscalls().iter().flatten().enumerate() {
            let path = format!("{ROOT}.syscalls[{si}]");
            let action =
                Action::from_oci(sc.action(), sc.errno_ret(), &format!("{path}.errnoRet"))?;
            if sc.names().is_empty() {
                return Err(Error::invalid(
                    format!("{path}.names"),
                    "must name at least one syscall",
                ));
            }
            let mut conds = Vec::new();
            for (ai, arg) in sc.args().iter().flatten().enumerate() {
                let apath = format!("{path}.args[{ai}]");
                if arg.index() >= 6 {
                    return Err(Error::invalid(
                        format!("{apath}.index"),
                        format!("argument index {} is out of range 0..=5", arg.index()),
                    ));
                }
                let (op, value) = match arg.op() {
                    LinuxSeccompOperator::ScmpCmpEq => (CondOp::Eq, arg.value()),
                    LinuxSeccompOperator::ScmpCmpNe => (CondOp::Ne, arg.value()),
                    LinuxSeccompOperator::ScmpCmpLt => (CondOp::Lt, arg.value()),
                    LinuxSeccompOperator::ScmpCmpLe => (CondOp::Le, arg.value()),
                    LinuxSeccompOperator::ScmpCmpGt => (CondOp::Gt, arg.value()),
                    LinuxSeccompOperator::ScmpCmpGe => (CondOp::Ge, arg.value()),
                    // As in libseccomp: `value` is the mask, `valueTwo` what the masked argument must equal,
                    // itself masked (bits outside the mask are ignored, not "never equal"). A missing
                    // `valueTwo` is 0, as runc and crun read it: Go's `omitempty` drops a zero, so the
                    // profiles of containerd, Docker and runtime-tools never spell it out.
                    LinuxSeccompOperator::ScmpCmpMaskedEq => (
                        CondOp::MaskedEq { mask: arg.value() },
                        arg.value_two().unwrap_or(0) & arg.value(),
                    ),
                };
                conds.push(Cond {
                    arg: arg.index() as u8,
                    op,
                    value,
                });
            }
            // Like runc: several comparisons of one argument in one entry become separate rules, ORed.
            let mut seen = [0usize; 6];
            for c in &conds {
                seen[c.arg as usize] += 1;
            }
            let cond_sets: Vec<Vec<Cond>> = if seen.iter().any(|&n| n > 1) {
                conds.iter().map(|c| vec![*c]).collect()
            } else {
                vec![conds]
            };

            for (ni, name) in sc.names().iter().enumerate() {
                if !arches.iter().any(|a| a.knows(name)) {
                    let list: Vec<String> = arches.iter().map(|a| a.to_string()).collect();
                    return Err(Error::invalid(
                        format!("{path}.names[{ni}]"),
                        format!(
                            "unknown syscall {name:?} on every architecture of the filter ({})",
                            list.join(", ")
                        ),
                    ));
                }
                if action == Action::Notify && name == "write" {
                    return Err(Error::invalid(
                        format!("{path}.names[{ni}]"),
                        "SCMP_ACT_NOTIFY on write would block the runtime handing over the listener",
                    ));
                }
                if action == default_action {
                    continue;
                }
                for conds in &cond_sets {
                    rules.push(Rule {
                        syscall: name.clone(),
                        action,
                        conds: conds.clone(),
                    });
                }
            }
        }

        if rules.iter().any(|r| r.action == Action::Notify) {
            if oci.listener_path().is_none() {
                return Err(Error::invalid(
                    format!("{ROOT}.listenerPath"),
                    "required when a rule uses SCMP_ACT_NOTIFY",
                ));
            }
            filter_flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
            // The kernel refuses TSYNC with NEW_LISTENER (the return value cannot be both a thread id and the
            // fd) unless TSYNC failures are reported as ESRCH instead.
            if filter_flags & SECCOMP_FILTER_FLAG_TSYNC != 0 {
                filter_flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
            }
        }

        Ok(Profile {
            default_action,
            arches,
            filter_flags,
            listener_path: oci.listener_path().clone(),
            listener_metadata: oci.listener_metadata().clone(),
            rules,
        })
    }

    /// The rules that apply on `arch`, with their syscall numbers, in profile order: names unknown there are
    /// skipped, and on x86 a socket or SysV IPC call also gets a rule on its multiplexer, with the call number
    /// required in the first argument (the rule's other conditions kept as they are, as libseccomp does).
    pub fn arch_rules(&self, arch: Arch) -> Vec<(u32, Rule)> {
        let mut out = Vec::new();
        for r in &self.rules {
            if let Some(nr) = arch.syscall_nr(&r.syscall) {
                out.push((nr, r.clone()));
            }
            if let Some((mux, call)) = arch.multiplexed(&r.syscall) {
                let mut conds = vec![Cond {
                    arg: 0,
                    op: CondOp::Eq,
                    value: call as u64,
                }];
                // The first argument now holds the call number; the rule's own test of it is replaced.
                conds.extend(r.conds.iter().filter(|c| c.arg != 0).copied());
                out.push((
                    mux,
                    Rule {
                        syscall: r.syscall.clone(),
                        action: r.action,
                        conds,
                    },
                ));
            }
        }
        out
    }

    /// The action the compiled filter returns for one syscall, evaluated directly from the rules (the
    /// specification the BPF program must agree with). `None` means the architecture is not in the filter.
    pub fn evaluate(&self, arch: Arch, nr: u32, args: &[u64; 6]) -> Option<Action> {
        if !self.arches.contains(&arch) {
            return None;
        }
        let all = self.arch_rules(arch);
        let rules: Vec<&Rule> = all
            .iter()
            .filter(|(n, _)| *n == nr)
            .map(|(_, r)| r)
            .collect();
        // An unconditional rule decides the syscall outright, whatever conditional rules there are.
        if let Some(r) = rules.iter().find(|r| r.conds.is_empty()) {
            return Some(r.action);
        }
        Some(
            rules
                .iter()
                .find(|r| {
                    r.conds
                        .iter()
                        .all(|c| c.matches(arch, args[c.arg as usize]))
                })
                .map(|r| r.action)
                .unwrap_or(self.default_action),
        )
    }
}

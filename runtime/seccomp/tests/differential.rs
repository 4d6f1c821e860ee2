//! Our compiler against libseccomp (the reference, a dev-dependency only): random profiles compiled by both,
//! both programs run in our interpreter over random syscalls, every answer must be the same.

use basalt_seccomp::arch::{Arch, X32_SYSCALL_BIT};
use basalt_seccomp::bpf::SockFilter;
use basalt_seccomp::interp::{run, SeccompData};
use basalt_seccomp::{Action, CondOp, Profile};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::io::{Read, Seek, SeekFrom};

/// Syscalls known on x86_64 (libseccomp resolves names on the native arch), chosen to cover x32's
/// renumbered calls, calls missing on aarch64/x32, x86's socketcall/ipc multiplexed calls, and the usual
/// container suspects.
const NAMES: &[&str] = &[
    "read",
    "write",
    "open",
    "openat",
    "close",
    "mkdir",
    "mkdirat",
    "ioctl",
    "mmap",
    "clone",
    "execve",
    "kill",
    "getpid",
    "fchmod",
    "chown",
    "personality",
    "prctl",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "ptrace",
    "readv",
    "writev",
    "futex",
    "lseek",
    "dup",
    "dup2",
    "pipe",
    "fork",
    "time",
    "uname",
    "getuid",
    "setuid",
    "rename",
    "unlink",
    "nanosleep",
    "madvise",
    "set_thread_area",
    "rt_sigaction",
    "waitid",
    "uselib",
    "kexec_load",
    "bpf",
    "keyctl",
    "pivot_root",
    "io_setup",
    "preadv2",
    "arch_prctl",
    "mknod",
    "socket",
    "connect",
    "sendmsg",
    "recvmsg",
    "setsockopt",
    "accept4",
    "sendto",
    "shmget",
    "semop",
    "msgget",
];

const ACTIONS_FOR_RULES: usize = 8;

fn random_action(rng: &mut StdRng, allow_notify: bool) -> Value {
    let n = if allow_notify {
        ACTIONS_FOR_RULES
    } else {
        ACTIONS_FOR_RULES - 1
    };
    match rng.random_range(0..n) {
        0 => json!({"action": "SCMP_ACT_KILL"}),
        1 => json!({"action": "SCMP_ACT_KILL_PROCESS"}),
        2 => json!({"action": "SCMP_ACT_TRAP"}),
        3 => match rng.random_range(0..3) {
            0 => json!({"action": "SCMP_ACT_ERRNO"}),
            1 => json!({"action": "SCMP_ACT_ERRNO", "errnoRet": rng.random_range(1..40u32)}),
            _ => json!({"action": "SCMP_ACT_ERRNO", "errnoRet": rng.random_range(0..=4095u32)}),
        },
        4 => json!({"action": "SCMP_ACT_TRACE", "errnoRet": rng.random_range(0..=0xffffu32)}),
        5 => json!({"action": "SCMP_ACT_LOG"}),
        6 => json!({"action": "SCMP_ACT_ALLOW"}),
        _ => json!({"action": "SCMP_ACT_NOTIFY"}),
    }
}

fn random_u64(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..5) {
        0 => rng.random_range(0..16),
        1 => rng.random::<u32>() as u64,
        2 => (rng.random::<u32>() as u64) << 32,
        3 => u64::MAX - rng.random_range(0..4),
        _ => rng.random(),
    }
}

fn random_args(rng: &mut StdRng) -> Value {
    let n = rng.random_range(1..=3);
    let mut idx: Vec<usize> = (0..6).collect();
    let mut out = Vec::new();
    for _ in 0..n {
        let i = idx.remove(rng.random_range(0..idx.len()));
        let op = [
            "SCMP_CMP_EQ",
            "SCMP_CMP_NE",
            "SCMP_CMP_LT",
            "SCMP_CMP_LE",
            "SCMP_CMP_GT",
            "SCMP_CMP_GE",
            "SCMP_CMP_MASKED_EQ",
        ][rng.random_range(0..7)];
        if op == "SCMP_CMP_MASKED_EQ" {
            let mask = random_u64(rng);
            // Mostly a datum inside the mask (can match), sometimes outside (never matches).
            let datum = if rng.random_bool(0.8) {
                random_u64(rng) & mask
            } else {
                random_u64(rng)
            };
            out.push(json!({"index": i, "value": mask, "valueTwo": datum, "op": op}));
        } else {
            out.push(json!({"index": i, "value": random_u64(rng), "op": op}));
        }
    }
    Value::Array(out)
}

/// A random OCI section. Per syscall all rules share one action, so the answer does not depend on how
/// overlapping rules with different actions are ordered (libseccomp does not define that).
fn random_profile(
    rng: &mut StdRng,
    arch_pool: &[&'static str],
    one_rule_per_syscall: bool,
) -> Value {
    let mut default = random_action(rng, false);
    let mut section =
        json!({"defaultAction": default["action"], "listenerPath": "/run/agent.sock"});
    if let Some(e) = default.get_mut("errnoRet").map(Value::take) {
        section["defaultErrnoRet"] = e;
    }
    let arches: Vec<&str> = arch_pool
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    section["architectures"] = json!(arches);
    let mut assigned: Vec<(&str, Value)> = Vec::new();
    let mut syscalls = Vec::new();
    for _ in 0..rng.random_range(0..14) {
        let mut entry = random_action(rng, true);
        let mut names = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let name = NAMES[rng.random_range(0..NAMES.len())];
            if name == "write" && entry["action"] == "SCMP_ACT_NOTIFY" {
                continue; // refused on purpose, see the unit tests
            }
            match assigned.iter().find(|(n, _)| *n == name) {
                Some(_) if one_rule_per_syscall => continue,
                Some((_, a)) if *a != entry => continue,
                Some(_) => {}
                None => assigned.push((name, entry.clone())),
            }
            names.push(name);
        }
        if names.is_empty() {
            continue;
        }
        entry["names"] = json!(names);
        if rng.random_bool(0.6) {
            entry["args"] = random_args(rng);
        }
        syscalls.push(entry);
    }
    section["syscalls"] = Value::Array(syscalls);
    section
}

fn scmp_action(a: Action) -> ScmpAction {
    match a {
        Action::KillThread => ScmpAction::KillThread,
        Action::KillProcess => ScmpAction::KillProcess,
        Action::Trap => ScmpAction::Trap,
        Action::Errno(e) => ScmpAction::Errno(e as i32),
        Action::Notify => ScmpAction::Notify,
        Action::Trace(d) => ScmpAction::Trace(d),
        Action::Log => ScmpAction::Log,
        Action::Allow => ScmpAction::Allow,
    }
}

fn scmp_arch(a: Arch) -> ScmpArch {
    match a {
        Arch::X86_64 => ScmpArch::X8664,
        Arch::X86 => ScmpArch::X86,
        Arch::X32 => ScmpArch::X32,
        Arch::Aarch64 => ScmpArch::Aarch64,
        Arch::Arm => ScmpArch::Arm,
    }
}

/// The same rules given to libseccomp the way runc does it.
fn libseccomp_program(p: &Profile) -> Vec<SockFilter> {
    let mut ctx = ScmpFilterContext::new(scmp_action(p.default_action)).unwrap();
    for &a in &p.arches {
        ctx.add_arch(scmp_arch(a)).unwrap();
    }
    for r in &p.rules {
        let sys = ScmpSyscall::from_name(&r.syscall).unwrap();
        let conds: Vec<ScmpArgCompare> = r
            .conds
            .iter()
            .map(|c| {
                let op = match c.op {
                    CondOp::Eq => ScmpCompareOp::Equal,
                    CondOp::Ne => ScmpCompareOp::NotEqual,
                    CondOp::Lt => ScmpCompareOp::Less,
                    CondOp::Le => ScmpCompareOp::LessOrEqual,
                    CondOp::Gt => ScmpCompareOp::Greater,
                    CondOp::Ge => ScmpCompareOp::GreaterEqual,
                    CondOp::MaskedEq { mask } => ScmpCompareOp::MaskedEqual(mask),
                };
                ScmpArgCompare::new(c.arg as u32, op, c.value)
            })
            .collect();
        ctx.add_rule_conditional(scmp_action(r.action), sys, &conds)
            .unwrap_or_else(|e| panic!("libseccomp refused {r:?}: {e}"));
    }
    let mut f = tempfile::tempfile().unwrap();
    ctx.export_bpf(&f).unwrap();
    let mut bytes = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut bytes).unwrap();
    SockFilter::from_bytes(&bytes).unwrap()
}

/// The answer a correct filter must give, from the rules themselves (`Profile::evaluate`) plus the
/// architecture dispatch (unlisted architecture: bad-arch action; x86_64 token: x32 when the number carries
/// the x32 bit, except -1, which is x86_64's "skip").
fn model_answer(p: &Profile, input: &SeccompData) -> u32 {
    let arch = if input.arch == Arch::X86_64.audit_arch() {
        if input.nr >= X32_SYSCALL_BIT && input.nr != u32::MAX {
            Some(Arch::X32)
        } else {
            Some(Arch::X86_64)
        }
    } else {
        Arch::ALL.into_iter().find(|a| a.audit_arch() == input.arch)
    };
    arch.and_then(|a| p.evaluate(a, input.nr, &input.args))
        .unwrap_or(basalt_seccomp::compile::BAD_ARCH_ACTION)
        .ret()
}

/// Argument values near the profile's operands: equal, off by one, with the other word changed, masked.
fn interesting_arg(rng: &mut StdRng, p: &Profile) -> u64 {
    let conds: Vec<_> = p.rules.iter().flat_map(|r| &r.conds).collect();
    if conds.is_empty() || rng.random_bool(0.25) {
        return random_u64(rng);
    }
    let c = conds[rng.random_range(0..conds.len())];
    let v = c.value;
    match rng.random_range(0..7) {
        0 => v,
        1 => v.wrapping_add(1),
        2 => v.wrapping_sub(1),
        3 => v ^ (1u64 << 32),
        4 => v ^ 1,
        5 => match c.op {
            CondOp::MaskedEq { mask } => (random_u64(rng) & !mask) | v,
            _ => v.wrapping_add(1 << 32),
        },
        _ => (v & 0xffff_ffff) | ((rng.random::<u32>() as u64) << 32),
    }
}

fn random_input(rng: &mut StdRng, p: &Profile) -> SeccompData {
    let arch = Arch::ALL[rng.random_range(0..Arch::ALL.len())];
    let token = if rng.random_bool(0.05) {
        rng.random()
    } else {
        arch.audit_arch()
    };
    let nr = match rng.random_range(0..10) {
        0..=5 if !p.rules.is_empty() => {
            let r = &p.rules[rng.random_range(0..p.rules.len())];
            // Sometimes the number of that name on another architecture with the same token (x86_64/x32).
            let a = if rng.random_bool(0.2) {
                Arch::ALL[rng.random_range(0..Arch::ALL.len())]
            } else {
                arch
            };
            a.syscall_nr(&r.syscall)
                .unwrap_or_else(|| rng.random_range(0..600))
        }
        6 => rng.random_range(0..600),
        7 => 0x4000_0000 | rng.random_range(0..600),
        8 => u32::MAX,
        _ => rng.random(),
    };
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = interesting_arg(rng, p);
    }
    // x86's socketcall/ipc way in to a rule's syscall.
    if arch == Arch::X86 && !p.rules.is_empty() && rng.random_bool(0.3) {
        let r = &p.rules[rng.random_range(0..p.rules.len())];
        if let Some((mux, call)) = Arch::X86.multiplexed(&r.syscall) {
            args[0] = if rng.random_bool(0.8) {
                call as u64
            } else {
                call as u64 + 1
            };
            return SeccompData::new(token, mux, args);
        }
    }
    SeccompData::new(token, nr, args)
}

const ARCHES: &[&str] = &[
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
];

/// One entry per syscall: libseccomp 2.5.4 merges several conditional rules of one syscall into a decision
/// tree that, on 32-bit ABIs, sometimes compares an argument with another argument's operand (seen for x32),
/// so OR-ed rules are checked against the rule model instead (next test).
#[test]
fn random_profiles_agree_with_libseccomp() {
    differential(0x5ecc0b, ARCHES, 300, 400, 7, Oracle::Libseccomp);
}

/// Several rules per syscall (OR-ed), all architectures, against the rule model.
#[test]
fn random_profiles_agree_with_rule_model() {
    differential(0xbeef, ARCHES, 300, 400, 7, Oracle::Model);
}

#[derive(PartialEq)]
enum Oracle {
    Libseccomp,
    Model,
}

fn differential(
    seed: u64,
    arch_pool: &[&'static str],
    profiles: usize,
    inputs_per_profile: usize,
    min_actions: usize,
    oracle: Oracle,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut compared, mut by_libseccomp, mut by_model, mut multiplexed) =
        (0usize, 0usize, 0usize, 0usize);
    let mut by_action = std::collections::BTreeMap::<u32, usize>::new();
    for n in 0..profiles {
        let section = random_profile(&mut rng, arch_pool, oracle == Oracle::Libseccomp);
        let p = Profile::from_json(&serde_json::to_vec(&section).unwrap())
            .unwrap_or_else(|e| panic!("profile {n} rejected: {e}\n{section:#}"));
        let ours = p.compile().unwrap();
        let theirs = libseccomp_program(&p);
        for _ in 0..inputs_per_profile {
            let input = random_input(&mut rng, &p);
            let a = run(&ours, &input).unwrap();
            if input.arch == Arch::X86.audit_arch() && (input.nr == 102 || input.nr == 117) {
                multiplexed += 1;
            }
            let arm = [Arch::Aarch64, Arch::Arm]
                .iter()
                .any(|a| a.audit_arch() == input.arch);
            let b = if arm || oracle == Oracle::Model {
                by_model += 1;
                model_answer(&p, &input)
            } else {
                by_libseccomp += 1;
                run(&theirs, &input).unwrap()
            };
            if a != b && oracle == Oracle::Libseccomp {
                eprintln!("ours:\n{}\nlibseccomp:\n{}", disasm(&ours), disasm(&theirs));
            }
            assert_eq!(
                a, b,
                "profile {n} disagrees on {input:x?}: ours {a:#x}, libseccomp {b:#x}\n{section:#}\n{p:#?}"
            );
            *by_action.entry(a & 0xffff_0000).or_default() += 1;
            compared += 1;
        }
    }
    println!(
        "compared {compared} syscalls over {profiles} random profiles ({by_libseccomp} against libseccomp's \
         program, {by_model} against the rule model; {multiplexed} through x86 socketcall/ipc); results by action: {by_action:x?}"
    );
    if oracle == Oracle::Libseccomp {
        assert!(by_libseccomp > compared / 2);
    }
    assert!(
        multiplexed > 1000,
        "socketcall/ipc barely reached: {multiplexed}"
    );
    assert_eq!(compared, profiles * inputs_per_profile);
    // The inputs must reach more than the default: rule actions of every kind are returned.
    assert!(
        by_action.len() >= min_actions,
        "too few distinct actions reached: {by_action:x?}"
    );
}

#[test]
fn syscall_tables_agree_with_libseccomp() {
    for arch in Arch::ALL {
        let (mut same, mut unknown_to_libseccomp, mut multiplexed) = (0, 0, 0);
        for name in arch.syscall_names() {
            let ours = arch.syscall_nr(name).unwrap();
            match ScmpSyscall::from_name_by_arch(name, scmp_arch(arch)) {
                // libseccomp's pseudo numbers for calls it multiplexes (socketcall/ipc on x86).
                // Pseudo numbers: only x86's calls that libseccomp also filters through socketcall/ipc (so
                // must we); anywhere else it would mean the call does not exist on that ABI.
                Ok(s) if i32::from(s) < 0 => {
                    assert_eq!(
                        arch,
                        Arch::X86,
                        "{name}: libseccomp says it does not exist on {arch}"
                    );
                    assert!(
                        arch.multiplexed(name).is_some(),
                        "{arch} {name}: libseccomp multiplexes it, we do not"
                    );
                    multiplexed += 1
                }
                Ok(s) => {
                    let theirs = i32::from(s);
                    assert_eq!(ours as i32, theirs, "{arch} {name}");
                    same += 1;
                }
                // Newer than libseccomp 2.5.4's tables.
                Err(_) => unknown_to_libseccomp += 1,
            }
        }
        println!(
            "{arch}: {same} syscall numbers agree, {unknown_to_libseccomp} unknown to libseccomp, \
             {multiplexed} multiplexed"
        );
        assert!(same > 250, "{arch}: only {same} compared");
    }
}

fn disasm(p: &[SockFilter]) -> String {
    p.iter()
        .enumerate()
        .map(|(i, x)| format!("{i:4}: {:04x} {:3} {:3} {:#x}\n", x.code, x.jt, x.jf, x.k))
        .collect()
}

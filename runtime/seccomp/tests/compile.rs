//! The compiler on hand-written profiles: every action, operator and architecture, long jumps, and the errors
//! for profiles it must refuse (each naming the JSON path).

use basalt_seccomp::arch::{
    Arch, AUDIT_ARCH_AARCH64, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT,
};
use basalt_seccomp::bpf::*;
use basalt_seccomp::interp::{run, SeccompData};
use basalt_seccomp::profile::*;
use basalt_seccomp::{Error, Profile};
use serde_json::{json, Value};

fn profile(v: Value) -> Profile {
    Profile::from_json(&serde_json::to_vec(&v).unwrap()).unwrap()
}

fn err(v: Value) -> String {
    match Profile::from_json(&serde_json::to_vec(&v).unwrap()) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.to_string(),
    }
}

fn err_bytes(b: &[u8]) -> String {
    Profile::from_json(b).unwrap_err().to_string()
}

/// What the compiled program returns for `name` on `arch`.
fn answer(p: &Profile, arch: Arch, name: &str, args: [u64; 6]) -> u32 {
    let nr = arch.syscall_nr(name).unwrap();
    run(
        &p.compile().unwrap(),
        &SeccompData::new(arch.audit_arch(), nr, args),
    )
    .unwrap()
}

#[test]
fn every_action_maps_to_its_seccomp_ret_value() {
    let cases = [
        (json!({"action": "SCMP_ACT_KILL"}), SECCOMP_RET_KILL_THREAD),
        (
            json!({"action": "SCMP_ACT_KILL_THREAD"}),
            SECCOMP_RET_KILL_THREAD,
        ),
        (
            json!({"action": "SCMP_ACT_KILL_PROCESS"}),
            SECCOMP_RET_KILL_PROCESS,
        ),
        (json!({"action": "SCMP_ACT_TRAP"}), SECCOMP_RET_TRAP),
        (
            json!({"action": "SCMP_ACT_ERRNO"}),
            SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        (
            json!({"action": "SCMP_ACT_ERRNO", "errnoRet": 38}),
            SECCOMP_RET_ERRNO | 38,
        ),
        (
            json!({"action": "SCMP_ACT_TRACE"}),
            SECCOMP_RET_TRACE | libc::EPERM as u32,
        ),
        (
            json!({"action": "SCMP_ACT_TRACE", "errnoRet": 4242}),
            SECCOMP_RET_TRACE | 4242,
        ),
        (json!({"action": "SCMP_ACT_LOG"}), SECCOMP_RET_LOG),
        (json!({"action": "SCMP_ACT_NOTIFY"}), SECCOMP_RET_USER_NOTIF),
    ];
    for (mut rule, want) in cases {
        rule["names"] = json!(["mkdir"]);
        let p = profile(
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a", "syscalls": [rule]}),
        );
        assert_eq!(answer(&p, Arch::X86_64, "mkdir", [0; 6]), want, "{rule}");
        assert_eq!(
            answer(&p, Arch::X86_64, "rmdir", [0; 6]),
            SECCOMP_RET_ALLOW,
            "{rule}"
        );
    }
}

#[test]
fn default_action_and_default_errno() {
    let p = profile(
        json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 95,
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}),
    );
    assert_eq!(
        answer(&p, Arch::X86_64, "write", [0; 6]),
        SECCOMP_RET_ERRNO | 95
    );
    assert_eq!(answer(&p, Arch::X86_64, "read", [0; 6]), SECCOMP_RET_ALLOW);
    let p = profile(json!({"defaultAction": "SCMP_ACT_ERRNO"}));
    assert_eq!(
        answer(&p, Arch::X86_64, "write", [0; 6]),
        SECCOMP_RET_ERRNO | 1
    );
    let p = profile(json!({"defaultAction": "SCMP_ACT_KILL_PROCESS"}));
    assert_eq!(
        answer(&p, Arch::X86_64, "write", [0; 6]),
        SECCOMP_RET_KILL_PROCESS
    );
}

/// Each operator on values around a 64-bit operand, where the high and low words matter separately.
#[test]
fn every_operator_compares_all_64_bits() {
    let v: u64 = 0x0000_0001_8000_0000;
    let probes = [
        0,
        v - 1,
        v,
        v + 1,
        v & 0xffff_ffff,
        v | 0xffff_ffff,
        1 << 32,
        u64::MAX,
        v + (1 << 32),
    ];
    let ops = [
        ("SCMP_CMP_EQ", CondOp::Eq),
        ("SCMP_CMP_NE", CondOp::Ne),
        ("SCMP_CMP_LT", CondOp::Lt),
        ("SCMP_CMP_LE", CondOp::Le),
        ("SCMP_CMP_GT", CondOp::Gt),
        ("SCMP_CMP_GE", CondOp::Ge),
    ];
    for (name, op) in ops {
        for arg in 0..6u8 {
            let p = profile(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": arg, "value": v, "op": name}]}]}));
            for x in probes {
                let mut args = [7u64; 6];
                args[arg as usize] = x;
                let want = match op {
                    CondOp::Eq => x == v,
                    CondOp::Ne => x != v,
                    CondOp::Lt => x < v,
                    CondOp::Le => x <= v,
                    CondOp::Gt => x > v,
                    CondOp::Ge => x >= v,
                    CondOp::MaskedEq { .. } => unreachable!(),
                };
                let got = answer(&p, Arch::X86_64, "mkdir", args) == SECCOMP_RET_ERRNO | 1;
                assert_eq!(got, want, "{name} arg{arg}: {x:#x} vs {v:#x}");
            }
        }
    }
}

#[test]
fn masked_eq_uses_value_as_mask_and_value_two_as_datum() {
    // (flags & (CLONE_NEWUSER|CLONE_NEWNET)) == 0
    let mask = (libc::CLONE_NEWUSER | libc::CLONE_NEWNET) as u64 | (1 << 40);
    let p = profile(
        json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["clone"],
        "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": mask, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}]}),
    );
    let allowed =
        |flags: u64| answer(&p, Arch::X86_64, "clone", [flags, 0, 0, 0, 0, 0]) == SECCOMP_RET_ALLOW;
    assert!(allowed(libc::SIGCHLD as u64));
    assert!(allowed(libc::CLONE_VM as u64 | libc::CLONE_THREAD as u64));
    assert!(!allowed(libc::CLONE_NEWUSER as u64));
    assert!(!allowed(libc::CLONE_NEWNET as u64 | libc::SIGCHLD as u64));
    assert!(
        !allowed(1 << 40),
        "the high word of the mask is checked too"
    );
    // Go's `omitempty` drops a zero `valueTwo` (containerd's and Docker's default profiles): missing is 0.
    let omitted = profile(
        json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["clone"],
        "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": mask, "op": "SCMP_CMP_MASKED_EQ"}]}]}),
    );
    for flags in [
        libc::SIGCHLD as u64,
        libc::CLONE_NEWUSER as u64,
        libc::CLONE_NEWNET as u64 | libc::SIGCHLD as u64,
        1 << 40,
    ] {
        assert_eq!(
            answer(&omitted, Arch::X86_64, "clone", [flags, 0, 0, 0, 0, 0]),
            answer(&p, Arch::X86_64, "clone", [flags, 0, 0, 0, 0, 0]),
            "flags {flags:#x}"
        );
    }
    // A datum with bits outside the mask is masked, as libseccomp does.
    let p = profile(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
        "action": "SCMP_ACT_TRAP", "args": [{"index": 1, "value": 0xf0, "valueTwo": 0x1f3, "op": "SCMP_CMP_MASKED_EQ"}]}]}),
    );
    assert_eq!(
        answer(&p, Arch::X86_64, "read", [0, 0xf5, 0, 0, 0, 0]),
        SECCOMP_RET_TRAP
    );
    assert_eq!(
        answer(&p, Arch::X86_64, "read", [0, 0xe5, 0, 0, 0, 0]),
        SECCOMP_RET_ALLOW
    );
}

#[test]
fn args_in_one_rule_are_anded_and_rules_are_ored() {
    let p = profile(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["openat"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_EQ"}, {"index": 2, "value": 64, "op": "SCMP_CMP_MASKED_EQ", "valueTwo": 64}]},
        {"names": ["openat"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 3, "value": 7, "op": "SCMP_CMP_GT"}]},
    ]}));
    let denied = |args| answer(&p, Arch::X86_64, "openat", args) != SECCOMP_RET_ALLOW;
    assert!(denied([3, 0, 64 | 1, 0, 0, 0]));
    assert!(
        !denied([3, 0, 1, 0, 0, 0]),
        "only one of the ANDed args holds"
    );
    assert!(!denied([4, 0, 64, 0, 0, 0]));
    assert!(denied([4, 0, 0, 8, 0, 0]), "the second rule alone");
}

#[test]
fn repeated_index_in_one_entry_becomes_ored_rules_like_runc() {
    let p = profile(
        json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["personality"],
        "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
        {"index": 0, "value": 0xffffffffu64, "op": "SCMP_CMP_EQ"}]}]}),
    );
    assert_eq!(p.rules.len(), 2);
    for (x, ok) in [(0, true), (0xffff_ffff, true), (8, false)] {
        let allowed =
            answer(&p, Arch::X86_64, "personality", [x, 0, 0, 0, 0, 0]) == SECCOMP_RET_ALLOW;
        assert_eq!(allowed, ok, "{x:#x}");
    }
}

#[test]
fn rules_with_the_default_action_are_dropped() {
    let p = profile(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}));
    assert_eq!(
        p.rules
            .iter()
            .map(|r| r.syscall.as_str())
            .collect::<Vec<_>>(),
        ["mkdir"]
    );
}

#[test]
fn every_architecture_uses_its_own_numbers_and_width() {
    let p = profile(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": [{"names": ["mkdirat", "ioctl"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 1, "value": 0x1_0000_0000u64, "op": "SCMP_CMP_GE"}]}]}));
    let prog = p.compile().unwrap();
    let ret =
        |token, nr, a1: u64| run(&prog, &SeccompData::new(token, nr, [0, a1, 0, 0, 0, 0])).unwrap();
    let eperm = SECCOMP_RET_ERRNO | 1;
    for arch in Arch::ALL {
        let nr = arch.syscall_nr("mkdirat").unwrap();
        if arch.args_are_64bit() {
            assert_eq!(ret(arch.audit_arch(), nr, 1 << 32), eperm, "{arch}");
            assert_eq!(
                ret(arch.audit_arch(), nr, 0xffff_ffff),
                SECCOMP_RET_ALLOW,
                "{arch}"
            );
        } else {
            // 32-bit ABIs compare the low word only: 0x1_0000_0000 is 0 there, and anything is >= 0.
            assert_eq!(ret(arch.audit_arch(), nr, 5), eperm, "{arch}");
        }
    }
    // Numbers differ: x86_64 mkdirat 258, x86 296, x32 258|bit, aarch64 34.
    assert_eq!(ret(AUDIT_ARCH_X86_64, 258, 1 << 32), eperm);
    assert_eq!(ret(AUDIT_ARCH_I386, 296, 1), eperm);
    assert_eq!(ret(AUDIT_ARCH_X86_64, 258 | X32_SYSCALL_BIT, 1), eperm);
    assert_eq!(ret(AUDIT_ARCH_AARCH64, 34, 1 << 32), eperm);
    assert_eq!(ret(AUDIT_ARCH_AARCH64, 258, 1 << 32), SECCOMP_RET_ALLOW);
    // x32's ioctl is 514|bit; the x86_64 number with the bit is not ioctl there.
    assert_eq!(ret(AUDIT_ARCH_X86_64, 514 | X32_SYSCALL_BIT, 0), eperm);
    assert_eq!(
        ret(AUDIT_ARCH_X86_64, 16 | X32_SYSCALL_BIT, 0),
        SECCOMP_RET_ALLOW
    );
}

#[test]
fn unlisted_architectures_get_the_bad_arch_action() {
    let p =
        profile(json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"]}));
    let prog = p.compile().unwrap();
    let ret = |token, nr| run(&prog, &SeccompData::new(token, nr, [0; 6])).unwrap();
    assert_eq!(ret(AUDIT_ARCH_X86_64, 1), SECCOMP_RET_ALLOW);
    assert_eq!(ret(AUDIT_ARCH_I386, 1), SECCOMP_RET_KILL_THREAD);
    assert_eq!(ret(AUDIT_ARCH_AARCH64, 1), SECCOMP_RET_KILL_THREAD);
    // x32 numbers on an x86_64-only filter are a bad architecture, except -1 (a tracer's skip).
    assert_eq!(
        ret(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 1),
        SECCOMP_RET_KILL_THREAD
    );
    assert_eq!(ret(AUDIT_ARCH_X86_64, u32::MAX), SECCOMP_RET_ALLOW);
    // The native architecture is always there, even when not listed.
    let p =
        profile(json!({"defaultAction": "SCMP_ACT_LOG", "architectures": ["SCMP_ARCH_AARCH64"]}));
    assert_eq!(p.arches, [Arch::native(), Arch::Aarch64]);
}

#[test]
fn syscalls_unknown_on_one_arch_are_skipped_there() {
    let p = profile(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}),
    );
    assert_eq!(
        answer(&p, Arch::X86_64, "mkdir", [0; 6]),
        SECCOMP_RET_ERRNO | 1
    );
    assert_eq!(
        answer(&p, Arch::Aarch64, "mkdirat", [0; 6]),
        SECCOMP_RET_ALLOW
    );
}

/// Far more rules than 255 instructions of jump range: every syscall still gets its own answer.
#[test]
fn long_programs_use_trampolines() {
    let names: Vec<&str> = Arch::X86_64.syscall_names().into_iter().take(300).collect();
    let rules: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({"names": [n], "action": "SCMP_ACT_ERRNO", "errnoRet": i + 1,
            "args": [{"index": i % 6, "value": i as u64 * 0x1_0000_0001, "op": "SCMP_CMP_EQ"}]})
        })
        .collect();
    let p = profile(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}));
    let prog = p.compile().unwrap();
    assert!(prog.len() > 1000, "{}", prog.len());
    assert!(
        prog.iter().any(|i| i.code == BPF_JMP | BPF_JA),
        "no trampoline was needed?"
    );
    for (i, n) in names.iter().enumerate() {
        let mut args = [0u64; 6];
        args[i % 6] = i as u64 * 0x1_0000_0001;
        assert_eq!(
            answer(&p, Arch::X86_64, n, args),
            SECCOMP_RET_ERRNO | (i as u32 + 1),
            "{n}"
        );
        args[i % 6] ^= 1 << 32;
        assert_eq!(answer(&p, Arch::X86_64, n, args), SECCOMP_RET_ALLOW, "{n}");
    }
}

#[test]
fn too_long_programs_are_refused() {
    let names = Arch::X86_64.syscall_names();
    let rules: Vec<Value> = (0..800)
        .map(|i| json!({"names": [names[i % names.len()]], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": i, "op": "SCMP_CMP_GT"}, {"index": 1, "value": i, "op": "SCMP_CMP_LT"}]}))
        .collect();
    let p = profile(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}));
    assert!(matches!(p.compile(), Err(Error::TooLarge(n)) if n > MAX_INSNS));
}

#[test]
fn flags_map_to_seccomp_filter_flags() {
    let p = profile(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}),
    );
    assert_eq!(
        p.filter_flags,
        SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW
    );
    let p = profile(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
        "listenerMetadata": "m", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
    );
    assert_eq!(p.filter_flags, SECCOMP_FILTER_FLAG_NEW_LISTENER);
    let tsync = profile(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
    );
    assert_eq!(
        tsync.filter_flags,
        SECCOMP_FILTER_FLAG_NEW_LISTENER
            | SECCOMP_FILTER_FLAG_TSYNC
            | SECCOMP_FILTER_FLAG_TSYNC_ESRCH
            | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    );
    assert_eq!(
        p.listener_path.as_deref(),
        Some(std::path::Path::new("/run/agent.sock"))
    );
}

#[test]
fn bad_profiles_are_refused_naming_the_field() {
    let cases = [
        (
            json!({"defaultAction": "SCMP_ACT_NOPE"}),
            "linux.seccomp.defaultAction",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOMETIMES"}]}]}),
            "linux.seccomp.syscalls[0].args[0].op",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read", "frobnicate"],
            "action": "SCMP_ACT_ERRNO"}]}),
            "linux.seccomp.syscalls[0].names[1]",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            "linux.seccomp.syscalls[0].args[0].index",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5000}),
            "linux.seccomp.defaultErrnoRet",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_TRACE",
            "errnoRet": 70000}]}),
            "linux.seccomp.syscalls[0].errnoRet",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/a"}),
            "linux.seccomp.defaultAction",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
            "linux.seccomp.listenerPath",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a", "syscalls": [{"names": ["write"],
            "action": "SCMP_ACT_NOTIFY"}]}),
            "linux.seccomp.syscalls[0].names[0]",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_PPC64"]}),
            "linux.seccomp.architectures[1]",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}),
            "linux.seccomp.syscalls[0].names",
        ),
    ];
    for (v, path) in cases {
        let e = err(v.clone());
        assert!(e.contains(&format!("at {path}:")), "{v}: {e}");
    }
    let e = err_bytes(b"{");
    assert!(
        e.starts_with("cannot parse seccomp profile at linux.seccomp:"),
        "{e}"
    );
    // The unknown name is quoted and the architectures it was looked up on are listed.
    let e = err(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": ["frobnicate"], "action": "SCMP_ACT_ERRNO"}]}),
    );
    assert!(
        e.contains("\"frobnicate\"") && e.contains("x86_64, aarch64"),
        "{e}"
    );
}

/// On x86 a socket call is also reachable through socketcall(2): a rule on `connect` covers both ways in.
#[test]
fn x86_socket_rules_also_cover_socketcall() {
    let p = profile(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"],
        "syscalls": [{"names": ["connect", "shmget"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}),
    );
    let prog = p.compile().unwrap();
    let ret = |nr, a0| {
        run(
            &prog,
            &SeccompData::new(AUDIT_ARCH_I386, nr, [a0, 0, 0, 0, 0, 0]),
        )
        .unwrap()
    };
    let eacces = SECCOMP_RET_ERRNO | 13;
    assert_eq!(ret(Arch::X86.syscall_nr("connect").unwrap(), 0), eacces);
    assert_eq!(ret(102, 3), eacces, "socketcall(SYS_CONNECT)");
    assert_eq!(ret(102, 1), SECCOMP_RET_ALLOW, "socketcall(SYS_SOCKET)");
    assert_eq!(ret(117, 23), eacces, "ipc(SHMGET)");
    assert_eq!(ret(117, 21), SECCOMP_RET_ALLOW, "ipc(SHMAT)");
    // x86_64 has no multiplexer: 102 is getuid there.
    assert_eq!(
        run(
            &prog,
            &SeccompData::new(AUDIT_ARCH_X86_64, 102, [3, 0, 0, 0, 0, 0])
        )
        .unwrap(),
        SECCOMP_RET_ALLOW
    );
}

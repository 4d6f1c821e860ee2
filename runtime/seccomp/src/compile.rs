//! Code generation: a checked [`Profile`] becomes a classic BPF program.
//!
//! Layout (forward order): load `arch`, jump to the section of that architecture (an unknown one gets the
//! bad-arch action, KILL_THREAD like libseccomp's default); x86_64 and x32 share a token and are split on
//! `__X32_SYSCALL_BIT` (x32 numbers without x32 in the list are a bad architecture, save -1); a section
//! loads `nr` and finds the syscall's rules by binary search; a syscall's rules are tried in turn (ORed),
//! each checking its conditions (ANDed) on the two 32-bit halves of the 64-bit arguments (the low half only
//! on 32-bit ABIs); anything unmatched returns the default action.
//!
//! The program is emitted backwards, so every jump goes to code that already exists and its distance is
//! known; a conditional jump further than 255 instructions goes through a `JA` trampoline.

use std::collections::HashMap;

use oci_spec::runtime::LinuxSeccomp;

use crate::arch::{Arch, X32_SYSCALL_BIT};
use crate::bpf::*;
use crate::error::{Error, Result};
use crate::profile::{Action, Cond, CondOp, Profile, Rule};

/// What libseccomp returns, by default, for an architecture the filter does not list.
pub const BAD_ARCH_ACTION: Action = Action::KillThread;

/// Checks and compiles an OCI section for the native architecture.
pub fn compile(oci: &LinuxSeccomp) -> Result<(Profile, Vec<SockFilter>)> {
    let profile = Profile::from_oci(oci)?;
    let program = profile.compile()?;
    Ok((profile, program))
}

impl Profile {
    /// The BPF program enforcing this profile.
    pub fn compile(&self) -> Result<Vec<SockFilter>> {
        let mut e = Emitter::default();
        let default = e.ret(self.default_action);
        let bad_arch = e.ret(BAD_ARCH_ACTION);

        let mut sections: HashMap<Arch, Label> = HashMap::new();
        for &arch in self.arches.iter().rev() {
            let start = e.section(arch, &self.arch_rules(arch), default);
            sections.insert(arch, start);
        }

        // Group the architectures by audit token; x86_64/x32 need the split on the x32 bit.
        let mut dispatch = bad_arch;
        let mut tokens: Vec<u32> = Vec::new();
        for a in &self.arches {
            if !tokens.contains(&a.audit_arch()) {
                tokens.push(a.audit_arch());
            }
        }
        for &token in tokens.iter().rev() {
            let target = if token == Arch::X86_64.audit_arch() {
                let x64 = sections.get(&Arch::X86_64).copied().unwrap_or(bad_arch);
                // Without x32, its numbers are a bad architecture, except -1 (a tracer skipping the
                // syscall), which gets the default action as in libseccomp.
                let x32 = match sections.get(&Arch::X32) {
                    Some(&l) => l,
                    None => e.jump(BPF_JMP | BPF_JEQ | BPF_K, u32::MAX, default, bad_arch),
                };
                e.jump(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, x32, x64);
                e.stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR)
            } else {
                let arch = *self
                    .arches
                    .iter()
                    .find(|a| a.audit_arch() == token)
                    .expect("token from arches");
                sections[&arch]
            };
            dispatch = e.jump(BPF_JMP | BPF_JEQ | BPF_K, token, target, dispatch);
        }
        e.stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARCH);
        e.finish()
    }
}

/// Index of an instruction counted from the end of the program (stable while emitting backwards).
type Label = usize;

#[derive(Default)]
struct Emitter {
    rev: Vec<SockFilter>,
    rets: HashMap<u32, Label>,
}

impl Emitter {
    fn push(&mut self, i: SockFilter) -> Label {
        self.rev.push(i);
        self.rev.len() - 1
    }

    fn stmt(&mut self, code: u16, k: u32) -> Label {
        self.push(SockFilter::stmt(code, k))
    }

    /// A `RET` for `action`, shared while it is within jump range (a fresh copy costs no more than the
    /// trampoline a far one would need, and serves the following jumps too).
    fn ret(&mut self, action: Action) -> Label {
        let k = action.ret();
        if let Some(&l) = self.rets.get(&k) {
            if self.dist(l) <= 200 {
                return l;
            }
        }
        let l = self.stmt(BPF_RET | BPF_K, k);
        self.rets.insert(k, l);
        l
    }

    /// Jump offset from the next emitted instruction to `target`.
    fn dist(&self, target: Label) -> usize {
        self.rev.len() - target - 1
    }

    fn trampoline(&mut self, target: Label) -> Label {
        let d = self.dist(target) as u32;
        self.stmt(BPF_JMP | BPF_JA, d)
    }

    fn jump(&mut self, code: u16, k: u32, jt: Label, jf: Label) -> Label {
        let mut jt = jt;
        let mut jf = jf;
        // Leave room for jf's trampoline when deciding on jt's.
        if self.dist(jt) > 254 {
            jt = self.trampoline(jt);
        }
        if self.dist(jf) > 255 {
            jf = self.trampoline(jf);
        }
        let (t, f) = (self.dist(jt), self.dist(jf));
        debug_assert!(t <= 255 && f <= 255);
        self.push(SockFilter {
            code,
            jt: t as u8,
            jf: f as u8,
            k,
        })
    }

    /// One architecture's section; returns its first instruction.
    fn section(&mut self, arch: Arch, rules: &[(u32, Rule)], default: Label) -> Label {
        // Syscalls in order of first appearance, each with its rules in profile order.
        let mut order: Vec<(u32, Vec<&Rule>)> = Vec::new();
        for (nr, r) in rules {
            match order.iter_mut().find(|(n, _)| n == nr) {
                Some((_, v)) => v.push(r),
                None => order.push((*nr, vec![r])),
            }
        }
        let mut blocks = Vec::with_capacity(order.len());
        for (nr, rules) in order.iter().rev() {
            blocks.push((*nr, self.syscall_block(arch, rules, default)));
        }
        blocks.sort_unstable_by_key(|(nr, _)| *nr);
        let next = self.dispatch(&blocks, default);
        if arch.audit_arch() == Arch::X86_64.audit_arch() {
            // The x86_64/x32 split already loaded nr.
            next
        } else {
            // The load falls through, so the dispatch must come right after it.
            if next + 1 != self.rev.len() {
                self.trampoline(next);
            }
            self.stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR)
        }
    }

    /// Finds the block of the syscall number in A (sorted `blocks`): a balanced tree of `JGE` down to short
    /// `JEQ` chains, so a profile with hundreds of syscalls costs about ten comparisons per syscall, not
    /// hundreds.
    fn dispatch(&mut self, blocks: &[(u32, Label)], default: Label) -> Label {
        if blocks.len() <= 4 {
            let mut next = default;
            for &(nr, block) in blocks.iter().rev() {
                next = self.jump(BPF_JMP | BPF_JEQ | BPF_K, nr, block, next);
            }
            return next;
        }
        let mid = blocks.len() / 2;
        let upper = self.dispatch(&blocks[mid..], default);
        let lower = self.dispatch(&blocks[..mid], default);
        self.jump(BPF_JMP | BPF_JGE | BPF_K, blocks[mid].0, upper, lower)
    }

    /// The rules of one syscall, ORed; an unconditional rule wins outright.
    fn syscall_block(&mut self, arch: Arch, rules: &[&Rule], default: Label) -> Label {
        if let Some(r) = rules.iter().find(|r| r.conds.is_empty()) {
            return self.ret(r.action);
        }
        let mut fail = default;
        for r in rules.iter().rev() {
            let mut start = self.ret(r.action);
            for c in r.conds.iter().rev() {
                start = self.cond(arch, c, start, fail);
            }
            fail = start;
        }
        fail
    }

    /// One comparison; jumps to `pass` or `fail`, returns its first instruction.
    fn cond(&mut self, arch: Arch, c: &Cond, pass: Label, fail: Label) -> Label {
        let (off_lo, off_hi) = arg_offsets(c.arg);
        let wide = arch.args_are_64bit();
        let (v_lo, v_hi) = (c.value as u32, (c.value >> 32) as u32);
        let ld = BPF_LD | BPF_W | BPF_ABS;
        let jeq = BPF_JMP | BPF_JEQ | BPF_K;
        match c.op {
            CondOp::Eq | CondOp::Ne => {
                let (p, f) = if c.op == CondOp::Eq {
                    (pass, fail)
                } else {
                    (fail, pass)
                };
                self.jump(jeq, v_lo, p, f);
                let lo = self.stmt(ld, off_lo);
                if !wide {
                    return lo;
                }
                self.jump(jeq, v_hi, lo, f);
                self.stmt(ld, off_hi)
            }
            CondOp::MaskedEq { mask } => {
                self.jump(jeq, v_lo, pass, fail);
                self.stmt(BPF_ALU | BPF_AND | BPF_K, mask as u32);
                let lo = self.stmt(ld, off_lo);
                if !wide {
                    return lo;
                }
                self.jump(jeq, v_hi, lo, fail);
                self.stmt(BPF_ALU | BPF_AND | BPF_K, (mask >> 32) as u32);
                self.stmt(ld, off_hi)
            }
            CondOp::Gt | CondOp::Ge | CondOp::Lt | CondOp::Le => {
                // LT is "not GE" and LE is "not GT".
                let (p, f) = match c.op {
                    CondOp::Gt | CondOp::Ge => (pass, fail),
                    _ => (fail, pass),
                };
                let lo_op = match c.op {
                    CondOp::Gt | CondOp::Le => BPF_JGT,
                    _ => BPF_JGE,
                };
                self.jump(BPF_JMP | lo_op | BPF_K, v_lo, p, f);
                let lo = self.stmt(ld, off_lo);
                if !wide {
                    return lo;
                }
                let eq = self.jump(jeq, v_hi, lo, f);
                self.jump(BPF_JMP | BPF_JGT | BPF_K, v_hi, p, eq);
                self.stmt(ld, off_hi)
            }
        }
    }

    fn finish(self) -> Result<Vec<SockFilter>> {
        if self.rev.len() > MAX_INSNS {
            return Err(Error::TooLarge(self.rev.len()));
        }
        Ok(self.rev.into_iter().rev().collect())
    }
}

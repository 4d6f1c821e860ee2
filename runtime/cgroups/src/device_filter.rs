//! cgroup v2 device access control: a [`Policy`] compiled to a `BPF_PROG_TYPE_CGROUP_DEVICE` program and
//! attached to the container's cgroup directory, as runc, crun and youki do. Pure Rust on the raw `bpf(2)`
//! syscall: no libbpf.
//!
//! The attachment belongs to the cgroup: when the cgroup directory is removed the kernel detaches and frees
//! the program, so `delete` needs nothing beyond removing the cgroup.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::device_rules::{Access, Policy};

/// One eBPF instruction (`struct bpf_insn`): opcode, dst/src registers in one byte, offset, immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcode parts (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_K: u8 = 0x04; // BPF_ALU | BPF_K
const ALU32_X: u8 = 0x0c; // BPF_ALU | BPF_X
const JMP_K: u8 = 0x05; // BPF_JMP | BPF_K
const JMP_X: u8 = 0x0d; // BPF_JMP | BPF_X
const OP_AND: u8 = 0x50;
const OP_RSH: u8 = 0x70;
const OP_MOV: u8 = 0xb0;
const OP_JEQ: u8 = 0x10;
const OP_JNE: u8 = 0x50;
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

pub const R0: u8 = 0;
pub const R1: u8 = 1;
pub const R2: u8 = 2;
pub const R3: u8 = 3;
pub const R4: u8 = 4;
pub const R5: u8 = 5;

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }
    /// `dst = *(u32 *)(src + off)`
    pub fn load_u32(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(LDX_MEM_W, dst, src, off, 0)
    }
    /// `dst = (u32) src`
    pub fn mov32(dst: u8, src: u8) -> Insn {
        Insn::new(ALU32_X | OP_MOV, dst, src, 0, 0)
    }
    /// `dst = imm` (32-bit, upper half zeroed)
    pub fn mov32_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(ALU32_K | OP_MOV, dst, 0, 0, imm)
    }
    /// `dst &= imm` (32-bit)
    pub fn and32_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(ALU32_K | OP_AND, dst, 0, 0, imm)
    }
    /// `dst >>= imm` (32-bit, logical)
    pub fn rsh32_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(ALU32_K | OP_RSH, dst, 0, 0, imm)
    }
    /// `if dst != imm goto pc + 1 + off`
    pub fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(JMP_K | OP_JNE, dst, 0, off, imm)
    }
    /// `if dst != src goto pc + 1 + off`
    pub fn jne(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(JMP_X | OP_JNE, dst, src, off, 0)
    }
    /// `if dst == imm goto pc + 1 + off`
    pub fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(JMP_K | OP_JEQ, dst, 0, off, imm)
    }
    pub fn exit() -> Insn {
        Insn::new(EXIT, 0, 0, 0, 0)
    }
}

/// Compiles `policy` to a program over `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
/// (`access_type` is `access << 16 | device type`) that returns 1 to allow and 0 to deny.
///
/// Registers: r2 device type, r3 requested access, r4 major, r5 minor; r1 is scratch once they are loaded.
/// Each exception is a block that jumps past itself on the first field that does not match and otherwise
/// returns the exception's verdict; after the last block the default is returned.
pub fn compile(policy: &Policy) -> Vec<Insn> {
    let mut prog = vec![
        Insn::load_u32(R2, R1, 0),
        Insn::mov32(R3, R2),
        Insn::and32_imm(R2, 0xffff),
        Insn::rsh32_imm(R3, 16),
        Insn::load_u32(R4, R1, 4),
        Insn::load_u32(R5, R1, 8),
    ];
    let verdict = |allow: bool| i32::from(allow);
    for (m, access) in &policy.exceptions {
        // Each check jumps past the block when its field does not match; offsets are set at the end.
        let mut block = vec![Insn::jne_imm(R2, m.kind as i32, 0)];
        if *access != Access::ALL {
            block.push(Insn::mov32(R1, R3));
            if policy.default_allow {
                // A deny exception hits when the request wants any of its accesses.
                block.push(Insn::and32_imm(R1, i32::from(access.bits())));
                block.push(Insn::jeq_imm(R1, 0, 0));
            } else {
                // An allow exception hits only when it grants everything requested.
                let others = Access::ALL.without(*access);
                block.push(Insn::and32_imm(R1, i32::from(others.bits())));
                block.push(Insn::jne_imm(R1, 0, 0));
            }
        }
        for (reg, num) in [(R4, m.major), (R5, m.minor)] {
            match num.map(|n| (n, i32::try_from(n))) {
                None => {}
                Some((_, Ok(n))) => block.push(Insn::jne_imm(reg, n, 0)),
                // The kernel sign-extends a jump's immediate to 64 bits, so a number above i32::MAX is
                // compared through a register (a 32-bit move zero-extends).
                Some((n, Err(_))) => {
                    block.push(Insn::mov32_imm(R1, n as i32));
                    block.push(Insn::jne(reg, R1, 0));
                }
            }
        }
        block.push(Insn::mov32_imm(R0, verdict(!policy.default_allow)));
        block.push(Insn::exit());
        // Every jump goes to the first instruction after the block.
        let len = block.len();
        for (i, insn) in block.iter_mut().enumerate() {
            if [JMP_K | OP_JNE, JMP_K | OP_JEQ, JMP_X | OP_JNE].contains(&insn.code) {
                insn.off = (len - i - 1) as i16;
            }
        }
        prog.extend(block);
    }
    prog.push(Insn::mov32_imm(R0, verdict(policy.default_allow)));
    prog.push(Insn::exit());
    prog
}

// bpf(2) commands, program and attach types, flags (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_NEXT_ID: libc::c_int = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_F_REPLACE: u32 = 4;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a #[repr(C)] prefix of `union bpf_attr` for `cmd`, valid for its size; the kernel
    // reads (and for queries writes) only that many bytes, and any pointers in it point to live buffers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads the program; on a verifier refusal the error carries the verifier's log.
pub fn load(prog: &[Insn]) -> std::io::Result<OwnedFd> {
    // The program calls no helper, so no GPL-only function is involved and any license string is accepted.
    let license = b"Apache\0";
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"basalt_dev");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a successful BPF_PROG_LOAD returns a new file descriptor that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(std::io::Error::new(
                e.kind(),
                format!(
                    "{e}; verifier: {}",
                    String::from_utf8_lossy(&log[..end]).trim()
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Ids of the device programs attached directly to the cgroup directory `dir`.
pub fn attached(dir: &std::fs::File) -> std::io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// Ids of the device programs attached to the cgroup at `path` (e.g. `/sys/fs/cgroup/basalt/c1`).
pub fn attached_to(path: &Path) -> std::io::Result<Vec<u32>> {
    attached(&std::fs::File::open(path)?)
}

/// Is a BPF program with this id still loaded anywhere in the kernel?
pub fn program_exists(id: u32) -> std::io::Result<bool> {
    let mut attr = IdAttr {
        id: id.saturating_sub(1),
        ..Default::default()
    };
    match bpf(BPF_PROG_GET_NEXT_ID, &mut attr) {
        Ok(_) => Ok(attr.next_id == id),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

fn fd_by_id(id: u32) -> std::io::Result<OwnedFd> {
    let mut attr = IdAttr {
        id,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: a successful BPF_PROG_GET_FD_BY_ID returns a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn attach(dir: &std::fs::File, prog: &OwnedFd, replace: Option<&OwnedFd>) -> std::io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI | replace.map_or(0, |_| BPF_F_REPLACE),
        replace_bpf_fd: replace.map_or(0, |r| r.as_raw_fd() as u32),
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}

fn detach(dir: &std::fs::File, prog: &OwnedFd) -> std::io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    bpf(BPF_PROG_DETACH, &mut attr).map(drop)
}

/// Makes `policy` the device filter of the cgroup directory `path`, replacing whatever device programs were
/// attached there before (on `update`). The new program is attached before the old ones go, so there is no
/// moment without a filter (while both are attached a request must pass both).
pub fn install(path: &Path, policy: &Policy) -> std::io::Result<()> {
    let dir = std::fs::File::open(path)?;
    let old = attached(&dir)?;
    let prog = load(&compile(policy))?;
    if let [id] = old[..] {
        if let Ok(old_fd) = fd_by_id(id) {
            // Atomic swap (Linux 5.6+); older kernels refuse the flag and take the path below.
            if attach(&dir, &prog, Some(&old_fd)).is_ok() {
                return Ok(());
            }
        }
    }
    attach(&dir, &prog, None)?;
    for id in old {
        match fd_by_id(id) {
            Ok(fd) => detach(&dir, &fd)?,
            // Gone meanwhile (a concurrent update): nothing to detach.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_rules::{Kind, Match, Policy};

    fn bytes(i: Insn) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = i.code;
        b[1] = i.regs;
        b[2..4].copy_from_slice(&i.off.to_le_bytes());
        b[4..].copy_from_slice(&i.imm.to_le_bytes());
        b
    }

    #[test]
    fn instructions_encode_as_the_kernel_expects() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        // Byte patterns as `bpftool prog dump xlated opcodes` prints them.
        assert_eq!(
            bytes(Insn::load_u32(R2, R1, 0)),
            [0x61, 0x12, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            bytes(Insn::load_u32(R4, R1, 4)),
            [0x61, 0x14, 4, 0, 0, 0, 0, 0]
        );
        assert_eq!(bytes(Insn::mov32(R3, R2)), [0xbc, 0x23, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            bytes(Insn::and32_imm(R2, 0xffff)),
            [0x54, 0x02, 0, 0, 0xff, 0xff, 0, 0]
        );
        assert_eq!(
            bytes(Insn::rsh32_imm(R3, 16)),
            [0x74, 0x03, 0, 0, 16, 0, 0, 0]
        );
        assert_eq!(
            bytes(Insn::jne_imm(R4, 136, 3)),
            [0x55, 0x04, 3, 0, 136, 0, 0, 0]
        );
        assert_eq!(
            bytes(Insn::jeq_imm(R1, 0, 7)),
            [0x15, 0x01, 7, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            bytes(Insn::mov32_imm(R0, 1)),
            [0xb4, 0x00, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(bytes(Insn::exit()), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    /// Runs the subset of eBPF that [`compile`] emits over one device request.
    fn run(prog: &[Insn], kind: Kind, major: u32, minor: u32, access: Access) -> u64 {
        let ctx = [(u32::from(access.bits()) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 10_000, "no exit");
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            let imm = i.imm as i64 as u64; // sign-extended, as the kernel does
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads are from the context");
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                c if c == ALU32_X | OP_MOV => r[dst] = r[src] & 0xffff_ffff,
                c if c == ALU32_K | OP_MOV => r[dst] = imm & 0xffff_ffff,
                c if c == ALU32_K | OP_AND => r[dst] = (r[dst] & imm) & 0xffff_ffff,
                c if c == ALU32_K | OP_RSH => r[dst] = (r[dst] & 0xffff_ffff) >> imm,
                c if c == JMP_K | OP_JNE => {
                    if r[dst] != imm {
                        pc += i.off as usize;
                    }
                }
                c if c == JMP_X | OP_JNE => {
                    if r[dst] != r[src] {
                        pc += i.off as usize;
                    }
                }
                c if c == JMP_K | OP_JEQ => {
                    if r[dst] == imm {
                        pc += i.off as usize;
                    }
                }
                EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn policies() -> Vec<Policy> {
        let specs = [
            r#"[{"allow": false, "access": "rwm"}]"#,
            r#"[{"allow": false, "access": "rwm"},
                {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "rw"},
                {"allow": false, "type": "b", "major": 8, "minor": 0, "access": "w"},
                {"allow": true, "type": "c", "major": 4, "access": "r"},
                {"allow": true, "type": "b", "minor": 2, "access": "wm"}]"#,
            r#"[{"allow": true, "access": "rwm"},
                {"allow": false, "type": "c", "major": 4, "access": "w"},
                {"allow": false, "type": "b", "minor": 1, "access": "rm"},
                {"allow": false, "type": "c", "major": 7, "minor": 9, "access": "rwm"}]"#,
            r#"[{"allow": true, "type": "c", "major": 3000000000, "minor": 1, "access": "rwm"}]"#,
        ];
        specs
            .iter()
            .map(|s| {
                Policy::for_container(&serde_json::from_str::<Vec<_>>(s).unwrap(), "d").unwrap()
            })
            .collect()
    }

    #[test]
    fn compiled_programs_decide_like_the_policy() {
        let nums = [
            0u32,
            1,
            2,
            3,
            4,
            5,
            7,
            8,
            9,
            10,
            136,
            200,
            229,
            3_000_000_000,
        ];
        for p in policies() {
            let prog = compile(&p);
            for kind in [Kind::Block, Kind::Char] {
                for &major in &nums {
                    for &minor in &nums {
                        for bits in 1..=7u8 {
                            let access = Access::from_bits(bits);
                            assert_eq!(
                                run(&prog, kind, major, minor, access) == 1,
                                p.allows(kind, major, minor, access),
                                "{kind:?} {major}:{minor} {access} under {p:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// A scratch cgroup v2 directory on this host (hybrid hosts mount cgroup2 at /sys/fs/cgroup/unified).
    fn scratch_cgroup() -> Option<std::path::PathBuf> {
        let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| {
                nix::sys::statfs::statfs(*p)
                    .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            })?;
        let dir = base.join(format!("basalt-devfilter-test-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        Some(dir)
    }

    /// In a forked child moved into `cgroup`: opens each path for reading and writing; the errnos (0 = ok).
    fn opens_in(cgroup: &Path, paths: &[&Path]) -> Vec<i32> {
        opens_with(cgroup, paths, libc::O_RDWR)
    }

    fn opens_in_read_only(cgroup: &Path, path: &Path) -> i32 {
        opens_with(cgroup, &[path], libc::O_RDONLY)[0]
    }

    fn opens_with(cgroup: &Path, paths: &[&Path], flags: i32) -> Vec<i32> {
        use std::os::unix::ffi::OsStrExt;
        let cstr = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // Everything the child needs is made before the fork: the test harness has other threads.
        let procs = cstr(&cgroup.join("cgroup.procs"));
        let paths: Vec<_> = paths.iter().map(|p| cstr(p)).collect();
        let mut out = vec![0i32; paths.len()];
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // SAFETY: the child makes only async-signal-safe calls (open, write, close, _exit) before _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            // SAFETY: in the forked child; the C strings and buffers were made before the fork and stay
            // valid, and it leaves through _exit without returning into the harness.
            nix::unistd::ForkResult::Child => unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                // "0" is the writing process itself.
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(1);
                }
                libc::close(fd);
                for (i, p) in paths.iter().enumerate() {
                    let fd = libc::open(p.as_ptr(), flags);
                    out[i] = if fd < 0 { *libc::__errno_location() } else { 0 };
                    libc::close(fd);
                }
                let n = out.len() * 4;
                libc::write(wr.as_raw_fd(), out.as_ptr().cast(), n);
                libc::_exit(0)
            },
            nix::unistd::ForkResult::Parent { child } => {
                drop(wr);
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::fs::File::from(rd), &mut buf).unwrap();
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "the child could not join {}",
                    cgroup.display()
                );
                buf.chunks(4)
                    .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
                    .collect()
            }
        }
    }

    /// Removes the scratch cgroup however the test ends.
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    fn gone_within_10s(id: u32) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while program_exists(id).unwrap() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        true
    }

    /// The kernel accepts the program, enforces it on a process in the cgroup, `install` again replaces it,
    /// and removing the cgroup frees it. Needs root and a cgroup2 mount; skipped without.
    #[test]
    fn the_kernel_loads_enforces_replaces_and_frees_the_filter() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: not root");
            return;
        }
        let Some(cg) = scratch_cgroup() else {
            eprintln!("SKIP: no cgroup2 mount to make a scratch cgroup in");
            return;
        };
        let cg = Scratch(cg);
        let null = Path::new("/dev/null");
        let zero = Path::new("/dev/zero");
        // Besides the defaults, rules that need the other instruction forms: a partial access mask and a
        // number above i32::MAX (compared through a register).
        let deny_all = Policy::for_container(
            &serde_json::from_str::<Vec<_>>(
                r#"[{"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 3000000000, "minor": 4294967295, "access": "r"},
                    {"allow": true, "type": "b", "major": 8, "access": "rw"}]"#,
            )
            .unwrap(),
            "d",
        )
        .unwrap();
        install(&cg.0, &deny_all).unwrap();
        let first = attached_to(&cg.0).unwrap();
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(opens_in(&cg.0, &[null, zero]), [0, 0]);

        // Replace with a policy without /dev/zero (1:5): built directly, the default rules would add it.
        let mut strict = deny_all.clone();
        strict
            .exceptions
            .retain(|(m, _)| !(m.major == Some(1) && m.minor == Some(5)));
        install(&cg.0, &strict).unwrap();
        let second = attached_to(&cg.0).unwrap();
        assert_eq!(second.len(), 1, "{second:?}");
        assert_ne!(second, first);
        assert!(
            gone_within_10s(first[0]),
            "replaced program {} still loaded",
            first[0]
        );
        assert_eq!(opens_in(&cg.0, &[null, zero]), [0, libc::EPERM]);

        // An allow-all policy with one deny exception: writing /dev/zero is refused, reading is not.
        let no_zero_writes = Policy {
            default_allow: true,
            exceptions: vec![(
                Match {
                    kind: Kind::Char,
                    major: Some(1),
                    minor: Some(5),
                },
                Access::WRITE,
            )],
        };
        install(&cg.0, &no_zero_writes).unwrap();
        let third = attached_to(&cg.0).unwrap();
        assert_eq!(opens_in(&cg.0, &[null, zero]), [0, libc::EPERM]);
        assert_eq!(opens_in_read_only(&cg.0, zero), 0);
        assert!(
            gone_within_10s(second[0]),
            "replaced program {} still loaded",
            second[0]
        );

        std::fs::remove_dir(&cg.0).unwrap();
        // The kernel frees a removed cgroup's programs from a work queue: poll for it.
        assert_eq!(third.len(), 1, "{third:?}");
        assert!(
            gone_within_10s(third[0]),
            "program {} outlived its cgroup",
            third[0]
        );
    }
}

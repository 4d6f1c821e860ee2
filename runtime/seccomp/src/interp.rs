//! A user-space interpreter for seccomp's classic BPF, to check what a program returns for a syscall
//! without installing it. It follows the kernel's checker: loads must be aligned 32-bit words inside
//! `seccomp_data`, every path must end in `RET`, jumps must stay inside the program.

use crate::bpf::*;

/// The kernel's `struct seccomp_data`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    pub fn new(arch: u32, nr: u32, args: [u64; 6]) -> Self {
        SeccompData {
            nr,
            arch,
            instruction_pointer: 0,
            args,
        }
    }

    fn bytes(&self) -> [u8; SECCOMP_DATA_LEN] {
        let mut b = [0u8; SECCOMP_DATA_LEN];
        b[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        b[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        b[8..16].copy_from_slice(&self.instruction_pointer.to_ne_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        b
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    #[error("instruction {pc}: unsupported opcode {code:#06x}")]
    BadOpcode { pc: usize, code: u16 },
    #[error("instruction {pc}: load of offset {k} outside seccomp_data or unaligned")]
    BadLoad { pc: usize, k: u32 },
    #[error("instruction {pc}: jump or fall-through past the end of the program")]
    OutOfBounds { pc: usize },
    #[error("instruction {pc}: division by zero")]
    DivByZero { pc: usize },
    #[error("instruction {pc}: scratch memory index {k} out of range")]
    BadMem { pc: usize, k: u32 },
}

/// Runs `program` on `data` and returns the 32-bit action.
pub fn run(program: &[SockFilter], data: &SeccompData) -> Result<u32, InterpError> {
    run_counted(program, data).map(|(action, _)| action)
}

/// Like [`run`], also returning how many instructions were executed (the per-syscall cost).
pub fn run_counted(
    program: &[SockFilter],
    data: &SeccompData,
) -> Result<(u32, usize), InterpError> {
    let bytes = data.bytes();
    let mut steps = 0usize;
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    loop {
        let Some(i) = program.get(pc) else {
            return Err(InterpError::OutOfBounds { pc });
        };
        let k = i.k;
        let next = pc + 1;
        steps += 1;
        pc = match i.code & 0x07 {
            BPF_LD | BPF_LDX => {
                let v = match i.code & 0xe0 {
                    BPF_ABS if i.code & 0x18 == BPF_W => {
                        let o = k as usize;
                        if !o.is_multiple_of(4) || o + 4 > SECCOMP_DATA_LEN {
                            return Err(InterpError::BadLoad { pc, k });
                        }
                        u32::from_ne_bytes(bytes[o..o + 4].try_into().expect("4 bytes"))
                    }
                    BPF_IMM => k,
                    BPF_MEM => *mem.get(k as usize).ok_or(InterpError::BadMem { pc, k })?,
                    BPF_LEN => SECCOMP_DATA_LEN as u32,
                    _ => return Err(InterpError::BadOpcode { pc, code: i.code }),
                };
                if i.code & 0x07 == BPF_LD {
                    a = v
                } else {
                    x = v
                }
                next
            }
            BPF_ST | BPF_STX => {
                let slot = mem
                    .get_mut(k as usize)
                    .ok_or(InterpError::BadMem { pc, k })?;
                *slot = if i.code & 0x07 == BPF_ST { a } else { x };
                next
            }
            BPF_ALU => {
                let src = if i.code & BPF_X != 0 { x } else { k };
                a = match i.code & 0xf0 {
                    BPF_ADD => a.wrapping_add(src),
                    BPF_SUB => a.wrapping_sub(src),
                    BPF_MUL => a.wrapping_mul(src),
                    BPF_DIV => a.checked_div(src).ok_or(InterpError::DivByZero { pc })?,
                    BPF_MOD => a.checked_rem(src).ok_or(InterpError::DivByZero { pc })?,
                    BPF_OR => a | src,
                    BPF_AND => a & src,
                    BPF_XOR => a ^ src,
                    BPF_LSH => a.checked_shl(src).unwrap_or(0),
                    BPF_RSH => a.checked_shr(src).unwrap_or(0),
                    BPF_NEG => a.wrapping_neg(),
                    _ => return Err(InterpError::BadOpcode { pc, code: i.code }),
                };
                next
            }
            BPF_JMP => {
                let src = if i.code & BPF_X != 0 { x } else { k };
                let op = i.code & 0xf0;
                if op == BPF_JA {
                    next + k as usize
                } else {
                    let taken = match op {
                        BPF_JEQ => a == src,
                        BPF_JGT => a > src,
                        BPF_JGE => a >= src,
                        BPF_JSET => a & src != 0,
                        _ => return Err(InterpError::BadOpcode { pc, code: i.code }),
                    };
                    next + if taken { i.jt } else { i.jf } as usize
                }
            }
            BPF_RET => {
                return match i.code & 0x18 {
                    BPF_K => Ok((k, steps)),
                    BPF_A => Ok((a, steps)),
                    _ => Err(InterpError::BadOpcode { pc, code: i.code }),
                }
            }
            BPF_MISC => {
                match i.code & 0xf8 {
                    BPF_TAX => x = a,
                    BPF_TXA => a = x,
                    _ => return Err(InterpError::BadOpcode { pc, code: i.code }),
                }
                next
            }
            _ => return Err(InterpError::BadOpcode { pc, code: i.code }),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(code: u16, k: u32) -> SockFilter {
        SockFilter::stmt(code, k)
    }

    #[test]
    fn refuses_what_the_kernel_would() {
        let d = SeccompData::new(1, 2, [0; 6]);
        assert_eq!(
            run(&[stmt(BPF_LD | BPF_W | BPF_ABS, 2), stmt(BPF_RET, 0)], &d),
            Err(InterpError::BadLoad { pc: 0, k: 2 })
        );
        assert_eq!(
            run(&[stmt(BPF_LD | BPF_W | BPF_ABS, 64), stmt(BPF_RET, 0)], &d),
            Err(InterpError::BadLoad { pc: 0, k: 64 })
        );
        assert_eq!(
            run(&[stmt(BPF_LD | BPF_W | BPF_ABS, 0)], &d),
            Err(InterpError::OutOfBounds { pc: 1 })
        );
        assert_eq!(
            run(&[stmt(BPF_JMP | BPF_JA, 5)], &d),
            Err(InterpError::OutOfBounds { pc: 6 })
        );
        assert_eq!(
            run(&[stmt(BPF_ALU | BPF_DIV | BPF_K, 0)], &d),
            Err(InterpError::DivByZero { pc: 0 })
        );
        assert_eq!(
            run(&[stmt(0xff, 0)], &d),
            Err(InterpError::BadOpcode { pc: 0, code: 0xff })
        );
    }

    #[test]
    fn reads_seccomp_data_fields_and_arithmetic() {
        let d = SeccompData::new(0xc000_003e, 59, [0x1_0000_0002, 0, 0, 0, 0, 7]);
        let (lo, hi) = arg_offsets(0);
        let prog = [
            stmt(BPF_LD | BPF_W | BPF_ABS, hi),
            stmt(BPF_MISC | BPF_TAX, 0),
            stmt(BPF_LD | BPF_W | BPF_ABS, lo),
            stmt(BPF_ALU | BPF_ADD | BPF_X, 0),
            stmt(BPF_ST, 3),
            stmt(BPF_LD | BPF_MEM, 3),
            SockFilter {
                code: BPF_JMP | BPF_JEQ | BPF_K,
                jt: 1,
                jf: 0,
                k: 3,
            },
            stmt(BPF_RET, 1),
            stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR),
            stmt(BPF_RET | BPF_A, 0),
        ];
        assert_eq!(run(&prog, &d), Ok(59));
        assert_eq!(
            run(
                &[
                    stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARCH),
                    stmt(BPF_RET | BPF_A, 0)
                ],
                &d
            ),
            Ok(0xc000_003e)
        );
        assert_eq!(
            run(
                &[
                    stmt(BPF_LD | BPF_W | BPF_ABS, arg_offsets(5).0),
                    stmt(BPF_RET | BPF_A, 0)
                ],
                &d
            ),
            Ok(7)
        );
    }
}

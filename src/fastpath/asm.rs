//! Just enough of an eBPF assembler for the fast path's programs: the
//! instruction encoding, the opcodes they use, and forward jumps to named
//! places, resolved when the program is finished.

/// One eBPF instruction.
#[derive(Clone, Copy, Debug)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub fn bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

// Opcodes (class | operation | source).
pub const MOV64_REG: u8 = 0xbf;
pub const MOV64_IMM: u8 = 0xb7;
pub const MOV32_IMM: u8 = 0xb4;
pub const ADD64_IMM: u8 = 0x07;
pub const AND64_IMM: u8 = 0x57;
pub const OR64_IMM: u8 = 0x47;
pub const XOR64_IMM: u8 = 0xa7;
pub const RSH64_IMM: u8 = 0x77;
pub const ADD64_REG: u8 = 0x0f;
pub const OR64_REG: u8 = 0x4f;
/// Byte swap to big-endian (`imm` bits wide).
pub const TO_BE: u8 = 0xdc;
pub const LDX_W: u8 = 0x61;
pub const LDX_H: u8 = 0x69;
pub const LDX_B: u8 = 0x71;
pub const STX_W: u8 = 0x63;
pub const STX_H: u8 = 0x6b;
pub const STX_B: u8 = 0x73;
pub const JGT_REG: u8 = 0x2d;
pub const JGT_IMM: u8 = 0x25;
pub const JLE_IMM: u8 = 0xb5;
pub const JLT_IMM: u8 = 0xa5;
pub const JNE_IMM: u8 = 0x55;
pub const JNE_REG: u8 = 0x5d;
pub const JEQ_IMM: u8 = 0x15;
/// Jump always.
pub const JA: u8 = 0x05;
pub const CALL: u8 = 0x85;
pub const EXIT: u8 = 0x95;
pub const LD_IMM64: u8 = 0x18;

#[cfg(test)]
pub fn is_jump(code: u8) -> bool {
    matches!(
        code,
        JGT_REG | JGT_IMM | JNE_IMM | JNE_REG | JEQ_IMM | JLE_IMM | JLT_IMM | JA
    )
}

/// Where a jump goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// The exit that lets the frame go on (TC_ACT_UNSPEC).
    Pass,
    /// The exit that drops it (TC_ACT_SHOT).
    Drop,
    /// A place in the program, marked with [`Asm::here`].
    At(&'static str),
}

/// TC_ACT_UNSPEC: let the rest of the ingress path (the bridge) have it.
pub const TC_ACT_UNSPEC: i32 = -1;
/// TC_ACT_SHOT.
pub const TC_ACT_SHOT: i32 = 2;

/// A program being assembled.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    jumps: Vec<(usize, Label)>,
    places: Vec<(&'static str, usize)>,
}

impl Asm {
    pub fn op(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }

    pub fn ops(&mut self, is: &[Insn]) -> &mut Self {
        self.insns.extend_from_slice(is);
        self
    }

    /// A conditional jump (`code` one of the J* opcodes) to `to`.
    pub fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) -> &mut Self {
        self.jumps.push((self.insns.len(), to));
        self.op(insn(code, dst, src, 0, imm))
    }

    /// Marks the next instruction as `name`.
    pub fn here(&mut self, name: &'static str) -> &mut Self {
        self.places.push((name, self.insns.len()));
        self
    }

    /// Appends the pass exit and, if a jump goes there, the drop exit (the
    /// verifier refuses unreachable instructions), and resolves every jump.
    pub fn finish(mut self) -> Vec<Insn> {
        let pass = self.insns.len();
        self.insns.push(insn(MOV64_IMM, 0, 0, 0, TC_ACT_UNSPEC));
        self.insns.push(insn(EXIT, 0, 0, 0, 0));
        let drop = self.insns.len();
        if self.jumps.iter().any(|(_, to)| *to == Label::Drop) {
            self.insns.push(insn(MOV64_IMM, 0, 0, 0, TC_ACT_SHOT));
            self.insns.push(insn(EXIT, 0, 0, 0, 0));
        }
        for (at, to) in &self.jumps {
            let target = match to {
                Label::Pass => pass,
                Label::Drop => drop,
                Label::At(name) => {
                    self.places
                        .iter()
                        .find(|(n, _)| n == name)
                        .unwrap_or_else(|| panic!("no place {name} in the program"))
                        .1
                }
            };
            assert!(target > *at, "jumps go forward");
            // Counted from the next instruction.
            self.insns[*at].off = (target - at - 1) as i16;
        }
        self.insns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        let b = insn(LD_IMM64, 1, 1, 0, 7).bytes();
        assert_eq!(b, [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        let b = insn(STX_W, 10, 4, -4, 0).bytes();
        assert_eq!(b, [0x63, 0x4a, 0xfc, 0xff, 0, 0, 0, 0]);
    }

    #[test]
    fn jumps_resolve_to_their_places_and_exits() {
        let mut a = Asm::default();
        a.jump(JEQ_IMM, 0, 0, 0, Label::At("b"))
            .jump(JEQ_IMM, 0, 0, 0, Label::Pass)
            .jump(JEQ_IMM, 0, 0, 0, Label::Drop)
            .op(insn(EXIT, 0, 0, 0, 0))
            .here("b")
            .op(insn(EXIT, 0, 0, 0, 0));
        let p = a.finish();
        assert_eq!(p[0].off, 3); // to 4
        assert_eq!(p[1].off, 3); // to 5, the pass exit
        assert_eq!(p[5].imm, TC_ACT_UNSPEC);
        assert_eq!(p[2].off, 4); // to 7, the drop exit
        assert_eq!(p[7].imm, TC_ACT_SHOT);
    }

    #[test]
    fn no_drop_exit_without_a_jump_to_it() {
        let mut a = Asm::default();
        a.jump(JEQ_IMM, 0, 0, 0, Label::Pass)
            .op(insn(EXIT, 0, 0, 0, 0));
        let p = a.finish();
        assert_eq!(p.len(), 4);
        assert_eq!(p[2].imm, TC_ACT_UNSPEC);
    }
}

//! The `sk_lookup` program, assembled here (no compiler, no object file):
//!
//! ```text
//! if ctx.protocol != TCP: pass
//! key = { ctx.family, ctx.local_ip (4 or 16 bytes, zero-padded),
//!         ctx.local_port | ctx.protocol << 16 }      // on the stack
//! slot = destinations[key]        else pass
//! sk   = sockets[slot]            else pass         // takes a reference
//! bpf_sk_assign(ctx, sk, 0); bpf_sk_release(sk)
//! pass: return SK_PASS            // the kernel's own lookup goes on
//! ```
//!
//! An assignment that does not fit (a socket that is not listening) fails
//! inside `bpf_sk_assign` and the packet just takes the normal lookup.

#[cfg(not(target_endian = "little"))]
compile_error!("the instruction encoding below is little-endian");

/// Offsets in `struct bpf_sk_lookup` (include/uapi/linux/bpf.h).
mod ctx {
    pub const FAMILY: i16 = 8;
    pub const PROTOCOL: i16 = 12;
    pub const LOCAL_IP4: i16 = 40;
    pub const LOCAL_IP6: i16 = 44;
    pub const LOCAL_PORT: i16 = 60;
}

// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;
const FP: u8 = 10;

// Helpers.
const MAP_LOOKUP_ELEM: i32 = 1;
const SK_RELEASE: i32 = 86;
const SK_ASSIGN: i32 = 124;

const SK_PASS: i32 = 1;
const AF_INET6: i32 = 10;
const IPPROTO_TCP: i32 = 6;

/// Stack slots: the 24-byte key at fp-24, the slot number at fp-28.
const KEY: i16 = -24;
const SLOT: i16 = -28;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst | src << 4) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

fn mov_reg(dst: u8, src: u8) -> u64 {
    insn(0xbf, dst, src, 0, 0)
}
fn mov_imm(dst: u8, imm: i32) -> u64 {
    insn(0xb7, dst, 0, 0, imm)
}
fn add_imm(dst: u8, imm: i32) -> u64 {
    insn(0x07, dst, 0, 0, imm)
}
fn lsh_imm(dst: u8, imm: i32) -> u64 {
    insn(0x67, dst, 0, 0, imm)
}
fn or_reg(dst: u8, src: u8) -> u64 {
    insn(0x4f, dst, src, 0, 0)
}
/// dst = *(u32 *)(src + off)
fn load32(dst: u8, src: u8, off: i16) -> u64 {
    insn(0x61, dst, src, off, 0)
}
/// *(u32 *)(dst + off) = src
fn store32(dst: u8, off: i16, src: u8) -> u64 {
    insn(0x63, dst, src, off, 0)
}
/// *(u32 *)(dst + off) = imm
fn store32_imm(dst: u8, off: i16, imm: i32) -> u64 {
    insn(0x62, dst, 0, off, imm)
}
fn call(helper: i32) -> u64 {
    insn(0x85, 0, 0, 0, helper)
}
fn exit() -> u64 {
    insn(0x95, 0, 0, 0, 0)
}
/// dst = the map behind `fd` (a two-slot 64-bit immediate load).
fn load_map(dst: u8, fd: i32) -> [u64; 2] {
    const BPF_PSEUDO_MAP_FD: u8 = 1;
    [insn(0x18, dst, BPF_PSEUDO_MAP_FD, 0, fd), 0]
}

/// Builds instructions with forward jumps to labels.
#[derive(Default)]
struct Asm {
    code: Vec<u64>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, Label)>,
    labels: [Option<usize>; 3],
}

#[derive(Clone, Copy)]
enum Label {
    V6 = 0,
    Lookup = 1,
    Pass = 2,
}

impl Asm {
    fn push(&mut self, i: u64) {
        self.code.push(i);
    }
    fn push_all(&mut self, is: &[u64]) {
        self.code.extend_from_slice(is);
    }
    fn label(&mut self, l: Label) {
        self.labels[l as usize] = Some(self.code.len());
    }
    /// if dst == imm goto label
    fn jeq_imm(&mut self, dst: u8, imm: i32, to: Label) {
        self.fixups.push((self.code.len(), to));
        self.push(insn(0x15, dst, 0, 0, imm));
    }
    /// if dst != imm goto label
    fn jne_imm(&mut self, dst: u8, imm: i32, to: Label) {
        self.fixups.push((self.code.len(), to));
        self.push(insn(0x55, dst, 0, 0, imm));
    }
    fn ja(&mut self, to: Label) {
        self.fixups.push((self.code.len(), to));
        self.push(insn(0x05, 0, 0, 0, 0));
    }
    fn finish(mut self) -> Vec<u64> {
        for (at, to) in self.fixups {
            let target = self.labels[to as usize].expect("every label is placed");
            let off = (target as i64 - at as i64 - 1) as i16;
            self.code[at] |= u64::from(off as u16) << 16;
        }
        self.code
    }
}

/// The program over the two maps (descriptors `destinations`, `sockets`).
pub(crate) fn sk_lookup(destinations: i32, sockets: i32) -> Vec<u64> {
    let mut a = Asm::default();
    a.push(mov_reg(R6, R1));
    // TCP only: anything else is the kernel's at once.
    a.push(load32(R3, R6, ctx::PROTOCOL));
    a.jne_imm(R3, IPPROTO_TCP, Label::Pass);
    // key.family, key.port_proto
    a.push(load32(R2, R6, ctx::FAMILY));
    a.push(store32(FP, KEY, R2));
    a.push(load32(R4, R6, ctx::LOCAL_PORT));
    a.push(lsh_imm(R3, 16));
    a.push(or_reg(R3, R4));
    a.push(store32(FP, KEY + 20, R3));
    // key.addr
    a.jeq_imm(R2, AF_INET6, Label::V6);
    a.push(load32(R5, R6, ctx::LOCAL_IP4));
    a.push(store32(FP, KEY + 4, R5));
    for word in 1..4 {
        a.push(store32_imm(FP, KEY + 4 + 4 * word, 0));
    }
    a.ja(Label::Lookup);
    a.label(Label::V6);
    for word in 0..4 {
        a.push(load32(R5, R6, ctx::LOCAL_IP6 + 4 * word));
        a.push(store32(FP, KEY + 4 + 4 * word, R5));
    }
    // slot = destinations[key]
    a.label(Label::Lookup);
    a.push(mov_reg(R2, FP));
    a.push(add_imm(R2, i32::from(KEY)));
    a.push_all(&load_map(R1, destinations));
    a.push(call(MAP_LOOKUP_ELEM));
    a.jeq_imm(R0, 0, Label::Pass);
    a.push(load32(R2, R0, 0));
    a.push(store32(FP, SLOT, R2));
    // sk = sockets[slot]
    a.push_all(&load_map(R1, sockets));
    a.push(mov_reg(R2, FP));
    a.push(add_imm(R2, i32::from(SLOT)));
    a.push(call(MAP_LOOKUP_ELEM));
    a.jeq_imm(R0, 0, Label::Pass);
    a.push(mov_reg(R7, R0));
    a.push(mov_reg(R1, R6));
    a.push(mov_reg(R2, R7));
    a.push(mov_imm(R3, 0));
    a.push(call(SK_ASSIGN));
    a.push(mov_reg(R1, R7));
    a.push(call(SK_RELEASE));
    a.label(Label::Pass);
    a.push(mov_imm(R0, SK_PASS));
    a.push(exit());
    a.finish()
}

//! Guest exits: synchronous exceptions (MMIO, PSCI, SGIs), physical interrupts,
//! exception injection, list-register refresh, parking and shutdown.

use aarch64_cpu::registers::{
    Readable, Writeable, ELR_EL1, ELR_EL2, ESR_EL1, FAR_EL1, FAR_EL2, ID_AA64MMFR1_EL1,
    ID_AA64PFR1_EL1, PAR_EL1, SCTLR_EL1, SPSR_EL1, SPSR_EL2, SP_EL0, SP_EL1, VBAR_EL1,
};
use arch_emu::cpufeat;
use arch_emu::esr::{self, Exit};
use arch_emu::psci::{self, Action};
use arch_emu::vgic::Kick;
use tock_registers::fields::FieldValue;

use crate::console::CONSOLE;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::entry::{cpu_index, run_guest, Frame, MAX_CPUS};
use crate::exitstats::Cause;
use crate::gic;
use crate::life::End;
use crate::sysreg::{id_aa64pfr1_el1, read_sysreg, sctlr_el1, spsr, wfe};
use crate::vm::{Counters, CpuSlot, IrqOwner, Power, TxBytes, Vm};

/// SPSR for a fresh EL1 entry: EL1h, D, A, I, F masked.
fn spsr_el1h_masked() -> FieldValue<u64, SPSR_EL2::Register> {
    SPSR_EL2::M::EL1h
        + SPSR_EL2::D::Masked
        + SPSR_EL2::A::Masked
        + SPSR_EL2::I::Masked
        + SPSR_EL2::F::Masked
}

/// SCTLR_EL1 as Linux's boot protocol wants it: MMU, caches and alignment
/// checks off; the fields that are RES1 when their feature is not implemented
/// set, as they are then (EOS, EIS: exception entry and return synchronize
/// context; SPAN: PAN left alone on exception entry; TSCXT: SCXTNUM_EL0 trapped;
/// nTLSMD, LSMAOE: load/store multiple as in Armv8.0).
fn sctlr_el1_reset() -> FieldValue<u64, SCTLR_EL1::Register> {
    SCTLR_EL1::M::Disable
        + SCTLR_EL1::C::NonCacheable
        + SCTLR_EL1::I::NonCacheable
        + sctlr_el1::EOS.val(1)
        + sctlr_el1::TSCXT.val(1)
        + sctlr_el1::EIS.val(1)
        + sctlr_el1::SPAN.val(1)
        + sctlr_el1::NTLSMD.val(1)
        + sctlr_el1::LSMAOE.val(1)
}

/// Prepares this CPU to enter its vCPU at `entry` as out of reset: SCTLR_EL1 as
/// the boot protocol wants it, EL1h with every exception masked.
pub fn prepare_el1_entry(entry: u64) {
    SCTLR_EL1.write(sctlr_el1_reset());
    ELR_EL2.set(entry);
    SPSR_EL2.write(spsr_el1h_masked());
}

/// The virtual timer's INTID when the host DT does not say (PPI 11).
pub const DEFAULT_VTIMER_INTID: u32 = 27;
/// The EL1 physical timer's INTID when the host DT does not say (PPI 14).
pub const DEFAULT_PTIMER_INTID: u32 = 30;
/// The maintenance interrupt's INTID when the host DT does not say (PPI 9).
pub const DEFAULT_MAINTENANCE_INTID: u32 = 25;

/// What to do once the exit is handled.
enum Next {
    Resume,
    Park,
    /// The guest ends (`life::stop`).
    Stop(End),
}

/// Host-side facts the exit path needs that live outside the VM lock.
pub struct HostIrqs {
    /// INTID of the host UART's interrupt.
    pub uart_intid: u32,
    /// The physical virtual-timer PPI (the guest's is hardware-linked to it).
    pub vtimer: u32,
    /// The physical EL1 physical-timer PPI (the guest's is hardware-linked to it).
    pub ptimer: u32,
    /// The GIC maintenance interrupt.
    pub maintenance: u32,
}

/// Set once at boot.
pub static HOST_IRQS: spin::Once<HostIrqs> = spin::Once::new();

/// Skips the trapped instruction: 4 bytes of A64, or, when the guest's EL0
/// runs AArch32 code, the A32/T32 instruction's length (ESR_EL2.IL) with the
/// IT block advanced (`arch_emu::aarch32`).
fn advance_pc() {
    let spsr = SPSR_EL2.get();
    if arch_emu::aarch32::from_aarch32(spsr) {
        let long = esr::instruction_length_32(read_sysreg!("esr_el2"));
        let (pc, spsr) = arch_emu::aarch32::skip_instruction(ELR_EL2.get(), spsr, long);
        ELR_EL2.set(pc);
        SPSR_EL2.set(spsr);
    } else {
        ELR_EL2.set(ELR_EL2.get().wrapping_add(4));
    }
}

/// The exception came from AArch32 code at the guest's EL0.
fn from_aarch32() -> bool {
    arch_emu::aarch32::from_aarch32(SPSR_EL2.get())
}

/// Injects a synchronous exception into the guest at EL1 with `esr_el1` and
/// `far`, as the hardware would take it from the interrupted context.
fn inject_sync(esr_el1: FieldValue<u64, ESR_EL1::Register>, far: Option<u64>) {
    let spsr = SPSR_EL2.extract();
    let elr = ELR_EL2.get();
    let vbar = VBAR_EL1.get();
    let offset = match spsr.read_as_enum(SPSR_EL2::M) {
        Some(SPSR_EL2::M::Value::EL1h) => 0x200, // current EL with SP_EL1
        Some(SPSR_EL2::M::Value::EL1t) => 0x000, // current EL with SP_EL0
        _ if arch_emu::aarch32::from_aarch32(spsr.get()) => 0x600, // lower EL, AArch32
        _ => 0x400,                              // lower EL (AArch64)
    };
    ELR_EL1.set(elr);
    SPSR_EL1.set(spsr.get());
    ESR_EL1.write(esr_el1);
    if let Some(f) = far {
        FAR_EL1.set(f);
    }
    ELR_EL2.set(vbar.wrapping_add(offset));
    SPSR_EL2.set(exception_entry_pstate(spsr.get()));
}

/// PSTATE as the hardware sets it on taking an exception to EL1h from `old`
/// (Arm ARM D1.3.2): D, A, I, F masked; PAN set when SCTLR_EL1.SPAN is 0 (and
/// kept otherwise); SSBS from SCTLR_EL1.DSSBS; DIT kept; UAO and BTYPE cleared.
fn exception_entry_pstate(old: u64) -> u64 {
    // DIT is SPSR bit 21 in the AArch32 layout, 24 in AArch64's.
    let dit = if arch_emu::aarch32::from_aarch32(old) {
        (old >> 21) & 1
    } else {
        tock_registers::LocalRegisterCopy::<u64, SPSR_EL2::Register>::new(old).read(spsr::DIT)
    };
    let old = tock_registers::LocalRegisterCopy::<u64, SPSR_EL2::Register>::new(old);
    let sctlr = SCTLR_EL1.extract();
    let mut p = spsr_el1h_masked() + spsr::DIT.val(dit);
    if ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::PAN) != 0 {
        if sctlr.is_set(sctlr_el1::SPAN) {
            p += spsr::PAN.val(old.read(spsr::PAN));
        } else {
            p += spsr::PAN.val(1);
        }
    }
    if ID_AA64PFR1_EL1.read(id_aa64pfr1_el1::SSBS) != 0 && sctlr.is_set(sctlr_el1::DSSBS) {
        p += spsr::SSBS.val(1);
    }
    p.value
}

/// Whether the exception came from EL0: SPSR_EL2.M\[3:2\] = 0b00, in
/// AArch64 (EL0t) and AArch32 (User mode, M = 0b10000) alike.
fn from_el0() -> bool {
    SPSR_EL2.get() & 0b1100 == 0
}

/// Injects an abort of `kind` with fault status `fsc` (`esr::fsc`) and FAR =
/// FAR_EL2 (the guest's virtual address).
fn inject_abort(kind: esr::AbortKind, fsc: u8) {
    let value = esr::injected_abort(kind, from_el0(), fsc);
    inject_sync(
        FieldValue::<u64, ESR_EL1::Register>::new(u64::MAX, 0, value),
        Some(FAR_EL2.get()),
    );
}

/// A synchronous external abort on a data access.
fn inject_data_abort(write: bool) {
    inject_abort(esr::AbortKind::Data { write }, esr::fsc::SYNC_EXTERNAL);
}

/// A synchronous external abort on an instruction fetch.
fn inject_prefetch_abort() {
    inject_abort(esr::AbortKind::Instruction, esr::fsc::SYNC_EXTERNAL);
}

/// The guest's own stage-1 table walk reached an IPA stage 2 does not map
/// (ESR_EL2.ISS.S1PTW): the table is not in memory, so the guest gets what a
/// walk that reads nothing gives on hardware, a synchronous External abort on
/// translation table walk (DFSC/IFSC 0b0101LL, Arm ARM D23.2.41; D8.15.2
/// "External aborts"). The stage-1 level of the failed read is not reported
/// to EL2, so the level field says 0; Linux handles all four the same
/// (`do_sea`). Never emulated as an MMIO access: the faulting IPA is the
/// descriptor's, not the one the instruction addressed.
fn inject_walk_abort(kind: esr::AbortKind) {
    inject_abort(kind, esr::fsc::sync_external_on_walk(0));
}

/// An Undefined Instruction exception (EC 0, "unknown reason"; IL: 32-bit).
fn inject_undef() {
    inject_sync(
        FieldValue::<u64, ESR_EL1::Register>::new(u64::MAX, 0, esr::injected_undef()),
        None,
    );
}

/// The faulting IPA of a stage-2 abort (HPFAR_EL2.FIPA plus FAR's page offset).
fn fault_ipa() -> u64 {
    let hpfar = read_sysreg!("hpfar_el2");
    ((hpfar & 0x0000_0fff_ffff_fff0) << 8) | (read_sysreg!("far_el2") & 0xfff)
}

/// The guest's SP for a base register 31: SP_EL1 in EL1h, else SP_EL0.
fn guest_sp_is_el1() -> bool {
    SPSR_EL2.matches_all(SPSR_EL2::M::EL1h)
}

fn guest_sp() -> u64 {
    if guest_sp_is_el1() {
        SP_EL1.get()
    } else {
        SP_EL0.get()
    }
}

fn set_guest_sp(v: u64) {
    if guest_sp_is_el1() {
        SP_EL1.set(v);
    } else {
        SP_EL0.set(v);
    }
}

/// The 32-bit instruction at guest VA `va` (stage 1 by the guest's own tables
/// through AT, stage 2 through ours); `None` if unmapped or not RAM.
fn fetch_guest_insn(vm: &Vm, va: u64) -> Option<u32> {
    if va % 4 != 0 {
        return None;
    }
    let saved = PAR_EL1.get();
    if from_el0() {
        // SAFETY: AT only writes PAR_EL1, restored below.
        unsafe { core::arch::asm!("at s1e0r, {}", in(reg) va, options(nostack)) };
    } else {
        // SAFETY: as above.
        unsafe { core::arch::asm!("at s1e1r, {}", in(reg) va, options(nostack)) };
    }
    crate::sysreg::isb();
    let par = PAR_EL1.get();
    PAR_EL1.set(saved);
    if par & 1 != 0 {
        return None;
    }
    let ipa = (par & 0x000f_ffff_ffff_f000) | (va & 0xfff);
    let pa = vm.stage2.lock().translate(crate::mmu::Ipa(ipa))?.0;
    if !vm.layout.ram.contains(crate::mmu::Ipa(ipa)) {
        return None;
    }
    // SAFETY: `pa` is guest RAM (checked above), identity-mapped in our tables and
    // 4-byte aligned; a racing guest write can only change the value read.
    Some(unsafe { core::ptr::read_volatile(pa as *const u32) })
}

/// Emulates a trapped load/store whose syndrome is not valid by decoding the
/// instruction (pairs, writeback, register offsets). False: inject an abort.
fn emulate_without_syndrome(
    vm: &Vm,
    frame: &mut Frame,
    da: &esr::DataAbort,
    kick: &mut Kick,
    tx: &mut TxBytes,
    cause: &mut Cause,
) -> bool {
    use arch_emu::insn::{self, Decoded, Offset};
    // The decoder knows A64 only; AArch32 code gets the abort.
    if da.far_not_valid || from_aarch32() {
        return false;
    }
    let Some(word) = fetch_guest_insn(vm, read_sysreg!("elr_el2")) else {
        return false;
    };
    let Decoded::LoadStore(ls) = insn::decode(word) else {
        return false;
    };
    let rn = if ls.base == 31 {
        guest_sp()
    } else {
        frame.reg(ls.base)
    };
    let rm = match ls.offset {
        Offset::Reg { rm, .. } => frame.reg(rm),
        Offset::Imm(_) => 0,
    };
    let ea = ls.effective_address(rn, rm);
    let far = read_sysreg!("far_el2");
    // FAR is the address of the transfer that faulted: the first, or the second of a pair.
    let delta = far.wrapping_sub(ea);
    if delta >= 16 {
        return false;
    }
    let Some(ipa0) = fault_ipa().checked_sub(delta) else {
        return false;
    };
    let mut loaded = [(0u8, 0u64); 2];
    for (i, t) in ls.transfers.iter().flatten().enumerate() {
        let ipa = ipa0 + u64::from(t.offset);
        let value = (!ls.load).then(|| insn::apply_load(frame.reg(t.rt), ls.size, false, true));
        match vm.mmio(ipa, ls.size, value, kick, tx, cause) {
            Some(v) => {
                if let Some(slot) = loaded.get_mut(i) {
                    *slot = (
                        t.rt,
                        insn::apply_load(v, ls.size, ls.sign_extend, ls.dest_64),
                    );
                }
            }
            None => return false,
        }
    }
    if ls.load {
        for (i, t) in ls.transfers.iter().flatten().enumerate() {
            if let Some(&(rt, v)) = loaded.get(i) {
                debug_assert_eq!(rt, t.rt);
                frame.set_reg(rt, v);
            }
        }
    }
    if let Some(nb) = ls.written_back_base(rn) {
        if ls.base == 31 {
            set_guest_sp(nb);
        } else {
            frame.set_reg(ls.base, nb);
        }
    }
    advance_pc();
    true
}

fn data_abort(
    vm: &Vm,
    vcpu: usize,
    frame: &mut Frame,
    da: esr::DataAbort,
    kick: &mut Kick,
    tx: &mut TxBytes,
    cause: &mut Cause,
) {
    *cause = Cause::Abort;
    if da.s1ptw {
        Counters::bump(&vm.stats.s1ptw_aborts);
        Counters::bump(&vm.stats.injected_aborts);
        inject_walk_abort(esr::AbortKind::Data { write: da.write });
        return;
    }
    if !da.isv {
        Counters::bump(&vm.stats.no_syndrome);
        if !emulate_without_syndrome(vm, frame, &da, kick, tx, cause) {
            *cause = Cause::Abort;
            Counters::bump(&vm.stats.injected_aborts);
            inject_data_abort(da.write);
        }
        return;
    }
    // AArch32 User mode's R0-R14 are X0-X14 (Arm ARM D1.10.1, "Mapping of
    // the general-purpose registers"); a transfer to or from its PC (R15)
    // is not emulated.
    if da.srt >= 15 && from_aarch32() {
        Counters::bump(&vm.stats.injected_aborts);
        inject_data_abort(da.write);
        return;
    }
    let ipa = fault_ipa();
    if vm.layout.gicr().contains(crate::mmu::Ipa(ipa)) {
        // The redistributor's pending and active bits include what sits in the
        // list registers and the timers' outputs: bring the model up to date.
        refresh_lrs(vm, vcpu);
    }
    let size = da.access_size;
    // The access's bits are the low 8 * size of the register (size 1, 2, 4
    // or 8: ESR_EL2.ISS.SAS), kept by shifting the rest out and back.
    let shift = 64u32.saturating_sub(u32::from(size) * 8);
    let low = |v: u64| v.wrapping_shl(shift).wrapping_shr(shift);
    let value = da.write.then(|| low(frame.reg(da.srt)));
    match vm.mmio(ipa, size, value, kick, tx, cause) {
        Some(v) => {
            if !da.write {
                // ISS.SSE: sign-extended to 64 bits (ISS.SF) or 32.
                let mut v = if da.sign_extend {
                    (v.wrapping_shl(shift) as i64).wrapping_shr(shift) as u64
                } else {
                    low(v)
                };
                if !da.sixty_four {
                    v &= 0xffff_ffff;
                }
                frame.set_reg(da.srt, v);
            }
            advance_pc();
        }
        None => {
            *cause = Cause::Abort;
            Counters::bump(&vm.stats.unclaimed_mmio);
            Counters::bump(&vm.stats.injected_aborts);
            log::debug!("unclaimed access at IPA {ipa:#x}");
            inject_data_abort(da.write);
        }
    }
}

/// An SMCCC call (HVC #0 or a trapped SMC): this hypervisor's own calls in
/// the Vendor Specific Hypervisor Service range (`exitstats`), else PSCI and
/// the Arm architecture calls.
fn smccc_call(vm: &Vm, vcpu: usize, cpu: usize, frame: &mut Frame, kick: &mut Kick) -> Next {
    if crate::exitstats::is_vendor_hyp(frame.x[0]) {
        let r = vm.times.call(frame.x[0] as u32, frame.x[1]);
        frame.x[..3].copy_from_slice(&r);
        return Next::Resume;
    }
    psci_call(vm, vcpu, cpu, frame, kick)
}

/// A PSCI or SMCCC call (HVC #0 or a trapped SMC): `arch_emu::psci` checks it
/// and decides; this applies the decision. `vcpu` is the caller, running on
/// physical CPU `cpu`.
fn psci_call(vm: &Vm, vcpu: usize, cpu: usize, frame: &mut Frame, kick: &mut Kick) -> Next {
    let call = psci::decode(frame.x[0], frame.x[1], frame.x[2], frame.x[3]);
    let env = psci::Env {
        mpidrs: &vm.layout.mpidrs,
        ram: vm.layout.ram,
        firmware: crate::firmware::workarounds(cpu),
    };
    let action = psci::handle(call, vcpu, &env, &mut vm.power.lock());
    let ret = match action {
        Action::Return(v) => {
            if v < 0 {
                Counters::bump(&vm.stats.psci_errors);
            }
            v
        }
        Action::Start { vcpu: target } => {
            wake_to_start(vm, target);
            psci::SUCCESS
        }
        Action::Off => return Next::Park,
        Action::Standby => {
            if let Next::Park = wait_for_wakeup(vm, vcpu, cpu, kick) {
                return Next::Park;
            }
            psci::SUCCESS
        }
        Action::Powerdown {
            entry_point,
            context_id,
        } => {
            // The interrupt controller keeps its state across a core powerdown;
            // the core restarts at the entry point as CPU_ON would start it.
            if let Next::Park = wait_for_wakeup(vm, vcpu, cpu, kick) {
                return Next::Park;
            }
            prepare_el1_entry(entry_point);
            frame.x[0] = context_id;
            return Next::Resume;
        }
        Action::SystemOff => return Next::Stop(End::PoweredOff),
        Action::SystemReset => return Next::Stop(End::Reset),
        Action::Firmware { function_id, w1 } => crate::firmware::call(function_id, w1) as i64,
    };
    frame.x[0] = ret as u64;
    Next::Resume
}

/// CPU_SUSPEND: waits at EL2 until this vCPU has an interrupt pending, as a WFI
/// at EL1 would (a pending virtual interrupt ends WFI whatever PSTATE masks;
/// waking early is allowed, never late). Physical interrupts that arrive
/// meanwhile are handled as on any exit; the list registers are refreshed.
fn wait_for_wakeup(vm: &Vm, vcpu: usize, cpu: usize, kick: &mut Kick) -> Next {
    loop {
        if !vm.running() {
            return Next::Park;
        }
        refresh_lrs(vm, vcpu);
        let n = vm.lr_count.min(16);
        if (0..n)
            .any(|i| arch_emu::vgic::lr::state(gic::read_lr(i)) & arch_emu::vgic::lr::PENDING != 0)
        {
            return Next::Resume;
        }
        send_kicks(vm, vcpu, core::mem::take(kick));
        // WFI wakes on a pending physical interrupt even with PSTATE.I set (as
        // it is at EL2): the vtimer's PPI, a kick from another CPU, a device.
        // SAFETY: WFI only suspends this PE.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
        irq_exit(vm, vcpu, cpu, kick);
    }
}

fn sync_exit(
    vm: &Vm,
    vcpu: usize,
    cpu: usize,
    frame: &mut Frame,
    kick: &mut Kick,
    tx: &mut TxBytes,
    cause: &mut Cause,
) -> Next {
    let esr = read_sysreg!("esr_el2");
    match esr::decode(esr) {
        Exit::DataAbort(da) => {
            data_abort(vm, vcpu, frame, da, kick, tx, cause);
            Next::Resume
        }
        Exit::Hvc { imm16 } => {
            Counters::bump(&vm.stats.hvc);
            *cause = Cause::Psci;
            if imm16 != 0 {
                frame.x[0] = psci::NOT_SUPPORTED as u64;
                return Next::Resume;
            }
            smccc_call(vm, vcpu, cpu, frame, kick)
        }
        Exit::Smc { .. } => {
            Counters::bump(&vm.stats.smc);
            *cause = Cause::Psci;
            advance_pc();
            smccc_call(vm, vcpu, cpu, frame, kick)
        }
        Exit::SysReg(s) => {
            *cause = Cause::Sysreg;
            if let Some(reg) = s.icc_sgi_write() {
                *cause = Cause::Sgi;
                Counters::bump(&vm.stats.sgi);
                kick.0 |= vm.vgic.lock().write_sgi(vcpu, reg, frame.reg(s.rt)).0;
                advance_pc();
            } else if let (true, Some(reg), Some(view)) = (
                s.read,
                cpufeat::tid3_register(s.encoding()),
                crate::cpufeat::GUEST_VIEW.get(),
            ) {
                // HCR_EL2.TID3: the ID register group reads as the table decided.
                *cause = Cause::IdReg;
                Counters::bump(&vm.stats.id_regs);
                frame.set_reg(s.rt, view.get(reg));
                advance_pc();
            } else {
                Counters::bump(&vm.stats.sysreg_other);
                inject_undef();
            }
            Next::Resume
        }
        Exit::Wfx { .. } => {
            *cause = Cause::Wfx;
            advance_pc();
            Next::Resume
        }
        Exit::InstructionAbort(ia) if ia.s1ptw => {
            *cause = Cause::Abort;
            Counters::bump(&vm.stats.s1ptw_aborts);
            Counters::bump(&vm.stats.injected_aborts);
            inject_walk_abort(esr::AbortKind::Instruction);
            Next::Resume
        }
        Exit::InstructionAbort(_) => {
            *cause = Cause::Abort;
            Counters::bump(&vm.stats.other);
            let far = FAR_EL2.get();
            let vbar = VBAR_EL1.get();
            if far.wrapping_sub(vbar) < 0x800 {
                // The fetch of its own exception vector aborted: the abort it
                // would be given is taken at that vector again, for ever
                // (Arm ARM D1.3: VBAR_EL1 + offset). The guest faulted.
                log::info!(
                    "guest {}: instruction abort at its exception vector {far:#x} (VBAR_EL1 {vbar:#x}) on vCPU {vcpu}",
                    vm.name
                );
                return Next::Stop(End::Faulted);
            }
            inject_prefetch_abort();
            Next::Resume
        }
        Exit::Other { .. } => {
            Counters::bump(&vm.stats.other);
            inject_undef();
            Next::Resume
        }
    }
}

/// Sends `k`'s kicks of guest `to`: joined to this exit's (`kick`) when `to`
/// is the guest this CPU runs (`here`), else now.
fn deliver(to: &Vm, here: Option<&Vm>, kick: &mut Kick, k: Kick) {
    if here.is_some_and(|h| core::ptr::eq(h, to)) {
        kick.0 |= k.0;
    } else if k.0 != 0 {
        send_kicks(to, usize::MAX, k);
    }
}

/// The host disk's interrupt (INTx or LPI): its completions popped (the
/// (token, status) list waits in `hostdisk::take_completed`), and the
/// virtio-blk of the guest it serves (`to`) finishes the requests that
/// completed.
fn host_disk_completions(to: &Vm, here: Option<&Vm>, kick: &mut Kick) {
    let n = crate::hostdisk::handle_irq();
    log::trace!("host disk: {n} completions");
    let mut dev = to.devices.lock();
    if let Some(seg) = dev.segment.as_mut() {
        let fx = seg.poll();
        let k = to.apply(seg, fx);
        drop(dev);
        deliver(to, here, kick, k);
    } else {
        drop(dev);
    }
    // Requests the completions let in, outside the lock.
    crate::hostdisk::notify_if_due();
}

/// An LPI, acknowledged and its priority dropped (LPIs have no active
/// state: nothing to deactivate), handed to its owner, in whichever guest
/// it is (`here` is the guest this CPU runs, if any).
fn lpi(here: Option<&Vm>, cpu: usize, intid: u32, kick: &mut Kick) {
    match crate::its::take(intid) {
        Some(crate::its::LpiOwner::HostDisk) => {
            if let Some(to) = crate::vm::host_disk_guest() {
                host_disk_completions(to, here, kick);
            }
        }
        Some(crate::its::LpiOwner::SelfTest) => crate::its::selftest_taken(cpu),
        Some(crate::its::LpiOwner::Assigned {
            guest,
            device,
            event,
        }) => match crate::vm::all().get(usize::from(guest)) {
            Some(to) if !to.running() => Counters::bump(&to.stats.irq_dropped),
            Some(to) => assigned_msi(to, here, cpu, device, event, kick),
            None => {}
        },
        None => {
            if let Some(vm) = here {
                Counters::bump(&vm.stats.irq_unrouted);
            }
        }
    }
}

/// An assigned device's MSI-X or MSI vector (EventID `event`) of guest `to`
/// arrived as an LPI on physical CPU `cpu`: the guest's message for the vector becomes its SPI
/// (checked against its doorbell and MBI range by the segment; forged ones
/// are dropped and counted). The LPI was steered to the CPU of the vCPU
/// that SPI is routed to when the guest routed it or wrote the table or
/// MSI capability (`Vm::steer_lpis`); one that arrives elsewhere is counted
/// (`lpi_elsewhere`: the vCPU is off, or the guest's message changed
/// without a table write the hypervisor saw).
fn assigned_msi(to: &Vm, here: Option<&Vm>, cpu: usize, device: u16, event: u32, kick: &mut Kick) {
    let mut spis = alloc::vec::Vec::new();
    let k = {
        let mut dev = to.devices.lock();
        let Some(&id) = dev.assigned.get(usize::from(device)) else {
            Counters::bump(&to.stats.irq_unrouted);
            return;
        };
        let Some(seg) = dev.segment.as_mut() else {
            return;
        };
        let fx = seg.host_msi(id, event);
        for e in fx.iter() {
            if let vbus::Effect::Msi { spi, .. } = e {
                spis.push(*spi);
            }
        }
        to.apply(seg, fx)
    };
    deliver(to, here, kick, k);
    let target = spis.first().and_then(|&spi| to.vgic.lock().spi_target(spi));
    if target.is_some_and(|t| to.pcpus.get(t) != Some(&cpu)) {
        Counters::bump(&to.stats.lpi_elsewhere);
    }
}

/// Host console input (the host UART's interrupt): to the guest that has
/// the console's input focus; after the switch sequence (several guests),
/// the rest to the next one. With no guest running it is read and dropped.
fn console_input(here: Option<&Vm>, kick: &mut Kick) {
    // A switch per pass; more passes than guests would only go round.
    for _ in 0..=crate::vm::all().len() {
        let Some(to) = crate::console::focused() else {
            if let Some(c) = CONSOLE.lock().as_mut() {
                while c.getc().is_some() {}
            }
            return;
        };
        if let Some(port) = to.console_port.as_ref() {
            // A virtio console: the input to its port, then into the
            // receive buffers the driver made available.
            let (n, switched) = crate::console::input_to_port(port);
            to.stats.console_input.fetch_add(n, Ordering::Relaxed);
            let mut dev = to.devices.lock();
            if let Some(seg) = dev.segment.as_mut() {
                let fx = seg.poll();
                let k = to.apply(seg, fx);
                drop(dev);
                deliver(to, here, kick, k);
            }
            if !switched {
                return;
            }
            crate::console::switch_focus();
            continue;
        }
        let mut dev = to.devices.lock();
        let switched = to.pump_console_input(&mut dev, true);
        let k = to.update_uart_line(&mut dev);
        drop(dev);
        deliver(to, here, kick, k);
        if !switched {
            return;
        }
        crate::console::switch_focus();
    }
}

/// Handles physical interrupt `intid`, acknowledged and its priority
/// dropped, on physical CPU `cpu`, which runs vCPU `here.1` of guest
/// `here.0` (`None`: the CPU is parked). Each interrupt goes to its owner,
/// in whichever guest it is. Returns whether it stays active (an LPI, or
/// hardware-linked to a guest's virtual interrupt); otherwise the caller
/// deactivates it.
fn dispatch(intid: u32, here: Option<(&Vm, usize)>, cpu: usize, kick: &mut Kick) -> bool {
    let (uart_intid, vtimer, ptimer, maintenance) = HOST_IRQS.get().map_or(
        (
            u32::MAX,
            DEFAULT_VTIMER_INTID,
            DEFAULT_PTIMER_INTID,
            DEFAULT_MAINTENANCE_INTID,
        ),
        |h| (h.uart_intid, h.vtimer, h.ptimer, h.maintenance),
    );
    let here_vm = here.map(|h| h.0);
    if intid >= arch_emu::its::FIRST_LPI {
        lpi(here_vm, cpu, intid, kick);
        return true;
    }
    if intid == vtimer || intid == ptimer {
        let Some((vm, vcpu)) = here else {
            // A parked CPU's timer, left armed by its vCPU: masked
            // (CNTx_CTL_EL0.IMASK) so that it stops asserting; the guest
            // programs its timer again when the vCPU starts.
            mask_timer(intid == vtimer);
            return false;
        };
        // Left active: the guest's deactivation of the hardware-linked virtual
        // interrupt deactivates it (or the list-register refresh does, when
        // the timer's output has dropped before the guest took it).
        let guest = if intid == vtimer {
            vm.layout.timer_ppis[2]
        } else {
            vm.layout.timer_ppis[1]
        };
        kick.0 |= vm.vgic.lock().set_line(vcpu, guest, true).0;
        return true;
    }
    if intid == uart_intid {
        console_input(here_vm, kick);
        return false;
    }
    if intid == maintenance {
        // Level-sensitive: asserted until the list registers that caused it
        // (completed level entries, underflow) are dealt with.
        match here {
            Some((vm, vcpu)) => refresh_lrs(vm, vcpu),
            None => gic::write_ich_hcr(gic::ich_hcr::EN),
        }
        return false;
    }
    if crate::smmu::handle_irq(intid) {
        // An SMMU's event queue or global error: drained and reported.
        return false;
    }
    if intid < 32 {
        // SGIs (kicks between CPUs) need nothing more: the list registers
        // are refreshed on the way back to the guest.
        return false;
    }
    match crate::vm::irq_route(intid) {
        Some((to, _)) if !to.running() => {
            // Its guest is stopped: dropped, and left active so that a line
            // that stays asserted does not fire again (cleared when the
            // guest boots again).
            Counters::bump(&to.stats.irq_dropped);
            true
        }
        Some((to, IrqOwner::GuestSpi(spi))) => {
            // Left active: the guest's deactivation of the hardware-linked
            // virtual SPI deactivates it, so a level line that stays
            // asserted cannot fire again before the guest has run.
            let k = to.vgic.lock().set_line(0, spi, true);
            deliver(to, here_vm, kick, k);
            true
        }
        Some((to, IrqOwner::HostDisk)) => {
            // Reading the device's ISR deasserts the line before the
            // deactivation.
            host_disk_completions(to, here_vm, kick);
            false
        }
        None => {
            if let Some(vm) = here_vm {
                Counters::bump(&vm.stats.irq_unrouted);
            }
            false
        }
    }
}

/// This CPU's vCPU leaves a guest that stops: its EL1 timers are masked and
/// their physical interrupts, which a fresh vGIC knows nothing of, no
/// longer active.
pub(crate) fn quiesce_timers() {
    mask_timer(true);
    mask_timer(false);
    if let (Some(g), Some(h)) = (crate::GIC.get(), HOST_IRQS.get()) {
        g.clear_active_ppis(&[h.vtimer, h.ptimer]);
    }
}

/// Sets IMASK in this CPU's EL1 virtual (`virtual_timer`) or physical
/// timer's control register (Arm ARM D12.9.x): its output drops.
fn mask_timer(virtual_timer: bool) {
    const IMASK: u64 = 1 << 1;
    if virtual_timer {
        let v = read_sysreg!("cntv_ctl_el0");
        // SAFETY: CNTV_CTL_EL0 only controls the EL1 virtual timer's
        // interrupt, which belongs to this CPU's (powered-off) vCPU.
        unsafe { crate::sysreg::write_sysreg!("cntv_ctl_el0", v | IMASK) };
    } else {
        let v = read_sysreg!("cntp_ctl_el0");
        // SAFETY: as above, for the EL1 physical timer.
        unsafe { crate::sysreg::write_sysreg!("cntp_ctl_el0", v | IMASK) };
    }
}

/// Physical interrupts on an exit of vCPU `vcpu` of `vm` (on physical CPU
/// `cpu`): each acknowledged and handed to its owner ([`dispatch`]).
fn irq_exit(vm: &Vm, vcpu: usize, cpu: usize, kick: &mut Kick) {
    // Bounded: an interrupt that stays asserted must not keep this CPU at EL2.
    for i in 0..64 {
        // After the first, acknowledge only while one is signalled.
        if i > 0 && !gic::irq_pending() {
            return;
        }
        let intid = gic::ack();
        // 1020..=1023: special INTIDs (none pending, IHI 0069 2.2.1).
        if (1020..=1023).contains(&intid) {
            return;
        }
        Counters::bump(&vm.stats.irq);
        gic::eoi(intid);
        if !dispatch(intid, Some((vm, vcpu)), cpu, kick) {
            gic::deactivate(intid);
        }
    }
    Counters::bump(&vm.stats.irq_storms);
}

/// The outputs of this CPU's EL1 virtual and physical timers (the guest's):
/// asserted while CNTx_CTL_EL0.ENABLE and ISTATUS are set and IMASK is clear
/// (Arm ARM D12.9.x, "Timer interrupts").
fn timer_outputs() -> [bool; 2] {
    let asserted = |ctl: u64| ctl & 0b111 == 0b101; // ISTATUS, IMASK, ENABLE
    [
        asserted(read_sysreg!("cntv_ctl_el0")),
        asserted(read_sysreg!("cntp_ctl_el0")),
    ]
}

/// Moves interrupts between the vGIC and this CPU's list registers (vCPU
/// `vcpu` of `vm`). The CPU's shadow (`gic::lr_shadow`) keeps the system
/// register accesses to ICH_ELRSR_EL2, the entries that may hold a pending
/// or active interrupt and the entries and ICH_HCR_EL2 values that change.
fn refresh_lrs(vm: &Vm, vcpu: usize) {
    let Some(shadow) = gic::lr_shadow(cpu_index()) else {
        return;
    };
    let mut shadow = shadow.lock();
    let n = vm.lr_count.min(16);
    let mut current = [0u64; 16];
    shadow.current(gic::read_elrsr(), gic::read_lr, &mut current[..n]);
    let mut lrs = current;
    let outputs = timer_outputs();
    let mut vgic = vm.vgic.lock();
    vgic.fold(vcpu, &mut lrs[..n]);
    // The timers' interrupts follow their outputs (sampled now, the guest's
    // timer registers being this CPU's): a delivery not yet acknowledged is
    // withdrawn when the output has dropped.
    let mut give_back = [None; 2];
    for (slot, (ppi, output)) in give_back.iter_mut().zip([
        (vm.layout.timer_ppis[2], outputs[0]),
        (vm.layout.timer_ppis[1], outputs[1]),
    ]) {
        *slot = vgic.sample_hw_output(vcpu, ppi, output, &mut lrs[..n]);
    }
    let overflow = vgic.flush(vcpu, &mut lrs[..n]);
    drop(vgic);
    for pintid in give_back.into_iter().flatten() {
        gic::deactivate(pintid);
    }
    shadow.update(&current[..n], &lrs[..n], gic::write_lr);
    shadow.set_hcr(
        gic::ich_hcr::EN | if overflow { gic::ich_hcr::UIE } else { 0 },
        gic::write_ich_hcr,
    );
}

/// Kicks the CPUs of `vm`'s vCPUs in `kick` but vCPU `me` (`usize::MAX`:
/// every one).
#[inline(always)]
fn send_kicks(vm: &Vm, me: usize, kick: Kick) {
    // Most exits kick no one: skip the walk over the CPUs.
    if kick.0 == 0 {
        return;
    }
    let me_bit = u32::try_from(me).ok().and_then(|m| 1u64.checked_shl(m));
    let others = kick.0 & !me_bit.unwrap_or(0);
    if others == 0 {
        return;
    }
    for (i, &mpidr) in vm.pcpu_mpidr.iter().enumerate() {
        if i != me && i < 64 && kick.0 & (1 << i) != 0 {
            gic::send_sgi(gic::SGI_KICK, mpidr);
        }
    }
}

/// Entered from the vectors on every exception from a guest: handled for
/// the guest this CPU runs.
#[no_mangle]
extern "C" fn handle_exit(frame: &mut Frame, kind: u64) {
    let cpu = cpu_index();
    let Some(CpuSlot { vm, vcpu }) = crate::vm::on_cpu(cpu) else {
        fatal("guest exit on a CPU no guest has")
    };
    let start = crate::exitstats::now();
    let mut cause = Cause::Other;
    let mut kick = Kick::default();
    let mut tx = TxBytes::default();
    let next = match kind {
        0 => sync_exit(vm, vcpu, cpu, frame, &mut kick, &mut tx, &mut cause),
        1 => {
            cause = Cause::Irq;
            irq_exit(vm, vcpu, cpu, &mut kick);
            // A kick from a CPU stopping this guest: park.
            if vm.running() {
                Next::Resume
            } else {
                Next::Park
            }
        }
        3 => {
            // SError: an asynchronous external abort, taken to EL2
            // (HCR_EL2.AMO) from the guest, which caused it (a device it
            // drives, memory it touched): nothing the hypervisor can hand
            // back to it. The guest faulted; the others run on.
            Counters::bump(&vm.stats.other);
            log::info!(
                "guest {}: SError (ESR_EL2 {:#x}) on vCPU {vcpu}",
                vm.name,
                read_sysreg!("esr_el2")
            );
            Next::Stop(End::Faulted)
        }
        _ => {
            // FIQ (group 0, unused): nothing to do.
            Counters::bump(&vm.stats.other);
            Next::Resume
        }
    };
    // Guest console output, with no lock of the guest held.
    if !tx.is_empty() {
        crate::console::guest_output(vm, tx.as_slice());
    }
    if let Some(port) = vm.console_port.as_ref() {
        crate::console::port_output(vm, port);
    }
    // The host disk hears of the requests this exit submitted, with no lock held.
    crate::hostdisk::notify_if_due();
    match next {
        Next::Resume => {
            // The list registers change only through an interrupt exit (timer,
            // maintenance, kick) or a vGIC change for this vCPU (its Kick bit):
            // most MMIO exits (the console's) skip the sixteen sysreg accesses,
            // and most kick no one either.
            if kind == 1 || (kick.0 != 0 && kick.0 & (1u64 << vcpu.min(63)) != 0) {
                refresh_lrs(vm, vcpu);
            }
            // The kicks last: a kicked CPU starts at once on the interrupt
            // controller (under QEMU TCG, behind the lock every GIC and
            // counter access takes), and this one has nothing more to ask of
            // it before returning to the guest. The time recorded leaves the
            // one register write of each kick out.
            vm.times.record(cause, start);
            send_kicks(vm, vcpu, kick);
        }
        Next::Park => {
            vm.times.record(cause, start);
            send_kicks(vm, vcpu, kick);
            retire_lrs(vm, vcpu);
            park(cpu)
        }
        Next::Stop(why) => {
            vm.times.record(cause, start);
            send_kicks(vm, vcpu, kick);
            crate::life::stop(vm, vcpu, cpu, why)
        }
    }
}

/// A vCPU switched off leaves nothing in flight: hardware-linked entries give back
/// their physical interrupt, every entry completes in the model (level lines are
/// resampled), and the list registers and active priorities are cleared.
pub(crate) fn retire_lrs(vm: &Vm, vcpu: usize) {
    let n = vm.lr_count.min(16);
    let mut lrs = [0u64; 16];
    for (i, lr) in lrs.iter_mut().enumerate().take(n) {
        let v = gic::read_lr(i);
        if v & arch_emu::vgic::lr::HW != 0 && arch_emu::vgic::lr::state(v) != 0 {
            gic::deactivate(((v >> arch_emu::vgic::lr::PINTID_SHIFT) & 0x1fff) as u32);
        }
        *lr = v & !(3 << arch_emu::vgic::lr::STATE_SHIFT);
    }
    vm.vgic.lock().fold(vcpu, &mut lrs[..n]);
    for i in 0..n {
        gic::write_lr(i, 0);
    }
    gic::clear_active_priorities();
    gic::write_ich_hcr(gic::ich_hcr::EN);
    if let Some(s) = gic::lr_shadow(cpu_index()) {
        s.lock().reset();
    }
}

/// Wakes the CPU of `vm`'s vCPU `vcpu`, whose power state just became
/// ON_PENDING, to start it (`park` takes the request).
fn wake_to_start(vm: &Vm, vcpu: usize) {
    if let Some(flag) = vm.pcpus.get(vcpu).and_then(|&c| ON_REQUEST.get(c)) {
        flag.store(true, Ordering::Release);
    }
    if let Some(&mpidr) = vm.pcpu_mpidr.get(vcpu) {
        if mpidr != crate::sysreg::mpidr_affinity() {
            gic::send_sgi(gic::SGI_KICK, mpidr);
        }
    }
}

/// Switches `vm`'s vCPU `vcpu` on at `entry` with x0 = `context_id` (as a
/// PSCI CPU_ON would): its CPU starts it from `park`.
pub fn start_vcpu(vm: &Vm, vcpu: usize, entry: u64, context_id: u64) {
    if let Some(p) = vm.power.lock().get_mut(vcpu) {
        *p = Power::OnPending { entry, context_id };
    }
    wake_to_start(vm, vcpu);
}

/// Waits at EL2 until this CPU's vCPU is switched on, then enters it. A
/// CPU no guest has, or whose vCPU is off, still takes the interrupts
/// routed to it and hands them to their owners.
pub fn park(cpu: usize) -> ! {
    let slot = crate::vm::on_cpu(cpu);
    if slot.is_some_and(|s| !s.vm.running()) {
        quiesce_timers();
    }
    if let Some(p) = PARKED.get(cpu) {
        p.store(true, Ordering::Release);
    }
    loop {
        let requested = ON_REQUEST
            .get(cpu)
            .is_some_and(|f| f.swap(false, Ordering::Acquire));
        if let (true, Some(CpuSlot { vm, vcpu })) = (requested, slot.filter(|s| s.vm.running())) {
            let start = {
                let mut power = vm.power.lock();
                match power.get_mut(vcpu) {
                    Some(p) => match *p {
                        Power::OnPending { entry, context_id } => {
                            *p = Power::On;
                            Some((entry, context_id))
                        }
                        _ => None,
                    },
                    None => None,
                }
            };
            if let Some((entry, context_id)) = start {
                // The LPIs of SPIs routed to this vCPU while it was off follow now.
                vm.steer_all_lpis();
                prepare_el1_entry(entry);
                refresh_lrs(vm, vcpu);
                if let Some(p) = PARKED.get(cpu) {
                    p.store(false, Ordering::Release);
                }
                run_guest(context_id)
            }
        }
        // Sleep until an interrupt is pending (WFI wakes even with PSTATE.I set):
        // CPU_ON sends the kick SGI. Spinning here would take host CPU time (and,
        // under QEMU TCG, the guests' locks) from the vCPUs that run.
        // SAFETY: WFI only suspends this PE.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
        // Bounded as in `irq_exit`. Every acknowledged interrupt gets its
        // priority dropped, or nothing of the same priority (the kick SGI)
        // would be signalled again. Interrupts routed to this CPU (LPIs whose
        // collection targets it, the host UART's, a device's line) still
        // reach their owner.
        for _ in 0..64 {
            let intid = gic::ack();
            if (1020..=1023).contains(&intid) {
                break;
            }
            gic::eoi(intid);
            let mut kick = Kick(0);
            if !dispatch(intid, None, cpu, &mut kick) {
                gic::deactivate(intid);
            }
        }
    }
}

/// Set by CPU_ON for the vCPU it switches on, by physical CPU; that CPU
/// takes it in `park`.
static ON_REQUEST: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Whether a physical CPU is in `park` (not in a guest, not handling one
/// of its exits).
static PARKED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(true) }; MAX_CPUS];

/// Makes every CPU of `vm` but vCPU `me`'s leave the guest and park (the
/// guest is stopping: each, kicked, sees it at its next exit), cancels any
/// CPU_ON on its way, and waits for them, at most `timeout` counter ticks.
pub(crate) fn park_others(vm: &Vm, me: usize, timeout: u64) {
    for &c in &vm.pcpus {
        if let Some(f) = ON_REQUEST.get(c) {
            f.store(false, Ordering::Release);
        }
    }
    send_kicks(vm, me, Kick(u64::MAX));
    let start = crate::exitstats::now();
    let others = || {
        vm.pcpus
            .iter()
            .enumerate()
            .filter(|&(v, _)| v != me)
            .all(|(_, &c)| PARKED.get(c).is_none_or(|p| p.load(Ordering::Acquire)))
    };
    while !others() {
        if crate::exitstats::now().wrapping_sub(start) > timeout {
            log::error!("guest {}: a CPU did not leave it", vm.name);
            return;
        }
        core::hint::spin_loop();
    }
}

/// Ends the run with `code`: each guest's statistics, the host devices
/// read back and reset, then power-off (semihosting under QEMU).
pub(crate) fn shutdown(code: i32) -> ! {
    let vms = crate::vm::all();
    for vm in vms {
        crate::console::flush(vm);
    }
    for vm in vms {
        crate::vm::log_stats(vm, vms.len() > 1);
    }
    if vms.len() > 1 {
        let ends: alloc::vec::Vec<alloc::string::String> = vms
            .iter()
            .map(|vm| alloc::format!("{} {}", vm.name, crate::life::end_of(vm).name()))
            .collect();
        log::info!("guests: {}", ends.join(", "));
    }
    crate::assign::shutdown(vms);
    crate::hostdisk::shutdown();
    crate::its::shutdown();
    let h = crate::HEAP.usage();
    log::info!(
        "heap: {} bytes in use, peak {} bytes, of {}",
        h.in_use,
        h.peak,
        h.size
    );
    power_off(code, crate::SEMIHOSTING.load(Ordering::Relaxed))
}

/// Ends the run: semihosting exit with `code` under QEMU, else PSCI to the firmware.
pub fn power_off(code: i32, semihosting: bool) -> ! {
    if semihosting {
        crate::semihosting::exit(code as u64)
    }
    let f = if code == 3 {
        psci::SYSTEM_RESET
    } else {
        psci::SYSTEM_OFF
    };
    crate::smc(u64::from(f), 0, 0, 0);
    loop {
        wfe();
    }
}

/// A hypervisor error that cannot be recovered: report and stop with status 2.
pub fn fatal(msg: &str) -> ! {
    log::error!("fatal: {msg}");
    power_off(
        2,
        crate::SEMIHOSTING.load(core::sync::atomic::Ordering::Relaxed),
    )
}

/// An exception taken at EL2 itself: a hypervisor bug.
#[no_mangle]
extern "C" fn hv_fault(frame: &mut Frame, kind: u64) -> ! {
    // Do not wait for a lock a faulting path may hold.
    // SAFETY: the console lock may be held by this CPU; force it so the report gets out.
    unsafe { CONSOLE.force_unlock() };
    let elr = read_sysreg!("elr_el2");
    let link = elr
        .wrapping_sub(crate::entry::image_start())
        .wrapping_add(crate::entry::LINK_ADDRESS);
    crate::console::hv_line(format_args!(
        "EL2 exception kind {kind}: ESR {:#x} ELR {elr:#x} (addr2line -e hypervisor {link:#x}) FAR {:#x} x0 {:#x} x30 {:#x} cpu {}",
        read_sysreg!("esr_el2"),
        read_sysreg!("far_el2"),
        frame.x[0],
        frame.x[30],
        cpu_index()
    ));
    power_off(
        2,
        crate::SEMIHOSTING.load(core::sync::atomic::Ordering::Relaxed),
    )
}

//! The guest's ID registers and the EL2 controls that go with them: the
//! hardware's ID register group read once at boot and decided by
//! [`arch_emu::cpufeat`]'s table; HCR_EL2.TID3 traps the guest's reads to
//! [`GUEST_VIEW`].

use arch_emu::cpufeat::{GuestView, IdRegs, GROUP_LEN};

/// What the guest reads from the ID register group; set once on the boot CPU.
pub static GUEST_VIEW: spin::Once<GuestView> = spin::Once::new();

/// Reads ID register `S3_0_C0_C<crm>_<op2>`: an `mrs` of the ID space, allocated
/// or not (the unallocated encodings of op0 = 3, op1 = 0, CRn = 0, CRm = 1..=7
/// are RAZ, Arm ARM D23.3 "Reserved encodings in the ID register space").
macro_rules! id_group {
    ($($crm:literal => [$($op2:literal),*]),*) => {
        [$($({
            let v: u64;
            // SAFETY: `mrs` of an ID register reads a constant; it has no effect on
            // memory or state, and EL2 reads of the group never trap.
            unsafe {
                core::arch::asm!(
                    concat!("mrs {}, S3_0_C0_C", stringify!($crm), "_", stringify!($op2)),
                    out(reg) v,
                    options(nomem, nostack)
                )
            };
            v
        }),*),*]
    };
}

/// This CPU's ID register group.
fn read_group() -> IdRegs {
    let regs: [u64; GROUP_LEN] = id_group!(
        1 => [0, 1, 2, 3, 4, 5, 6, 7],
        2 => [0, 1, 2, 3, 4, 5, 6, 7],
        3 => [0, 1, 2, 3, 4, 5, 6, 7],
        4 => [0, 1, 2, 3, 4, 5, 6, 7],
        5 => [0, 1, 2, 3, 4, 5, 6, 7],
        6 => [0, 1, 2, 3, 4, 5, 6, 7],
        7 => [0, 1, 2, 3, 4, 5, 6, 7]
    );
    IdRegs(regs)
}

/// Decides the guest's view from the boot CPU's ID registers (the secondaries
/// are taken to be the same: one view for every vCPU, as Linux requires of a
/// homogeneous system).
pub fn init() -> &'static GuestView {
    GUEST_VIEW.call_once(|| {
        let host = read_group();
        let view = GuestView::new(&host);
        for crm in 4..=7u8 {
            for op2 in 0..=7u8 {
                let Some(reg) = arch_emu::cpufeat::IdReg::new(crm, op2) else {
                    continue;
                };
                let (h, g) = (host.get(reg), view.get(reg));
                if h != 0 || g != 0 {
                    log::debug!("ID S3_0_C0_C{crm}_{op2}: hardware {h:#018x} guest {g:#018x}");
                }
            }
        }
        log::info!(
            "guest CPU features: HCR_EL2 |= {:#x}, HCRX_EL2 {} ({:#x}), CPTR_EL2 clear {:#x} set {:#x}",
            view.controls.hcr,
            if view.controls.hcx { "written" } else { "absent" },
            view.controls.hcrx,
            view.controls.cptr_clear,
            view.controls.cptr_set
        );
        view
    })
}

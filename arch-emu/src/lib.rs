//! Pure models of the Arm architecture state the hypervisor emulates: ESR_EL2/ISS decode, load/store decode, the vGICv3 distributor and redistributor, PSCI, the PL011, stage-2 tables, SMMUv3 encodings, GICv3 ITS encodings, and the guest's CPU features (the ID registers it reads and the EL2 controls that go with them).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod aarch32;
pub mod addr;
pub mod console_input;
pub mod console_mux;
pub mod cpufeat;
pub mod esr;
pub mod insn;
pub mod its;
pub mod pl011;
pub mod psci;
pub mod smmu;
pub mod stage2;
pub mod vgic;

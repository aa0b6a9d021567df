//! The guest: its layout, memory, emulated devices and vCPU power states, all
//! behind one lock (`VM`). Exits take the lock for as long as they emulate.

use alloc::boxed::Box;
use alloc::vec::Vec;

use arch_emu::pl011::Pl011;
use arch_emu::vgic::{Kick, Vgic};
use emulated_bridges::{RootPort, RootPortConfig};
use guest_dt::GuestLayout;
use spin::{Mutex, Once};
use vbus::Segment;

use crate::mmu::Stage2;

/// A vCPU's PSCI power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Off: its physical CPU waits at EL2.
    Off,
    /// CPU_ON accepted: start at `entry` with x0 = `context_id`.
    OnPending {
        /// Entry point (IPA).
        entry: u64,
        /// Passed in x0.
        context_id: u64,
    },
    /// Running.
    On,
}

/// Exit counters by cause, printed at shutdown.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExitStats {
    /// Trapped GICD accesses.
    pub gicd: u64,
    /// Trapped GICR accesses.
    pub gicr: u64,
    /// Trapped PL011 accesses.
    pub uart: u64,
    /// Trapped ECAM accesses.
    pub ecam: u64,
    /// Data aborts at addresses nothing emulates (an external abort was injected).
    pub unclaimed_mmio: u64,
    /// Data aborts without a valid syndrome (decoded from the instruction).
    pub no_syndrome: u64,
    /// External aborts injected (nothing there, or an access not emulated).
    pub injected_aborts: u64,
    /// HVC calls.
    pub hvc: u64,
    /// SMC calls.
    pub smc: u64,
    /// Trapped ICC_SGI1R_EL1 writes.
    pub sgi: u64,
    /// Other trapped system register accesses (an undefined instruction was injected).
    pub sysreg_other: u64,
    /// Physical interrupts taken while the guest ran.
    pub irq: u64,
    /// Exits that left interrupts pending after 64 acknowledgements.
    pub irq_storms: u64,
    /// Bytes of host console input given to the guest's UART.
    pub console_input: u64,
    /// Instruction aborts and other exception classes (an exception was injected).
    pub other: u64,
}

/// The guest.
pub struct Vm {
    /// Where everything is.
    pub layout: GuestLayout,
    /// Its stage-2 tables.
    pub stage2: Stage2,
    /// Host physical address of guest RAM.
    #[allow(dead_code)] // reported at boot; kept for DMA mapping (next issue)
    pub ram_pa: u64,
    /// The vGICv3.
    pub vgic: Vgic,
    /// The console UART.
    pub uart: Pl011,
    /// The UART's interrupt line as last given to the vGIC.
    pub uart_line: bool,
    /// The synthetic PCI segment.
    pub segment: Option<Segment>,
    /// vCPU i runs on physical CPU i (whose MPIDR is `pcpu_mpidr[i]`).
    pub power: Vec<Power>,
    /// Physical CPU affinities, index = vCPU.
    pub pcpu_mpidr: Vec<u64>,
    /// Exit counters.
    pub stats: ExitStats,
    /// Implemented list registers.
    pub lr_count: usize,
    /// Leave QEMU through semihosting at shutdown.
    pub semihosting: bool,
    /// Guest console bytes of this exit, written to the host UART after the VM
    /// lock is released (a slow UART must not stall other vCPUs' exits).
    pub tx: TxBytes,
}

/// A few bytes of guest console output (one exit writes at most two).
#[derive(Debug, Default, Clone, Copy)]
pub struct TxBytes {
    buf: [u8; 4],
    len: usize,
}

impl TxBytes {
    /// Appends a byte (dropped if full, which one exit cannot cause).
    pub fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

/// The one guest.
pub static VM: Once<Mutex<Vm>> = Once::new();

/// The synthetic segment's first light: two empty root ports at 00:01.0 and 00:02.0.
pub fn synthetic_segment(layout: &GuestLayout) -> Option<Segment> {
    let pci = layout.pci.as_ref()?;
    let buses = u16::from(pci.bus_end) - u16::from(pci.bus_start) + 1;
    let mut seg = Segment::new(pci.segment, buses);
    for (dev, chassis_slot) in [(1u8, 1u16), (2, 2)] {
        let port = RootPort::new(RootPortConfig {
            port_number: dev,
            slot_number: chassis_slot,
            ..RootPortConfig::default()
        });
        seg.add_bus0(dev, 0, Box::new(port)).ok()?;
    }
    Some(seg)
}

impl Vm {
    /// The vCPU whose MPIDR affinity is `aff`.
    pub fn vcpu_by_mpidr(&self, aff: u64) -> Option<usize> {
        self.layout.mpidrs.iter().position(|&m| m == aff)
    }

    /// Re-evaluates the UART's interrupt line after an access or input.
    pub fn update_uart_line(&mut self) -> Kick {
        let level = self.uart.irq_level();
        if level == self.uart_line {
            return Kick::default();
        }
        self.uart_line = level;
        self.vgic.set_line(0, self.layout.uart_spi, level)
    }

    /// Emulates an MMIO access at `ipa`; `None` if nothing is there.
    pub fn mmio(&mut self, ipa: u64, size: u8, write: Option<u64>, kick: &mut Kick) -> Option<u64> {
        let l = &self.layout;
        let within = |base: u64, len: u64| ipa >= base && ipa - base < len;
        if within(l.gicd_base, guest_dt::GICD_SIZE) {
            self.stats.gicd += 1;
            let off = ipa - l.gicd_base;
            return Some(match write {
                Some(v) => {
                    kick.0 |= self.vgic.gicd_write(off, size, v).0;
                    0
                }
                None => self.vgic.gicd_read(off, size),
            });
        }
        if within(l.gicr_base, l.gicr().size) {
            self.stats.gicr += 1;
            let off = ipa - l.gicr_base;
            return Some(match write {
                Some(v) => {
                    kick.0 |= self.vgic.gicr_write(off, size, v).0;
                    0
                }
                None => self.vgic.gicr_read(off, size),
            });
        }
        if within(l.uart_base, guest_dt::UART_SIZE) {
            self.stats.uart += 1;
            let off = ipa - l.uart_base;
            let r = match write {
                Some(v) => {
                    let out = self.uart.write(off, size, v as u32);
                    if let Some(b) = out.tx {
                        self.tx.push(b);
                    }
                    0
                }
                None => u64::from(self.uart.read(off, size)),
            };
            kick.0 |= self.update_uart_line().0;
            return Some(r);
        }
        if let (Some(pci), Some(seg)) = (l.pci.as_ref(), self.segment.as_mut()) {
            let ecam = pci.ecam();
            if within(ecam.base, ecam.size) {
                self.stats.ecam += 1;
                let off = ipa - ecam.base;
                return Some(match write {
                    Some(v) => {
                        let effects = seg.ecam_write(off, size, v);
                        for (bdf, e) in effects.iter() {
                            log::debug!("pci {bdf}: {e:?}");
                        }
                        0
                    }
                    None => seg.ecam_read(off, size),
                });
            }
        }
        None
    }
}

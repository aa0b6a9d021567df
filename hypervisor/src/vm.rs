//! The guests: a table fixed at boot ([`all`]), each physical CPU's guest
//! and vCPU ([`on_cpu`]); per guest its layout and memory (fixed after
//! boot), its life (`life.rs`), and the state exits change, behind separate
//! locks so that exits on different CPUs rarely wait on
//! each other: the vGIC, the emulated devices (PL011, PCI segment), the vCPU
//! power states. Lock order: devices, then vGIC; power, then vGIC; the host
//! console last. Counters are atomics.

use alloc::boxed::Box;
use alloc::vec::Vec;

use arch_emu::console_input::{ConsoleInput, HostRx};
use arch_emu::pl011::Pl011;
use arch_emu::vgic::{Kick, Vgic};
use core::sync::atomic::{AtomicU64, Ordering};
use emulated_bridges::{RootPort, RootPortConfig};
use guest_dt::GuestLayout;

use alloc::string::String;
use spin::{Mutex, Once};
use vbus::{BarBacking, Effect, Effects, FunctionId, Ipa, MemRange, Pa, PciFunction, Segment};

use crate::entry::MAX_CPUS;
use crate::exitstats::Cause;
use crate::mmu::{S2Attr, Stage2};

/// A vCPU's PSCI power state (the model's, in `arch_emu::psci`).
pub use arch_emu::psci::Power;

/// Exit counters by cause (atomics: any CPU counts without a lock).
#[derive(Debug, Default)]
pub struct Counters {
    /// Trapped GICD accesses.
    pub gicd: AtomicU64,
    /// Trapped GICR accesses.
    pub gicr: AtomicU64,
    /// Trapped PL011 accesses.
    pub uart: AtomicU64,
    /// Trapped ECAM accesses.
    pub ecam: AtomicU64,
    /// Trapped accesses to the segment's memory apertures.
    pub pci_mmio: AtomicU64,
    /// Stage-2 changes applied for BAR effects (maps and unmaps).
    pub stage2_changes: AtomicU64,
    /// Stage-2 changes that failed (should never happen: the segment never
    /// decodes outside its apertures or two BARs at one address).
    pub stage2_errors: AtomicU64,
    /// Data aborts at addresses nothing emulates (an external abort was injected).
    pub unclaimed_mmio: AtomicU64,
    /// Data aborts without a valid syndrome (decoded from the instruction).
    pub no_syndrome: AtomicU64,
    /// External aborts injected (nothing there, or an access not emulated).
    pub injected_aborts: AtomicU64,
    /// Aborts whose guest stage-1 table walk reached an IPA stage 2 does not
    /// map (ESR S1PTW): answered with an external abort on translation table walk.
    pub s1ptw_aborts: AtomicU64,
    /// HVC calls.
    pub hvc: AtomicU64,
    /// SMC calls.
    pub smc: AtomicU64,
    /// Trapped writes to ICC_SGI0R_EL1, ICC_SGI1R_EL1 and ICC_ASGI1R_EL1.
    pub sgi: AtomicU64,
    /// PSCI and SMCCC calls answered with an error (bad arguments, unknown or
    /// unimplemented functions).
    pub psci_errors: AtomicU64,
    /// Trapped reads of the ID register group (HCR_EL2.TID3).
    pub id_regs: AtomicU64,
    /// Other trapped system register accesses (an undefined instruction was injected).
    pub sysreg_other: AtomicU64,
    /// MOVIs of an assigned device's LPI to the CPU of the vCPU its SPI is
    /// routed to (see [`Vm::steer_lpis`]).
    pub lpi_moves: AtomicU64,
    /// Times an LPI stayed where it was because the vCPU its SPI is routed
    /// to is powered off.
    pub lpi_held: AtomicU64,
    /// Assigned devices' LPIs taken on a CPU other than the one running the
    /// vCPU their SPI is routed to (forwarded by a kick).
    pub lpi_elsewhere: AtomicU64,
    /// Physical interrupts taken while the guest ran.
    pub irq: AtomicU64,
    /// Exits that left interrupts pending after 64 acknowledgements.
    pub irq_storms: AtomicU64,
    /// Physical interrupts no one owns (deactivated and dropped).
    pub irq_unrouted: AtomicU64,
    /// Physical interrupts for this guest that arrived while it was stopped
    /// (dropped).
    pub irq_dropped: AtomicU64,
    /// Bytes of host console input read for the guest (from the host UART).
    pub console_input: AtomicU64,
    /// Times the console backlog filled and host input was held back in the
    /// host UART (its receive interrupts masked) until the guest read.
    pub console_held: AtomicU64,
    /// Console input bytes dropped for a full backlog (a shared console).
    pub console_dropped: AtomicU64,
    /// Instruction aborts and other exception classes (an exception was injected).
    pub other: AtomicU64,
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
    /// Trapped accesses to the segment's memory apertures.
    pub pci_mmio: u64,
    /// Stage-2 changes applied for BAR effects (maps and unmaps).
    pub stage2_changes: u64,
    /// Stage-2 changes that failed.
    pub stage2_errors: u64,
    /// Data aborts at addresses nothing emulates (an external abort was injected).
    pub unclaimed_mmio: u64,
    /// Data aborts without a valid syndrome (decoded from the instruction).
    pub no_syndrome: u64,
    /// External aborts injected (nothing there, or an access not emulated).
    pub injected_aborts: u64,
    /// Aborts on the guest's stage-1 table walk (see [`Counters::s1ptw_aborts`]).
    pub s1ptw_aborts: u64,
    /// HVC calls.
    pub hvc: u64,
    /// SMC calls.
    pub smc: u64,
    /// Trapped writes to ICC_SGI0R_EL1, ICC_SGI1R_EL1 and ICC_ASGI1R_EL1.
    pub sgi: u64,
    /// PSCI and SMCCC calls answered with an error.
    pub psci_errors: u64,
    /// Trapped reads of the ID register group (HCR_EL2.TID3).
    pub id_regs: u64,
    /// Other trapped system register accesses (an undefined instruction was injected).
    pub sysreg_other: u64,
    /// Physical interrupts taken while the guest ran.
    pub irq: u64,
    /// Exits that left interrupts pending after 64 acknowledgements.
    pub irq_storms: u64,
    /// Physical interrupts no one owns (deactivated and dropped).
    pub irq_unrouted: u64,
    /// Physical interrupts for this guest dropped while it was stopped.
    pub irq_dropped: u64,
    /// Bytes of host console input read for the guest (from the host UART).
    pub console_input: u64,
    /// Times host console input was held back in the host UART.
    pub console_held: u64,
    /// Console input bytes dropped for a full backlog (a shared console).
    pub console_dropped: u64,
    /// Instruction aborts and other exception classes (an exception was injected).
    pub other: u64,
}

impl Counters {
    /// Adds one to `c`.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ExitStats {
        ExitStats {
            gicd: self.gicd.load(Ordering::Relaxed),
            gicr: self.gicr.load(Ordering::Relaxed),
            uart: self.uart.load(Ordering::Relaxed),
            ecam: self.ecam.load(Ordering::Relaxed),
            pci_mmio: self.pci_mmio.load(Ordering::Relaxed),
            stage2_changes: self.stage2_changes.load(Ordering::Relaxed),
            stage2_errors: self.stage2_errors.load(Ordering::Relaxed),
            unclaimed_mmio: self.unclaimed_mmio.load(Ordering::Relaxed),
            no_syndrome: self.no_syndrome.load(Ordering::Relaxed),
            injected_aborts: self.injected_aborts.load(Ordering::Relaxed),
            s1ptw_aborts: self.s1ptw_aborts.load(Ordering::Relaxed),
            hvc: self.hvc.load(Ordering::Relaxed),
            smc: self.smc.load(Ordering::Relaxed),
            sgi: self.sgi.load(Ordering::Relaxed),
            psci_errors: self.psci_errors.load(Ordering::Relaxed),
            id_regs: self.id_regs.load(Ordering::Relaxed),
            sysreg_other: self.sysreg_other.load(Ordering::Relaxed),
            irq: self.irq.load(Ordering::Relaxed),
            irq_storms: self.irq_storms.load(Ordering::Relaxed),
            irq_unrouted: self.irq_unrouted.load(Ordering::Relaxed),
            irq_dropped: self.irq_dropped.load(Ordering::Relaxed),
            console_input: self.console_input.load(Ordering::Relaxed),
            console_held: self.console_held.load(Ordering::Relaxed),
            console_dropped: self.console_dropped.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
        }
    }
}

/// Who a physical interrupt (other than the timer, UART and maintenance
/// interrupts) belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqOwner {
    /// A passed-through device's INTx: injected as this guest SPI, hardware-
    /// linked (the physical SPI stays active until the guest deactivates it).
    GuestSpi(u32),
    /// The host disk's INTx (`host-disk=`): its completions are popped at
    /// EL2 (`hostdisk::handle_irq`), then the line is deactivated.
    HostDisk,
}

/// Most host console input bytes the hypervisor holds for the guest beyond
/// its UART's receive FIFO; past this, input waits in the host UART (and
/// behind it, in whatever feeds the host line), as on a flow-controlled line.
pub const CONSOLE_BACKLOG: usize = 1024;

/// The emulated devices behind one lock.
pub struct Devices {
    /// The console UART.
    pub uart: Pl011,
    /// The UART's interrupt line as last given to the vGIC.
    pub uart_line: bool,
    /// Host console input the guest's UART cannot take yet (FIFO full or
    /// receiver off), at most [`CONSOLE_BACKLOG`] bytes.
    pub console_input: ConsoleInput,
    /// The synthetic PCI segment.
    pub segment: Option<Segment>,
    /// The assigned host devices' ids on the segment.
    pub assigned: Vec<FunctionId>,
}

/// A guest (one of the table, [`all`]).
pub struct Vm {
    /// Its index in the table.
    pub index: usize,
    /// Its name (console prefix, messages).
    pub name: String,
    /// Its VMID (the CPU's VTTBR_EL2 and its devices' SMMU STEs): index + 1.
    pub vmid: u16,
    /// Where everything is.
    pub layout: GuestLayout,
    /// Its stage-2 tables: guest RAM fixed at boot, BARs of assigned devices
    /// mapped and unmapped as the segment decodes them. Lock order: devices,
    /// then stage 2. Changed only on this guest's own CPUs (the TLB
    /// invalidation is by IPA for the VMID the CPU runs).
    pub stage2: Mutex<Stage2>,
    /// The vGICv3.
    pub vgic: Mutex<Vgic>,
    /// The emulated devices.
    pub devices: Mutex<Devices>,
    /// Its virtio console's port 0 (`virtio-console`), shared with the
    /// device on its segment; locked alone (never with a guest lock taken
    /// after it).
    pub console_port: Option<virtio_devs::console::ConsolePort>,
    /// vCPU power states, index = vCPU.
    pub power: Mutex<Vec<Power>>,
    /// The physical CPU (index in the hypervisor's CPU list) each vCPU runs
    /// on, index = vCPU.
    pub pcpus: Vec<usize>,
    /// Their MPIDR affinities, index = vCPU.
    pub pcpu_mpidr: Vec<u64>,
    /// Physical interrupts routed to an owner in this guest: (physical
    /// INTID, owner), fixed at boot.
    pub irq_routes: Vec<(u32, IrqOwner)>,
    /// Exit counters.
    pub stats: Counters,
    /// Exits and EL2 time by cause.
    pub times: crate::exitstats::ExitTimes,
    /// Implemented list registers.
    pub lr_count: usize,
    /// What it boots from.
    pub boot: crate::guest::Boot,
    /// Where it is in its life (`life::RUNNING`, `STOPPING`, `STOPPED`).
    pub state: core::sync::atomic::AtomicU8,
    /// How it stopped (`life::End` as u8), once stopped.
    pub end: core::sync::atomic::AtomicU8,
    /// Times it was booted again after a SYSTEM_RESET.
    pub restarts: AtomicU64,
}

impl Vm {
    /// Whether it runs (not stopping or stopped).
    #[inline]
    pub fn running(&self) -> bool {
        self.state.load(Ordering::Acquire) == crate::life::RUNNING
    }
}

/// Guest console output of one exit: at most a transmit FIFO's worth (a
/// UARTCR write that enables the transmitter sends what waited in it).
#[derive(Debug, Clone, Copy)]
pub struct TxBytes {
    buf: [u8; arch_emu::pl011::FIFO_DEPTH],
    len: usize,
}

impl Default for TxBytes {
    fn default() -> Self {
        TxBytes {
            buf: [0; arch_emu::pl011::FIFO_DEPTH],
            len: 0,
        }
    }
}

impl TxBytes {
    /// Appends a byte (dropped if full, which one exit cannot cause).
    pub fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    /// Whether no byte was pushed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

/// The guests, fixed at boot.
static VMS: Once<Vec<Vm>> = Once::new();

/// Which guest and vCPU a physical CPU runs.
#[derive(Clone, Copy)]
pub struct CpuSlot {
    /// The guest.
    pub vm: &'static Vm,
    /// Its vCPU on this CPU.
    pub vcpu: usize,
}

/// Per physical CPU (index = the CPU's, TPIDR_EL2): its guest and vCPU;
/// empty for a CPU no guest has. Set once at boot, before any guest runs.
static CPU_SLOT: [Once<CpuSlot>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

/// Makes `vms` the guest table and gives each physical CPU its guest and
/// vCPU (each guest's `pcpus`). Once, at boot.
pub fn install(vms: Vec<Vm>) -> &'static [Vm] {
    let vms = VMS.call_once(|| vms);
    for vm in vms {
        for (vcpu, &cpu) in vm.pcpus.iter().enumerate() {
            if let Some(slot) = CPU_SLOT.get(cpu) {
                slot.call_once(|| CpuSlot { vm, vcpu });
            }
        }
    }
    vms
}

/// The guest whose virtio-blk the host disk serves (`virtio-blk=host`).
pub static HOST_DISK_GUEST: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(0);

/// The guest the host disk serves, if there is one.
pub fn host_disk_guest() -> Option<&'static Vm> {
    all().get(HOST_DISK_GUEST.load(Ordering::Relaxed))
}

/// The guest and owner of host SPI `intid` (`Vm::irq_routes`), if routed.
pub fn irq_route(intid: u32) -> Option<(&'static Vm, IrqOwner)> {
    all().iter().find_map(|vm| {
        vm.irq_routes
            .iter()
            .find(|r| r.0 == intid)
            .map(|r| (vm, r.1))
    })
}

/// Every guest.
pub fn all() -> &'static [Vm] {
    VMS.get().map_or(&[], Vec::as_slice)
}

/// The guest and vCPU physical CPU `cpu` runs, if it has one.
#[inline]
pub fn on_cpu(cpu: usize) -> Option<CpuSlot> {
    CPU_SLOT.get(cpu)?.get().copied()
}

/// The synthetic segment: a root port for each assigned host device
/// (00:01.0, 00:02.0, ...) with the device below it, then empty ports (one at
/// least, and at least `min_ports` ports in all, two at least); its
/// apertures and INTx lines from the layout. Returns the segment and the
/// stable id of each assigned device, in order.
pub fn synthetic_segment(
    layout: &GuestLayout,
    assigned: Vec<Box<dyn PciFunction>>,
    min_ports: usize,
) -> Result<Option<(Segment, Vec<FunctionId>)>, String> {
    let Some(pci) = layout.pci.as_ref() else {
        return Ok(None);
    };
    let mut seg = Segment::with_bus_range(pci.segment, pci.bus_start, pci.bus_end);
    seg.set_apertures(&[pci.mem32, pci.mem64]);
    seg.set_intx_spis(pci.intx_spis);
    // MSIs reach the guest only as writes of its MBI SPIs to its doorbell.
    seg.set_msi_target(
        layout
            .msi_doorbell()
            .zip(layout.mbi)
            .map(|(d, spis)| vbus::MsiTarget {
                doorbell: Ipa(d),
                spis,
            }),
    );
    let ports = (assigned.len() + 1).max(2).max(min_ports);
    if ports > 31 {
        return Err(alloc::format!(
            "{} root ports for {} devices: at most 31 fit on bus 0 (devices 1 to 31)",
            ports,
            assigned.len()
        ));
    }
    let mut ids = Vec::new();
    let mut below = assigned.into_iter();
    for dev in 1..=ports as u8 {
        let mut port = RootPort::new(RootPortConfig {
            port_number: dev,
            slot_number: dev.into(),
            ..RootPortConfig::default()
        });
        let function = below.next();
        port.set_device_present(function.is_some());
        seg.add_bus0(dev, 0, Box::new(port))
            .map_err(|e| alloc::format!("root port 00:{dev:02x}.0: {e:?}"))?;
        if let Some(f) = function {
            ids.push(
                seg.attach_below(dev, 0, f)
                    .map_err(|e| alloc::format!("device below 00:{dev:02x}.0: {e:?}"))?,
            );
        }
    }
    Ok(Some((seg, ids)))
}

impl Vm {
    /// Moves console input towards the guest after a guest access to its
    /// UART or the host UART's interrupt (`host_interrupt`); the host console
    /// is locked only when it is to be read (see `ConsoleInput::pump`). With
    /// several guests the host input goes through the switch sequence's
    /// detector; returns whether the sequence came (the input after it is
    /// for the next guest).
    pub fn pump_console_input(&self, dev: &mut Devices, host_interrupt: bool) -> bool {
        let Devices {
            uart,
            console_input,
            ..
        } = dev;
        let mut console = console_input
            .wants_host(host_interrupt)
            .then(|| crate::console::CONSOLE.lock());
        let mut switched = false;
        match console.as_mut().and_then(|c| c.as_mut()) {
            Some(c) => match c.switching_rx() {
                Some(mut rx) => {
                    // Shared: never held back, so that the switch sequence
                    // is seen even while this guest does not read.
                    console_input.pump_shared(uart, host_interrupt, Some(&mut rx));
                    switched = rx.switched();
                }
                None => console_input.pump(uart, host_interrupt, Some(c as &mut dyn HostRx)),
            },
            None => console_input.pump(uart, host_interrupt, None),
        }
        drop(console);
        if self.console_port.is_some() {
            // The host input goes to the virtio console, which counts it.
            return switched;
        }
        self.stats
            .console_input
            .store(console_input.received, Ordering::Relaxed);
        self.stats
            .console_held
            .store(console_input.held, Ordering::Relaxed);
        self.stats
            .console_dropped
            .store(console_input.dropped, Ordering::Relaxed);
        switched
    }

    /// Re-evaluates the UART's interrupt line after an access or input
    /// (`dev` is the locked devices; the vGIC lock is taken inside).
    pub fn update_uart_line(&self, dev: &mut Devices) -> Kick {
        let level = dev.uart.irq_level();
        if level == dev.uart_line {
            return Kick::default();
        }
        dev.uart_line = level;
        self.vgic.lock().set_line(0, self.layout.uart_spi, level)
    }

    /// Emulates an MMIO access at `ipa`; `None` if nothing is there. Guest
    /// console bytes go to `tx`, to be written once no lock is held.
    /// `cause` says which device it reached.
    #[inline(always)]
    pub fn mmio(
        &self,
        ipa: u64,
        size: u8,
        write: Option<u64>,
        kick: &mut Kick,
        tx: &mut TxBytes,
        cause: &mut Cause,
    ) -> Option<u64> {
        let l = &self.layout;
        let within = |base: u64, len: u64| ipa >= base && ipa - base < len;
        let within_region = |r: MemRange<Ipa>| r.contains(Ipa(ipa));
        // The ECAM window first: configuration accesses are the most frequent
        // of these exits, and the regions never overlap (the layout places them).
        let pci = l.pci.as_ref();
        if let Some(pci) = pci {
            let ecam = pci.ecam();
            if within_region(ecam) {
                Counters::bump(&self.stats.ecam);
                *cause = Cause::Ecam;
                let off = ipa - ecam.base.0;
                let mut dev = self.devices.lock();
                let seg = dev.segment.as_mut()?;
                return Some(match write {
                    Some(v) => {
                        let effects = seg.ecam_write(off, size, v);
                        // An assigned function's MSI message or enable changed.
                        let steer = effects
                            .iter()
                            .any(|e| matches!(e, Effect::MsiMessageWritten { .. }));
                        kick.0 |= self.apply(seg, effects).0;
                        if steer {
                            self.steer_lpis(&dev, |_| true);
                        }
                        0
                    }
                    None => seg.ecam_read(off, size),
                });
            }
        }
        if within(l.gicd_base, guest_dt::GICD_SIZE) {
            Counters::bump(&self.stats.gicd);
            *cause = Cause::Gicd;
            let off = ipa - l.gicd_base;
            let mut g = self.vgic.lock();
            return Some(match write {
                Some(v) => {
                    kick.0 |= g.gicd_write(off, size, v).0;
                    // GICD_IROUTER<n> of an MBI SPI: an LPI it is fed by follows now.
                    let routed = g.mbi_range().and_then(|r| {
                        let n = u32::try_from(off.checked_sub(0x6000)? / 8).ok()?;
                        (off < 0x8000 && r.contains(n)).then_some(n)
                    });
                    drop(g);
                    if let Some(n) = routed {
                        let dev = self.devices.lock();
                        if !dev.assigned.is_empty() {
                            self.steer_lpis(&dev, |spi| spi == n);
                        }
                    }
                    0
                }
                None => g.gicd_read(off, size),
            });
        }
        if within(l.gicr_base, l.gicr().size) {
            Counters::bump(&self.stats.gicr);
            *cause = Cause::Gicr;
            let off = ipa - l.gicr_base;
            let mut g = self.vgic.lock();
            return Some(match write {
                Some(v) => {
                    kick.0 |= g.gicr_write(off, size, v).0;
                    0
                }
                None => g.gicr_read(off, size),
            });
        }
        if within(l.uart_base, guest_dt::UART_SIZE) {
            Counters::bump(&self.stats.uart);
            *cause = Cause::Uart;
            let off = ipa - l.uart_base;
            let mut dev = self.devices.lock();
            let r = match write {
                Some(v) => {
                    dev.uart.write(off, size, v as u32);
                    while let Some(b) = dev.uart.take_tx() {
                        tx.push(b);
                    }
                    0
                }
                None => u64::from(dev.uart.read(off, size)),
            };
            if self.pump_console_input(&mut dev, false) {
                crate::console::switch_focus();
            }
            kick.0 |= self.update_uart_line(&mut dev).0;
            return Some(r);
        }
        if let Some(pci) = pci {
            let in_aperture = within_region(pci.mem32) || within_region(pci.mem64);
            if in_aperture {
                Counters::bump(&self.stats.pci_mmio);
                let mut dev = self.devices.lock();
                let seg = dev.segment.as_mut()?;
                *cause = match seg.bar_region(Ipa(ipa), size) {
                    Some(vbus::BarRegion::Msix) => Cause::Msix,
                    _ => Cause::PciBar,
                };
                return match write {
                    Some(v) => {
                        let effects = seg.mmio_write(Ipa(ipa), size, v)?;
                        let table = effects
                            .iter()
                            .any(|e| matches!(e, Effect::MsiMessageWritten { .. }));
                        kick.0 |= self.apply(seg, effects).0;
                        if table {
                            self.steer_lpis(&dev, |_| true);
                        }
                        Some(0)
                    }
                    None => {
                        let (v, effects) = seg.mmio_read(Ipa(ipa), size)?;
                        kick.0 |= self.apply(seg, effects).0;
                        Some(v)
                    }
                };
            }
        }
        None
    }

    /// Steers assigned devices' LPIs: each whose vector's message names a
    /// guest SPI for which `pick(spi)` holds goes (MOVI) to the physical
    /// CPU of the vCPU that SPI is routed to (GICD_IROUTER; vCPU i runs on
    /// the guest's i-th CPU), so the next message arrives where the guest takes it. A
    /// vCPU that is not on (PSCI OFF or ON_PENDING) gets nothing: the LPI
    /// stays where it is (its CPU still takes it, parked or not, and
    /// forwards it) and follows when that vCPU starts
    /// ([`Vm::steer_all_lpis`] from `exits::park`). Called after a GICD_IROUTER write of an SPI
    /// in the MBI range and after a write of an assigned MSI-X table or MSI
    /// capability.
    /// Lock order: devices (held by the caller), then vGIC, then power.
    pub fn steer_lpis(&self, dev: &Devices, pick: impl Fn(u32) -> bool) {
        let Some(seg) = dev.segment.as_ref() else {
            return;
        };
        let lpis = crate::its::assigned_lpis(self.index);
        if lpis.is_empty() {
            return;
        }
        let fed: Vec<(u32, u32, usize)> = lpis
            .into_iter()
            .filter_map(|(intid, device, event, cpu)| {
                let id = *dev.assigned.get(usize::from(device))?;
                let spi = seg.host_msi_spi(id, event)?;
                pick(spi).then_some((intid, spi, cpu))
            })
            .collect();
        if fed.is_empty() {
            return;
        }
        let targets: Vec<(u32, usize, Option<usize>)> = {
            let g = self.vgic.lock();
            fed.iter()
                .map(|&(intid, spi, cpu)| (intid, cpu, g.spi_target(spi)))
                .collect()
        };
        let power: Vec<Power> = self.power.lock().clone();
        for (intid, now, target) in targets {
            let Some((t, cpu)) = target
                .and_then(|t| Some((t, *self.pcpus.get(t)?)))
                .filter(|&(_, cpu)| cpu != now)
            else {
                continue;
            };
            if power.get(t) != Some(&Power::On) {
                Counters::bump(&self.stats.lpi_held);
                log::debug!("LPI {intid}: stays on CPU {now}: vCPU {t} is off");
                continue;
            }
            match crate::its::move_lpi(intid, cpu) {
                Ok(true) => Counters::bump(&self.stats.lpi_moves),
                Ok(false) => {}
                Err(e) => log::debug!("LPI {intid}: MOVI to CPU {cpu}: {e}"),
            }
        }
    }

    /// [`Vm::steer_lpis`] for every SPI (a vCPU came on).
    pub fn steer_all_lpis(&self) {
        if crate::its::assigned_lpis(self.index).is_empty() {
            return;
        }
        let dev = self.devices.lock();
        self.steer_lpis(&dev, |_| true);
    }

    /// Applies the segment's effects (`seg` is the locked devices' segment):
    /// stage 2 for host-backed BARs, resets, INTx lines of emulated functions.
    /// A reset's own effects (its BARs unmapped) are applied in turn.
    #[inline(always)]
    pub fn apply(&self, seg: &mut Segment, effects: Effects) -> Kick {
        // Most accesses have none: no call.
        if effects.is_empty() {
            return Kick::default();
        }
        self.apply_effects(seg, effects)
    }

    /// [`Vm::apply`] for a non-empty list.
    #[inline(never)]
    fn apply_effects(&self, seg: &mut Segment, effects: Effects) -> Kick {
        let mut kick = Kick::default();
        let mut pending = effects;
        // A reset yields unmaps and INTx changes, never another reset: two rounds at most.
        for _ in 0..2 {
            let mut next = Effects::new();
            for e in pending {
                log::debug!("pci: {e}");
                match e {
                    Effect::Map {
                        function,
                        bar,
                        guest,
                        backing: BarBacking::Host(pa),
                        prefetchable,
                    } => {
                        // The pages the function traps (an MSI-X table and
                        // PBA) stay unmapped: the segment routes them.
                        let traps = seg
                            .function(function)
                            .map(|f| f.bar_traps(bar).to_vec())
                            .unwrap_or_default();
                        let mut at = 0u64;
                        for (off, len) in traps.into_iter().chain([(guest.size, 0)]) {
                            let off = off.min(guest.size);
                            if off > at {
                                let piece = MemRange::new(Ipa(guest.base.0 + at), off - at);
                                self.map_bar(piece, Pa(pa.0 + at), prefetchable);
                            }
                            at = at.max(off.saturating_add(len).min(guest.size));
                        }
                    }
                    Effect::Unmap {
                        guest,
                        backing: BarBacking::Host(_),
                        ..
                    } => self.unmap_bar(guest),
                    // Trapped BARs are routed by the segment; stage 2 leaves them unmapped.
                    Effect::Map { .. } | Effect::Unmap { .. } => {}
                    Effect::Reset { function } => next.extend(seg.reset_function(function)),
                    Effect::Intx { spi, level, .. } => {
                        kick.0 |= self.vgic.lock().set_line(0, spi, level).0;
                    }
                    // The segment checked doorbell and range; the vGIC checks
                    // the range again and counts a refusal (mbi_rejected).
                    Effect::Msi { spi, .. } => {
                        if let Some(k) = self.vgic.lock().mbi_set(spi) {
                            kick.0 |= k.0;
                        }
                    }
                    // The caller, which holds the devices, steers the LPIs.
                    Effect::MsiMessageWritten { .. } => {}
                }
            }
            if next.is_empty() {
                break;
            }
            pending = next;
        }
        kick
    }

    fn map_bar(&self, guest: MemRange<Ipa>, pa: Pa, prefetchable: bool) {
        let attr = if prefetchable {
            S2Attr::NormalNonCacheable
        } else {
            S2Attr::Device
        };
        Counters::bump(&self.stats.stage2_changes);
        if let Err(e) = self.stage2.lock().map(guest, pa, attr) {
            Counters::bump(&self.stats.stage2_errors);
            log::debug!("stage 2: map {guest} -> {pa}: {e}");
        }
    }

    fn unmap_bar(&self, guest: MemRange<Ipa>) {
        Counters::bump(&self.stats.stage2_changes);
        if let Err(e) = self.stage2.lock().unmap(guest) {
            Counters::bump(&self.stats.stage2_errors);
            log::debug!("stage 2: unmap {guest}: {e}");
        }
    }
}

/// Logs `vm`'s exit counters (with how it ended), vGIC, exits by cause,
/// segment and MSI statistics at shutdown. With `several` guests each line
/// names it.
pub fn log_stats(vm: &Vm, several: bool) {
    let s = vm.stats.snapshot();
    let v = vm.vgic.try_lock().map(|g| g.stats()).unwrap_or_default();
    let who = if several {
        alloc::format!("guest {}", vm.name)
    } else {
        String::from("guest")
    };
    let tag = if several {
        alloc::format!("guest {}: ", vm.name)
    } else {
        String::new()
    };
    log::info!(
        "{who} {}: exits gicd {} gicr {} uart {} ecam {} unclaimed {} no-syndrome {} (aborts injected {}) s1ptw {} hvc {} smc {} (psci errors {}) sgi {} id-regs {} sysreg {} irq {} (storms {}) other {}; console input {} bytes (held back {} times, dropped {} bytes)",
        crate::life::end_of(vm).name(),
        s.gicd, s.gicr, s.uart, s.ecam, s.unclaimed_mmio, s.no_syndrome, s.injected_aborts, s.s1ptw_aborts, s.hvc, s.smc, s.psci_errors, s.sgi,
        s.id_regs, s.sysreg_other, s.irq, s.irq_storms, s.other, s.console_input, s.console_held, s.console_dropped
    );
    log::info!("{tag}vgic: {v:?}");
    if let Some(c) = vm.console_port.as_ref().and_then(|p| p.try_stats()) {
        log::info!(
            "{tag}virtio-console: sent {} bytes (dropped {}), received {} bytes (dropped {}), refused chains {}",
            c.tx_bytes,
            c.tx_dropped,
            c.rx_bytes,
            c.rx_dropped,
            c.bad_chains
        );
    }
    vm.times.log(&tag);
    let segment = vm
        .devices
        .try_lock()
        .and_then(|d| d.segment.as_ref().map(|s| s.stats()));
    log::info!(
        "{tag}pci: aperture traps {} stage-2 changes {} (failed {}); unrouted physical interrupts {}; segment {segment:?}",
        s.pci_mmio,
        s.stage2_changes,
        s.stage2_errors,
        s.irq_unrouted
    );
    if s.irq_dropped > 0 {
        log::info!(
            "{tag}interrupts dropped while it was stopped: {}",
            s.irq_dropped
        );
    }
    log_msi_stats(vm, &tag);
}

/// Logs, per function of the segment with MSI activity, an MSI-X table or
/// a routed MSI capability, its messages delivered and forged and its
/// table's and capability's counters (at shutdown; skipped if the devices
/// are locked). Each line starts with `tag`.
pub fn log_msi_stats(vm: &Vm, tag: &str) {
    let Some(dev) = vm.devices.try_lock() else {
        return;
    };
    let Some(seg) = dev.segment.as_ref() else {
        return;
    };
    if !dev.assigned.is_empty() {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        log::info!(
            "{tag}lpi steering: moves {}, held for a powered-off vCPU {}, taken away from the target's CPU {}",
            n(&vm.stats.lpi_moves),
            n(&vm.stats.lpi_held),
            n(&vm.stats.lpi_elsewhere)
        );
    }
    for (bdf, id) in seg.enumerate_ids() {
        let msi = seg.msi_stats(id).unwrap_or_default();
        let table = seg.function(id).and_then(|f| f.msix_stats());
        let capability = seg.function(id).and_then(|f| f.msi_capability_stats());
        if msi == vbus::MsiStats::default() && table.is_none() && capability.is_none() {
            continue;
        }
        let t = table.unwrap_or_default();
        log::info!(
            "{tag}msi {bdf}: delivered {} forged {}; msi-x sent {} masked-pending {} spurious {} bad accesses {} forged entries {}",
            msi.delivered,
            msi.forged,
            t.sent,
            t.masked_pending,
            t.spurious,
            t.bad_access,
            t.forged_entries
        );
        if let Some(c) = capability {
            log::info!(
                "{tag}msi capability {bdf}: sent {} masked-pending {} spurious {} while disabled {} forged messages {} enabled with msi-x {}",
                c.sent,
                c.masked_pending,
                c.spurious,
                c.disabled,
                c.forged_messages,
                c.both_enabled
            );
        }
    }
}

//! The host's GICv3 ITSs, owned by the hypervisor: host devices' MSIs
//! become physical LPIs taken at EL2 and handed to their owner.
//!
//! QEMU's GICv3 has no message-based SPIs (GICD_TYPER.MBIS = 0), so a host
//! device's MSI can only reach the hypervisor through an ITS: the device
//! writes its EventID to GITS_TRANSLATER ([`doorbell`]), the interconnect
//! adds its DeviceID (the host DT's `msi-map`, or `msi-parent` with the
//! Requester ID), and the ITS translates (DeviceID, EventID) to an LPI of a
//! collection, i.e. of one physical CPU's redistributor.
//!
//! What this module owns (encodings in [`arch_emu::its`], IHI 0069 5.1-5.3):
//! * Set-up ([`init`], boot CPU, once): the LPI configuration table shared
//!   by every redistributor and one pending table per physical CPU
//!   (GICR_PROPBASER, GICR_PENDBASER, GICR_CTLR.EnableLPIs); per ITS the
//!   device and collection tables (from what each GITS_BASER<n> says it
//!   holds, two-level when the ITS offers it), the command queue, and one
//!   collection per physical CPU (ICID = CPU index, MAPC by redistributor
//!   address or processor number per GITS_TYPER.PTA).
//! * The API, per (ITS, host DeviceID, EventID) → [`LpiOwner`]:
//!   [`map_device`] (MAPD with an ITT sized for the device's events, once
//!   per device), [`map_event`] (an LPI allocated, its configuration byte
//!   enabled, MAPTI, INV, SYNC: returns the INTID), [`retarget`] (MOVI to
//!   another CPU's collection, SYNC), [`unmap_event`] (DISCARD, the LPI
//!   freed) and [`take`] for the IRQ exit. An assigned device's MSI-X
//!   vectors use the same calls with [`LpiOwner::Assigned`]; `vm::Vm::steer_lpis`
//!   moves each (MOVI) when the guest routes the SPI its vector feeds
//!   (GICD_IROUTER) or rewrites its table, never to a powered-off vCPU's CPU.
//! * The command queue: each command written, GITS_CWRITER advanced, and
//!   completion awaited with a bound on polls without GITS_CREADR progress;
//!   GITS_CREADR.Stalled is reported naming the refused command, which is
//!   then replaced by a SYNC and retried (GITS_CWRITER.Retry) so the queue
//!   moves on. Nothing spins forever.
//!
//! LPIs have no active state: the IRQ exit only drops priority (EOI).

use alloc::alloc::{alloc_zeroed, Layout};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use arch_emu::its::{
    self as enc, baser, ctlr, lpi, reg, Command, CommandRing, PageSize, QueueError, RangeError,
    RdBase, TablePlan, TableType, Typer,
};

use crate::sysreg::{clean_dcache_range, dsb_sy};

/// Who an LPI belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpiOwner {
    /// The host disk's MSI-X (`host-disk=`): its completions are popped at
    /// EL2 (`hostdisk::handle_irq`).
    HostDisk,
    /// The boot self-test's event (`its-selftest`): [`selftest_taken`].
    SelfTest,
    /// An assigned device's MSI-X or MSI vector: `guest` is the owning
    /// guest's index in the guest table (`vm::all`), `device` indexes its
    /// assigned functions (`vm::Devices::assigned`), `event` is the
    /// EventID its device table entry or MSI data names
    /// (`passthrough::EventIds`: MSI-X vector v is v, MSI vector v
    /// `msi_base + v`).
    Assigned {
        /// The owning guest's index (`vm::Vm::index`).
        guest: u16,
        /// Index in `vm::Devices::assigned`.
        device: u16,
        /// The EventID.
        event: u32,
    },
}

/// Why an ITS operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItsError {
    /// The command queue did not complete (stall named, or no progress).
    Queue(QueueError),
    /// A DeviceID, EventID or ICID out of the ITS's range.
    Range(RangeError),
    /// A DeviceID beyond what the device table was sized for.
    DeviceTable(u32),
    /// The device was not mapped with [`map_device`].
    UnknownDevice(u32),
    /// The (DeviceID, EventID) is already mapped, or not mapped.
    Event(&'static str),
    /// Every LPI is taken.
    NoLpi,
    /// A CPU index without a collection.
    NoCollection(usize),
    /// The heap could not hold a table.
    OutOfMemory,
    /// No such ITS, or LPIs are not set up.
    NoIts,
    /// The hardware does not do what the driver needs.
    Unsupported(&'static str),
}

impl core::fmt::Display for ItsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ItsError::Queue(e) => write!(f, "command queue: {e}"),
            ItsError::Range(e) => write!(f, "{e}"),
            ItsError::DeviceTable(d) => write!(f, "DeviceID {d:#x} beyond the device table"),
            ItsError::UnknownDevice(d) => write!(f, "DeviceID {d:#x} is not mapped (MAPD)"),
            ItsError::Event(w) => write!(f, "event {w}"),
            ItsError::NoLpi => write!(f, "no free LPI"),
            ItsError::NoCollection(c) => write!(f, "CPU {c} has no collection"),
            ItsError::OutOfMemory => write!(f, "out of heap memory for its tables"),
            ItsError::NoIts => write!(f, "no ITS with LPIs set up"),
            ItsError::Unsupported(w) => write!(f, "{w}"),
        }
    }
}

impl From<QueueError> for ItsError {
    fn from(e: QueueError) -> Self {
        ItsError::Queue(e)
    }
}

impl From<RangeError> for ItsError {
    fn from(e: RangeError) -> Self {
        ItsError::Range(e)
    }
}

/// INTID bits of the LPI tables: 8192 LPIs (INTIDs 8192..16383), far more
/// than the host devices need, in an 8 KiB configuration table.
const LPI_ID_BITS: u32 = 14;
/// The priority of every LPI (as the GIC driver gives its SPIs).
const LPI_PRIORITY: u8 = 0xa0;
/// Command queue size: 128 commands.
const CMDQ_BYTES: u64 = 4096;
/// Polls of GITS_CREADR (or GITS_CTLR.Quiescent) without progress before
/// giving up.
const MAX_IDLE_POLLS: u32 = 1_000_000;

fn rd32(a: usize) -> u32 {
    // SAFETY: `a` is inside an ITS's register frame that the host DT names,
    // identity-mapped as Device memory by the EL2 tables; no one else drives it.
    unsafe { core::ptr::read_volatile(a as *const u32) }
}
fn wr32(a: usize, v: u32) {
    // SAFETY: as for `rd32`.
    unsafe { core::ptr::write_volatile(a as *mut u32, v) }
}
fn rd64(a: usize) -> u64 {
    // SAFETY: as for `rd32`; GITS_TYPER, GITS_BASER<n>, GITS_CBASER,
    // GITS_CWRITER and GITS_CREADR take 64-bit accesses (IHI 0069 12.19).
    unsafe { core::ptr::read_volatile(a as *const u64) }
}
fn wr64(a: usize, v: u64) {
    // SAFETY: as for `rd64`.
    unsafe { core::ptr::write_volatile(a as *mut u64, v) }
}

/// Zeroed heap memory of `bytes`, aligned to `align` (a power of two); its
/// address is its physical address (EL2 maps the heap identity). Never
/// freed: the GIC owns it for good.
fn alloc_table(bytes: u64, align: u64) -> Result<usize, ItsError> {
    let size = usize::try_from(bytes.max(1)).map_err(|_| ItsError::OutOfMemory)?;
    let align = usize::try_from(align).map_err(|_| ItsError::OutOfMemory)?;
    let layout = Layout::from_size_align(size, align).map_err(|_| ItsError::OutOfMemory)?;
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc_zeroed(layout) };
    if p.is_null() {
        return Err(ItsError::OutOfMemory);
    }
    Ok(p as usize)
}

/// Writes the 64-bit word `i` of the table at `base`.
fn put(base: usize, i: usize, v: u64) {
    // SAFETY: `base` is a table or queue from `alloc_table`, `i` within its size
    // (the callers index it by the layout they allocated it for).
    unsafe { (base as *mut u64).add(i).write_volatile(v) }
}

/// Reads the 64-bit word `i` of the table at `base`.
fn get(base: usize, i: usize) -> u64 {
    // SAFETY: as for `put`.
    unsafe { (base as *const u64).add(i).read_volatile() }
}

/// The LPIs, shared by every redistributor: the configuration table and
/// who owns each LPI.
struct Lpis {
    /// The configuration table (one byte per LPI).
    config: usize,
    /// Whether the redistributors snoop CPU caches reading it.
    coherent: bool,
    /// How many LPIs the tables cover.
    count: u32,
    /// Taken LPIs: INTID → route.
    routes: BTreeMap<u32, Route>,
    /// Where the next allocation search starts (LPI index).
    next: u32,
}

/// An LPI's route.
#[derive(Debug, Clone, Copy)]
struct Route {
    owner: LpiOwner,
    its: usize,
    device_id: u32,
    event_id: u32,
    /// The CPU (index = ICID) whose collection it is in.
    cpu: usize,
    /// Times taken.
    taken: u64,
}

impl Lpis {
    fn allocate(&mut self) -> Option<u32> {
        let (start, count) = (self.next, self.count);
        let i = (0..count)
            .map(|k| (start + k) % count)
            .find(|i| !self.routes.contains_key(&(enc::FIRST_LPI + i)))?;
        self.next = (i + 1) % count;
        Some(enc::FIRST_LPI + i)
    }

    /// Writes LPI `intid`'s configuration byte.
    fn configure(&mut self, intid: u32, enable: bool) {
        let i = (intid - enc::FIRST_LPI) as usize;
        let byte = self.config + i;
        // SAFETY: `i < count`, the table's size; the byte belongs to the
        // redistributors, which only read it (after INV).
        unsafe { (byte as *mut u8).write_volatile(lpi::config_byte(LPI_PRIORITY, enable)) };
        if !self.coherent {
            clean_dcache_range(byte, 1);
        }
        dsb_sy();
    }
}

/// The device table (GITS_BASER of type Devices).
struct DeviceTable {
    plan: TablePlan,
    base: usize,
}

/// A mapped device: its ITT and events.
struct Device {
    event_bits: u32,
    /// EventID → LPI INTID.
    events: BTreeMap<u32, u32>,
}

/// One ITS.
pub struct Its {
    /// Its DT node.
    pub node: String,
    base: usize,
    typer: Typer,
    ring: CommandRing,
    cmdq: usize,
    coherent: bool,
    devices: DeviceTable,
    mapped: BTreeMap<u32, Device>,
    /// Collection i (ICID i) targets physical CPU i.
    collections: Vec<RdBase>,
}

impl Its {
    /// Takes the ITS at `regs`: disabled and quiescent, tables sized from
    /// its GITS_BASER<n>, the command queue set, enabled, one collection
    /// per redistributor in `rds` (index = CPU index).
    fn init(node: &str, base: u64, rds: &[crate::gic::LpiRedistributor]) -> Result<Its, ItsError> {
        let b = base as usize;
        let typer = Typer(rd64(b + reg::GITS_TYPER));
        if !typer.physical() {
            return Err(ItsError::Unsupported(
                "GITS_TYPER.Physical = 0: no physical LPIs",
            ));
        }
        wr32(
            b + reg::GITS_CTLR,
            rd32(b + reg::GITS_CTLR) & !ctlr::ENABLED,
        );
        let mut n = 0u32;
        while rd32(b + reg::GITS_CTLR) & ctlr::QUIESCENT == 0 {
            n += 1;
            if n > MAX_IDLE_POLLS {
                return Err(ItsError::Unsupported(
                    "GITS_CTLR.Quiescent never set after disabling",
                ));
            }
            core::hint::spin_loop();
        }
        let ncpus = rds.len() as u32;
        let cpu_bits = (32 - ncpus.saturating_sub(1).leading_zeros()).max(1);
        let mut devices = None;
        let mut coherent = true;
        for i in 0..reg::GITS_BASER_COUNT {
            let at = b + reg::GITS_BASER0 + 8 * i;
            let prev = rd64(at);
            let (bits, indirect_ok) = match baser::table_type(prev) {
                TableType::Devices => (typer.device_id_bits(), true),
                TableType::Collections => {
                    typer.check_collection(ncpus.saturating_sub(1))?;
                    (cpu_bits, false)
                }
                TableType::Unimplemented => continue,
                // vPEs (GICv4) and reserved types: not used, left invalid.
                _ => continue,
            };
            let entry = baser::entry_size(prev);
            let (plan, table, v) = program_baser(at, prev, bits, entry, indirect_ok)?;
            coherent &= baser::shareability(v) != 0;
            if baser::table_type(prev) == TableType::Devices {
                devices = Some(DeviceTable { plan, base: table });
            }
        }
        let devices = devices.ok_or(ItsError::Unsupported(
            "no GITS_BASER<n> holds the device table",
        ))?;
        let cmdq = alloc_table(CMDQ_BYTES, 64 << 10)?;
        wr64(
            b + reg::GITS_CBASER,
            enc::cbaser(cmdq as u64, CMDQ_BYTES / 4096),
        );
        coherent &= enc::cbaser_shareability(rd64(b + reg::GITS_CBASER)) != 0;
        wr64(b + reg::GITS_CWRITER, enc::cwriter::encode(0));
        if !coherent {
            clean_dcache_range(cmdq, CMDQ_BYTES as usize);
        }
        dsb_sy();
        wr32(b + reg::GITS_CTLR, rd32(b + reg::GITS_CTLR) | ctlr::ENABLED);
        if rd32(b + reg::GITS_CTLR) & ctlr::ENABLED == 0 {
            return Err(ItsError::Unsupported("GITS_CTLR.Enabled does not stick"));
        }
        let collections: Vec<RdBase> = rds
            .iter()
            .map(|r| {
                if typer.pta() {
                    RdBase::Address(r.frame)
                } else {
                    RdBase::Processor(r.processor)
                }
            })
            .collect();
        let mut its = Its {
            node: String::from(node),
            base: b,
            typer,
            ring: CommandRing::new(CMDQ_BYTES),
            cmdq,
            coherent,
            devices,
            mapped: BTreeMap::new(),
            collections,
        };
        for icid in 0..its.collections.len() {
            let rd = its.collections[icid];
            its.command(Command::Mapc {
                icid: icid as u16,
                rd,
                valid: true,
            })?;
            its.command(Command::Invall { icid: icid as u16 })?;
            its.command(Command::Sync { rd })?;
        }
        its.wait()?;
        Ok(its)
    }

    /// Queues one command (waiting, bounded, for room).
    fn command(&mut self, c: Command) -> Result<(), ItsError> {
        let mut idle = 0u32;
        let mut last = u64::MAX;
        loop {
            let r = rd64(self.base + reg::GITS_CREADR);
            if r & enc::creadr::STALLED != 0 {
                return Err(self.stalled(enc::creadr::offset(r)));
            }
            let read = enc::creadr::offset(r);
            if self.ring.has_room(read) {
                break;
            }
            if read == last {
                idle += 1;
                if idle > MAX_IDLE_POLLS {
                    return Err(QueueError::NoProgress {
                        creadr: read,
                        cwriter: self.ring.write_offset(),
                    }
                    .into());
                }
            } else {
                last = read;
                idle = 0;
            }
            core::hint::spin_loop();
        }
        let at = self.ring.push() as usize;
        for (k, w) in c.encode().iter().enumerate() {
            put(self.cmdq, at / 8 + k, *w);
        }
        if !self.coherent {
            clean_dcache_range(self.cmdq + at, enc::COMMAND_BYTES as usize);
        }
        dsb_sy();
        wr64(
            self.base + reg::GITS_CWRITER,
            enc::cwriter::encode(self.ring.write_offset()),
        );
        Ok(())
    }

    /// Waits (bounded) until the ITS consumed every queued command.
    fn wait(&mut self) -> Result<(), ItsError> {
        let base = self.base;
        let cmdq = self.cmdq;
        let r = enc::wait_consumed(
            &self.ring,
            self.ring.write_offset(),
            || {
                core::hint::spin_loop();
                rd64(base + reg::GITS_CREADR)
            },
            |off| enc::command_name(get(cmdq, off as usize / 8)),
            MAX_IDLE_POLLS,
        );
        match r {
            Err(QueueError::Stalled { offset, .. }) => Err(self.stalled(offset)),
            r => r.map_err(ItsError::from),
        }
    }

    /// The queue stalled at `offset`: names the refused command, replaces
    /// it with a SYNC (harmless) and retries, so later commands run.
    fn stalled(&mut self, offset: u64) -> ItsError {
        let i = offset as usize / 8;
        let command = enc::command_name(get(self.cmdq, i));
        log::error!(
            "ITS {}: command {command} at queue offset {offset:#x} refused (GITS_CREADR.Stalled)",
            self.node
        );
        if let Some(&rd) = self.collections.first() {
            for (k, w) in (Command::Sync { rd }).encode().iter().enumerate() {
                put(self.cmdq, i + k, *w);
            }
            if !self.coherent {
                clean_dcache_range(self.cmdq + offset as usize, enc::COMMAND_BYTES as usize);
            }
            dsb_sy();
            wr64(
                self.base + reg::GITS_CWRITER,
                enc::cwriter::encode(self.ring.write_offset()) | enc::cwriter::RETRY,
            );
        }
        ItsError::Queue(QueueError::Stalled { command, offset })
    }

    /// Makes sure the device table has an entry for `device_id` (a level-2
    /// page for it in a two-level table).
    fn device_entry(&mut self, device_id: u32) -> Result<(), ItsError> {
        let t = &self.devices;
        if u64::from(device_id) >= t.plan.ids() {
            return Err(ItsError::DeviceTable(device_id));
        }
        if !t.plan.indirect {
            return Ok(());
        }
        let l1 = (u64::from(device_id) / t.plan.entries_per_page) as usize;
        if get(t.base, l1) & baser::VALID != 0 {
            return Ok(());
        }
        let page = t.plan.page.bytes();
        let l2 = alloc_table(page, page)?;
        if !self.coherent {
            clean_dcache_range(l2, page as usize);
        }
        // Level-1 entry: Valid, bit 63; the level-2 page's address (5.2.1).
        put(t.base, l1, baser::VALID | l2 as u64);
        if !self.coherent {
            clean_dcache_range(t.base + l1 * 8, 8);
        }
        dsb_sy();
        Ok(())
    }
}

/// Programs GITS_BASER<n> at `at` for IDs of `bits` bits, trying 4 KiB, 16
/// KiB then 64 KiB pages (the first the ITS keeps) and two-level when
/// offered and needed. Returns the plan, the table and the value read back.
fn program_baser(
    at: usize,
    prev: u64,
    bits: u32,
    entry: u64,
    indirect_ok: bool,
) -> Result<(TablePlan, usize, u64), ItsError> {
    for page in [PageSize::K4, PageSize::K16, PageSize::K64] {
        for indirect in [indirect_ok, false] {
            let Some(plan) = enc::plan_table(bits, entry, page, indirect) else {
                continue;
            };
            let bytes = plan.pages * page.bytes();
            let table = alloc_table(bytes, page.bytes())?;
            let v = baser::encode(prev, table as u64, page, plan.pages, plan.indirect);
            wr64(at, v);
            let back = rd64(at);
            let kept = baser::page_size(back) == page
                && ((back & baser::INDIRECT != 0) == plan.indirect)
                && back & baser::VALID != 0;
            if kept {
                if baser::shareability(back) == enc::attr::NON_SHAREABLE {
                    clean_dcache_range(table, bytes as usize);
                }
                return Ok((plan, table, back));
            }
            wr64(at, prev & !baser::VALID);
            if let Ok(l) = Layout::from_size_align(bytes as usize, page.bytes() as usize) {
                // SAFETY: allocated just above with this layout; the ITS
                // refused it (the register is invalid again), no one else has it.
                unsafe { alloc::alloc::dealloc(table as *mut u8, l) };
            }
        }
    }
    Err(ItsError::Unsupported(
        "GITS_BASER<n> keeps no page size the driver offers",
    ))
}

static LPIS: spin::Once<spin::Mutex<Lpis>> = spin::Once::new();
static ITSS: spin::Once<Vec<spin::Mutex<Its>>> = spin::Once::new();
/// LPIs taken, all owners.
static TAKEN: AtomicU64 = AtomicU64::new(0);

/// Boot CPU, once, after the GIC's distributor set-up: LPIs on in every
/// physical CPU's redistributor (`cpus`: MPIDR affinities, index = CPU
/// index = ICID), then every ITS of `plat` taken. Logs one line per ITS;
/// an ITS that fails is reported and left unused (its devices keep INTx).
/// Nothing happens without an ITS.
pub fn init(plat: &platform::Platform, gic: &crate::gic::Gic, cpus: &[u64]) {
    if plat.its.is_empty() {
        return;
    }
    let rds = match init_lpis(gic, cpus) {
        Ok(r) => r,
        Err(e) => {
            log::error!("LPIs: {e}: host MSIs through the ITS are off");
            return;
        }
    };
    let mut all = Vec::new();
    for (i, s) in plat.its.iter().enumerate() {
        match Its::init(&s.node, s.regs.base, &rds) {
            Ok(its) => {
                log::info!(
                    "ITS #{i} {} at {:#x}: DeviceID {} bits, EventID {} bits, ITT entry {} bytes, {} device table ({} IDs), {} collections by {}, LPIs {}..{}",
                    s.node,
                    s.regs.base,
                    its.typer.device_id_bits(),
                    its.typer.event_id_bits(),
                    its.typer.itt_entry_size(),
                    if its.devices.plan.indirect { "2-level" } else { "flat" },
                    its.devices.plan.ids(),
                    its.collections.len(),
                    if its.typer.pta() { "address" } else { "processor number" },
                    enc::FIRST_LPI,
                    enc::FIRST_LPI + lpi::count(LPI_ID_BITS) - 1,
                );
                all.push(spin::Mutex::new(its));
            }
            Err(e) => log::error!("ITS {}: {e}: not used", s.node),
        }
    }
    if !all.is_empty() {
        ITSS.call_once(|| all);
    }
}

/// The configuration table, and every CPU's pending table and EnableLPIs.
fn init_lpis(
    gic: &crate::gic::Gic,
    cpus: &[u64],
) -> Result<Vec<crate::gic::LpiRedistributor>, String> {
    use alloc::format;
    let typer = gic.typer();
    if typer & enc::gicd_typer::LPIS == 0 {
        return Err(String::from("GICD_TYPER.LPIS = 0"));
    }
    let id_bits = lpi::id_bits(enc::gicd_typer::id_bits(typer), LPI_ID_BITS)
        .ok_or_else(|| String::from("GICD_TYPER.IDbits leaves no room for LPIs"))?;
    let config_bytes = lpi::config_table_bytes(id_bits);
    let config = alloc_table(config_bytes, lpi::CONFIG_ALIGN).map_err(|e| format!("{e}"))?;
    let pend_bytes = lpi::pending_table_bytes(id_bits);
    let propbaser = lpi::propbaser(config as u64, id_bits);
    let mut rds = Vec::new();
    let mut coherent = true;
    // The redistributors may read the tables before any cache write-back.
    clean_dcache_range(config, config_bytes as usize);
    for &aff in cpus {
        let pending = alloc_table(pend_bytes, lpi::PENDING_ALIGN).map_err(|e| format!("{e}"))?;
        clean_dcache_range(pending, pend_bytes as usize);
        let r = gic
            .enable_lpis(aff, propbaser, pending as u64)
            .map_err(|e| format!("CPU {aff:#x}: {e}"))?;
        coherent &= r.shareable;
        rds.push(r);
    }
    LPIS.call_once(|| {
        spin::Mutex::new(Lpis {
            config,
            coherent,
            count: lpi::count(id_bits),
            routes: BTreeMap::new(),
            next: 0,
        })
    });
    Ok(rds)
}

fn with_its<R>(its: usize, f: impl FnOnce(&mut Its) -> R) -> Result<R, ItsError> {
    let m = ITSS.get().and_then(|a| a.get(its)).ok_or(ItsError::NoIts)?;
    Ok(f(&mut m.lock()))
}

/// Whether ITS `its` was taken (and LPIs are on).
pub fn present(its: usize) -> bool {
    ITSS.get().is_some_and(|a| a.get(its).is_some())
}

/// GITS_TRANSLATER's physical address: what a device of ITS `its` writes
/// its EventID to (its MSI address).
pub fn doorbell(its: usize) -> Result<u64, ItsError> {
    with_its(its, |s| s.base as u64 + reg::GITS_TRANSLATER)
}

/// MAPD: gives `device_id` an ITT for `events` EventIDs (0..events).
/// Idempotent for a device already mapped with at least that many.
pub fn map_device(its: usize, device_id: u32, events: u32) -> Result<(), ItsError> {
    with_its(its, |s| {
        s.typer.check_device_id(device_id)?;
        let event_bits = s.typer.itt_event_bits(events)?;
        if let Some(d) = s.mapped.get(&device_id) {
            return if d.event_bits >= event_bits {
                Ok(())
            } else {
                Err(ItsError::Event(
                    "count beyond the device's ITT (unmap it first)",
                ))
            };
        }
        s.device_entry(device_id)?;
        let bytes = s.typer.itt_bytes(event_bits);
        let itt = alloc_table(bytes, enc::ITT_ALIGN)?;
        if !s.coherent {
            clean_dcache_range(itt, bytes as usize);
        }
        s.command(Command::Mapd {
            device_id,
            itt: itt as u64,
            event_bits,
            valid: true,
        })?;
        let rd = *s.collections.first().ok_or(ItsError::NoCollection(0))?;
        s.command(Command::Sync { rd })?;
        s.wait()?;
        s.mapped.insert(
            device_id,
            Device {
                event_bits,
                events: BTreeMap::new(),
            },
        );
        Ok(())
    })?
}

/// Maps (`device_id`, `event_id`) of ITS `its` to a fresh LPI owned by
/// `owner`, delivered to physical CPU `cpu` (index): the LPI's
/// configuration byte enabled, MAPTI, INV, SYNC. Returns the LPI's INTID.
pub fn map_event(
    its: usize,
    device_id: u32,
    event_id: u32,
    owner: LpiOwner,
    cpu: usize,
) -> Result<u32, ItsError> {
    let lpis = LPIS.get().ok_or(ItsError::NoIts)?;
    with_its(its, |s| {
        let d = s
            .mapped
            .get(&device_id)
            .ok_or(ItsError::UnknownDevice(device_id))?;
        enc::check_event_id(event_id, d.event_bits)?;
        if d.events.contains_key(&event_id) {
            return Err(ItsError::Event("already mapped"));
        }
        let rd = *s.collections.get(cpu).ok_or(ItsError::NoCollection(cpu))?;
        let intid = {
            let mut l = lpis.lock();
            let intid = l.allocate().ok_or(ItsError::NoLpi)?;
            l.configure(intid, true);
            l.routes.insert(
                intid,
                Route {
                    owner,
                    its,
                    device_id,
                    event_id,
                    cpu,
                    taken: 0,
                },
            );
            intid
        };
        let r = (|| {
            s.command(Command::Mapti {
                device_id,
                event_id,
                intid,
                icid: cpu as u16,
            })?;
            s.command(Command::Inv {
                device_id,
                event_id,
            })?;
            s.command(Command::Sync { rd })?;
            s.wait()
        })();
        if let Err(e) = r {
            let mut l = lpis.lock();
            l.configure(intid, false);
            l.routes.remove(&intid);
            return Err(e);
        }
        if let Some(d) = s.mapped.get_mut(&device_id) {
            d.events.insert(event_id, intid);
        }
        Ok(intid)
    })?
}

/// MOVI: (`device_id`, `event_id`)'s LPI goes to physical CPU `cpu`'s
/// collection from now on.
pub fn retarget(its: usize, device_id: u32, event_id: u32, cpu: usize) -> Result<(), ItsError> {
    with_its(its, |s| {
        let d = s
            .mapped
            .get(&device_id)
            .ok_or(ItsError::UnknownDevice(device_id))?;
        if !d.events.contains_key(&event_id) {
            return Err(ItsError::Event("not mapped"));
        }
        let rd = *s.collections.get(cpu).ok_or(ItsError::NoCollection(cpu))?;
        s.command(Command::Movi {
            device_id,
            event_id,
            icid: cpu as u16,
        })?;
        s.command(Command::Sync { rd })?;
        s.wait()
    })?
}

/// MOVI of LPI `intid` (mapped with [`map_event`]) to physical CPU
/// `cpu`'s collection, unless it is there already. `Ok(false)`: nothing to do.
pub fn move_lpi(intid: u32, cpu: usize) -> Result<bool, ItsError> {
    let r = {
        let l = LPIS.get().ok_or(ItsError::NoIts)?.lock();
        *l.routes.get(&intid).ok_or(ItsError::Event("not mapped"))?
    };
    if r.cpu == cpu {
        return Ok(false);
    }
    retarget(r.its, r.device_id, r.event_id, cpu)?;
    if let Some(l) = LPIS.get() {
        if let Some(x) = l.lock().routes.get_mut(&intid) {
            x.cpu = cpu;
        }
    }
    Ok(true)
}

/// The LPIs of guest `guest`'s assigned devices: (INTID, device index,
/// EventID, physical CPU it is delivered to now).
pub fn assigned_lpis(guest: usize) -> Vec<(u32, u16, u32, usize)> {
    let Some(l) = LPIS.get() else {
        return Vec::new();
    };
    l.lock()
        .routes
        .iter()
        .filter_map(|(&intid, r)| match r.owner {
            LpiOwner::Assigned {
                guest: g,
                device,
                event,
            } if usize::from(g) == guest => Some((intid, device, event, r.cpu)),
            _ => None,
        })
        .collect()
}

/// DISCARD: (`device_id`, `event_id`) no longer translates; its LPI is
/// disabled and freed.
pub fn unmap_event(its: usize, device_id: u32, event_id: u32) -> Result<(), ItsError> {
    let lpis = LPIS.get().ok_or(ItsError::NoIts)?;
    with_its(its, |s| {
        let d = s
            .mapped
            .get_mut(&device_id)
            .ok_or(ItsError::UnknownDevice(device_id))?;
        let intid = d
            .events
            .remove(&event_id)
            .ok_or(ItsError::Event("not mapped"))?;
        let rd = *s.collections.first().ok_or(ItsError::NoCollection(0))?;
        s.command(Command::Discard {
            device_id,
            event_id,
        })?;
        s.command(Command::Sync { rd })?;
        let r = s.wait();
        let mut l = lpis.lock();
        l.configure(intid, false);
        l.routes.remove(&intid);
        r
    })?
}

/// INT (0x03): makes (`device_id`, `event_id`)'s LPI pending as if the
/// device had written the doorbell.
fn raise(its: usize, device_id: u32, event_id: u32) -> Result<(), ItsError> {
    with_its(its, |s| {
        let rd = *s.collections.first().ok_or(ItsError::NoCollection(0))?;
        s.command(Command::Int {
            device_id,
            event_id,
        })?;
        s.command(Command::Sync { rd })?;
        s.wait()
    })?
}

/// The self-test's LPI, the CPU it should arrive on, and its DeviceID.
static SELFTEST: spin::Once<(u32, usize, u32)> = spin::Once::new();
/// The CPU the self-test's LPI arrived on (`usize::MAX`: not yet).
static SELFTEST_CPU: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(usize::MAX);

/// The boot self-test (`its-selftest`), on ITS 0: the highest DeviceID the
/// device table covers (no device of QEMU's has it) gets an ITT (MAPD), its
/// EventID 0 an LPI on CPU 0 (MAPTI, INV, SYNC), moved to the last CPU
/// (MOVI). [`selftest_raise`], once every CPU is up, has the ITS itself make
/// it pending (INT); the IRQ exit of that CPU takes it
/// ([`selftest_taken`]); [`shutdown`] reports where it arrived.
pub fn selftest(cpus: usize) -> Result<(u32, u32, usize), ItsError> {
    let device_id = with_its(0, |s| {
        let ids = s
            .devices
            .plan
            .ids()
            .min(1 << s.typer.device_id_bits().min(32));
        (ids - 1) as u32
    })?;
    map_device(0, device_id, 1)?;
    let intid = map_event(0, device_id, 0, LpiOwner::SelfTest, 0)?;
    let target = cpus.saturating_sub(1);
    move_lpi(intid, target)?;
    SELFTEST.call_once(|| (intid, target, device_id));
    Ok((device_id, intid, target))
}

/// INT of the self-test's event (after [`selftest`], with every CPU's
/// redistributor awake).
pub fn selftest_raise() -> Result<(), ItsError> {
    match SELFTEST.get() {
        Some(&(_, _, device_id)) => raise(0, device_id, 0),
        None => Ok(()),
    }
}

/// The self-test's LPI arrived on CPU `cpu` (from the IRQ exit).
pub fn selftest_taken(cpu: usize) {
    SELFTEST_CPU.store(cpu, Ordering::Relaxed);
}

/// The owner of LPI `intid` (for the IRQ exit), counting it.
pub fn take(intid: u32) -> Option<LpiOwner> {
    let mut l = LPIS.get()?.lock();
    let r = l.routes.get_mut(&intid)?;
    r.taken += 1;
    TAKEN.fetch_add(1, Ordering::Relaxed);
    Some(r.owner)
}

/// LPIs taken with an owner since boot.
pub fn taken() -> u64 {
    TAKEN.load(Ordering::Relaxed)
}

/// At shutdown: the LPIs taken in all, then one line per mapped LPI
/// (owner, ITS, DeviceID, EventID, times taken).
pub fn shutdown() {
    let Some(all) = ITSS.get() else { return };
    let nodes: Vec<String> = all
        .iter()
        .filter_map(|m| m.try_lock().map(|s| s.node.clone()))
        .collect();
    log::info!("ITS {}: {} LPIs taken", nodes.join(", "), taken());
    if let Some(&(intid, target, _)) = SELFTEST.get() {
        match SELFTEST_CPU.load(Ordering::Relaxed) {
            usize::MAX => log::error!("ITS selftest: LPI {intid} never arrived"),
            c if c == target => {
                log::info!("ITS selftest: LPI {intid} arrived on CPU {c} after MOVI: ok")
            }
            c => log::error!("ITS selftest: LPI {intid} arrived on CPU {c}, not CPU {target}"),
        }
    }
    let Some(l) = LPIS.get().and_then(|l| l.try_lock()) else {
        return;
    };
    for (intid, r) in &l.routes {
        log::info!(
            "LPI {intid}: {:?}, ITS #{} DeviceID {:#x} EventID {} on CPU {}: taken {}",
            r.owner,
            r.its,
            r.device_id,
            r.event_id,
            r.cpu,
            r.taken
        );
    }
}

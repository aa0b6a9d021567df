//! ECAM edge cases (PCI Express Base 7.2.2): every access width agrees with
//! the dword it lies in, absent functions and buses read all ones and ignore
//! writes, read-only registers stay, and a 64-bit access, which PCIe leaves
//! to the platform, is two dwords (vbus::Segment::ecam_read documents this).
//! (An unaligned access never reaches the hypervisor: stage 1 maps ECAM as
//! Device memory, where it is an alignment fault.)

use crate::dt::Platform;
use crate::pci::{reg, Bdf, Ecam};
use crate::report::{check, eq};

const G: &str = "ecam";

fn raw(ecam: usize, first_bus: u8, f: Bdf, off: usize) -> usize {
    ecam + (usize::from(f.bus - first_bus) << 20)
        + (usize::from(f.dev) << 15)
        + (usize::from(f.func) << 12)
        + off
}

/// Runs the group.
pub fn run(p: &Platform) {
    let Some(pci) = p.pci else {
        check(
            false,
            G,
            "host-bridge",
            format_args!("no pci-host-ecam-generic node"),
            "PCI Express Base 7.2.2",
        );
        return;
    };
    let e = Ecam::new(&pci);
    let bus0 = pci.buses.0;
    // The first root port on the root bus.
    let port = (0..32u8)
        .map(|dev| Bdf {
            bus: bus0,
            dev,
            func: 0,
        })
        .find(|&f| e.read16(f, reg::VENDOR_ID) != 0xffff);
    let Some(port) = port else {
        check(
            false,
            G,
            "root-port",
            format_args!("no function on bus {bus0}"),
            "PCI Express Base 7.2.2",
        );
        return;
    };
    // Bytes and words agree with the dwords they lie in.
    let mut mismatch = None;
    for off in (0..0x40u16).step_by(4) {
        let d = e.read32(port, off);
        for i in 0..4 {
            if u32::from(e.read8(port, off + i)) != (d >> (8 * i)) & 0xff {
                mismatch = Some(off + i);
            }
        }
        for i in [0, 2] {
            if u32::from(e.read16(port, off + i)) != (d >> (8 * i)) & 0xffff {
                mismatch = Some(off + i);
            }
        }
    }
    eq(
        G,
        "widths-agree-with-dwords",
        mismatch,
        None,
        "PCI Express Base 7.2.2.1",
    );
    // Read-only identification.
    let id = e.read32(port, reg::VENDOR_ID);
    e.write32(port, reg::VENDOR_ID, 0x1234_5678);
    e.write16(port, reg::VENDOR_ID, 0xbeef);
    eq(
        G,
        "id-is-read-only",
        e.read32(port, reg::VENDOR_ID),
        id,
        "PCI Express Base 7.5.1.1.1",
    );
    // An absent function and an absent bus: all ones at every width, writes dropped.
    let absent = Bdf {
        bus: bus0,
        dev: 31,
        func: 7,
    };
    let got = (
        e.read8(absent, 0),
        e.read16(absent, 0),
        e.read32(absent, 0),
        e.read32(absent, 0xffc),
    );
    eq(
        G,
        "absent-function-reads-all-ones",
        got,
        (0xff, 0xffff, 0xffff_ffff, 0xffff_ffff),
        "PCI Express Base 2.3.2, 7.2.2",
    );
    e.write32(absent, reg::COMMAND, 0x6);
    eq(
        G,
        "absent-function-ignores-writes",
        e.read32(absent, reg::COMMAND),
        0xffff_ffff,
        "PCI Express Base 2.3.2",
    );
    let far_bus = Bdf {
        bus: pci.buses.1,
        dev: 0,
        func: 0,
    };
    eq(
        G,
        "absent-bus-reads-all-ones",
        e.read32(far_bus, 0),
        0xffff_ffff,
        "PCI Express Base 7.2.2",
    );
    // A qword, which PCIe leaves to the platform: two dwords here.
    let d0 = u64::from(e.read32(port, 0));
    let d4 = u64::from(e.read32(port, 4));
    let a = raw(pci.ecam, bus0, port, 0);
    let q: u64;
    // SAFETY: an aligned doubleword load inside the ECAM window the DT names.
    unsafe { core::arch::asm!("ldr {q}, [{a}]", q = out(reg) q, a = in(reg) a) };
    eq(
        G,
        "qword-is-two-dwords",
        q,
        d0 | (d4 << 32),
        "PCI Express Base 7.2.2 (platform: two dwords)",
    );
    // The extended configuration space (0x100..0xfff) of a PCIe function:
    // a capability header list, or all zeros when it holds none.
    let h = e.read32(port, 0x100);
    let next = (h >> 20) as u16;
    check(
        h == 0 || (next == 0 || (0x100..0xffc).contains(&next)) && next % 4 == 0,
        G,
        "extended-capability-header",
        format_args!("{h:#010x}"),
        "PCI Express Base 7.6.3",
    );
}

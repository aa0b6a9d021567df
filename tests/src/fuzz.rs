//! The config-access fuzz harness, shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/config_access.rs`) and the corpus replay test.
//!
//! Input: a sequence of 9-byte records `[bus, dev<<3|fn, reg lo, reg hi, op, value(4, LE)]`,
//! where `op` bit 7 selects a write and bits 3:0 select the size from
//! [`SIZES`] (including illegal ones). Each access goes through
//! `Segment::ecam_read/ecam_write` of the programmed reference topology.
//! Properties: no panic; a function that is not reachable reads all ones; an
//! illegal size reads all ones; no write changes a read-only bit of any function.

use crate::reference::programmed_reference;
use crate::scenario::{check_read_only, snapshot};
use vbus::Bdf;

/// Access sizes the op nibble selects, legal and illegal.
pub const SIZES: [u8; 8] = [1, 2, 4, 8, 3, 0, 16, 4];

/// Runs one fuzz input; `Err` describes a violated property.
pub fn run_accesses(data: &[u8]) -> Result<(), String> {
    let mut seg = programmed_reference().map_err(|e| e.to_string())?;
    for (n, r) in data.chunks_exact(9).enumerate() {
        let bus = r[0];
        let devfn = r[1];
        let reg = u16::from_le_bytes([r[2], r[3] & 0x0f]);
        let write = r[4] & 0x80 != 0;
        let size = SIZES[usize::from(r[4] & 7)];
        let value = u32::from_le_bytes([r[5], r[6], r[7], r[8]]);
        let offset = (u64::from(bus) << 20) | (u64::from(devfn) << 12) | u64::from(reg);
        let bdf = Bdf::from_routing_id(u16::from(bus) << 8 | u16::from(devfn));
        let reachable = seg.enumerate().iter().any(|(b, _)| *b == bdf);
        if write {
            let before = snapshot(&seg);
            seg.ecam_write(offset, size, u64::from(value) | u64::from(value) << 32);
            check_read_only(&before, &seg).map_err(|e| format!("access {n}: {e}"))?;
        } else {
            let got = seg.ecam_read(offset, size);
            let single = matches!(size, 1 | 2 | 4) && u64::from(reg & 3) + u64::from(size) <= 4;
            let ones = match size {
                1 => 0xff,
                2 => 0xffff,
                _ => 0xffff_ffff,
            };
            if single && !reachable && got != ones {
                return Err(format!(
                    "access {n}: absent {bdf} +{reg:#x}/{size} read {got:#x}"
                ));
            }
            if !matches!(size, 1 | 2 | 4 | 8) && got != u64::MAX {
                return Err(format!("access {n}: illegal size {size} read {got:#x}"));
            }
        }
    }
    Ok(())
}

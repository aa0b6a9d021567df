//! Flattened device tree blobs as firmware leaves them (Devicetree
//! Specification v0.4, 5 "Flattened Devicetree (DTB) Format").
//!
//! libfdt's `fdt_nop_node`/`fdt_nop_property` delete by overwriting with
//! FDT_NOP tokens, and QEMU does so with a user's `-dtb` (its memory nodes
//! are replaced); the `fdt` crate's path lookups stop at an FDT_NOP between
//! sibling nodes, so [`compact`] rewrites a blob without them first.

use alloc::vec::Vec;

/// The header's magic (5.2).
const MAGIC: u32 = 0xd00d_feed;
/// Structure block tokens (5.4.1).
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// The header's size: ten big-endian words (5.2).
const HEADER: usize = 40;

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align4(v: usize) -> usize {
    (v + 3) & !3
}

/// `dtb` with every FDT_NOP token of its structure block dropped, the
/// memory reservation and strings blocks copied unchanged, in the canonical
/// order (header, reservations, structure, strings) without padding. `None`
/// when `dtb` is not a well-formed version-16/17 blob.
pub fn compact(dtb: &[u8]) -> Option<Vec<u8>> {
    if be32(dtb, 0)? != MAGIC {
        return None;
    }
    let total = usize::try_from(be32(dtb, 4)?).ok()?;
    let dtb = dtb.get(..total)?;
    let off_struct = be32(dtb, 8)? as usize;
    let off_strings = be32(dtb, 12)? as usize;
    let off_rsv = be32(dtb, 16)? as usize;
    let size_strings = be32(dtb, 32)? as usize;
    let size_struct = be32(dtb, 36)? as usize;
    // The reservation block: (address, size) pairs ending with a zero pair.
    let mut rsv_end = off_rsv;
    loop {
        let e = dtb.get(rsv_end..rsv_end + 16)?;
        rsv_end += 16;
        if e.iter().all(|&b| b == 0) {
            break;
        }
    }
    let structs = dtb.get(off_struct..off_struct.checked_add(size_struct)?)?;
    let strings = dtb.get(off_strings..off_strings.checked_add(size_strings)?)?;
    let mut out_struct = Vec::with_capacity(structs.len());
    let mut at = 0;
    loop {
        let token = be32(structs, at)?;
        let len = match token {
            FDT_BEGIN_NODE => {
                let name = structs.get(at + 4..)?;
                let nul = name.iter().position(|&b| b == 0)?;
                4 + align4(nul + 1)
            }
            FDT_END_NODE | FDT_NOP | FDT_END => 4,
            FDT_PROP => 12 + align4(be32(structs, at + 4)? as usize),
            _ => return None,
        };
        if token != FDT_NOP {
            out_struct.extend_from_slice(structs.get(at..at + len)?);
        }
        at += len;
        if token == FDT_END {
            break;
        }
    }
    let rsv = dtb.get(off_rsv..rsv_end)?;
    let new_rsv = align8(HEADER);
    let new_struct = new_rsv + rsv.len();
    let new_strings = new_struct + out_struct.len();
    let new_total = new_strings + strings.len();
    let mut out = Vec::with_capacity(new_total);
    out.extend_from_slice(dtb.get(..HEADER)?);
    out.resize(new_rsv, 0);
    out.extend_from_slice(rsv);
    out.extend_from_slice(&out_struct);
    out.extend_from_slice(strings);
    let mut put = |at: usize, v: usize| {
        if let (Some(slot), Ok(v)) = (out.get_mut(at..at + 4), u32::try_from(v)) {
            slot.copy_from_slice(&v.to_be_bytes());
        }
    };
    put(4, new_total);
    put(8, new_struct);
    put(12, new_strings);
    put(16, new_rsv);
    put(32, strings.len());
    put(36, out_struct.len());
    Some(out)
}

fn align8(v: usize) -> usize {
    (v + 7) & !7
}

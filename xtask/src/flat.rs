//! Conversion of the hypervisor ELF to the flat binary QEMU's `-kernel`
//! loads: the `PT_LOAD` segments laid out at their physical addresses
//! relative to the lowest one, gaps zero-filled (what `objcopy -O binary` does).

use object::elf::{FileHeader64, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

use crate::{Error, Result};

/// Largest flat image accepted (a sanity bound on a corrupt ELF).
pub const MAX_FLAT_SIZE: u64 = 256 << 20;

/// A flat image and the physical address of its first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatImage {
    /// Physical address of `bytes[0]` (the lowest `PT_LOAD` `p_paddr`).
    pub load_address: u64,
    /// The image.
    pub bytes: Vec<u8>,
}

/// Offset of the magic `ARM\x64` in an arm64 Linux `Image` header.
const ARM64_IMAGE_MAGIC_OFFSET: usize = 56;

/// Whether `image` starts with an arm64 Linux `Image` header (which makes
/// QEMU's `-kernel` and U-Boot's `booti` load it as a kernel).
pub fn has_arm64_image_header(image: &[u8]) -> bool {
    image.get(ARM64_IMAGE_MAGIC_OFFSET..ARM64_IMAGE_MAGIC_OFFSET + 4) == Some(b"ARM\x64")
}

/// Lays out the non-empty `PT_LOAD` segments of the 64-bit ELF `elf` as one
/// flat image. Segments' memory-only tails (`.bss`) are not emitted.
pub fn elf_to_flat(elf: &[u8]) -> Result<FlatImage> {
    let header = FileHeader64::<Endianness>::parse(elf)?;
    let endian = header.endian()?;
    let mut segments = Vec::new();
    for ph in header.program_headers(endian, elf)? {
        if ph.p_type(endian) != PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let data = ph
            .data(endian, elf)
            .map_err(|()| Error::msg("PT_LOAD segment outside the file"))?;
        segments.push((ph.p_paddr(endian), data));
    }
    let load_address = segments
        .iter()
        .map(|(a, _)| *a)
        .min()
        .ok_or_else(|| Error::msg("ELF has no loadable segment"))?;
    let mut end = load_address;
    for (addr, data) in &segments {
        let seg_end = addr
            .checked_add(data.len() as u64)
            .ok_or_else(|| Error::msg("segment end overflows"))?;
        end = end.max(seg_end);
    }
    let size = end - load_address;
    if size > MAX_FLAT_SIZE {
        return Err(Error(format!("flat image would be {size} bytes")));
    }
    let mut bytes = vec![0u8; size as usize];
    for (addr, data) in segments {
        let off = (addr - load_address) as usize;
        bytes[off..off + data.len()].copy_from_slice(data);
    }
    Ok(FlatImage {
        load_address,
        bytes,
    })
}

/// The address of symbol `name` in the ELF `elf` (its link address: where
/// the hypervisor runs when loaded at its link address, as QEMU `-kernel` does).
pub fn symbol_address(elf: &[u8], name: &str) -> Result<u64> {
    use object::{Object, ObjectSymbol};
    let file = object::File::parse(elf)?;
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
        .ok_or_else(|| Error(format!("the ELF has no symbol {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal little-endian ELF64 with one program header per
    /// `(p_type, p_paddr, contents, p_memsz)`; contents follow the headers.
    fn elf(segments: &[(u32, u64, &[u8], u64)]) -> Vec<u8> {
        let phoff = 64u64;
        let mut data_off = phoff + 56 * segments.len() as u64;
        let mut out = Vec::new();
        out.extend_from_slice(b"\x7fELF\x02\x01\x01\0");
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&2u16.to_le_bytes()); // e_type ET_EXEC
        out.extend_from_slice(&183u16.to_le_bytes()); // e_machine EM_AARCH64
        out.extend_from_slice(&1u32.to_le_bytes()); // e_version
        out.extend_from_slice(&0u64.to_le_bytes()); // e_entry
        out.extend_from_slice(&phoff.to_le_bytes()); // e_phoff
        out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        out.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
        out.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
        out.extend_from_slice(&(segments.len() as u16).to_le_bytes()); // e_phnum
        out.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
        out.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
        out.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
        for (ty, paddr, contents, memsz) in segments {
            out.extend_from_slice(&ty.to_le_bytes()); // p_type
            out.extend_from_slice(&5u32.to_le_bytes()); // p_flags R+X
            out.extend_from_slice(&data_off.to_le_bytes()); // p_offset
            out.extend_from_slice(&(paddr + 0x1000_0000).to_le_bytes()); // p_vaddr
            out.extend_from_slice(&paddr.to_le_bytes()); // p_paddr
            out.extend_from_slice(&(contents.len() as u64).to_le_bytes()); // p_filesz
            out.extend_from_slice(&memsz.to_le_bytes()); // p_memsz
            out.extend_from_slice(&8u64.to_le_bytes()); // p_align
            data_off += contents.len() as u64;
        }
        for (_, _, contents, _) in segments {
            out.extend_from_slice(contents);
        }
        out
    }

    #[test]
    fn segments_are_placed_at_physical_offsets_with_zeroed_gap() {
        let e = elf(&[
            (PT_LOAD, 0x4000_0000, b"AB", 2),
            (PT_LOAD, 0x4000_0004, b"CD", 2),
        ]);
        let flat = elf_to_flat(&e).expect("valid ELF");
        assert_eq!(flat.load_address, 0x4000_0000);
        assert_eq!(flat.bytes, b"AB\0\0CD");
    }

    #[test]
    fn bss_tail_is_not_emitted() {
        let e = elf(&[(PT_LOAD, 0x1000, b"XY", 0x100)]);
        assert_eq!(elf_to_flat(&e).expect("valid ELF").bytes, b"XY");
    }

    #[test]
    fn non_load_segments_are_ignored() {
        let e = elf(&[
            (PT_LOAD, 0x1000, b"XY", 2),
            (4 /* PT_NOTE */, 0x0, b"NOTE", 4),
        ]);
        assert_eq!(elf_to_flat(&e).expect("valid ELF").load_address, 0x1000);
    }

    #[test]
    fn elf_without_loadable_segment_is_rejected() {
        let e = elf(&[(4, 0x0, b"NOTE", 4)]);
        assert!(elf_to_flat(&e).is_err());
    }

    #[test]
    fn image_header_magic_is_recognised_at_offset_56() {
        let mut image = vec![0u8; 64];
        image[56..60].copy_from_slice(b"ARM\x64");
        assert!(has_arm64_image_header(&image));
    }

    #[test]
    fn short_or_unmarked_image_has_no_header() {
        assert!(!has_arm64_image_header(&[0u8; 64]));
    }

    #[test]
    fn non_elf_input_is_rejected() {
        assert!(
            elf_to_flat(b"MZ not an elf file at all, long enough for a header........").is_err()
        );
    }
}

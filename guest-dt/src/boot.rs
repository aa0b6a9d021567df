//! Where the guest's kernel, initrd and DTB go in its RAM, as QEMU's `-kernel`
//! and the arm64 boot protocol (Documentation/arch/arm64/booting.rst) have it:
//! an `Image` with a header at RAM base + `text_offset` (a 2 MiB-aligned base),
//! a raw image without one at RAM base + 0x80000; the initrd at the next 2 MiB
//! boundary after the kernel's footprint (its `image_size`, which covers BSS);
//! the DTB (at most 2 MiB, 8-byte aligned) in the last 2 MiB of RAM.

/// 2 MiB.
const MIB2: u64 = 2 << 20;
/// Where a raw kernel without an `Image` header goes.
pub const RAW_KERNEL_OFFSET: u64 = 0x8_0000;
/// Largest DTB the boot protocol allows.
pub const MAX_DTB: u64 = MIB2;

/// Offsets from the start of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootPlacement {
    /// The kernel's first byte (also the entry point).
    pub kernel: u64,
    /// Bytes the kernel occupies once running (`image_size`, or the file size).
    pub kernel_footprint: u64,
    /// The initrd, if any.
    pub initrd: Option<u64>,
    /// The DTB.
    pub dtb: u64,
}

/// Why the images do not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementError {
    /// The kernel (footprint in bytes) overlaps the DTB area or the end of RAM.
    KernelTooLarge(u64),
    /// The initrd (bytes) does not fit between the kernel and the DTB.
    InitrdTooLarge(u64),
    /// The DTB is larger than 2 MiB.
    DtbTooLarge(u64),
    /// RAM is smaller than the DTB area.
    RamTooSmall(u64),
}

impl core::fmt::Display for PlacementError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlacementError::KernelTooLarge(n) => {
                write!(f, "kernel ({n:#x} bytes) does not fit in guest RAM")
            }
            PlacementError::InitrdTooLarge(n) => write!(
                f,
                "initrd ({n:#x} bytes) does not fit in guest RAM after the kernel"
            ),
            PlacementError::DtbTooLarge(n) => {
                write!(f, "guest DTB is {n:#x} bytes, more than 2 MiB")
            }
            PlacementError::RamTooSmall(n) => write!(f, "guest RAM ({n:#x} bytes) is too small"),
        }
    }
}

/// A size like `512M`, `2G`, `1048576` or `64k` (binary units), as the
/// hypervisor's `guest-mem=` option takes it; `None` if malformed or zero.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift).filter(|&v| v > 0)
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Whether `head` (the kernel's first 64 bytes or more) is an arm64 `Image` header.
pub fn has_image_header(head: &[u8]) -> bool {
    head.get(56..60) == Some(b"ARM\x64")
}

/// Places a kernel (`head` = its first bytes, `kernel_len` its size), an optional
/// initrd and a DTB in `ram_size` bytes of RAM.
pub fn place(
    ram_size: u64,
    head: &[u8],
    kernel_len: u64,
    initrd_len: Option<u64>,
    dtb_len: u64,
) -> Result<BootPlacement, PlacementError> {
    if dtb_len > MAX_DTB {
        return Err(PlacementError::DtbTooLarge(dtb_len));
    }
    if ram_size < 2 * MIB2 {
        return Err(PlacementError::RamTooSmall(ram_size));
    }
    let dtb = (ram_size - MAX_DTB) & !(MIB2 - 1);
    let (kernel, footprint) = if has_image_header(head) && le64(head, 16) != 0 {
        (le64(head, 8), le64(head, 16).max(kernel_len))
    } else {
        // No header, or a pre-3.17 header without image_size: the old fixed offset.
        (RAW_KERNEL_OFFSET, kernel_len)
    };
    let kend = kernel
        .checked_add(footprint)
        .filter(|&e| e <= dtb)
        .ok_or(PlacementError::KernelTooLarge(footprint))?;
    let initrd = match initrd_len {
        None => None,
        Some(len) => {
            let at = kend.div_ceil(MIB2) * MIB2;
            at.checked_add(len)
                .filter(|&e| e <= dtb)
                .ok_or(PlacementError::InitrdTooLarge(len))?;
            Some(at)
        }
    };
    Ok(BootPlacement {
        kernel,
        kernel_footprint: footprint,
        initrd,
        dtb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_head(text_offset: u64, image_size: u64) -> [u8; 64] {
        let mut h = [0u8; 64];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[56..60].copy_from_slice(b"ARM\x64");
        h
    }

    #[test]
    fn image_goes_at_its_text_offset_and_initrd_after_its_bss() {
        let p = place(
            1 << 30,
            &image_head(0, 0x210_0000),
            0x1f0_0000,
            Some(0x100),
            0x1000,
        )
        .unwrap();
        assert_eq!(p.kernel, 0);
        assert_eq!(p.kernel_footprint, 0x210_0000);
        assert_eq!(p.initrd, Some(0x220_0000));
        assert_eq!(p.dtb, (1 << 30) - 0x20_0000);
    }

    #[test]
    fn nonzero_text_offset_is_honoured() {
        let p = place(
            1 << 30,
            &image_head(0x8_0000, 0x10_0000),
            0x10_0000,
            None,
            0x1000,
        )
        .unwrap();
        assert_eq!(p.kernel, 0x8_0000);
    }

    #[test]
    fn raw_image_without_header_goes_at_0x80000() {
        let p = place(1 << 30, &[0u8; 64], 0x10_0000, None, 0x1000).unwrap();
        assert_eq!(p.kernel, RAW_KERNEL_OFFSET);
        assert_eq!(p.kernel_footprint, 0x10_0000);
    }

    #[test]
    fn old_header_without_image_size_is_treated_as_raw() {
        let p = place(1 << 30, &image_head(0x8_0000, 0), 0x10_0000, None, 0x1000).unwrap();
        assert_eq!(p.kernel, RAW_KERNEL_OFFSET);
    }

    #[test]
    fn kernel_reaching_the_dtb_area_is_refused() {
        let e = place(64 << 20, &image_head(0, 63 << 20), 0x1000, None, 0x1000).unwrap_err();
        assert_eq!(e, PlacementError::KernelTooLarge(63 << 20));
    }

    #[test]
    fn initrd_too_large_is_refused() {
        let e = place(
            64 << 20,
            &image_head(0, 4 << 20),
            4 << 20,
            Some(60 << 20),
            0x1000,
        )
        .unwrap_err();
        assert_eq!(e, PlacementError::InitrdTooLarge(60 << 20));
    }

    #[test]
    fn dtb_over_two_mib_is_refused() {
        assert_eq!(
            place(1 << 30, &[0; 64], 0x1000, None, MAX_DTB + 1),
            Err(PlacementError::DtbTooLarge(MAX_DTB + 1))
        );
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        for bad in ["", "G", "0", "12X", "-1G", "99999999999G"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn huge_text_offset_does_not_overflow() {
        let e = place(
            1 << 30,
            &image_head(u64::MAX - 4, 0x1000),
            0x1000,
            None,
            0x1000,
        )
        .unwrap_err();
        assert!(matches!(e, PlacementError::KernelTooLarge(_)));
    }
}

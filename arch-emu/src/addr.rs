//! Typed addresses: guest physical (`Ipa`, the input of stage 2) and host
//! physical (`Pa`, its output), and the one range type over either.
//!
//! The two never mix silently: `map(Ipa, Pa, ..)` cannot be called with its
//! arguments swapped (Hafnium's `ipaddr_t`/`paddr_t`).

use core::fmt;

/// An intermediate physical address: what a guest believes is physical (Arm ARM D8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ipa(pub u64);

/// A host physical address: the output of stage 2 (and of the SMMU's stage 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pa(pub u64);

/// What both address kinds share.
pub trait Address: Copy + Ord + fmt::Debug {
    /// The raw value.
    fn raw(self) -> u64;
    /// From a raw value.
    fn from_raw(v: u64) -> Self;
}

impl Address for Ipa {
    fn raw(self) -> u64 {
        self.0
    }
    fn from_raw(v: u64) -> Self {
        Ipa(v)
    }
}

impl Address for Pa {
    fn raw(self) -> u64 {
        self.0
    }
    fn from_raw(v: u64) -> Self {
        Pa(v)
    }
}

impl fmt::Display for Ipa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IPA {:#x}", self.0)
    }
}

impl fmt::Display for Pa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PA {:#x}", self.0)
    }
}

impl fmt::LowerHex for Ipa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl fmt::LowerHex for Pa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// `size` bytes from `base`. An empty range contains nothing and overlaps nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemRange<A> {
    /// First address.
    pub base: A,
    /// Size in bytes.
    pub size: u64,
}

impl<A: Address> MemRange<A> {
    /// `size` bytes from `base`.
    pub const fn new(base: A, size: u64) -> Self {
        MemRange { base, size }
    }

    /// One past the last address, `None` if that does not fit 64 bits.
    pub fn end(&self) -> Option<u64> {
        self.base.raw().checked_add(self.size)
    }

    /// Whether `a` lies inside.
    pub fn contains(&self, a: A) -> bool {
        a >= self.base && a.raw() - self.base.raw() < self.size
    }

    /// Whether `other` lies entirely inside (an empty `other` lies inside anything).
    pub fn covers(&self, other: &MemRange<A>) -> bool {
        if other.size == 0 {
            return true;
        }
        match (self.end(), other.end()) {
            (Some(e), Some(oe)) => other.base >= self.base && oe <= e,
            (None, Some(_)) => other.base >= self.base,
            _ => false,
        }
    }

    /// Whether the two share an address.
    pub fn overlaps(&self, other: &MemRange<A>) -> bool {
        if self.size == 0 || other.size == 0 {
            return false;
        }
        let before = |a: &MemRange<A>, b: &MemRange<A>| a.end().is_some_and(|e| e <= b.base.raw());
        !before(self, other) && !before(other, self)
    }

    /// The offset of `a` from the base, if `a` lies inside.
    pub fn offset_of(&self, a: A) -> Option<u64> {
        self.contains(a).then(|| a.raw() - self.base.raw())
    }
}

impl<A: Address + fmt::Display> fmt::Display for MemRange<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:#x}", self.base, self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(base: u64, size: u64) -> MemRange<Ipa> {
        MemRange::new(Ipa(base), size)
    }

    #[test]
    fn contains_is_half_open() {
        assert!(r(0x1000, 0x1000).contains(Ipa(0x1fff)));
        assert!(!r(0x1000, 0x1000).contains(Ipa(0x2000)));
        assert!(!r(0x1000, 0x1000).contains(Ipa(0xfff)));
    }

    #[test]
    fn touching_ranges_do_not_overlap() {
        assert!(!r(0x1000, 0x1000).overlaps(&r(0x2000, 0x1000)));
        assert!(r(0x1000, 0x1001).overlaps(&r(0x2000, 0x1000)));
    }

    #[test]
    fn empty_range_overlaps_nothing() {
        assert!(!r(0x1000, 0).overlaps(&r(0, u64::MAX)));
    }

    #[test]
    fn range_reaching_the_top_of_the_address_space_is_handled() {
        let top = r(u64::MAX - 0xfff, 0x1000);
        assert_eq!(top.end(), None);
        assert!(top.contains(Ipa(u64::MAX)));
        let wrapping = r(u64::MAX - 0xfff, 0x2000);
        assert_eq!(wrapping.end(), None);
        assert!(wrapping.contains(Ipa(u64::MAX)));
        assert!(!r(0, 0x1000).covers(&wrapping));
        assert!(wrapping.overlaps(&r(u64::MAX, 1)));
    }

    #[test]
    fn covers_needs_both_ends_inside() {
        assert!(r(0x1000, 0x3000).covers(&r(0x2000, 0x2000)));
        assert!(!r(0x1000, 0x3000).covers(&r(0x2000, 0x2001)));
        assert!(!r(0x1000, 0x3000).covers(&r(0xfff, 0x10)));
    }
}

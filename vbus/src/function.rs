//! The `PciFunction` trait and the `Effect`s a config write produces.
//!
//! A function never applies a side effect itself: it describes it, the
//! `Segment` tags it with the function's address, and the owner (the
//! hypervisor) applies it to stage-2, the SMMU or the vGIC.

use crate::addr::Bdf;
use crate::config::ConfigSpace;
use alloc::vec::Vec;

/// A memory window a bridge decodes, `None` when disabled (limit below base).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRange {
    /// First address decoded.
    pub base: u64,
    /// Last address decoded.
    pub limit: u64,
}

/// Something a config write asks the owner to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A bridge's bus numbers changed: routing follows at once.
    BusNumbers {
        /// Primary bus number.
        primary: u8,
        /// Secondary bus number.
        secondary: u8,
        /// Subordinate bus number.
        subordinate: u8,
    },
    /// A bridge's non-prefetchable memory window changed.
    MemWindow(Option<WindowRange>),
    /// A bridge's prefetchable memory window changed.
    PrefetchableWindow(Option<WindowRange>),
    /// A bridge's Secondary Bus Reset bit went from 0 to 1: reset everything below it.
    SecondaryBusReset,
    /// Memory Space decoding was switched on or off.
    MemoryDecode {
        /// The new state.
        enabled: bool,
    },
    /// A memory BAR that is decoding moved: unmap `old`, map `new`.
    BarMoved {
        /// BAR index (for a 64-bit BAR, the lower index).
        bar: u8,
        /// Previous address.
        old: u64,
        /// New address.
        new: u64,
        /// Size in bytes.
        len: u64,
    },
}

/// What the segment hands the owner: effects tagged with the function's address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    items: Vec<(Bdf, Effect)>,
}

impl Effects {
    /// No effects.
    pub const fn new() -> Self {
        Effects { items: Vec::new() }
    }

    /// Records an effect of the function at `bdf`.
    pub fn push(&mut self, bdf: Bdf, effect: Effect) {
        self.items.push((bdf, effect));
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many effects.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The effects in order.
    pub fn iter(&self) -> impl Iterator<Item = &(Bdf, Effect)> {
        self.items.iter()
    }
}

/// What the segment needs from any function: root port, assigned host function, virtio function.
pub trait PciFunction: Send {
    /// A guest read of `size` (1, 2 or 4) bytes at `offset`, within one dword.
    fn config_read(&mut self, offset: u16, size: u8) -> u32;

    /// A guest write; side effects are appended to `effects`.
    fn config_write(&mut self, offset: u16, size: u8, value: u32, effects: &mut Vec<Effect>);

    /// For a bridge: its (secondary, subordinate) bus numbers as programmed. `None` for endpoints.
    fn bridge_bus_range(&self) -> Option<(u8, u8)>;

    /// The config space as it stands, for dumps and checks.
    fn config_space(&self) -> &ConfigSpace;
}

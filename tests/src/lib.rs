//! Host-side test support: the bridge emulation regression suite and end-to-end tests live under `tests/`.
//!
//! * [`endpoint`]: a type-0 test function with a BAR profile, for building topologies.
//! * [`fuzz`]: the config-access fuzz harness.
//! * [`linux_enum`]: our Linux-style enumerator and the invariants.
//! * [`netpeer`]: the network peer of the end-to-end tests (smoltcp over QEMU's `-netdev stream`).
//! * [`reference`]: the planned reference topology and its `lspci -n -xxxx` dump.
//! * [`scenario`]: the data-driven scenario format and its runner (`tests/scenarios/*.toml`).
#![deny(missing_docs)]

pub mod endpoint;
pub mod fuzz;
pub mod linux_enum;
pub mod netpeer;
pub mod reference;
pub mod scenario;

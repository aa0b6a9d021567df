//! The host NIC QEMU emulates, where it sits on the host's PCIe hierarchy,
//! and what its other end is: the `-device`/`-netdev` arguments, and the
//! host PCI address the hypervisor is told to pass through.
//!
//! Every address QEMU binds or connects to for networking is 127.0.0.1.

use crate::{Error, Result};

/// The guest's address; `/init` configures it on the first Ethernet interface.
pub const GUEST_IP: &str = "10.0.2.15";
/// The guest's gateway and peer: QEMU user-mode networking's host address,
/// and the address of the test peer (`tests::netpeer`) with a stream backend.
pub const PEER_IP: &str = "10.0.2.2";
/// The only host address networking binds or connects to.
pub const LOOPBACK: &str = "127.0.0.1";
/// The guest NIC's MAC address (QEMU's default for its first NIC, set
/// explicitly so the peer and the guest agree whatever QEMU's defaults).
pub const GUEST_MAC: &str = "52:54:00:12:34:56";

/// The emulated NIC model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nic {
    /// No NIC at all (QEMU's default NIC is disabled too).
    None,
    /// Intel 82574L (`e1000e`, PCI ID 8086:10d3).
    E1000e,
    /// Intel 82576 (`igb`, PCI ID 8086:10c9).
    Igb,
}

impl Nic {
    /// Parses the `--nic` value: `e1000e`, `igb` or `none`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "e1000e" => Ok(Self::E1000e),
            "igb" => Ok(Self::Igb),
            "none" => Ok(Self::None),
            _ => Err(Error(format!("bad --nic {s:?} (e1000e, igb or none)"))),
        }
    }

    /// QEMU's `-device` driver name (`None` for no NIC).
    pub fn qemu_device(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::E1000e => Some("e1000e"),
            Self::Igb => Some("igb"),
        }
    }

    /// `vendor:device` as `lspci -n` prints it.
    pub fn pci_id(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::E1000e => Some("8086:10d3"),
            Self::Igb => Some("8086:10c9"),
        }
    }

    /// The Linux driver that binds it.
    pub fn linux_driver(self) -> Option<&'static str> {
        self.qemu_device()
    }
}

/// Where the NIC sits on the host's PCIe hierarchy (QEMU `virt`: one host
/// bridge, segment 0, root bus `pcie.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicSlot {
    /// Directly on `pcie.0` at device [`NIC_BUS_DEVICE`] (a root complex
    /// integrated endpoint).
    Bus,
    /// Behind a `pcie-root-port` at `pcie.0` device [`NIC_BUS_DEVICE`].
    RootPort,
    /// Behind a switch: `pcie-root-port` → `x3130-upstream` →
    /// `xio3130-downstream` → NIC.
    Switch,
}

/// The device number on `pcie.0` of the NIC ([`NicSlot::Bus`]) or of the
/// root port above it. Not 1: device 0 is QEMU's host bridge, and leaving 1
/// free keeps the NIC where an automatically placed device cannot push it.
pub const NIC_BUS_DEVICE: u8 = 2;

impl NicSlot {
    /// Parses the `--nic-slot` value: `bus`, `root-port` or `switch`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "bus" => Ok(Self::Bus),
            "root-port" => Ok(Self::RootPort),
            "switch" => Ok(Self::Switch),
            _ => Err(Error(format!(
                "bad --nic-slot {s:?} (bus, root-port or switch)"
            ))),
        }
    }

    /// The NIC's host PCI address `SEG:BUS:DEV.FN` once the host's buses are
    /// numbered depth-first from 0, as firmware (and Linux, which renumbers
    /// nothing here) does:
    ///
    /// * `Bus`: `pcie.0` is bus 0 and the NIC is at its fixed `addr=`:
    ///   `0000:00:02.0`.
    /// * `RootPort`: the root port at 00:02.0 is the only bridge, so its
    ///   secondary bus is 1; the NIC is device 0 there: `0000:01:00.0`.
    /// * `Switch`: root port 00:02.0 → bus 1, which holds the switch's
    ///   upstream port 01:00.0 → bus 2, which holds the downstream port
    ///   02:00.0 → bus 3, where the NIC is device 0: `0000:03:00.0`.
    pub fn host_address(self) -> &'static str {
        match self {
            Self::Bus => "0000:00:02.0",
            Self::RootPort => "0000:01:00.0",
            Self::Switch => "0000:03:00.0",
        }
    }
}

/// A TCP port forward of QEMU user-mode networking: `127.0.0.1:host` on the
/// host to `guest` in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    /// Host port (bound on 127.0.0.1 only).
    pub host: u16,
    /// Guest port.
    pub guest: u16,
}

impl PortForward {
    /// Parses `HOST:GUEST` (two port numbers).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error(format!("bad --hostfwd {s:?} (HOSTPORT:GUESTPORT)"));
        let (h, g) = s.split_once(':').ok_or_else(bad)?;
        Ok(Self {
            host: h.parse().map_err(|_| bad())?,
            guest: g.parse().map_err(|_| bad())?,
        })
    }
}

/// What the NIC's cable is plugged into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackend {
    /// QEMU user-mode networking (`-netdev user`): the guest reaches
    /// [`PEER_IP`] (QEMU itself), restricted (`restrict=on`) so nothing leaves
    /// for another address; `forwards` are bound on 127.0.0.1.
    User {
        /// TCP port forwards host → guest.
        forwards: Vec<PortForward>,
    },
    /// `-netdev stream` as a client of `127.0.0.1:port`: each Ethernet frame
    /// preceded by its length (4 bytes, big-endian); the test peer listens there.
    Stream {
        /// TCP port on 127.0.0.1.
        port: u16,
    },
}

impl Default for NetBackend {
    fn default() -> Self {
        Self::User {
            forwards: Vec::new(),
        }
    }
}

/// QEMU ids of the devices added here for the first NIC; the `i`-th
/// (from 0) adds `i` to each when `i > 0` ([`nic_id`]).
const NETDEV_ID: &str = "net0";
const ROOT_PORT_ID: &str = "nic_rp";
const UPSTREAM_ID: &str = "nic_up";
const DOWNSTREAM_ID: &str = "nic_dp";

/// The QEMU id `base` of the `index`-th NIC's devices.
fn nic_id(base: &str, index: usize) -> String {
    match (index, base) {
        (0, _) => base.to_string(),
        (_, NETDEV_ID) => format!("net{index}"),
        _ => format!("{base}{index}"),
    }
}

/// The `-netdev` value for `backend`.
pub fn netdev_arg(backend: &NetBackend) -> String {
    netdev_arg_at(0, backend)
}

/// The `-netdev` value for the `index`-th NIC's `backend`.
fn netdev_arg_at(index: usize, backend: &NetBackend) -> String {
    let id = nic_id(NETDEV_ID, index);
    match backend {
        NetBackend::User { forwards } => {
            let mut s = format!("user,id={id},restrict=on");
            for f in forwards {
                s.push_str(&format!(",hostfwd=tcp:{LOOPBACK}:{}-:{}", f.host, f.guest));
            }
            s
        }
        NetBackend::Stream { port } => format!(
            "stream,id={id},server=off,addr.type=inet,addr.host={LOOPBACK},addr.port={port}"
        ),
    }
}

/// The `index`-th NIC's MAC address: [`GUEST_MAC`] with `index` added to
/// its last byte.
pub fn mac(index: usize) -> String {
    let last = 0x56 + index;
    format!("52:54:00:12:34:{:02x}", last & 0xff)
}

/// The QEMU arguments that give the host `nic` at `slot`, cabled to `backend`
/// (`-nic none` without a NIC, so QEMU adds no default one either).
pub fn qemu_args(nic: Nic, slot: NicSlot, backend: &NetBackend) -> Vec<String> {
    if nic == Nic::None {
        return vec!["-nic".into(), "none".into()];
    }
    nic_args(0, nic, slot, NIC_BUS_DEVICE, backend)
}

/// The QEMU arguments of the host's `index`-th NIC (from 0), `nic` (not
/// [`Nic::None`]) at `slot` whose top sits at `pcie.0` device `device`,
/// cabled to `backend`. Its devices' ids, MAC address and chassis numbers
/// are its own, so several NICs can be given.
pub fn nic_args(
    index: usize,
    nic: Nic,
    slot: NicSlot,
    device: u8,
    backend: &NetBackend,
) -> Vec<String> {
    let Some(model) = nic.qemu_device() else {
        return Vec::new();
    };
    let (rp, up, dp) = (
        nic_id(ROOT_PORT_ID, index),
        nic_id(UPSTREAM_ID, index),
        nic_id(DOWNSTREAM_ID, index),
    );
    // Chassis numbers: unique per machine (pcie-root-port and downstream ports).
    let chassis = 1 + 2 * index;
    let mut devices = Vec::new();
    let nic_bus = match slot {
        NicSlot::Bus => format!("bus=pcie.0,addr={device:#x}"),
        NicSlot::RootPort | NicSlot::Switch => {
            devices.push(format!(
                "pcie-root-port,id={rp},bus=pcie.0,addr={device:#x},chassis={chassis},slot=1"
            ));
            if slot == NicSlot::Switch {
                devices.push(format!("x3130-upstream,id={up},bus={rp}"));
                devices.push(format!(
                    "xio3130-downstream,id={dp},bus={up},chassis={},slot=1",
                    chassis + 1
                ));
                format!("bus={dp}")
            } else {
                format!("bus={rp}")
            }
        }
    };
    devices.push(format!(
        "{model},netdev={},mac={},{nic_bus}",
        nic_id(NETDEV_ID, index),
        mac(index)
    ));
    let mut a = vec!["-netdev".to_string(), netdev_arg_at(index, backend)];
    for d in devices {
        a.push("-device".into());
        a.push(d);
    }
    a
}

/// The host PCI addresses of NICs at `slots` whose tops sit at `pcie.0`
/// devices in increasing order (the `i`-th at device `NIC_BUS_DEVICE + i`),
/// once the host's buses are numbered depth-first from 0 in device order (see
/// [`NicSlot::host_address`]): a root port takes the next bus, a switch three.
pub fn host_addresses(slots: &[NicSlot]) -> Vec<String> {
    let mut next_bus = 1u32;
    slots
        .iter()
        .enumerate()
        .map(|(i, slot)| match slot {
            NicSlot::Bus => format!("0000:00:{:02x}.0", usize::from(NIC_BUS_DEVICE) + i),
            NicSlot::RootPort => {
                next_bus += 1;
                format!("0000:{:02x}:00.0", next_bus - 1)
            }
            NicSlot::Switch => {
                next_bus += 3;
                format!("0000:{:02x}:00.0", next_bus - 1)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(a: &[String]) -> Vec<&str> {
        a.windows(2)
            .filter(|w| w[0] == "-device")
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn no_nic_disables_qemus_default_nic() {
        let a = qemu_args(Nic::None, NicSlot::RootPort, &NetBackend::default());
        assert_eq!(a, ["-nic", "none"]);
    }

    #[test]
    fn nic_on_the_bus_sits_at_the_fixed_device_number() {
        let a = qemu_args(Nic::E1000e, NicSlot::Bus, &NetBackend::default());
        assert_eq!(
            devices(&a),
            ["e1000e,netdev=net0,mac=52:54:00:12:34:56,bus=pcie.0,addr=0x2"]
        );
    }

    #[test]
    fn nic_behind_a_root_port_is_plugged_into_it() {
        let a = qemu_args(Nic::Igb, NicSlot::RootPort, &NetBackend::default());
        let d = devices(&a);
        assert_eq!(d.len(), 2);
        assert!(d[0].starts_with("pcie-root-port,id=nic_rp,bus=pcie.0,addr=0x2,"));
        assert!(d[1].starts_with("igb,") && d[1].ends_with(",bus=nic_rp"));
    }

    #[test]
    fn nic_behind_a_switch_hangs_from_root_upstream_and_downstream_ports() {
        let a = qemu_args(Nic::E1000e, NicSlot::Switch, &NetBackend::default());
        let d = devices(&a);
        assert!(d[0].starts_with("pcie-root-port,id=nic_rp,"));
        assert_eq!(d[1], "x3130-upstream,id=nic_up,bus=nic_rp");
        assert!(d[2].starts_with("xio3130-downstream,id=nic_dp,bus=nic_up,"));
        assert!(d[3].ends_with(",bus=nic_dp"));
    }

    #[test]
    fn user_networking_is_restricted_and_forwards_bind_loopback_only() {
        let b = NetBackend::User {
            forwards: vec![PortForward {
                host: 5201,
                guest: 5201,
            }],
        };
        assert_eq!(
            netdev_arg(&b),
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:5201-:5201"
        );
    }

    #[test]
    fn stream_backend_connects_to_loopback_as_client() {
        assert_eq!(
            netdev_arg(&NetBackend::Stream { port: 40000 }),
            "stream,id=net0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=40000"
        );
    }

    #[test]
    fn a_second_nic_gets_ids_mac_and_chassis_of_its_own() {
        let a = nic_args(1, Nic::Igb, NicSlot::Switch, 3, &NetBackend::default());
        assert_eq!(a[1], "user,id=net1,restrict=on");
        assert_eq!(
            devices(&a),
            [
                "pcie-root-port,id=nic_rp1,bus=pcie.0,addr=0x3,chassis=3,slot=1",
                "x3130-upstream,id=nic_up1,bus=nic_rp1",
                "xio3130-downstream,id=nic_dp1,bus=nic_up1,chassis=4,slot=1",
                "igb,netdev=net1,mac=52:54:00:12:34:57,bus=nic_dp1",
            ]
        );
    }

    #[test]
    fn the_first_nics_address_is_its_slots_host_address() {
        for slot in [NicSlot::Bus, NicSlot::RootPort, NicSlot::Switch] {
            assert_eq!(host_addresses(&[slot]), [slot.host_address()]);
        }
    }

    #[test]
    fn later_nics_take_the_buses_after_the_earlier_ones() {
        // Root port 00:02.0 -> bus 1; switch under 00:03.0 -> buses 2, 3, 4;
        // the NIC itself at 00:04.0 on bus 0.
        let slots = [NicSlot::RootPort, NicSlot::Switch, NicSlot::Bus];
        assert_eq!(
            host_addresses(&slots),
            ["0000:01:00.0", "0000:04:00.0", "0000:00:04.0"]
        );
    }

    #[test]
    fn host_addresses_follow_depth_first_bus_numbering() {
        assert_eq!(NicSlot::Bus.host_address(), "0000:00:02.0");
        assert_eq!(NicSlot::RootPort.host_address(), "0000:01:00.0");
        assert_eq!(NicSlot::Switch.host_address(), "0000:03:00.0");
    }

    #[test]
    fn port_forward_needs_two_ports() {
        assert_eq!(
            PortForward::parse("8022:22").expect("valid"),
            PortForward {
                host: 8022,
                guest: 22
            }
        );
        assert!(PortForward::parse("8022").is_err());
        assert!(PortForward::parse("x:22").is_err());
    }

    #[test]
    fn nic_and_slot_names_parse_and_others_are_errors() {
        assert_eq!(Nic::parse("igb").expect("valid"), Nic::Igb);
        assert_eq!(NicSlot::parse("switch").expect("valid"), NicSlot::Switch);
        assert!(Nic::parse("e1000").is_err());
        assert!(NicSlot::parse("root").is_err());
    }
}

//! PCI addresses: `Bdf`, `Sbdf`, and the ECAM offset decode.

use core::fmt;

/// Why a bus/device/function triple was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BdfError {
    /// Device number above 31.
    Device(u8),
    /// Function number above 7.
    Function(u8),
}

/// A bus/device/function address within one segment. Always valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    bus: u8,
    dev: u8,
    func: u8,
}

impl Bdf {
    /// A validated address: `dev` <= 31, `func` <= 7.
    pub const fn new(bus: u8, dev: u8, func: u8) -> Result<Bdf, BdfError> {
        if dev > 31 {
            return Err(BdfError::Device(dev));
        }
        if func > 7 {
            return Err(BdfError::Function(func));
        }
        Ok(Bdf { bus, dev, func })
    }

    /// The bus number.
    pub const fn bus(&self) -> u8 {
        self.bus
    }

    /// The device number (0..=31).
    pub const fn dev(&self) -> u8 {
        self.dev
    }

    /// The function number (0..=7).
    pub const fn func(&self) -> u8 {
        self.func
    }

    /// The 16-bit routing ID (bus << 8 | dev << 3 | func), as PCIe requester IDs carry it.
    pub const fn routing_id(&self) -> u16 {
        ((self.bus as u16) << 8) | ((self.dev as u16) << 3) | self.func as u16
    }

    /// The address from a 16-bit routing ID.
    pub const fn from_routing_id(id: u16) -> Bdf {
        Bdf {
            bus: (id >> 8) as u8,
            dev: ((id >> 3) & 0x1f) as u8,
            func: (id & 7) as u8,
        }
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{:x}", self.bus, self.dev, self.func)
    }
}

/// A segment-qualified address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sbdf {
    /// The PCI segment (domain) number.
    pub segment: u16,
    /// The address within the segment.
    pub bdf: Bdf,
}

impl fmt::Display for Sbdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{}", self.segment, self.bdf)
    }
}

/// Why a textual PCI address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseSbdfError {
    /// Not of the form `SSSS:BB:DD.F` (or `BB:DD.F`), hexadecimal.
    Syntax,
    /// Device or function out of range.
    Range(BdfError),
}

impl fmt::Display for ParseSbdfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseSbdfError::Syntax => write!(f, "want SSSS:BB:DD.F in hexadecimal"),
            ParseSbdfError::Range(BdfError::Device(d)) => write!(f, "device {d:#x} is above 0x1f"),
            ParseSbdfError::Range(BdfError::Function(n)) => write!(f, "function {n} is above 7"),
        }
    }
}

impl core::str::FromStr for Sbdf {
    type Err = ParseSbdfError;

    /// `SSSS:BB:DD.F` as `lspci -D` prints it, or `BB:DD.F` in segment 0;
    /// each field hexadecimal.
    fn from_str(s: &str) -> Result<Sbdf, ParseSbdfError> {
        let (segment, rest) = match s.matches(':').count() {
            2 => {
                let (seg, rest) = s.split_once(':').ok_or(ParseSbdfError::Syntax)?;
                (
                    u16::from_str_radix(seg, 16).map_err(|_| ParseSbdfError::Syntax)?,
                    rest,
                )
            }
            1 => (0, s),
            _ => return Err(ParseSbdfError::Syntax),
        };
        let (bus, rest) = rest.split_once(':').ok_or(ParseSbdfError::Syntax)?;
        let (dev, func) = rest.split_once('.').ok_or(ParseSbdfError::Syntax)?;
        let field = |x: &str| {
            if x.is_empty() || x.len() > 2 {
                return Err(ParseSbdfError::Syntax);
            }
            u8::from_str_radix(x, 16).map_err(|_| ParseSbdfError::Syntax)
        };
        let bdf =
            Bdf::new(field(bus)?, field(dev)?, field(func)?).map_err(ParseSbdfError::Range)?;
        Ok(Sbdf { segment, bdf })
    }
}

/// A decoded ECAM offset (PCI Express Base 7.2.2: `bus << 20 | dev << 15 | fn << 12 | reg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcamAddress {
    /// Bus number relative to the window's first bus.
    pub bus_offset: u8,
    /// Device and function; the bus is the relative one.
    pub dev: u8,
    /// Function number.
    pub func: u8,
    /// Register offset within the function's 4 KiB.
    pub register: u16,
}

impl EcamAddress {
    /// Decodes an offset within an ECAM window of up to 256 buses; `None` past 256 MiB.
    pub fn decode(offset: u64) -> Option<EcamAddress> {
        if offset >= 1 << 28 {
            return None;
        }
        Some(EcamAddress {
            bus_offset: (offset >> 20) as u8,
            dev: ((offset >> 15) & 0x1f) as u8,
            func: ((offset >> 12) & 7) as u8,
            register: (offset & 0xfff) as u16,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn sbdf_parses_as_lspci_prints_it() {
        let s: Sbdf = "0001:03:1f.7".parse().unwrap();
        assert_eq!((s.segment, s.bdf), (1, Bdf::new(3, 0x1f, 7).unwrap()));
        assert_eq!(alloc::format!("{s}"), "0001:03:1f.7");
        let s: Sbdf = "01:00.0".parse().unwrap();
        assert_eq!((s.segment, s.bdf), (0, Bdf::new(1, 0, 0).unwrap()));
    }

    #[test]
    fn sbdf_out_of_range_or_malformed_is_refused() {
        assert_eq!(
            "0000:00:20.0".parse::<Sbdf>(),
            Err(ParseSbdfError::Range(BdfError::Device(0x20)))
        );
        assert_eq!(
            "0000:00:01.8".parse::<Sbdf>(),
            Err(ParseSbdfError::Range(BdfError::Function(8)))
        );
        for bad in [
            "",
            "0000:00:01",
            "x:00:01.0",
            "0000:100:01.0",
            "0:0:0:0.0",
            "00:01.0.1",
            "00:.0",
        ] {
            assert_eq!(bad.parse::<Sbdf>(), Err(ParseSbdfError::Syntax), "{bad}");
        }
    }

    #[test]
    fn bdf_rejects_device_above_31() {
        assert_eq!(Bdf::new(0, 32, 0), Err(BdfError::Device(32)));
    }

    #[test]
    fn bdf_rejects_function_above_7() {
        assert_eq!(Bdf::new(0, 0, 8), Err(BdfError::Function(8)));
    }

    #[test]
    fn sbdf_displays_like_lspci() {
        let s = Sbdf {
            segment: 1,
            bdf: Bdf::new(3, 0x1f, 7).unwrap(),
        };
        assert_eq!(s.to_string(), "0001:03:1f.7");
    }

    #[test]
    fn routing_id_round_trips() {
        for id in [0u16, 0x0108, 0xffff, 0x1234] {
            assert_eq!(Bdf::from_routing_id(id).routing_id(), id);
        }
    }

    #[test]
    fn ecam_offset_decodes_each_field() {
        let a = EcamAddress::decode((2 << 20) | (3 << 15) | (4 << 12) | 0x104).unwrap();
        assert_eq!((a.bus_offset, a.dev, a.func, a.register), (2, 3, 4, 0x104));
    }

    #[test]
    fn ecam_offset_past_256_buses_is_refused() {
        assert_eq!(EcamAddress::decode(1 << 28), None);
    }
}

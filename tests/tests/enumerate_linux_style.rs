//! Our Linux-style enumerator (depth-first numbering, BAR sizing, setup-bus.c
//! window sizing and assignment) against the segment, with the invariants,
//! and a property test over random topologies.
use proptest::prelude::*;
use tests::endpoint::{BarProfile, Endpoint};
use tests::linux_enum::{assign, check_invariants, scan};
use tests::reference::{programmed_reference, reference_segment, MEM32, PREF64};

const AP32: (u64, u64) = (MEM32.base, MEM32.size);
const AP64: (u64, u64) = (PREF64.base, PREF64.size);

#[test]
fn reference_topology_enumerates_and_holds_the_invariants() {
    let mut seg = reference_segment();
    let found = scan(&mut seg);
    assert_eq!(found.len(), 4);
    assert!(found.iter().all(|f| f.device.is_some()));
    assign(&mut seg, &found, AP32, AP64).expect("fits");
    check_invariants(&mut seg, &found, AP32, AP64).expect("invariants");
}

#[test]
fn linux_style_assignment_matches_the_planner_byte_for_byte() {
    let mut seg = reference_segment();
    let found = scan(&mut seg);
    assign(&mut seg, &found, AP32, AP64).expect("fits");
    let planned = programmed_reference().expect("plans");
    let ours = tests::reference::lspci_dump(&seg);
    let theirs = tests::reference::lspci_dump(&planned);
    assert!(ours == theirs, "Linux-style:\n{ours}\nplanner:\n{theirs}");
}

#[test]
fn invariant_checker_catches_a_bar_outside_its_window() {
    let mut seg = reference_segment();
    let found = scan(&mut seg);
    assign(&mut seg, &found, AP32, AP64).expect("fits");
    // Move the e1000e's BAR0 out of its bridge's window.
    let _ = seg.ecam_write(
        tests::scenario::ecam_offset(vbus::Bdf::new(1, 0, 0).unwrap(), 0x10),
        4,
        0x2000_0000,
    );
    assert!(check_invariants(&mut seg, &found, AP32, AP64).is_err());
}

/// Up to six root ports, each with nothing or a device of up to three BARs of
/// 16 B to 4 MiB: at most 12 MiB per device, 16 MiB with window alignment,
/// 96 MiB in all, so every topology fits the 512 MiB aperture and assignment
/// must succeed.
fn topology() -> impl Strategy<Value = Vec<Option<Vec<(u32, bool, bool)>>>> {
    prop::collection::vec(
        prop::option::of(prop::collection::vec(
            (4u32..=22, any::<bool>(), any::<bool>()),
            0..4,
        )),
        1..7,
    )
}

proptest! {
    #[test]
    fn random_topologies_enumerate_with_the_invariants(topo in topology()) {
        let mut seg = vbus::Segment::new(0, 32);
        for (i, dev) in topo.iter().enumerate() {
            let d = i as u8 + 1;
            let mut port = emulated_bridges::RootPort::new(Default::default());
            port.set_device_present(dev.is_some());
            seg.add_bus0(d, 0, Box::new(port)).unwrap();
            if let Some(bars) = dev {
                let mut index = 0u8;
                let mut profile = Vec::new();
                for &(order, is_64bit, prefetchable) in bars {
                    if index + u8::from(is_64bit) > 5 { break; }
                    profile.push(BarProfile { index, size: 1 << order, is_64bit, prefetchable });
                    index += 1 + u8::from(is_64bit);
                }
                seg.attach_below(d, 0, Box::new(Endpoint::new(0x1234, 0x5678, &profile))).unwrap();
            }
        }
        let found = scan(&mut seg);
        prop_assert_eq!(found.len(), topo.len());
        for (f, t) in found.iter().zip(&topo) {
            prop_assert_eq!(f.device.is_some(), t.is_some());
        }
        let assigned = assign(&mut seg, &found, AP32, AP64);
        prop_assert!(assigned.is_ok(), "assignment failed: {:?}", assigned);
        let r = check_invariants(&mut seg, &found, AP32, AP64);
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}

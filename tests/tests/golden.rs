//! The reference topology, placed by the planner and programmed through ECAM,
//! must dump exactly as `tests/golden/reference_topology.lspci` (`lspci -n -xxxx`
//! format). `UPDATE_GOLDEN=1 cargo test -p tests --test golden` rewrites it;
//! review the diff before committing.
use std::path::PathBuf;

#[test]
fn reference_topology_dump_matches_golden() {
    let seg = tests::reference::programmed_reference().expect("the reference topology plans");
    let dump = tests::reference::lspci_dump(&seg);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/reference_topology.lspci");
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &dump).expect("golden written");
    }
    let golden =
        std::fs::read_to_string(&path).expect("golden exists (UPDATE_GOLDEN=1 creates it)");
    assert!(
        golden == dump,
        "dump differs from {}:\n{dump}",
        path.display()
    );
}

#[test]
fn reference_topology_has_eight_functions_with_programmed_windows() {
    let seg = tests::reference::programmed_reference().expect("plans");
    assert_eq!(seg.enumerate().len(), 8);
}

#[test]
fn reference_topology_refuses_an_aperture_too_small_naming_the_device() {
    let small = vbus::planner::Aperture {
        base: 0x80_0000_0000,
        size: 128 << 20,
    };
    let requests = vec![vbus::planner::PortRequest {
        name: "00:04.0".into(),
        device: Some(vbus::planner::DeviceRequest {
            name: "04:00.0 big-prefetchable".into(),
            passthrough: true,
            bars: vec![vbus::planner::BarRequest {
                index: 0,
                size: 256 << 20,
                is_64bit: true,
                prefetchable: true,
            }],
        }),
        headroom_mem32: 0,
        headroom_pref64: 0,
    }];
    let err =
        vbus::planner::plan(tests::reference::MEM32, small, &requests).expect_err("does not fit");
    assert!(
        err.to_string().contains("04:00.0 big-prefetchable"),
        "{err}"
    );
}

//! The bridge-window planner's time as the number of BARs grows (issue 11,
//! scaling): `cargo bench -p vbus --bench planner`. Not run in CI.
//!
//! Each port holds one device with four BARs: two 32-bit non-prefetchable
//! (16 KiB, 4 KiB; the 4 KiB one of a passthrough device is padded to a
//! page) and two 64-bit prefetchable (64 KiB, 1 MiB), so every port gets
//! both windows. Ports go from 1 (4 BARs) to 256 (1024 BARs), past the 31 a
//! bus holds, to show the growth.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vbus::planner::{plan, Aperture, BarRequest, DeviceRequest, PortRequest};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const BARS_PER_DEVICE: usize = 4;

fn ports(n: usize) -> Vec<PortRequest> {
    (0..n)
        .map(|i| PortRequest {
            name: format!("port {i}"),
            device: Some(DeviceRequest {
                name: format!("device {i}"),
                passthrough: i % 2 == 0,
                bars: vec![
                    BarRequest {
                        index: 0,
                        size: 16 * KIB,
                        is_64bit: false,
                        prefetchable: false,
                    },
                    BarRequest {
                        index: 1,
                        size: 4 * KIB,
                        is_64bit: false,
                        prefetchable: false,
                    },
                    BarRequest {
                        index: 2,
                        size: 64 * KIB,
                        is_64bit: true,
                        prefetchable: true,
                    },
                    BarRequest {
                        index: 4,
                        size: MIB,
                        is_64bit: true,
                        prefetchable: true,
                    },
                ],
            }),
            headroom_mem32: 0,
            headroom_pref64: 0,
        })
        .collect()
}

fn planner(c: &mut Criterion) {
    // QEMU virt's 32-bit PCI window and 64 GiB of the 64-bit one.
    let mem32 = Aperture {
        base: 0x1000_0000,
        size: 0x2ef0_0000,
    };
    let pref64 = Aperture {
        base: 0x80_0000_0000,
        size: 64 << 30,
    };
    let mut g = c.benchmark_group("plan");
    for n in [1usize, 2, 4, 8, 16, 31, 64, 128, 256] {
        let req = ports(n);
        assert!(plan(mem32, pref64, &req).is_ok(), "{n} ports fit");
        let bars = (n * BARS_PER_DEVICE) as u64;
        g.throughput(Throughput::Elements(bars));
        g.bench_with_input(BenchmarkId::new("bars", bars), &req, |b, req| {
            b.iter(|| plan(black_box(mem32), black_box(pref64), black_box(req)))
        });
    }
    g.finish();
}

criterion_group!(benches, planner);
criterion_main!(benches);

//! rust-vmm `virtio-queue` as an oracle on the same descriptor chains: the
//! same raw bytes are written into our `VecMemory` and into `vm-memory`'s
//! `GuestMemoryMmap`, both implementations pop a chain, and every chain we
//! accept must be exactly the one rust-vmm walks; notification decisions
//! (2.7.10) must agree.

use crate::memory::GuestMemory as _;
use crate::queue::{
    Queue, RawDescriptor, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};
use crate::testing::{MockQueue, VecMemory};
use arch_emu::addr::{Ipa, Pa};
use proptest::prelude::*;
use virtio_queue::{Queue as VmmQueue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const BASE: u64 = 0x1_0000;
const LEN: usize = 0x1_0000;
const SIZE: u16 = 8;
const TABLE: u64 = BASE + 0x8000;

struct Pair {
    ours: VecMemory,
    vmm: GuestMemoryMmap,
    mock: MockQueue,
}

impl Pair {
    fn new() -> Self {
        let ours = VecMemory::new(Ipa(BASE), LEN, Pa(0x100_0000));
        let vmm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(BASE), LEN)]).unwrap();
        let mock = MockQueue::new(&ours, Ipa(BASE), SIZE);
        Pair { ours, vmm, mock }
    }

    /// Copies our memory into rust-vmm's, byte for byte.
    fn sync(&self) {
        let bytes = self.ours.bytes_at(Ipa(BASE), LEN).unwrap();
        self.vmm.write_slice(&bytes, GuestAddress(BASE)).unwrap();
    }

    fn vmm_queue(&self, event_idx: bool) -> VmmQueue {
        let mut q = VmmQueue::new(SIZE).unwrap();
        q.set_size(SIZE);
        let split = |a: Ipa| (Some(a.0 as u32), Some((a.0 >> 32) as u32));
        let (l, h) = split(self.mock.desc_table());
        q.set_desc_table_address(l, h);
        let (l, h) = split(self.mock.avail_ring());
        q.set_avail_ring_address(l, h);
        let (l, h) = split(self.mock.used_ring());
        q.set_used_ring_address(l, h);
        q.set_event_idx(event_idx);
        q.set_ready(true);
        q
    }
}

fn flags() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(VIRTQ_DESC_F_NEXT),
        3 => Just(VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE),
        2 => Just(0),
        2 => Just(VIRTQ_DESC_F_WRITE),
        1 => Just(VIRTQ_DESC_F_INDIRECT),
        1 => any::<u16>().prop_map(|f| f & 7),
    ]
}

fn desc(indirect_ok: bool) -> impl Strategy<Value = RawDescriptor> {
    (0u64..0x7000, 0u32..0x900, flags(), 0u16..10, 1u32..6).prop_map(
        move |(a, len, flags, next, n)| {
            if flags & VIRTQ_DESC_F_INDIRECT != 0 && indirect_ok {
                RawDescriptor {
                    addr: TABLE,
                    len: 16 * n,
                    flags,
                    next,
                }
            } else {
                RawDescriptor {
                    addr: BASE + 0x1000 + a,
                    len,
                    flags,
                    next,
                }
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_chain_we_accept_is_the_chain_rust_vmm_walks(
        table in proptest::collection::vec(desc(true), SIZE as usize),
        indirect in proptest::collection::vec(desc(false), 5),
        head in 0u16..SIZE,
    ) {
        let mut p = Pair::new();
        for (i, d) in table.iter().enumerate() {
            p.mock.write_desc(i as u16, *d);
        }
        for (i, d) in indirect.iter().enumerate() {
            p.ours.write(Ipa(TABLE + 16 * i as u64), &d.to_bytes()).unwrap();
        }
        p.mock.make_available(head);
        p.sync();
        let mut ours: Queue = p.mock.device_queue(false, true);
        let mine = ours.pop(&p.ours);
        let mut theirs = p.vmm_queue(false);
        let chain = theirs.pop_descriptor_chain(&p.vmm).unwrap();
        let walked: alloc::vec::Vec<(u64, u32, bool)> = chain
            .map(|d| (d.addr().0, d.len(), d.is_write_only()))
            .collect();
        if let Ok(Some(c)) = mine {
            let got: alloc::vec::Vec<(u64, u32, bool)> = c
                .descriptors()
                .iter()
                .map(|d| (d.addr.0, d.len, d.writable))
                .collect();
            prop_assert_eq!(got, walked);
        }
    }

    #[test]
    fn notification_decisions_match_rust_vmm(
        used_events in proptest::collection::vec(any::<u16>(), 1..40),
        event_idx in any::<bool>(),
        no_interrupt in any::<bool>(),
    ) {
        let p = Pair::new();
        if no_interrupt {
            p.mock.set_avail_flags(crate::queue::VIRTQ_AVAIL_F_NO_INTERRUPT);
        }
        let mut ours = p.mock.device_queue(event_idx, false);
        p.sync();
        let mut theirs = p.vmm_queue(event_idx);
        for (n, ue) in used_events.iter().enumerate() {
            p.mock.set_used_event(*ue % 64);
            p.sync();
            let head = (n % usize::from(SIZE)) as u16;
            ours.add_used(&p.ours, head, 0).unwrap();
            theirs.add_used(&p.vmm, head, 0).unwrap();
            let a = ours.needs_notification(&p.ours).unwrap();
            let b = theirs.needs_notification(&p.vmm).unwrap();
            if no_interrupt && !event_idx {
                // rust-vmm ignores VIRTQ_AVAIL_F_NO_INTERRUPT; 2.7.10 says suppress.
                prop_assert!(!a);
            } else {
                prop_assert_eq!(a, b, "after {} used", n + 1);
            }
        }
    }
}

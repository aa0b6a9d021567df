//! rust-vmm `virtio-queue` as an oracle on the same descriptor chains.

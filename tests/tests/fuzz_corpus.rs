//! Replays every input of the fuzz corpora as ordinary tests, so CI checks the
//! fuzz properties on stable without libFuzzer.
#![allow(
    clippy::panic,
    reason = "a failing replay panics with the input's path"
)]

use std::path::PathBuf;

/// Runs `check` on every file of `fuzz/corpus/<target>`; at least 5 must exist.
fn replay(target: &str, check: fn(&[u8]) -> Result<(), String>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus folder exists") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("readable input");
        if let Err(e) = check(&data) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n >= 5, "{target} corpus too small: {n} inputs");
}

#[test]
fn config_access_corpus_holds_every_property() {
    replay("config_access", tests::fuzz::run_accesses);
}

#[test]
fn vgic_mmio_corpus_holds_every_property() {
    replay("vgic_mmio", tests::fuzz::run_vgic);
}

#[test]
fn assigned_config_corpus_holds_every_property() {
    replay("assigned_config", tests::fuzz::run_assigned);
}

#[test]
fn virtio_pci_corpus_holds_every_property() {
    replay("virtio_pci", tests::fuzz::run_virtio_pci);
}

#[test]
fn virtio_blk_corpus_holds_every_property() {
    replay("virtio_blk", tests::fuzz::run_virtio_blk);
}

#[test]
fn msix_table_corpus_holds_every_property() {
    replay("msix_table", tests::fuzz::run_msix_table);
}

#[test]
fn assigned_msix_corpus_holds_every_property() {
    replay("assigned_msix", tests::fuzz::run_assigned_msix);
}

#[test]
fn assigned_msi_corpus_holds_every_property() {
    replay("assigned_msi", tests::fuzz::run_assigned_msi);
}

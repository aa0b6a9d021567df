//! Replays every input of the `config_access` fuzz corpus as an ordinary test,
//! so CI checks the fuzz properties on stable without libFuzzer.
use std::path::PathBuf;

#[test]
fn config_access_corpus_holds_every_property() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config_access");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus folder exists") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("readable input");
        if let Err(e) = tests::fuzz::run_accesses(&data) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n >= 5, "corpus too small: {n} inputs");
}

#[test]
fn vgic_mmio_corpus_holds_every_property() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/vgic_mmio");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus folder exists") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("readable input");
        if let Err(e) = tests::fuzz::run_vgic(&data) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n >= 5, "corpus too small: {n} inputs");
}

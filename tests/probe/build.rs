//! Links the probe as a static position-independent executable with its linker
//! script: it relocates itself at entry, like the hypervisor.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo:rustc-link-arg-bins=--pie");
    println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
    println!("cargo:rustc-link-arg-bins=-znotext");
    println!("cargo:rerun-if-changed=linker.ld");
}

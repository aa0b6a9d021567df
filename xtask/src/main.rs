//! `cargo xtask`: build, assemble the guest image, run under QEMU, test.
use std::process::{exit, Command};

fn cargo(args: &[&str]) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    Command::new(cargo)
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = match args.first().map(String::as_str) {
        Some("test") => {
            cargo(&[
                "build",
                "-p",
                "hypervisor",
                "--target",
                "aarch64-unknown-none",
            ]) && cargo(&["test"])
        }
        _ => {
            eprintln!("usage: cargo xtask <test|run>");
            false
        }
    };
    exit(if ok { 0 } else { 1 });
}

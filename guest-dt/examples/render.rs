//! Writes the default guest DTB to the path given: `cargo run -p guest-dt --example render -- out.dtb [bootargs]`.
fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: render OUT.dtb [BOOTARGS]");
        std::process::exit(2);
    };
    let chosen = guest_dt::Chosen {
        bootargs: args.next().unwrap_or_else(|| "console=ttyAMA0".into()),
        initrd: None,
    };
    match guest_dt::GuestLayout::qemu_virt_default(2, 1 << 30).render(&chosen) {
        Ok(dtb) => {
            if let Err(e) = std::fs::write(&path, dtb) {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("render: {e:?}");
            std::process::exit(1);
        }
    }
}

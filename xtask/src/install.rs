//! Installing what the commands need on a Debian machine: QEMU 10 from the
//! distribution's backports suite when the installed one is missing or older.

use std::path::Path;
use std::process::Command;

use crate::error::Context;
use crate::progress::{run_lines, Progress, Style};
use crate::{Error, Result};

/// Oldest QEMU major version accepted (guest-loader, GICv3 virtualization, `-cpu max` features).
pub const MIN_QEMU_MAJOR: u32 = 10;

/// The deb822 sources file whose `Suites:` line gets the backports suite.
pub const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

/// The major version in `qemu-system-aarch64 --version` output
/// (`QEMU emulator version 10.0.2 (Debian ...)`).
pub fn parse_qemu_major(version_output: &str) -> Option<u32> {
    let rest = version_output.split("version ").nth(1)?;
    rest.split('.').next()?.trim().parse().ok()
}

/// The installed `qemu-system-aarch64` major version, if any.
pub fn installed_qemu_major() -> Option<u32> {
    let out = Command::new("qemu-system-aarch64")
        .arg("--version")
        .output()
        .ok()?;
    parse_qemu_major(&String::from_utf8_lossy(&out.stdout))
}

/// `VERSION_CODENAME` from an os-release file's contents.
pub fn parse_codename(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        l.strip_prefix("VERSION_CODENAME=")
            .map(|v| v.trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
    })
}

/// `sources` (deb822) with `suite` appended to every `Suites:` line that
/// lists `<codename>` but not yet `suite`; `None` when nothing changes.
pub fn add_suite(sources: &str, codename: &str, suite: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(sources.len() + suite.len() + 1);
    for line in sources.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if let Some(list) = body.strip_prefix("Suites:") {
            let suites: Vec<&str> = list.split_whitespace().collect();
            if suites.contains(&codename) && !suites.contains(&suite) {
                out.push_str(body.trim_end());
                out.push(' ');
                out.push_str(suite);
                out.push_str(nl);
                changed = true;
                continue;
            }
        }
        out.push_str(line);
    }
    changed.then_some(out)
}

/// Runs `cmd` (an `apt-get` doing `what`): on a terminal under a spinner
/// showing its latest output line, otherwise with its output passed through
/// as it comes.
fn run(what: &str, cmd: &mut Command) -> Result<()> {
    if Style::current() == Style::Bar {
        let progress = Progress::spinner(what);
        run_lines(cmd, |l| progress.set_message(l))?;
        progress.finish();
        return Ok(());
    }
    eprintln!("xtask: {cmd:?}");
    let status = cmd.status().context(|| format!("{cmd:?}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error(format!("{cmd:?} failed: {status}")))
    }
}

/// The distribution's backports suite (`<codename>-backports`), enabled in
/// the host's deb822 sources if it is not yet (the guest image's private apt
/// state reads the same sources: the newer guest kernel comes from there).
pub fn ensure_backports_suite() -> Result<String> {
    let os_release = std::fs::read_to_string("/etc/os-release")?;
    let codename = parse_codename(&os_release)
        .ok_or_else(|| Error::msg("no VERSION_CODENAME in /etc/os-release"))?;
    let backports = format!("{codename}-backports");
    let sources_path = Path::new(DEBIAN_SOURCES);
    let sources = std::fs::read_to_string(sources_path)
        .context(|| format!("reading {DEBIAN_SOURCES} (deb822 sources expected)"))?;
    if let Some(updated) = add_suite(&sources, &codename, &backports) {
        eprintln!("xtask: enabling {backports} in {DEBIAN_SOURCES}");
        std::fs::write(sources_path, updated).context(|| format!("writing {DEBIAN_SOURCES}"))?;
    }
    Ok(backports)
}

/// Makes sure `qemu-system-aarch64` version 10 or newer is installed,
/// installing `qemu-system-arm` from `<codename>-backports` otherwise.
/// Idempotent: does nothing when a recent QEMU is present.
pub fn ensure_qemu() -> Result<()> {
    if installed_qemu_major().is_some_and(|v| v >= MIN_QEMU_MAJOR) {
        return Ok(());
    }
    let backports = ensure_backports_suite()?;
    run("apt-get update", Command::new("apt-get").arg("update"))?;
    run(
        &format!("installing qemu-system-arm from {backports}"),
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-t", &backports, "qemu-system-arm"]),
    )?;
    match installed_qemu_major() {
        Some(v) if v >= MIN_QEMU_MAJOR => Ok(()),
        v => Err(Error(format!(
            "qemu-system-aarch64 is version {v:?} after installing, need {MIN_QEMU_MAJOR}"
        ))),
    }
}

/// Makes sure the host has `iperf3` (the bench's TCP client, the guest
/// running the server), installing the distribution's package otherwise.
/// Idempotent: does nothing when `iperf3 --version` runs.
pub fn ensure_iperf3() -> Result<()> {
    let present = || {
        Command::new("iperf3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return Ok(());
    }
    run("apt-get update", Command::new("apt-get").arg("update"))?;
    // Debian's iperf3 asks (debconf) whether to start a daemon: no terminal here.
    run(
        "installing iperf3",
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends", "iperf3"]),
    )?;
    if present() {
        Ok(())
    } else {
        Err(Error::msg("iperf3 is still missing after installing it"))
    }
}

/// Makes sure the host tools the guest image needs (`apt-get`, `apt-cache`,
/// `dpkg-deb`) exist; they are part of every Debian system.
pub fn check_debian_tools() -> Result<()> {
    // xz: the newer kernels ship their modules xz-compressed.
    for tool in ["apt-get", "apt-cache", "dpkg-deb", "xz"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Err(Error(format!(
                "{tool} not found: a Debian host is required"
            )));
        }
    }
    Ok(())
}

/// Installs the Rust target `triple` with rustup when it is missing (the
/// toolchain file lists it, but an already-installed toolchain does not get
/// new targets by itself).
pub fn ensure_rust_target(triple: &str) -> Result<()> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(crate::paths::workspace_root())
        .output()
    else {
        // No rustup: the toolchain's provider is responsible for the target.
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == triple)
    {
        return Ok(());
    }
    eprintln!("xtask: installing the Rust target {triple}");
    let status = Command::new("rustup")
        .args(["target", "add", triple])
        .current_dir(crate::paths::workspace_root())
        .status()
        .context(|| "rustup target add".to_string())?;
    if !status.success() {
        return Err(Error(format!("rustup target add {triple} failed")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCES: &str = "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nSuites: bookworm-security\nComponents: main\n";

    #[test]
    fn qemu_major_is_read_from_version_banner() {
        let banner = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)\nCopyright";
        assert_eq!(parse_qemu_major(banner), Some(10));
    }

    #[test]
    fn codename_is_read_from_os_release() {
        let os = "PRETTY_NAME=\"Debian\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(parse_codename(os).as_deref(), Some("bookworm"));
    }

    #[test]
    fn backports_suite_is_appended_to_the_main_suites_line_only() {
        let out = add_suite(SOURCES, "bookworm", "bookworm-backports").expect("changed");
        assert!(out.contains("Suites: bookworm bookworm-updates bookworm-backports\n"));
        assert!(out.contains("Suites: bookworm-security\n"));
    }

    #[test]
    fn adding_backports_twice_changes_nothing() {
        let once = add_suite(SOURCES, "bookworm", "bookworm-backports").expect("changed");
        assert_eq!(add_suite(&once, "bookworm", "bookworm-backports"), None);
    }
}

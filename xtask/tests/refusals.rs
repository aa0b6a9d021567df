//! `cargo xtask run --config FILE` with a bad file: xtask refuses it before
//! it builds or boots anything, with exit status 2 (as for a bad option
//! value) and an error naming the file, the line, the guests and the key.
//! The binary is run as `cargo xtask` runs it; nothing here needs QEMU.
#![allow(clippy::panic, reason = "a failing test panics with xtask's output")]

use std::path::PathBuf;
use std::process::Command;

/// A file of this test's own holding `text`.
fn config_file(test: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-refusals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(format!("{test}.toml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// Runs `xtask run --config` on `text` and asserts it was refused: exit
/// status 2, nothing on stdout, no build started. Returns the error
/// message with the file's name replaced by `FILE`.
fn refusal(test: &str, text: &str) -> String {
    let path = config_file(test, text);
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("running xtask: {e}"));
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    assert!(
        !stderr.contains("xtask: cargo "),
        "a refused file builds nothing:\n{stderr}"
    );
    stderr
        .strip_prefix("xtask: error: ")
        .unwrap_or_else(|| panic!("want an error line first:\n{stderr}"))
        .replace(&path.display().to_string(), "FILE")
}

/// Two guests, `b` with `extra` added to its table.
fn two(extra: &str) -> String {
    format!(
        "[[guest]]\nname = \"a\"\nmemory = \"512M\"\n\n[[guest]]\nname = \"b\"\nmemory = \"512M\"\nsegment = 2\n{extra}"
    )
}

#[test]
fn two_guests_on_one_segment_are_refused_naming_both_with_status_2() {
    let e = refusal(
        "segment",
        &two("").replace("segment = 2", "segment = 1").replace(
            "memory = \"512M\"\n\n",
            "memory = \"512M\"\nsegment = 1\n\n",
        ),
    );
    assert_eq!(
        e,
        "FILE:9:11: guest b: segment: 1 is guest a's segment too\n"
    );
}

#[test]
fn guests_with_more_memory_than_the_machine_are_refused_naming_each_with_status_2() {
    let e = refusal(
        "memory",
        &format!("[machine]\nmemory = \"768M\"\n\n{}", two("")),
    );
    assert_eq!(
        e,
        "FILE:10:10: guest b: memory: the guests' memory adds up to 1024 MiB (a: 512 MiB, b: 512 MiB), more than the machine's 768 MiB\n"
    );
}

#[test]
fn an_unknown_key_is_refused_naming_the_guest_and_the_key_with_status_2() {
    let e = refusal("key", &two("memroy = \"1G\"\n"));
    assert!(
        e.starts_with("FILE:9:1: guest b: unknown field `memroy`, expected one of"),
        "{e}"
    );
}

#[test]
fn a_guest_name_used_twice_is_refused_naming_it_with_status_2() {
    let e = refusal("name", &two("").replace("name = \"b\"", "name = \"a\""));
    assert_eq!(
        e,
        "FILE:6:8: guest a: name: \"a\" is also guest #1's name\n"
    );
}

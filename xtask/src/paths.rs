//! Where things live: the workspace root and the cache outside the work tree.

use std::path::PathBuf;

/// Name of the cache directory under `$XDG_CACHE_HOME` (or `~/.cache`).
pub const CACHE_NAME: &str = "synthetic-pci";

/// The workspace root (the parent of the `xtask` crate).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cache directory: `$XDG_CACHE_HOME/synthetic-pci`, else `~/.cache/synthetic-pci`,
/// else (no home) a directory in the system temporary directory.
pub fn cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join(CACHE_NAME);
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".cache").join(CACHE_NAME);
    }
    std::env::temp_dir().join(CACHE_NAME)
}

/// The cargo binary that runs us (`$CARGO`), or `cargo` from `PATH`.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

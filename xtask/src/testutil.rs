//! Helpers of the unit tests: temporary files shaped like the boot's.

use std::path::PathBuf;

/// A directory of its own under the system's temporary directory, removed
/// on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// An empty directory named after the process and `name`.
    pub(crate) fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("xtask-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    /// A file of `len` bytes (sparse) in it, starting with `head`.
    pub(crate) fn file_with(&self, name: &str, head: &[u8], len: u64) -> PathBuf {
        use std::io::Write;
        let p = self.0.join(name);
        let mut f = std::fs::File::create(&p).expect("create");
        f.write_all(head).expect("write");
        f.set_len(len).expect("set_len");
        p
    }

    /// A file of `len` zero bytes (sparse) in it.
    pub(crate) fn file(&self, name: &str, len: u64) -> PathBuf {
        self.file_with(name, &[], len)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The first 64 bytes of an arm64 `Image` (Linux `Documentation/arch/arm64/booting.rst`).
pub(crate) fn image_head(text_offset: u64, image_size: u64) -> Vec<u8> {
    let mut head = vec![0u8; 64];
    head[8..16].copy_from_slice(&text_offset.to_le_bytes());
    head[16..24].copy_from_slice(&image_size.to_le_bytes());
    head[56..60].copy_from_slice(b"ARM\x64");
    head
}

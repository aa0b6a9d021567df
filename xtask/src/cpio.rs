//! A writer for the `newc` cpio format, the format of a Linux initramfs
//! (see the kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

/// `S_IFDIR`.
const S_IFDIR: u32 = 0o040000;
/// `S_IFREG`.
const S_IFREG: u32 = 0o100000;
/// `S_IFLNK`.
const S_IFLNK: u32 = 0o120000;
/// `S_IFCHR`.
const S_IFCHR: u32 = 0o020000;

/// Contents of one regular file in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileData {
    /// Bytes held in memory.
    Bytes(Vec<u8>),
    /// A host file read when the archive is written.
    Host(PathBuf),
}

/// One archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory with permission bits.
    Dir {
        /// Permission bits.
        perm: u32,
    },
    /// A regular file.
    File {
        /// Permission bits.
        perm: u32,
        /// Contents.
        data: FileData,
    },
    /// A symbolic link to `target`.
    Symlink {
        /// Link target, as stored.
        target: String,
    },
    /// A character device node.
    CharDev {
        /// Permission bits.
        perm: u32,
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

/// A file tree to be written as a `newc` archive. Paths are relative
/// (`bin/sh`), parents are created as directories when missing, and entries
/// are written parents first.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `node` at `path` (leading `/` ignored), creating missing parent
    /// directories with mode 0755. A later insert at the same path wins.
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = path.trim_matches('/');
        if path.is_empty() {
            return;
        }
        let mut parent = String::new();
        for part in path
            .split('/')
            .take(path.split('/').count().saturating_sub(1))
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.nodes
                .entry(parent.clone())
                .or_insert(Node::Dir { perm: 0o755 });
        }
        self.nodes.insert(path.to_string(), node);
    }

    /// Whether `path` exists in the tree.
    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path.trim_matches('/'))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Writes the tree as a `newc` archive ending in the `TRAILER!!!` entry.
    /// Returns the number of bytes written.
    pub fn write_newc<W: Write>(&self, out: W) -> io::Result<u64> {
        let mut w = NewcWriter { out, written: 0 };
        let mut ino: u32 = 1;
        for (path, node) in &self.nodes {
            let (mode, data, rdev): (u32, Vec<u8>, (u32, u32)) = match node {
                Node::Dir { perm } => (S_IFDIR | perm, Vec::new(), (0, 0)),
                Node::File { perm, data } => {
                    let bytes = match data {
                        FileData::Bytes(b) => b.clone(),
                        FileData::Host(p) => std::fs::read(p).map_err(|e| {
                            io::Error::new(e.kind(), format!("{}: {e}", p.display()))
                        })?,
                    };
                    (S_IFREG | perm, bytes, (0, 0))
                }
                Node::Symlink { target } => (S_IFLNK | 0o777, target.as_bytes().to_vec(), (0, 0)),
                Node::CharDev { perm, major, minor } => {
                    (S_IFCHR | perm, Vec::new(), (*major, *minor))
                }
            };
            let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
            w.entry(ino, mode, nlink, rdev, path, &data)?;
            ino = ino.wrapping_add(1);
        }
        w.entry(0, 0, 1, (0, 0), "TRAILER!!!", &[])?;
        w.out.flush()?;
        Ok(w.written)
    }
}

struct NewcWriter<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> NewcWriter<W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    fn entry(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        name: &str,
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
        // c_magic, then c_ino c_mode c_uid c_gid c_nlink c_mtime c_filesize
        // c_devmajor c_devminor c_rdevmajor c_rdevminor c_namesize c_check.
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            0, 0, 0, 0, 0, rdev.0, rdev.1, 0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad4()?;
        self.put(data)?;
        self.pad4()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(tree: &Tree) -> Vec<u8> {
        let mut out = Vec::new();
        tree.write_newc(&mut out).expect("write to Vec");
        out
    }

    #[test]
    fn single_file_entry_matches_newc_layout() {
        let mut t = Tree::new();
        t.insert(
            "a",
            Node::File {
                perm: 0o644,
                data: FileData::Bytes(b"hi".to_vec()),
            },
        );
        let out = archive(&t);
        let expected_header = [
            "070701",   // c_magic
            "00000001", // c_ino
            "000081a4", // c_mode: S_IFREG | 0644
            "00000000", // c_uid
            "00000000", // c_gid
            "00000001", // c_nlink
            "00000000", // c_mtime
            "00000002", // c_filesize
            "00000000", // c_devmajor
            "00000000", // c_devminor
            "00000000", // c_rdevmajor
            "00000000", // c_rdevminor
            "00000002", // c_namesize: "a\0"
            "00000000", // c_check
        ]
        .concat();
        assert_eq!(&out[..110], expected_header.as_bytes());
        // Name "a\0" ends at 112 (4-aligned), data "hi" then 2 bytes of padding.
        assert_eq!(&out[110..116], b"a\0hi\0\0");
    }

    #[test]
    fn archive_ends_with_trailer_entry_padded_to_four_bytes() {
        let out = archive(&Tree::new());
        assert_eq!(&out[110..121], b"TRAILER!!!\0");
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn insert_creates_missing_parent_directories() {
        let mut t = Tree::new();
        t.insert("/usr/bin/x", Node::Symlink { target: "y".into() });
        assert!(t.contains("usr") && t.contains("usr/bin"));
    }

    #[test]
    fn char_device_records_major_and_minor_in_rdev_fields() {
        let mut t = Tree::new();
        t.insert(
            "console",
            Node::CharDev {
                perm: 0o600,
                major: 5,
                minor: 1,
            },
        );
        let out = archive(&t);
        let header = std::str::from_utf8(&out[..110]).expect("ascii header");
        assert_eq!(&header[14..22], "00002180");
        assert_eq!(&header[78..94], "0000000500000001");
    }
}

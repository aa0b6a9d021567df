//! The guest's initramfs as a file tree, written in the `newc` cpio format,
//! the format of a Linux initramfs (see the kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`); the
//! `cpio` crate encodes the entries.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use cpio::NewcBuilder;

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
        self.write_newc_with(out, |_| {})
    }

    /// [`Tree::write_newc`], calling `each` with every entry's path once it
    /// is written (for progress reports).
    ///
    /// Entries are numbered from inode 1 in path order and carry uid, gid
    /// and mtime 0, so the same tree always gives the same bytes (the guest
    /// image's cache key relies on it). The encoding is the `cpio` crate's.
    pub fn write_newc_with<W: Write>(&self, out: W, mut each: impl FnMut(&str)) -> io::Result<u64> {
        let mut out = Counting {
            inner: out,
            written: 0,
        };
        let mut ino: u32 = 1;
        for (path, node) in &self.nodes {
            let entry = NewcBuilder::new(path).ino(ino);
            match node {
                Node::Dir { perm } => {
                    // A directory's "." link and its parent's entry for it.
                    let entry = entry.mode(S_IFDIR | perm).nlink(2);
                    entry.write(&mut out, 0).finish()?;
                }
                Node::File { perm, data } => {
                    let entry = entry.mode(S_IFREG | perm);
                    match data {
                        FileData::Bytes(b) => {
                            write_data(entry, &mut out, &mut &b[..], b.len() as u64)?
                        }
                        FileData::Host(p) => {
                            let named = |e: io::Error| {
                                io::Error::new(e.kind(), format!("{}: {e}", p.display()))
                            };
                            let file = std::fs::File::open(p).map_err(named)?;
                            let len = file.metadata().map_err(named)?.len();
                            write_data(entry, &mut out, &mut file.take(len), len).map_err(named)?;
                        }
                    }
                }
                Node::Symlink { target } => {
                    let entry = entry.mode(S_IFLNK | 0o777);
                    write_data(entry, &mut out, &mut target.as_bytes(), target.len() as u64)?;
                }
                Node::CharDev { perm, major, minor } => {
                    let entry = entry
                        .mode(S_IFCHR | perm)
                        .rdev_major(*major)
                        .rdev_minor(*minor);
                    entry.write(&mut out, 0).finish()?;
                }
            }
            each(path);
            ino = ino.wrapping_add(1);
        }
        cpio::newc::trailer(&mut out)?;
        out.flush()?;
        Ok(out.written)
    }
}

/// Writes one entry whose data, `len` bytes, comes from `data`.
fn write_data<W: Write>(
    entry: NewcBuilder,
    out: &mut W,
    data: &mut impl Read,
    len: u64,
) -> io::Result<()> {
    let size = u32::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
    let mut w = entry.write(out, size);
    let copied = io::copy(data, &mut w)?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{copied} bytes of {len}: the file changed while being archived"),
        ));
    }
    w.finish()?;
    Ok(())
}

/// A writer that counts the bytes through it.
struct Counting<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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

    /// One entry of each kind, odd name and data lengths (every padding
    /// case), parents created by `insert`.
    fn every_kind(tag: &str) -> (Tree, PathBuf) {
        let host = std::env::temp_dir().join(format!("xtask-cpio-{}-{tag}", std::process::id()));
        std::fs::write(&host, b"host bytes, seven and a bit\n").expect("scratch file");
        let mut t = Tree::new();
        t.insert("tmp", Node::Dir { perm: 0o1777 });
        t.insert(
            "dev/console",
            Node::CharDev {
                perm: 0o600,
                major: 5,
                minor: 1,
            },
        );
        t.insert(
            "lib",
            Node::Symlink {
                target: "usr/lib".into(),
            },
        );
        t.insert(
            "init",
            Node::File {
                perm: 0o755,
                data: FileData::Bytes(b"#!/bin/sh\n".to_vec()),
            },
        );
        t.insert(
            "usr/lib/x/abc",
            Node::File {
                perm: 0o644,
                data: FileData::Host(host.clone()),
            },
        );
        t.insert(
            "e",
            Node::File {
                perm: 0o644,
                data: FileData::Bytes(Vec::new()),
            },
        );
        (t, host)
    }

    /// What the hand-written writer this module had before the `cpio` crate
    /// (commit 754d666) wrote for [`every_kind`], entry by entry: the guest
    /// image's cache key assumes the same tree always gives these bytes.
    const FORMER_WRITER_BYTES: [&str; 11] = [
        "07070100000001000041ed0000000000000000000000020000000000000000000000000000000000000000000000000000000400000000dev\0\0\0",
        "07070100000002000021800000000000000000000000010000000000000000000000000000000000000005000000010000000c00000000dev/console\0\0\0",
        "07070100000003000081a40000000000000000000000010000000000000000000000000000000000000000000000000000000200000000e\0",
        "07070100000004000081ed000000000000000000000001000000000000000a000000000000000000000000000000000000000500000000init\0\0#!/bin/sh\n\0\0",
        "070701000000050000a1ff0000000000000000000000010000000000000007000000000000000000000000000000000000000400000000lib\0\0\0usr/lib\0",
        "07070100000006000043ff0000000000000000000000020000000000000000000000000000000000000000000000000000000400000000tmp\0\0\0",
        "07070100000007000041ed0000000000000000000000020000000000000000000000000000000000000000000000000000000400000000usr\0\0\0",
        "07070100000008000041ed0000000000000000000000020000000000000000000000000000000000000000000000000000000800000000usr/lib\0\0\0",
        "07070100000009000041ed0000000000000000000000020000000000000000000000000000000000000000000000000000000a00000000usr/lib/x\0",
        "0707010000000a000081a4000000000000000000000001000000000000001c000000000000000000000000000000000000000e00000000usr/lib/x/abc\0host bytes, seven and a bit\n",
        "07070100000000000000000000000000000000000000010000000000000000000000000000000000000000000000000000000b00000000TRAILER!!!\0\0\0\0",
    ];

    #[test]
    fn every_node_kind_is_written_as_the_former_writer_wrote_it() {
        let (t, host) = every_kind("former");
        let out = archive(&t);
        let _ = std::fs::remove_file(host);
        let mut rest = &out[..];
        for (i, want) in FORMER_WRITER_BYTES.iter().enumerate() {
            let n = want.len().min(rest.len());
            assert_eq!(
                String::from_utf8_lossy(&rest[..n]),
                *want,
                "entry {i} differs"
            );
            rest = &rest[n..];
        }
        assert!(rest.is_empty(), "{} bytes after the trailer", rest.len());
    }

    #[test]
    fn write_reports_the_archive_length_and_each_entry() {
        let (t, host) = every_kind("length");
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let n = t
            .write_newc_with(&mut out, |p| seen.push(p.to_string()))
            .expect("write to Vec");
        let _ = std::fs::remove_file(host);
        assert_eq!(n, out.len() as u64);
        assert_eq!(seen.len(), t.len());
        assert_eq!(seen.first().map(String::as_str), Some("dev"));
    }

    #[test]
    fn a_missing_host_file_is_an_error_naming_it() {
        let mut t = Tree::new();
        t.insert(
            "x",
            Node::File {
                perm: 0o644,
                data: FileData::Host("/nonexistent/xtask-cpio".into()),
            },
        );
        let e = t.write_newc(Vec::new()).expect_err("refused");
        assert!(e.to_string().contains("/nonexistent/xtask-cpio"), "{e}");
    }
}

//! An ext2 writer for the loaders of RHEL 4–5 (and 6), whose 2.6.9+ kernels
//! loop-mount `updates.img` and copy it into `/tmp/updates`.
//!
//! The output is the most conservative ext2 `mke2fs -r 1 -b 1024 -I 128
//! -O none,filetype,sparse_super` would make: revision 1, 1 KiB blocks,
//! 128-byte inodes, 8192 blocks per group, no reserved GDT blocks, no journal,
//! no extended attributes, no hashed directories, everything owned by root.
//! Files use classic block maps (12 direct, single and double indirect), so a
//! file may be up to 12 + 256 + 256² blocks (64.3 MiB); nothing we ship comes
//! close. Writing is positional (`Sink::write_at`) so a large `--size-kib`
//! costs no memory and leaves the file sparse; the bytes are the same either way.

use std::collections::VecDeque;
use std::io;

use crate::error::{Error, Result};
use crate::tree::{Dir, File, Node, Tree, DIR_MODE};

pub const BLOCK_SIZE: u64 = 1024;
const BS: usize = BLOCK_SIZE as usize;
const BLOCKS_PER_GROUP: u32 = 8 * BS as u32; // one bitmap block's worth
const INODE_SIZE: u32 = 128;
const INODES_PER_BLOCK: u32 = BS as u32 / INODE_SIZE;
const DESC_SIZE: u32 = 32;
const ROOT_INO: u32 = 2;
/// First non-reserved inode (revision 1 default); mke2fs puts lost+found here.
const FIRST_INO: u32 = 11;
const LPF_INO: u32 = 11;
/// mke2fs gives lost+found 12 KiB up front so e2fsck can relink orphans
/// without allocating; we do the same.
const LPF_BLOCKS: usize = 12;
const NDIR: u64 = 12;
const PTRS: u64 = BS as u64 / 4;
pub const MAX_FILE_BLOCKS: u64 = NDIR + PTRS + PTRS * PTRS;
/// Inodes left free, so the image can be inspected or patched by hand.
const SPARE_INODES: u32 = 16;
/// A last group smaller than its own metadata plus this is dropped (when
/// `--size-kib` is given) or grown (when sizing automatically), as mke2fs does.
const MIN_LAST_GROUP_DATA: u32 = 16;

const S_IFDIR: u16 = 0o040000;
const S_IFREG: u16 = 0o100000;
const FT_REG: u8 = 1;
const FT_DIR: u8 = 2;

const FEATURE_INCOMPAT_FILETYPE: u32 = 0x0002;
const FEATURE_RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;

/// Where the image goes: a file (positional writes, sparse) or memory (tests).
pub trait Sink {
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
}

impl Sink for Vec<u8> {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.resize(len as usize, 0);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let o = offset as usize;
        self[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
}

impl Sink for std::fs::File {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Every inode time and the superblock times.
    pub timestamp: u32,
    /// Exact image size in KiB; `None` sizes it to the content plus slack.
    pub size_kib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub size_kib: u64,
    pub blocks: u32,
    pub free_blocks: u32,
    pub groups: u32,
    pub inodes: u32,
    pub uuid: [u8; 16],
}

// ---------------------------------------------------------------- geometry

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    blocks: u32,
    groups: u32,
    inodes_per_group: u32,
    gdt_blocks: u32,
    itable_blocks: u32,
}

impl Geometry {
    fn new(blocks: u32, inodes_needed: u32) -> Geometry {
        let groups = (blocks - 1).div_ceil(BLOCKS_PER_GROUP).max(1);
        // A multiple of the inodes in one table block, so tables are whole blocks.
        let ipg = inodes_needed
            .div_ceil(groups)
            .max(16)
            .next_multiple_of(INODES_PER_BLOCK);
        Geometry {
            blocks,
            groups,
            inodes_per_group: ipg,
            gdt_blocks: (groups * DESC_SIZE).div_ceil(BS as u32),
            itable_blocks: ipg / INODES_PER_BLOCK,
        }
    }
    fn start(&self, g: u32) -> u32 {
        1 + g * BLOCKS_PER_GROUP
    }
    fn len(&self, g: u32) -> u32 {
        if g + 1 == self.groups {
            self.blocks - self.start(g)
        } else {
            BLOCKS_PER_GROUP
        }
    }
    /// sparse_super: copies of the superblock only in groups 0, 1 and powers of 3, 5, 7.
    fn has_super(g: u32) -> bool {
        fn power_of(mut g: u32, base: u32) -> bool {
            while g.is_multiple_of(base) {
                g /= base;
            }
            g == 1
        }
        g <= 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
    }
    fn block_bitmap(&self, g: u32) -> u32 {
        self.start(g)
            + if Self::has_super(g) {
                1 + self.gdt_blocks
            } else {
                0
            }
    }
    fn inode_bitmap(&self, g: u32) -> u32 {
        self.block_bitmap(g) + 1
    }
    fn inode_table(&self, g: u32) -> u32 {
        self.block_bitmap(g) + 2
    }
    /// Blocks of group `g` taken by metadata; they come first in the group.
    fn overhead(&self, g: u32) -> u32 {
        self.inode_table(g) + self.itable_blocks - self.start(g)
    }
    fn data_capacity(&self) -> u64 {
        let meta: u64 = (0..self.groups).map(|g| self.overhead(g) as u64).sum();
        (self.blocks as u64 - 1).saturating_sub(meta)
    }
    fn inodes(&self) -> u32 {
        self.inodes_per_group * self.groups
    }
    fn last_group_ok(&self) -> bool {
        let last = self.groups - 1;
        self.len(last) >= self.overhead(last) + MIN_LAST_GROUP_DATA
    }

    /// Smallest geometry holding `data` blocks plus `slack`.
    fn auto(data: u64, slack: u64, inodes: u32) -> Result<Geometry> {
        let want = data + slack;
        let mut blocks = 1 + want + 8;
        loop {
            if blocks > u32::MAX as u64 {
                return Err(Error::TooLarge(
                    "content too large for a 1 KiB-block ext2 image".into(),
                ));
            }
            let geo = Geometry::new(blocks as u32, inodes);
            let last = geo.groups - 1;
            if !geo.last_group_ok() {
                blocks = (geo.start(last) + geo.overhead(last) + MIN_LAST_GROUP_DATA) as u64;
            } else if geo.data_capacity() < want {
                blocks += want - geo.data_capacity();
            } else {
                return Ok(geo);
            }
        }
    }

    /// Geometry for an image of exactly `blocks` KiB (a runt last group is left unused).
    fn fixed(blocks: u64, inodes: u32) -> Geometry {
        let mut blocks = blocks.clamp(2, u32::MAX as u64) as u32;
        loop {
            let geo = Geometry::new(blocks, inodes);
            if geo.groups == 1 || geo.last_group_ok() {
                return geo;
            }
            blocks = geo.start(geo.groups - 1);
        }
    }
}

// ---------------------------------------------------------------- the plan

enum Kind<'a> {
    File(&'a File),
    /// Packed directory blocks and the number of subdirectories.
    Dir {
        blocks: Vec<u8>,
        subdirs: u32,
    },
}

struct Inode<'a> {
    ino: u32,
    kind: Kind<'a>,
}

impl Inode<'_> {
    fn data_blocks(&self) -> u64 {
        match &self.kind {
            Kind::File(f) => (f.data.len() as u64).div_ceil(BLOCK_SIZE),
            Kind::Dir { blocks, .. } => (blocks.len() / BS) as u64,
        }
    }
}

/// Indirect blocks a file of `n` data blocks needs beside its data.
fn map_blocks(n: u64) -> u64 {
    let mut m = 0;
    if n > NDIR {
        m += 1;
    }
    if n > NDIR + PTRS {
        m += 1 + (n - NDIR - PTRS).div_ceil(PTRS);
    }
    m
}

/// Packs directory entries into whole blocks; `min_blocks` pads with empty blocks.
fn pack_dir(entries: &[(&str, u32, u8)], min_blocks: usize) -> Vec<u8> {
    let mut out = vec![0u8; BS];
    let mut block_start = 0;
    let mut pos = 0;
    let mut last = 0; // offset of the previous entry, whose rec_len absorbs the tail
    for (name, ino, ft) in entries {
        let need = 8 + name.len().next_multiple_of(4);
        if pos + need > block_start + BS {
            let tail = (block_start + BS - last) as u16;
            out[last + 4..last + 6].copy_from_slice(&tail.to_le_bytes());
            block_start += BS;
            pos = block_start;
            out.resize(block_start + BS, 0);
        }
        out[pos..pos + 4].copy_from_slice(&ino.to_le_bytes());
        out[pos + 4..pos + 6].copy_from_slice(&(need as u16).to_le_bytes());
        out[pos + 6] = name.len() as u8;
        out[pos + 7] = *ft;
        out[pos + 8..pos + 8 + name.len()].copy_from_slice(name.as_bytes());
        last = pos;
        pos += need;
    }
    let tail = (block_start + BS - last) as u16;
    out[last + 4..last + 6].copy_from_slice(&tail.to_le_bytes());
    while out.len() < min_blocks * BS {
        // An empty block is one unused entry spanning it.
        let at = out.len();
        out.resize(at + BS, 0);
        out[at + 4..at + 6].copy_from_slice(&(BS as u16).to_le_bytes());
    }
    out
}

/// Numbers inodes breadth-first in name order and packs every directory.
fn plan(tree: &Tree) -> Result<Vec<Inode<'_>>> {
    if tree.root.entries.contains_key("lost+found") {
        return Err(Error::BadDest {
            dest: "lost+found".into(),
            why: "is reserved for e2fsck at the root of an ext2 image".into(),
        });
    }
    let mut out = vec![Inode {
        ino: LPF_INO,
        kind: Kind::Dir {
            blocks: pack_dir(
                &[(".", LPF_INO, FT_DIR), ("..", ROOT_INO, FT_DIR)],
                LPF_BLOCKS,
            ),
            subdirs: 0,
        },
    }];
    let mut next = FIRST_INO + 1;
    let mut queue: VecDeque<(&Dir, u32, u32)> = VecDeque::from([(&tree.root, ROOT_INO, ROOT_INO)]);
    while let Some((dir, ino, parent)) = queue.pop_front() {
        let mut entries: Vec<(&str, u32, u8)> = vec![(".", ino, FT_DIR), ("..", parent, FT_DIR)];
        let mut subdirs = dir.subdirs() as u32;
        if ino == ROOT_INO {
            entries.push(("lost+found", LPF_INO, FT_DIR));
            subdirs += 1;
        }
        for (name, node) in &dir.entries {
            let child = next;
            next = next
                .checked_add(1)
                .ok_or_else(|| Error::TooLarge("too many files".into()))?;
            match node {
                Node::Dir(d) => {
                    entries.push((name, child, FT_DIR));
                    queue.push_back((d, child, ino));
                }
                Node::File(f) => {
                    if (f.data.len() as u64).div_ceil(BLOCK_SIZE) > MAX_FILE_BLOCKS {
                        return Err(Error::TooLarge(format!(
                            "file {name:?} is {} bytes; this ext2 writer holds files up to {} KiB (no triple indirect blocks)",
                            f.data.len(),
                            MAX_FILE_BLOCKS
                        )));
                    }
                    entries.push((name, child, FT_REG));
                    out.push(Inode {
                        ino: child,
                        kind: Kind::File(f),
                    });
                }
            }
        }
        out.push(Inode {
            ino,
            kind: Kind::Dir {
                blocks: pack_dir(&entries, 1),
                subdirs,
            },
        });
    }
    out.sort_by_key(|i| i.ino);
    Ok(out)
}

// ---------------------------------------------------------------- writing

/// Hands out data blocks in order, skipping each group's metadata.
struct Allocator<'g> {
    geo: &'g Geometry,
    group: u32,
    next: u32,
    used: Vec<u8>, // bitmap over all blocks
}

impl Allocator<'_> {
    fn take(&mut self) -> u32 {
        loop {
            let g = self.group;
            let data_start = self.geo.start(g) + self.geo.overhead(g);
            let end = self.geo.start(g) + self.geo.len(g);
            self.next = self.next.max(data_start);
            if self.next < end {
                let b = self.next;
                self.next += 1;
                mark(&mut self.used, b);
                return b;
            }
            self.group += 1;
            assert!(
                self.group < self.geo.groups,
                "allocator ran past the capacity check"
            );
        }
    }
}

fn mark(bits: &mut [u8], n: u32) {
    bits[(n / 8) as usize] |= 1 << (n % 8);
}
fn is_marked(bits: &[u8], n: u32) -> bool {
    bits[(n / 8) as usize] & (1 << (n % 8)) != 0
}

/// The block map of one inode: `i_block`, data blocks in file order, and
/// the indirect blocks with their contents.
struct Placement {
    i_block: [u32; 15],
    data: Vec<u32>,
    indirect: Vec<(u32, Vec<u32>)>,
}

fn place(alloc: &mut Allocator<'_>, n: u64) -> Placement {
    let mut p = Placement {
        i_block: [0; 15],
        data: Vec::with_capacity(n as usize),
        indirect: Vec::new(),
    };
    let mut single: Option<(u32, Vec<u32>)> = None;
    let mut double: Option<(u32, Vec<u32>)> = None;
    for i in 0..n {
        if i == NDIR {
            let b = alloc.take();
            p.i_block[12] = b;
            single = Some((b, Vec::new()));
        } else if i >= NDIR + PTRS && (i - NDIR - PTRS).is_multiple_of(PTRS) {
            p.indirect.extend(single.take());
            if i == NDIR + PTRS {
                let b = alloc.take();
                p.i_block[13] = b;
                double = Some((b, Vec::new()));
            }
            let b = alloc.take();
            double
                .as_mut()
                .expect("double indirect block exists")
                .1
                .push(b);
            single = Some((b, Vec::new()));
        }
        let b = alloc.take();
        p.data.push(b);
        match single.as_mut() {
            None => p.i_block[i as usize] = b,
            Some((_, ptrs)) => ptrs.push(b),
        }
    }
    p.indirect.extend(single);
    p.indirect.extend(double);
    p
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn inode_bytes(
    mode: u16,
    size: u32,
    links: u16,
    blocks: u64,
    i_block: &[u32; 15],
    t: u32,
) -> [u8; INODE_SIZE as usize] {
    let mut b = [0u8; INODE_SIZE as usize];
    put16(&mut b, 0, mode);
    // 2: i_uid = 0
    put32(&mut b, 4, size);
    put32(&mut b, 8, t); // atime
    put32(&mut b, 12, t); // ctime
    put32(&mut b, 16, t); // mtime
                          // 20: dtime = 0, 24: gid = 0
    put16(&mut b, 26, links);
    put32(&mut b, 28, (blocks * (BLOCK_SIZE / 512)) as u32); // i_blocks counts 512-byte sectors
    for (k, v) in i_block.iter().enumerate() {
        put32(&mut b, 40 + 4 * k, *v);
    }
    b
}

struct Counts {
    free_blocks: u32,
    free_inodes: u32,
}

fn superblock(geo: &Geometry, c: &Counts, group: u32, uuid: &[u8; 16], t: u32) -> [u8; BS] {
    let mut s = [0u8; BS];
    put32(&mut s, 0, geo.inodes());
    put32(&mut s, 4, geo.blocks);
    // 8: reserved blocks = 0 (nobody writes to an updates image)
    put32(&mut s, 12, c.free_blocks);
    put32(&mut s, 16, c.free_inodes);
    put32(&mut s, 20, 1); // first data block: block 0 is the boot block with 1 KiB blocks
                          // 24, 28: log block/fragment size = 0, i.e. 1024
    put32(&mut s, 32, BLOCKS_PER_GROUP);
    put32(&mut s, 36, BLOCKS_PER_GROUP); // fragments per group
    put32(&mut s, 40, geo.inodes_per_group);
    // 44: mtime = 0 (never mounted)
    put32(&mut s, 48, t); // wtime
                          // 52: mount count = 0
    put16(&mut s, 54, 0xFFFF); // max mount count -1: no forced checks
    put16(&mut s, 56, 0xEF53);
    put16(&mut s, 58, 1); // state: cleanly unmounted
    put16(&mut s, 60, 1); // errors: continue
    put32(&mut s, 64, t); // lastcheck
                          // 68: check interval 0, 72: creator OS 0 = Linux
    put32(&mut s, 76, 1); // revision 1 (dynamic)
    put32(&mut s, 84, FIRST_INO);
    put16(&mut s, 88, INODE_SIZE as u16);
    put16(&mut s, 90, group as u16);
    // 92: compat = 0 (no dir_index, resize_inode, ext_attr, has_journal)
    put32(&mut s, 96, FEATURE_INCOMPAT_FILETYPE);
    put32(&mut s, 100, FEATURE_RO_COMPAT_SPARSE_SUPER);
    s[104..120].copy_from_slice(uuid);
    s[120..127].copy_from_slice(b"updates"); // volume label
    put32(&mut s, 264, t); // mkfs time
    s
}

/// Content-derived volume UUID (FNV-1a, two lanes), marked RFC 4122 variant,
/// version 8 ("custom"): stable for the same input, distinct across inputs.
fn uuid_of(parts: &[&[u8]]) -> [u8; 16] {
    let mut lanes = [0xcbf29ce484222325u64, 0x84222325cbf29ce4u64];
    for (k, lane) in lanes.iter_mut().enumerate() {
        for p in parts {
            for &byte in (p.len() as u64).to_le_bytes().iter().chain(p.iter()) {
                *lane ^= byte as u64 ^ k as u64;
                *lane = lane.wrapping_mul(0x100000001b3);
            }
        }
    }
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&lanes[0].to_be_bytes());
    u[8..].copy_from_slice(&lanes[1].to_be_bytes());
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// Writes `tree` as an ext2 image into `sink`.
pub fn write(tree: &Tree, opts: &Options, sink: &mut dyn Sink) -> Result<Summary> {
    let io_err = |e: io::Error| Error::Io {
        what: "write image".into(),
        path: "(image)".into(),
        source: e,
    };
    let inodes = plan(tree)?;
    let last_ino = inodes.last().map_or(FIRST_INO, |i| i.ino);
    let need: u64 = inodes
        .iter()
        .map(|i| i.data_blocks() + map_blocks(i.data_blocks()))
        .sum();
    let inodes_needed = last_ino + SPARE_INODES;
    let geo = match opts.size_kib {
        None => Geometry::auto(need, need / 20 + 16, inodes_needed)?,
        Some(kib) => {
            let geo = Geometry::fixed(kib, inodes_needed);
            let minimum = Geometry::auto(need, 0, inodes_needed)?.blocks as u64;
            if geo.data_capacity() < need || geo.inodes() < inodes_needed {
                return Err(Error::TooSmall {
                    need_kib: minimum.max(kib + 1),
                    given_kib: kib,
                });
            }
            geo
        }
    };
    if geo.inodes_per_group > BLOCKS_PER_GROUP {
        return Err(Error::TooLarge(format!(
            "{inodes_needed} inodes do not fit this image's {} block groups",
            geo.groups
        )));
    }
    let image_len = opts.size_kib.unwrap_or(geo.blocks as u64) * BLOCK_SIZE;
    sink.set_len(image_len).map_err(io_err)?;

    let mut used = vec![0u8; (geo.blocks as usize).div_ceil(8) + 1];
    mark(&mut used, 0);
    for g in 0..geo.groups {
        for b in geo.start(g)..geo.start(g) + geo.overhead(g) {
            mark(&mut used, b);
        }
    }
    let mut alloc = Allocator {
        geo: &geo,
        group: 0,
        next: 0,
        used,
    };

    let mut fingerprint: Vec<Vec<u8>> = vec![
        geo.blocks.to_le_bytes().to_vec(),
        opts.timestamp.to_le_bytes().to_vec(),
    ];
    let mut dirs_in_group = vec![0u32; geo.groups as usize];
    for ino in &inodes {
        let n = ino.data_blocks();
        let p = place(&mut alloc, n);
        let (mode, size, links, bytes): (u16, u32, u16, &[u8]) = match &ino.kind {
            Kind::File(f) => (S_IFREG | f.perm as u16, f.data.len() as u32, 1, &f.data),
            Kind::Dir { blocks, subdirs } => {
                dirs_in_group[((ino.ino - 1) / geo.inodes_per_group) as usize] += 1;
                (
                    S_IFDIR | DIR_MODE as u16,
                    blocks.len() as u32,
                    (2 + subdirs) as u16,
                    blocks,
                )
            }
        };
        fingerprint.push(ino.ino.to_le_bytes().to_vec());
        fingerprint.push(mode.to_le_bytes().to_vec());
        fingerprint.push(bytes.to_vec());
        for (k, b) in p.data.iter().enumerate() {
            let chunk = &bytes[k * BS..((k + 1) * BS).min(bytes.len())];
            sink.write_at(*b as u64 * BLOCK_SIZE, chunk)
                .map_err(io_err)?;
        }
        for (b, ptrs) in &p.indirect {
            let raw: Vec<u8> = ptrs.iter().flat_map(|v| v.to_le_bytes()).collect();
            sink.write_at(*b as u64 * BLOCK_SIZE, &raw)
                .map_err(io_err)?;
        }
        let total = n + p.indirect.len() as u64;
        let mode = if ino.ino == LPF_INO {
            S_IFDIR | 0o700
        } else {
            mode
        };
        let raw = inode_bytes(mode, size, links, total, &p.i_block, opts.timestamp);
        let g = (ino.ino - 1) / geo.inodes_per_group;
        let idx = (ino.ino - 1) % geo.inodes_per_group;
        let at = geo.inode_table(g) as u64 * BLOCK_SIZE + (idx * INODE_SIZE) as u64;
        sink.write_at(at, &raw).map_err(io_err)?;
    }
    let used = alloc.used;

    // Bitmaps and group descriptors.
    let mut gdt = vec![0u8; geo.gdt_blocks as usize * BS];
    let mut counts = Counts {
        free_blocks: 0,
        free_inodes: 0,
    };
    for g in 0..geo.groups {
        let mut bb = [0u8; BS];
        let mut free_b = 0u32;
        for i in 0..BLOCKS_PER_GROUP {
            // Bits past the end of the last group are set: "padding" per e2fsck.
            if i >= geo.len(g) || is_marked(&used, geo.start(g) + i) {
                mark(&mut bb, i);
            } else {
                free_b += 1;
            }
        }
        let mut ib = [0u8; BS];
        let first = g * geo.inodes_per_group + 1;
        let mut free_i = 0u32;
        for i in 0..BLOCKS_PER_GROUP {
            if i >= geo.inodes_per_group || first + i <= last_ino {
                mark(&mut ib, i);
            } else {
                free_i += 1;
            }
        }
        sink.write_at(geo.block_bitmap(g) as u64 * BLOCK_SIZE, &bb)
            .map_err(io_err)?;
        sink.write_at(geo.inode_bitmap(g) as u64 * BLOCK_SIZE, &ib)
            .map_err(io_err)?;
        let d = &mut gdt[(g * DESC_SIZE) as usize..((g + 1) * DESC_SIZE) as usize];
        put32(d, 0, geo.block_bitmap(g));
        put32(d, 4, geo.inode_bitmap(g));
        put32(d, 8, geo.inode_table(g));
        put16(d, 12, free_b as u16);
        put16(d, 14, free_i as u16);
        put16(d, 16, dirs_in_group[g as usize] as u16);
        counts.free_blocks += free_b;
        counts.free_inodes += free_i;
    }

    let parts: Vec<&[u8]> = fingerprint.iter().map(|v| v.as_slice()).collect();
    let uuid = uuid_of(&parts);
    for g in (0..geo.groups).filter(|g| Geometry::has_super(*g)) {
        let sb = superblock(&geo, &counts, g, &uuid, opts.timestamp);
        // The primary superblock sits at byte 1024 (block 1); backups open their group.
        sink.write_at(geo.start(g) as u64 * BLOCK_SIZE, &sb)
            .map_err(io_err)?;
        sink.write_at((geo.start(g) + 1) as u64 * BLOCK_SIZE, &gdt)
            .map_err(io_err)?;
    }

    Ok(Summary {
        size_kib: image_len / BLOCK_SIZE,
        blocks: geo.blocks,
        free_blocks: counts.free_blocks,
        groups: geo.groups,
        inodes: geo.inodes(),
        uuid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(files: &[(&str, usize)]) -> Tree {
        let mut t = Tree::default();
        for (p, n) in files {
            t.insert(
                p,
                File {
                    data: (0..*n).map(|i| (i * 7 % 251) as u8).collect(),
                    perm: 0o644,
                },
            )
            .unwrap();
        }
        t
    }

    #[test]
    fn sparse_super_groups() {
        let yes: Vec<u32> = (0..60).filter(|g| Geometry::has_super(*g)).collect();
        assert_eq!(yes, vec![0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }

    #[test]
    fn indirect_block_counts() {
        assert_eq!(map_blocks(12), 0);
        assert_eq!(map_blocks(13), 1);
        assert_eq!(map_blocks(268), 1);
        assert_eq!(map_blocks(269), 3);
        assert_eq!(map_blocks(268 + 256), 3);
        assert_eq!(map_blocks(268 + 257), 4);
        assert_eq!(map_blocks(MAX_FILE_BLOCKS), 1 + 1 + 256);
    }

    #[test]
    fn placement_matches_map_blocks() {
        let geo = Geometry::new(4000, 32);
        for n in [0u64, 1, 12, 13, 268, 269, 300, 1024, 1100] {
            let used = vec![0u8; 4000 / 8 + 1];
            let mut a = Allocator {
                geo: &geo,
                group: 0,
                next: 0,
                used,
            };
            let p = place(&mut a, n);
            assert_eq!(p.data.len() as u64, n);
            assert_eq!(p.indirect.len() as u64, map_blocks(n), "n={n}");
            let ptrs: usize = p.indirect.iter().map(|(_, v)| v.len()).sum();
            // Every data block beyond the direct ones, plus each single indirect
            // block under the double, is pointed to exactly once.
            let singles_under_double = if n > 268 { map_blocks(n) - 2 } else { 0 };
            assert_eq!(
                ptrs as u64,
                n.saturating_sub(12) + singles_under_double,
                "n={n}"
            );
        }
    }

    #[test]
    fn dir_packing_spills_to_next_block() {
        let names: Vec<String> = (0..40).map(|i| format!("{i:0>30}")).collect();
        let entries: Vec<(&str, u32, u8)> =
            names.iter().map(|n| (n.as_str(), 12, FT_REG)).collect();
        let b = pack_dir(&entries, 1);
        assert_eq!(b.len(), 2 * BS); // 40 * 40 bytes > 1024
                                     // Walk the rec_lens of each block: they must end exactly at the block end.
        for blk in b.chunks(BS) {
            let mut pos = 0;
            while pos < BS {
                let rl = u16::from_le_bytes([blk[pos + 4], blk[pos + 5]]) as usize;
                assert!(rl >= 8 && rl.is_multiple_of(4));
                pos += rl;
            }
            assert_eq!(pos, BS);
        }
        let lpf = pack_dir(&[(".", 11, FT_DIR), ("..", 2, FT_DIR)], 12);
        assert_eq!(lpf.len(), 12 * BS);
    }

    #[test]
    fn auto_size_and_too_small() {
        let t = tree_with(&[("anamon/anamon.x86_64", 700 * 1024), ("a/b/c", 10)]);
        let mut img = Vec::new();
        let s = write(
            &t,
            &Options {
                timestamp: 0,
                size_kib: None,
            },
            &mut img,
        )
        .unwrap();
        assert_eq!(img.len() as u64, s.size_kib * 1024);
        assert_eq!(u16::from_le_bytes([img[1024 + 56], img[1024 + 57]]), 0xEF53);
        assert!(s.size_kib < 800, "{s:?}");
        let min = Geometry::auto(705, 0, 40).unwrap().blocks;
        assert!(min > 705);
        let err = write(
            &t,
            &Options {
                timestamp: 0,
                size_kib: Some(600),
            },
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::TooSmall { given_kib: 600, .. }),
            "{err}"
        );
    }

    #[test]
    fn fixed_size_drops_runt_group() {
        let geo = Geometry::fixed(8192 + 1 + 10, 32);
        assert_eq!(geo.groups, 1);
        assert_eq!(geo.blocks, 8193);
        let geo = Geometry::fixed(3 * 8192 + 1, 32);
        assert_eq!(geo.groups, 3);
    }

    #[test]
    fn same_input_same_bytes_and_uuid_tracks_content() {
        let t = tree_with(&[("x", 5000)]);
        let o = Options {
            timestamp: 1_700_000_000,
            size_kib: None,
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let sa = write(&t, &o, &mut a).unwrap();
        write(&t, &o, &mut b).unwrap();
        assert_eq!(a, b);
        let t2 = tree_with(&[("x", 5001)]);
        let s2 = write(&t2, &o, &mut Vec::new()).unwrap();
        assert_ne!(sa.uuid, s2.uuid);
    }
}

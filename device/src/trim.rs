//! The agent's working set, trimmed before it sleeps: the one place in the project that uses
//! `unsafe`.
//!
//! Between polls the agent needs almost none of its code. Yet every page of code and read-only
//! data it touched at start-up or during a poll stays mapped, and the kernel maps more than it
//! touched (fault-around maps up to 16 cached pages at each fault), so an idle agent showed
//! 5.5 MB of RSS of which 0.45 MB was its own memory: the rest was `dm`'s and libc's code,
//! shared with the page cache. Before a long sleep the agent unmaps those clean pages
//! (`madvise(MADV_DONTNEED)`), as a Windows service empties its working set when idle: its
//! RSS is then about its own memory, and the kernel may reclaim the code pages under memory
//! pressure without touching the agent. The next poll maps back the pages it uses (minor
//! faults from the page cache, or reads from flash if the kernel reclaimed them).
//!
//! Only mappings that are file-backed, not writable and hold no private copy of any page
//! (`Anonymous: 0 kB` in `/proc/self/smaps`) are unmapped: for those, a page unmapped and
//! faulted again reads the same bytes from the file, so nothing the program can observe
//! changes. Writable mappings, and read-only ones the loader wrote to (RELRO), are left alone.
//! It runs only while the process has one thread, so that no other thread can map, unmap or
//! write to a range between reading `smaps` and advising it.

use std::io::Read;

use log::debug;

/// At most this much of `/proc/self/smaps` is read (about 1 KB per mapping; an agent has ~40).
const MAX_SMAPS: u64 = 4 << 20;

/// A range of the address space, `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: usize,
    end: usize,
    /// Its resident pages, in KiB.
    rss_kib: u64,
}

/// Unmaps the clean file-backed pages of the process (see the module's docs). Does nothing
/// while the process has more than one thread, or when `/proc` cannot be read.
pub fn trim() {
    if threads() != Some(1) {
        return;
    }
    let mut smaps = String::new();
    let read = std::fs::File::open("/proc/self/smaps")
        .and_then(|f| f.take(MAX_SMAPS).read_to_string(&mut smaps));
    if let Err(e) = read {
        debug!("working set not trimmed: /proc/self/smaps: {e}");
        return;
    }
    let ranges = droppable(&smaps);
    let mut kib = 0;
    for r in &ranges {
        // SAFETY: `r` is a whole mapping that smaps showed file-backed, not writable and without
        // a single anonymous (privately written) page, in a process with one thread (this one),
        // which maps and unmaps nothing between reading smaps and this call. For such a mapping
        // MADV_DONTNEED only drops page table entries: the next access faults the page in again
        // from the file, with the same contents, so no memory the program can see changes.
        // The pointer is never dereferenced here.
        let advised = unsafe {
            rustix::mm::madvise(
                r.start as *mut std::ffi::c_void,
                r.end - r.start,
                rustix::mm::Advice::LinuxDontNeed,
            )
        };
        if advised.is_ok() {
            kib += r.rss_kib;
        }
    }
    debug!(
        "working set trimmed: {kib} KiB of code and read-only data in {} mappings",
        ranges.len()
    );
}

/// The process's number of threads, from `/proc/self/status`.
fn threads() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}

/// The mappings of `smaps` whose pages can be unmapped without changing what the process
/// reads: file-backed (a path), private, not writable, no anonymous page, some resident.
fn droppable(smaps: &str) -> Vec<Range> {
    let mut out = Vec::new();
    // The mapping being read while it may still be dropped, and whether smaps said it has
    // no anonymous page: a mapping without that line is never advised.
    let mut current: Option<(Range, bool)> = None;
    let mut done = |current: Option<(Range, bool)>| {
        out.extend(current.filter(|(r, clean)| *clean && r.rss_kib > 0).map(|(r, _)| r));
    };
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line) {
            done(current.take());
            current = header.map(|r| (r, false));
        } else if let Some((r, clean)) = current.as_mut() {
            let (key, value) = line.split_once(':').unwrap_or((line, ""));
            let kib = value.trim().strip_suffix(" kB").and_then(|n| n.trim().parse::<u64>().ok());
            match (key, kib) {
                ("Rss", Some(n)) => r.rss_kib = n,
                ("Anonymous", Some(0)) => *clean = true,
                // A mapping with a privately written page is never advised.
                ("Anonymous", _) => current = None,
                _ => {}
            }
        }
    }
    done(current);
    out
}

/// `Some(Some(range))` for the header line of a mapping that may be dropped, `Some(None)` for
/// that of any other mapping, `None` for a line that is not a mapping's header.
fn mapping_header(line: &str) -> Option<Option<Range>> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    let (_offset, _dev, _inode) = (fields.next()?, fields.next()?, fields.next()?);
    let path = fields.next().unwrap_or("");
    let clean = perms.len() == 4
        && perms.as_bytes()[1] == b'-'
        && perms.as_bytes()[3] == b'p'
        && path.starts_with('/')
        && start < end;
    Some(clean.then_some(Range { start, end, rss_kib: 0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0a00000-55d0c0a9b000 r--p 00000000 fd:01 1234   /opt/dm/versions/1.0.0.0/dm
Size:                620 kB
Rss:                 616 kB
Anonymous:             0 kB
VmFlags: rd mr mw me dw sd
55d0c0a9b000-55d0c0d00000 r-xp 0009b000 fd:01 1234   /opt/dm/versions/1.0.0.0/dm
Size:               2452 kB
Rss:                2432 kB
Anonymous:             0 kB
55d0c0d00000-55d0c0d1d000 r--p 00300000 fd:01 1234   /opt/dm/versions/1.0.0.0/dm
Rss:                 116 kB
Anonymous:           116 kB
55d0c0d1d000-55d0c0d1e000 rw-p 0031d000 fd:01 1234   /opt/dm/versions/1.0.0.0/dm
Rss:                   4 kB
Anonymous:             0 kB
55d0c1000000-55d0c1027000 rw-p 00000000 00:00 0      [heap]
Rss:                 156 kB
Anonymous:           156 kB
7f00000000-7f00001000 r-xp 00000000 00:00 0
Rss:                   4 kB
Anonymous:             0 kB
7f10000000-7f10001000 r--s 00000000 fd:01 99     /dev/shm/shared
Rss:                   4 kB
Anonymous:             0 kB
7f20000000-7f20100000 r-xp 00000000 fd:01 77     /usr/lib/libc.so.6 (deleted)
Rss:                   0 kB
Anonymous:             0 kB
7f30000000-7f30100000 r-xp 00000000 fd:01 78     /usr/lib/libm.so.6
Rss:                 224 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0  [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let got = droppable(SMAPS);
        assert_eq!(
            got,
            vec![
                Range { start: 0x55d0c0a00000, end: 0x55d0c0a9b000, rss_kib: 616 },
                Range { start: 0x55d0c0a9b000, end: 0x55d0c0d00000, rss_kib: 2432 },
            ],
            "not RELRO (written), data, heap, anonymous code, shared, unmapped or without an \
             Anonymous line"
        );
    }

    #[test]
    fn any_text_parses_to_some_ranges_without_panicking() {
        for s in ["", "garbage", "1-0 r-xp 0 0 0 /x\nAnonymous: 0 kB\nRss: 4 kB", "a-b", "-"] {
            assert!(droppable(s).is_empty(), "{s:?}");
        }
    }
}

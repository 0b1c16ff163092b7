//! Giving back the code pages that only the process's start touched.
//!
//! The kernel maps code around every fault (64 KiB at a time) and reads ahead around every miss,
//! so the start (configuration, state directory, journal recovery, TLS set-up, the dynamic
//! linker's symbol lookups) leaves most of an 8 MB program text and of the shared libraries
//! mapped, though an idle daemon runs a small part of them. [`release_after_start`] drops this
//! process's mappings of those pages: what the daemon still runs faults back in from the page
//! cache or the file. For the program's own file it also asks the kernel to reclaim the pages
//! (`MADV_PAGEOUT`, Linux 5.4+: they are the daemon's alone) and to read its misses one page at a
//! time from now on (`MADV_RANDOM`).
//!
//! Only mappings that cannot have changed since they were read are touched: file-backed, not
//! writable, and with no page copied on write (`Anonymous: 0 kB`; this leaves out the RELRO
//! pages the dynamic linker relocated before making them read-only). Dropping such a page loses
//! nothing: it is read again from the same file (a running program's file cannot be written,
//! and package upgrades replace files rather than overwrite them).
//!
//! The price: the first use of a code path after this faults its pages in again.

/// What was asked of the kernel, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Bytes of mappings dropped.
    pub bytes: usize,
    /// Mappings the kernel refused the advice for.
    pub refused: usize,
}

/// A mapping [`release_after_start`] may drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Releasable {
    pub start: usize,
    pub len: usize,
    /// A mapping of the process's own program file (reclaimed too, not only dropped).
    pub own_program: bool,
}

/// The mappings in a `/proc/<pid>/smaps` text that can be dropped without losing anything (see
/// the module's doc), for the process running `program`.
pub fn releasable(smaps: &str, program: &str) -> Vec<Releasable> {
    let mut found = Vec::new();
    // The mapping whose fields are being read, if it is a candidate so far.
    let mut candidate: Option<Releasable> = None;
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Anonymous:") {
            let untouched = kib.trim().trim_end_matches("kB").trim() == "0";
            if let Some(mapping) = candidate.take().filter(|_| untouched) {
                found.push(mapping);
            }
        } else if line.split_whitespace().next().is_some_and(|first| !first.ends_with(':')) {
            // A mapping's header (field lines are `Name: value`).
            candidate = candidate_of(line, program);
        }
    }
    found
}

/// A header line (`start-end perms offset dev inode [path]`) as a candidate: a read-only
/// mapping of a file.
fn candidate_of(header: &str, program: &str) -> Option<Releasable> {
    let mut fields = header.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let read_only = fields.next()?.as_bytes().get(1) == Some(&b'-');
    let path = fields.nth(3)?;
    (read_only && path.starts_with('/') && end > start).then(|| Releasable {
        start,
        len: end - start,
        own_program: path == program,
    })
}

/// Drops (and for the program's own file, reclaims) the mappings [`releasable`] names for this
/// process.
#[allow(unsafe_code)]
pub fn release_after_start() -> std::io::Result<Released> {
    let program = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = Released::default();
    for mapping in releasable(&smaps, &program.to_string_lossy()) {
        let addr = mapping.start as *mut libc::c_void;
        // SAFETY: advice on whole read-only, file-backed mappings of this process whose pages
        // are all the file's own (no copy-on-write page): the kernel reads them again from the
        // file on the next access, so no content changes.
        let dropped = unsafe {
            if mapping.own_program {
                // Best effort: an old kernel without MADV_PAGEOUT still drops the mapping below.
                libc::madvise(addr, mapping.len, libc::MADV_RANDOM);
                libc::madvise(addr, mapping.len, libc::MADV_PAGEOUT);
            }
            libc::madvise(addr, mapping.len, libc::MADV_DONTNEED)
        };
        if dropped == 0 {
            released.bytes += mapping.len;
        } else {
            released.refused += 1;
        }
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real `/proc/self/smaps`.
    const SMAPS: &str = "\
55d0c0a00000-55d0c0c77000 r--p 00000000 fd:01 1234                       /usr/bin/redtether
Size:               2524 kB
Rss:                 440 kB
Anonymous:             0 kB
55d0c0c77000-55d0c143e000 r-xp 00277000 fd:01 1234                       /usr/bin/redtether
Size:               8092 kB
Anonymous:             0 kB
55d0c143e000-55d0c148e000 r--p 00a3e000 fd:01 1234                       /usr/bin/redtether
Size:                320 kB
Anonymous:           320 kB
55d0c148e000-55d0c1492000 rw-p 00a8e000 fd:01 1234                       /usr/bin/redtether
Anonymous:            16 kB
55d0c2000000-55d0c2100000 rw-p 00000000 00:00 0                          [heap]
Anonymous:           620 kB
7f00aa000000-7f00aa028000 r--p 00000000 fd:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f00aa028000-7f00aa1bd000 r-xp 00028000 fd:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f00aa1bd000-7f00aa1c1000 r--p 001bd000 fd:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:            16 kB
7f00ab000000-7f00ab001000 r--p 00000000 00:00 0 
Anonymous:             0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Anonymous:           112 kB
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
Anonymous:             0 kB
";

    #[test]
    fn only_read_only_file_mappings_with_no_copied_page_are_chosen() {
        let chosen = releasable(SMAPS, "/usr/bin/redtether");
        let own = |start, len| Releasable { start, len, own_program: true };
        let lib = |start, len| Releasable { start, len, own_program: false };
        assert_eq!(
            chosen,
            [
                own(0x55d0c0a00000, 0x277000),
                own(0x55d0c0c77000, 0x7c7000),
                lib(0x7f00aa000000, 0x28000),
                lib(0x7f00aa028000, 0x195000)
            ],
            "not the relocated RELRO pages, .data, the heap, anonymous mappings, the stack or vsyscall"
        );
        assert!(releasable(SMAPS, "/usr/bin/other").iter().all(|m| !m.own_program));
        assert!(
            releasable("garbage\n\n55-44 r-xp 0 0 0 /usr/bin/redtether\nAnonymous: 0 kB\n", "/usr/bin/redtether")
                .is_empty()
        );
    }

    #[test]
    fn this_process_gives_back_its_code_pages_and_runs_on() {
        let rss_file = || -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find_map(|l| l.strip_prefix("RssFile:")).unwrap();
            line.trim().trim_end_matches("kB").trim().parse().unwrap()
        };
        let before = rss_file();
        let released = release_after_start().unwrap();
        assert!(released.bytes > 0 && released.refused == 0, "{released:?}");
        let after = rss_file();
        assert!(after < before, "RssFile {before} KiB before, {after} KiB after");
        // The code and the libraries still run: what they need is faulted back in.
        assert_eq!(releasable(SMAPS, "/usr/bin/redtether").len(), 4);
        assert!(release_after_start().unwrap().bytes > 0, "and again");
    }
}

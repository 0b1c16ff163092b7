//! An in-memory FUSE filesystem that forgets everything that was not fsynced: a power cut on demand.
//!
//! [`ForgetfulFs::mount`] serves the filesystem from a background thread of the test process;
//! [`ForgetfulFs::power_cut`] throws away every change that was not made durable and remounts at
//! the same place, as if the machine had lost power and rebooted.
//!
//! # The model
//!
//! Every regular file has `current` contents (what reads see) and `durable` contents (what a cut
//! leaves). Every directory has `current` entries and `durable` entries (name → inode). Each file
//! or directory has at most one name (hard links are not supported), so "the link" of an inode is
//! the pair (parent directory, name) under which it currently lives, if any.
//!
//! - `write`, truncation (`setattr` with a size, `O_TRUNC`) and `fallocate` change `current` only.
//!   So do `create`, `mknod`, `mkdir`, `unlink`, `rmdir` and `rename` for directory entries.
//! - Committing the link of an inode (used below) makes its *current* link state durable, as one
//!   unit: the durable entry under its old name (if any) is removed and the durable entry under its
//!   current name (if any) is added, displacing whatever inode durably held that name. So a
//!   committed rename is never half done, and committing an unlinked inode makes its removal
//!   durable.
//! - `fsync` of a file (also `fdatasync`, which reaches FUSE as `fsync` with the datasync flag; the
//!   two are treated alike) copies `current` → `durable` for that file, commits the file's link,
//!   and commits the link of every ancestor directory up to the root (lenient, ext4-like: an fsynced
//!   file never vanishes because the directory it was created in was never fsynced).
//! - `fsyncdir` of a directory commits the link of every inode named in the directory's current or
//!   durable entries (so afterwards its durable entries equal its current entries: creations,
//!   removals and renames into or out of it are durable), and commits the links of the directory
//!   itself and its ancestors. It does not make any file's contents durable.
//! - Nothing else makes anything durable. `sync_file_range(2)` is not forwarded by FUSE at all, and
//!   `close`, `flush` and `release` do nothing.
//! - [`ForgetfulFs::power_cut`]: starting from the root, the durable entries are followed; every
//!   inode reached survives with its durable state (file contents = `durable`, directory entries =
//!   durable entries) and everything not reached is dropped. So a file created but never fsynced in
//!   a directory that was never fsynced disappears; a file removed or renamed without a later fsync
//!   of the file or of the directory comes back under its old name with its durable contents; an
//!   appended, never fsynced tail is cut off. Metadata (mode, owner, times) is not modelled: it
//!   keeps its current value.
//!
//! The root directory always survives. `symlink`, `link`, xattrs and POSIX locks are not
//! implemented; `flock(2)` (used by sled through fs2) is handled by the kernel locally, because the
//! filesystem does not ask for `FUSE_FLOCK_LOCKS`/`FUSE_POSIX_LOCKS`.
//!
//! # No stale kernel caches
//!
//! Entry and attribute TTLs are zero, every file is opened with `FOPEN_DIRECT_IO` (no page cache),
//! and the writeback cache is never requested, so every read and write goes to this process. A cut
//! detaches the old mount (`MNT_DETACH`) and mounts a fresh superblock, so nothing cached from the
//! old one can leak over. Requests still arriving through the old mount (a process that was not
//! killed) fail with `EIO` and cannot touch the new state.
//!
//! # Mounting and cutting
//!
//! Mounted directly with mount(2) (needs root), with `allow_other` and `default_permissions`, so a
//! daemon that dropped privileges can use it and the kernel checks the mode bits. A cut or an
//! unmount marks the state as belonging to the next mount generation first (from that instant the
//! old mount can change nothing), detaches the mount lazily, and waits up to five seconds for the
//! kernel to end the old FUSE connection — immediate once no process holds anything on it. If
//! something still does (the contract was broken), it goes on without waiting longer: the old
//! connection lingers, detached and answering `EIO`, until its last user lets go.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, SessionACL, TimeOrNow, WriteFlags,
};

/// Nothing may be cached by the kernel: every lookup and getattr comes back to us.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;
const BLOCK_SIZE: u32 = 4096;
/// Refuse files larger than this, so that a stray far offset cannot exhaust memory.
const MAX_FILE_SIZE: u64 = 1 << 32;
/// How long a cut or unmount waits for the old session to end before leaving it behind.
const SESSION_END_TIMEOUT: Duration = Duration::from_secs(5);

/// A mounted forgetful filesystem. Unmounted on drop.
pub struct ForgetfulFs {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

impl ForgetfulFs {
    /// Mounts an empty forgetful filesystem at `mountpoint` (an existing directory) and serves it
    /// from a background thread. The root takes the mode and owner of the directory mounted over.
    pub fn mount(mountpoint: &Path) -> ForgetfulFs {
        let meta = std::fs::metadata(mountpoint)
            .unwrap_or_else(|e| panic!("mount point {} unusable: {e}", mountpoint.display()));
        assert!(meta.is_dir(), "mount point {} is not a directory", mountpoint.display());
        let now = SystemTime::now();
        let root = Inode {
            body: Body::Dir { entries: BTreeMap::new(), durable_entries: BTreeMap::new() },
            link: None,
            durable_link: None,
            perm: (meta.mode() & 0o7777) as u16,
            uid: meta.uid(),
            gid: meta.gid(),
            atime: now,
            mtime: now,
            ctime: now,
            open: 0,
        };
        let state = State {
            inodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            next_fh: 1,
            handles: HashMap::new(),
            generation: 0,
            fsyncs: 0,
            forgotten_last_cut: 0,
        };
        let mut fs = ForgetfulFs {
            state: Arc::new(Mutex::new(state)),
            mountpoint: mountpoint.canonicalize().unwrap(),
            session: None,
        };
        fs.start_session();
        fs
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Loses power: every process using the mount must already be dead. Unmounts (lazily), drops
    /// everything that was not durable (see the module documentation), and mounts the surviving
    /// state again at the same mount point.
    pub fn power_cut(&mut self) {
        {
            let mut st = lock(&self.state);
            // From here on the old mount cannot change anything: the cut is instantaneous.
            st.generation += 1;
            st.forgotten_last_cut = st.cut();
        }
        self.end_session();
        self.start_session();
    }

    /// Unmounts (also done on drop). Any state is discarded.
    pub fn unmount(mut self) {
        self.end_session();
    }

    /// (fsync and fsyncdir requests served so far, over all mounts; bytes of file contents that
    /// the last power cut forgot: for a surviving file the bytes of its current contents that
    /// differed from or extended past its durable contents, for a vanished file all of them).
    pub fn stats(&self) -> (u64, u64) {
        let st = lock(&self.state);
        (st.fsyncs, st.forgotten_last_cut)
    }

    fn start_session(&mut self) {
        let generation = lock(&self.state).generation;
        let fs = FuseFs { state: Arc::clone(&self.state), generation };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("forgetful".into()),
            MountOption::Subtype("forgetful".into()),
            MountOption::DefaultPermissions,
            MountOption::RW,
        ];
        // Any user (the daemon may drop privileges), with the kernel checking the mode bits.
        config.acl = SessionACL::All;
        let session = fuser::spawn_mount(fs, &self.mountpoint, &config)
            .unwrap_or_else(|e| panic!("mounting the forgetful filesystem at {}: {e}", self.mountpoint.display()));
        self.session = Some(session);
    }

    fn end_session(&mut self) {
        let Some(session) = self.session.take() else { return };
        // Whatever the old mount still sends from now on is refused.
        lock(&self.state).generation += 1;
        // Lazy unmount: returns at once even if something still holds the mount. Once nothing
        // does, the kernel ends the connection and the session thread returns.
        detach(&self.mountpoint);
        let deadline = Instant::now() + SESSION_END_TIMEOUT;
        while !session.guard.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if session.guard.is_finished() {
            let _ = session.join();
        } else {
            // Something still uses the detached mount. Its requests get EIO (stale generation);
            // leave the thread behind rather than hang the test. Dropping the session may try a
            // plain umount of the (no longer mounted) path, which fails harmlessly: nothing new
            // has been mounted there yet.
            eprintln!(
                "forgetful fs: the old mount at {} is still in use; leaving its session behind",
                self.mountpoint.display()
            );
            drop(session);
        }
    }
}

impl Drop for ForgetfulFs {
    fn drop(&mut self) {
        self.end_session();
    }
}

/// `umount2(MNT_DETACH)`: nix is built without its "mount" feature here, hence libc.
#[allow(unsafe_code)]
fn detach(mountpoint: &Path) {
    let path = CString::new(mountpoint.as_os_str().as_bytes()).unwrap();
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    let ret = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    if ret != 0 {
        let err = std::io::Error::last_os_error();
        // EINVAL: not mounted (any more), which is what we want.
        if err.raw_os_error() != Some(libc::EINVAL) {
            eprintln!("forgetful fs: detaching {}: {err}", mountpoint.display());
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug)]
enum Body {
    File { current: Vec<u8>, durable: Vec<u8> },
    Dir { entries: BTreeMap<OsString, u64>, durable_entries: BTreeMap<OsString, u64> },
}

#[derive(Debug)]
struct Inode {
    body: Body,
    /// Current (parent, name); `None` for the root and for removed inodes.
    link: Option<(u64, OsString)>,
    /// The (parent, name) a power cut would leave, mirrored in the parent's durable entries.
    durable_link: Option<(u64, OsString)>,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Open file handles on this inode.
    open: u32,
}

impl Inode {
    fn kind(&self) -> FileType {
        match self.body {
            Body::File { .. } => FileType::RegularFile,
            Body::Dir { .. } => FileType::Directory,
        }
    }
}

#[derive(Debug)]
struct Handle {
    ino: u64,
    /// For directories, the entries as of `opendir` (so that readdir offsets stay meaningful).
    listing: Option<Vec<(u64, FileType, OsString)>>,
}

#[derive(Debug)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    next_fh: u64,
    handles: HashMap<u64, Handle>,
    /// Bumped by every cut and unmount; a session serving an older generation gets EIO.
    generation: u64,
    fsyncs: u64,
    forgotten_last_cut: u64,
}

type Res<T> = Result<T, Errno>;

impl State {
    fn inode(&self, ino: u64) -> Res<&Inode> {
        self.inodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn inode_mut(&mut self, ino: u64) -> Res<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&self, dir: u64) -> Res<&BTreeMap<OsString, u64>> {
        match &self.inode(dir)?.body {
            Body::Dir { entries, .. } => Ok(entries),
            Body::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Res<&mut BTreeMap<OsString, u64>> {
        match &mut self.inode_mut(dir)?.body {
            Body::Dir { entries, .. } => Ok(entries),
            Body::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn child(&self, dir: u64, name: &OsStr) -> Res<u64> {
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: u64) -> Res<FileAttr> {
        let inode = self.inode(ino)?;
        let (size, nlink) = match &inode.body {
            Body::File { current, .. } => (current.len() as u64, u32::from(inode.link.is_some())),
            Body::Dir { entries, .. } => {
                let subdirs = entries
                    .values()
                    .filter(|c| self.inodes.get(c).is_some_and(|c| matches!(c.body, Body::Dir { .. })))
                    .count();
                (u64::from(BLOCK_SIZE), 2 + subdirs as u32)
            }
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
            crtime: inode.ctime,
            kind: inode.kind(),
            perm: inode.perm,
            nlink,
            uid: inode.uid,
            gid: inode.gid,
            rdev: 0,
            blksize: BLOCK_SIZE,
            flags: 0,
        })
    }

    fn touch_dir(&mut self, dir: u64) {
        if let Some(d) = self.inodes.get_mut(&dir) {
            let now = SystemTime::now();
            d.mtime = now;
            d.ctime = now;
        }
    }

    /// Adds a new inode named `name` in `parent` (current state only).
    fn add(&mut self, req: &Request, parent: u64, name: &OsStr, mode: u32, umask: u32, body: Body) -> Res<u64> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        let parent_inode = self.inode(parent)?;
        // setgid directories hand their group down.
        let gid = if parent_inode.perm & 0o2000 != 0 { parent_inode.gid } else { req.gid() };
        let mut perm = (mode & !umask & 0o7777) as u16;
        if matches!(body, Body::Dir { .. }) && parent_inode.perm & 0o2000 != 0 {
            perm |= 0o2000;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let now = SystemTime::now();
        self.inodes.insert(
            ino,
            Inode {
                body,
                link: Some((parent, name.to_owned())),
                durable_link: None,
                perm,
                uid: req.uid(),
                gid,
                atime: now,
                mtime: now,
                ctime: now,
                open: 0,
            },
        );
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch_dir(parent);
        Ok(ino)
    }

    fn open_handle(&mut self, ino: u64, listing: Option<Vec<(u64, FileType, OsString)>>) -> Res<FileHandle> {
        self.inode_mut(ino)?.open += 1;
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { ino, listing });
        Ok(FileHandle(fh))
    }

    fn close_handle(&mut self, fh: FileHandle) {
        if let Some(handle) = self.handles.remove(&fh.0) {
            if let Some(inode) = self.inodes.get_mut(&handle.ino) {
                inode.open = inode.open.saturating_sub(1);
            }
            self.collect(handle.ino);
        }
    }

    /// Forgets an inode nothing can reach any more: no name, no durable name, not open.
    fn collect(&mut self, ino: u64) {
        if ino != ROOT
            && let Some(inode) = self.inodes.get(&ino)
            && inode.link.is_none()
            && inode.durable_link.is_none()
            && inode.open == 0
        {
            self.inodes.remove(&ino);
        }
    }

    /// Detaches `ino` from its current name (the entry itself is removed by the caller).
    fn unlinked(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.link = None;
            inode.ctime = SystemTime::now();
        }
        self.collect(ino);
    }

    /// Makes the current link state of `ino` durable, as one unit (see the module docs).
    fn commit_link(&mut self, ino: u64) {
        if ino == ROOT {
            return;
        }
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        let old = inode.durable_link.take();
        let new = inode.link.clone();
        inode.durable_link = new.clone();
        if let Some((parent, name)) = old
            && let Some(Inode { body: Body::Dir { durable_entries, .. }, .. }) = self.inodes.get_mut(&parent)
            && durable_entries.get(&name) == Some(&ino)
        {
            durable_entries.remove(&name);
        }
        if let Some((parent, name)) = new {
            let displaced = match self.inodes.get_mut(&parent) {
                Some(Inode { body: Body::Dir { durable_entries, .. }, .. }) => durable_entries.insert(name, ino),
                _ => None,
            };
            if let Some(displaced) = displaced.filter(|&d| d != ino) {
                if let Some(d) = self.inodes.get_mut(&displaced) {
                    d.durable_link = None;
                }
                self.collect(displaced);
            }
        }
    }

    /// Commits the links of `dir` and of all its ancestors up to the root.
    fn commit_ancestors(&mut self, dir: u64) {
        let mut seen = HashSet::new();
        let mut next = Some(dir);
        while let Some(d) = next {
            if d == ROOT || !seen.insert(d) {
                break;
            }
            self.commit_link(d);
            next = self.inodes.get(&d).and_then(|i| i.link.as_ref()).map(|(p, _)| *p);
        }
    }

    fn fsync_file(&mut self, ino: u64) -> Res<()> {
        let inode = self.inode_mut(ino)?;
        let Body::File { current, durable } = &mut inode.body else { return self.fsync_dir(ino) };
        durable.clone_from(current);
        let parent = inode.link.as_ref().map(|(p, _)| *p);
        self.commit_link(ino);
        if let Some(parent) = parent {
            self.commit_ancestors(parent);
        }
        Ok(())
    }

    fn fsync_dir(&mut self, dir: u64) -> Res<()> {
        let Body::Dir { entries, durable_entries } = &self.inode(dir)?.body else { return Err(Errno::ENOTDIR) };
        let named: Vec<u64> = entries.values().chain(durable_entries.values()).copied().collect();
        for ino in named {
            self.commit_link(ino);
        }
        self.commit_ancestors(dir);
        Ok(())
    }

    /// The power cut: keeps what is reachable from the root through durable entries, in its
    /// durable state. Returns the number of bytes of file contents forgotten.
    fn cut(&mut self) -> u64 {
        // Which inodes survive, and under which (parent, name).
        let mut survivors: HashMap<u64, Option<(u64, OsString)>> = HashMap::from([(ROOT, None)]);
        let mut stack = vec![ROOT];
        while let Some(dir) = stack.pop() {
            if let Some(Inode { body: Body::Dir { durable_entries, .. }, .. }) = self.inodes.get(&dir) {
                for (name, &child) in durable_entries {
                    if self.inodes.contains_key(&child) && !survivors.contains_key(&child) {
                        survivors.insert(child, Some((dir, name.clone())));
                        stack.push(child);
                    }
                }
            }
        }
        let mut forgotten = 0u64;
        for (ino, inode) in &self.inodes {
            if let Body::File { current, durable } = &inode.body {
                forgotten += if survivors.contains_key(ino) {
                    current.iter().enumerate().filter(|&(i, b)| durable.get(i) != Some(b)).count() as u64
                } else {
                    current.len() as u64
                };
            }
        }
        self.inodes.retain(|ino, _| survivors.contains_key(ino));
        for (ino, inode) in &mut self.inodes {
            let link = survivors[ino].clone();
            inode.link.clone_from(&link);
            inode.durable_link = link;
            inode.open = 0;
            match &mut inode.body {
                Body::File { current, durable } => current.clone_from(durable),
                Body::Dir { entries, durable_entries } => {
                    durable_entries.retain(|name, child| {
                        survivors.get(child).is_some_and(|l| l.as_ref().is_some_and(|(_, n)| n == name))
                    });
                    entries.clone_from(durable_entries);
                }
            }
        }
        self.handles.clear();
        forgotten
    }

    fn rename(&mut self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr, flags: RenameFlags) -> Res<()> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        if newname.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        let ino = self.child(parent, name)?;
        let is_dir = matches!(self.inode(ino)?.body, Body::Dir { .. });
        self.entries(newparent)?;
        if is_dir {
            // A directory cannot move into itself or below itself.
            let mut at = Some(newparent);
            while let Some(a) = at {
                if a == ino {
                    return Err(Errno::EINVAL);
                }
                at = self.inodes.get(&a).and_then(|i| i.link.as_ref()).map(|(p, _)| *p);
            }
        }
        let target = self.entries(newparent)?.get(newname).copied();
        if let Some(target) = target {
            if target == ino {
                return Ok(());
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            match (&self.inode(target)?.body, is_dir) {
                (Body::Dir { entries, .. }, true) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
                (Body::Dir { .. }, false) => return Err(Errno::EISDIR),
                (Body::File { .. }, true) => return Err(Errno::ENOTDIR),
                _ => {}
            }
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(newparent)?.insert(newname.to_owned(), ino);
        let inode = self.inode_mut(ino)?;
        inode.link = Some((newparent, newname.to_owned()));
        inode.ctime = SystemTime::now();
        if let Some(target) = target {
            self.unlinked(target);
        }
        self.touch_dir(parent);
        self.touch_dir(newparent);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // FUSE's setattr, minus what is not modelled.
    fn setattr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Res<FileAttr> {
        let now = SystemTime::now();
        let at = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => now,
        };
        let inode = self.inode_mut(ino)?;
        if let Some(size) = size {
            let Body::File { current, .. } = &mut inode.body else { return Err(Errno::EISDIR) };
            if size > MAX_FILE_SIZE {
                return Err(Errno::EFBIG);
            }
            current.resize(size as usize, 0);
            inode.mtime = now;
        }
        if let Some(mode) = mode {
            inode.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = uid {
            inode.uid = uid;
        }
        if let Some(gid) = gid {
            inode.gid = gid;
        }
        if let Some(t) = atime {
            inode.atime = at(t);
        }
        if let Some(t) = mtime {
            inode.mtime = at(t);
        }
        inode.ctime = now;
        self.attr(ino)
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Res<u32> {
        let inode = self.inode_mut(ino)?;
        let Body::File { current, .. } = &mut inode.body else { return Err(Errno::EISDIR) };
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        if end > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let (offset, end) = (offset as usize, end as usize);
        if current.len() < end {
            current.resize(end, 0);
        }
        current[offset..end].copy_from_slice(data);
        let now = SystemTime::now();
        inode.mtime = now;
        inode.ctime = now;
        Ok(data.len() as u32)
    }

    fn fallocate(&mut self, ino: u64, offset: u64, length: u64, mode: i32) -> Res<()> {
        let inode = self.inode_mut(ino)?;
        let Body::File { current, .. } = &mut inode.body else { return Err(Errno::EISDIR) };
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let zero = mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0;
        if mode & !(libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0
            || (mode & libc::FALLOC_FL_PUNCH_HOLE != 0 && !keep_size)
        {
            return Err(Errno::EOPNOTSUPP);
        }
        if !keep_size && end as usize > current.len() {
            if end > MAX_FILE_SIZE {
                return Err(Errno::EFBIG);
            }
            current.resize(end as usize, 0);
        }
        if zero {
            let len = current.len();
            let (from, to) = ((offset as usize).min(len), (end as usize).min(len));
            current[from..to].fill(0);
        }
        let now = SystemTime::now();
        inode.mtime = now;
        inode.ctime = now;
        Ok(())
    }
}

/// What the FUSE session serves: the shared state, as seen by one mount generation.
struct FuseFs {
    state: Arc<Mutex<State>>,
    generation: u64,
}

impl FuseFs {
    /// The state, unless a power cut has happened since this mount was made.
    fn state(&self) -> Res<MutexGuard<'_, State>> {
        let st = lock(&self.state);
        if st.generation == self.generation { Ok(st) } else { Err(Errno::EIO) }
    }

    fn entry(&self, reply: ReplyEntry, f: impl FnOnce(&mut State) -> Res<u64>) {
        let result = self.state().and_then(|mut st| {
            let ino = f(&mut st)?;
            st.attr(ino)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn empty(&self, reply: ReplyEmpty, f: impl FnOnce(&mut State) -> Res<()>) {
        match self.state().and_then(|mut st| f(&mut st)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for FuseFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(reply, |st| st.child(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().and_then(|st| st.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.state().and_then(|mut st| st.setattr(ino.0, mode, uid, gid, size, atime, mtime)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(Errno::EPERM);
            return;
        }
        let body = Body::File { current: Vec::new(), durable: Vec::new() };
        self.entry(reply, |st| st.add(req, parent.0, name, mode, umask, body));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let body = Body::Dir { entries: BTreeMap::new(), durable_entries: BTreeMap::new() };
        self.entry(reply, |st| st.add(req, parent.0, name, mode, umask, body));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(reply, |st| {
            let ino = st.child(parent.0, name)?;
            if matches!(st.inode(ino)?.body, Body::Dir { .. }) {
                return Err(Errno::EISDIR);
            }
            st.entries_mut(parent.0)?.remove(name);
            st.unlinked(ino);
            st.touch_dir(parent.0);
            Ok(())
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(reply, |st| {
            let ino = st.child(parent.0, name)?;
            match &st.inode(ino)?.body {
                Body::File { .. } => return Err(Errno::ENOTDIR),
                Body::Dir { entries, .. } if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
                Body::Dir { .. } => {}
            }
            st.entries_mut(parent.0)?.remove(name);
            st.unlinked(ino);
            st.touch_dir(parent.0);
            Ok(())
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, |st| st.rename(parent.0, name, newparent.0, newname, flags));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = self.state().and_then(|mut st| {
            if matches!(st.inode(ino.0)?.body, Body::Dir { .. }) {
                return Err(Errno::EISDIR);
            }
            st.open_handle(ino.0, None)
        });
        match result {
            Ok(fh) => reply.opened(fh, FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = match self.state() {
            Ok(st) => st,
            Err(e) => return reply.error(e),
        };
        match st.inode(ino.0).map(|i| &i.body) {
            Ok(Body::File { current, .. }) => {
                let from = (offset as usize).min(current.len());
                let to = from.saturating_add(size as usize).min(current.len());
                reply.data(&current[from..to]);
            }
            Ok(Body::Dir { .. }) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.state().and_then(|mut st| st.write(ino.0, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        self.empty(reply, |_| Ok(()));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, |st| {
            st.close_handle(fh);
            Ok(())
        });
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.empty(reply, |st| {
            st.fsync_file(ino.0)?;
            st.fsyncs += 1;
            Ok(())
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = self.state().and_then(|mut st| {
            let inode = st.inode(ino.0)?;
            let Body::Dir { entries, .. } = &inode.body else { return Err(Errno::ENOTDIR) };
            let parent = inode.link.as_ref().map_or(ROOT, |(p, _)| *p);
            let mut listing =
                vec![(ino.0, FileType::Directory, ".".into()), (parent, FileType::Directory, "..".into())];
            for (name, &child) in entries {
                if let Some(c) = st.inodes.get(&child) {
                    listing.push((child, c.kind(), name.clone()));
                }
            }
            st.open_handle(ino.0, Some(listing))
        });
        match result {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let st = match self.state() {
            Ok(st) => st,
            Err(e) => return reply.error(e),
        };
        let Some(listing) = st.handles.get(&fh.0).and_then(|h| h.listing.as_ref()) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.empty(reply, |st| {
            st.close_handle(fh);
            Ok(())
        });
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.empty(reply, |st| {
            st.fsync_dir(ino.0)?;
            st.fsyncs += 1;
            Ok(())
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = match self.state() {
            Ok(st) => st.inodes.len() as u64,
            Err(e) => return reply.error(e),
        };
        let blocks = MAX_FILE_SIZE / u64::from(BLOCK_SIZE);
        reply.statfs(blocks, blocks, blocks, files, 1 << 20, BLOCK_SIZE, 255, BLOCK_SIZE);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.state().and_then(|mut st| {
            let body = Body::File { current: Vec::new(), durable: Vec::new() };
            let ino = st.add(req, parent.0, name, mode, umask, body)?;
            let fh = st.open_handle(ino, None)?;
            Ok((st.attr(ino)?, fh))
        });
        match result {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, |st| st.fallocate(ino.0, offset, length, mode));
    }
}

//! The one filesystem module every write in the project goes through.
//!
//! Writes are atomic and durable: data goes to a temp file in the destination's folder, is
//! fsynced, renamed over the destination, and the folder is fsynced, so a crash or power loss
//! leaves either the old file or the new one, never a torn one. Files are created with their
//! final mode (keys and certificates 0600 from the first byte). Reads from anything a user,
//! a memory card or the network controls are capped in size.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Keys, certificates, settings with secrets, state: owner read/write only.
pub const MODE_PRIVATE: u32 = 0o600;
/// Files anyone on the device may read (unit files, signed content).
pub const MODE_PUBLIC: u32 = 0o644;
/// Logs: the owner and its group. A program's output lands in them and may hold what a
/// publisher never meant to show every local user.
pub const MODE_LOG: u32 = 0o640;
/// Executables.
pub const MODE_EXEC: u32 = 0o755;
/// Folders anyone may traverse.
pub const MODE_DIR: u32 = 0o755;
/// Folders holding secrets.
pub const MODE_DIR_PRIVATE: u32 = 0o700;

/// Builds the error for an I/O failure on `path`.
pub fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io { op, path: path.to_path_buf(), source }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path_for(dest: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(".");
    name.push(dest.file_name().unwrap_or_default());
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    parent_of(dest).join(name)
}

/// Fsyncs a folder so that renames and creations inside it survive a power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("sync folder", dir))
}

/// A file being written that only appears at its destination when committed.
///
/// Dropping it without [`AtomicFile::commit`] removes the temp file and leaves the
/// destination untouched.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
}

impl AtomicFile {
    /// Starts writing `dest` with permission bits `mode`. The folder must exist.
    pub fn create(dest: &Path, mode: u32) -> Result<AtomicFile> {
        crate::failpoint::hit("fs-create")?;
        let temp = temp_path_for(dest);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(io_err("create", dest))?;
        // The umask can only have narrowed `mode`; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err("chmod", dest))?;
        Ok(AtomicFile { file: Some(file), temp, dest: dest.to_path_buf() })
    }

    /// The destination path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Fsyncs the data, renames it over the destination and fsyncs the folder.
    pub fn commit(mut self) -> Result<()> {
        let Some(file) = self.file.take() else {
            return Err(Error::Io {
                op: "commit",
                path: self.dest.clone(),
                source: io::Error::other("file already closed"),
            });
        };
        file.sync_all().map_err(io_err("sync", &self.dest))?;
        drop(file);
        crate::failpoint::hit("fs-rename")?;
        fs::rename(&self.temp, &self.dest).map_err(io_err("rename into place", &self.dest))?;
        sync_dir(parent_of(&self.dest))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("file already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Atomically and durably replaces `path` with `data`, created with `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = AtomicFile::create(path, mode)?;
    f.write_all(data).map_err(io_err("write", path))?;
    f.commit()
}

/// Atomically copies `src` to `dest` with `mode`, returning the bytes copied.
pub fn copy_atomic(src: &Path, dest: &Path, mode: u32) -> Result<u64> {
    let mut input = open_regular(src)?;
    let mut out = AtomicFile::create(dest, mode)?;
    let n = io::copy(&mut input, &mut out).map_err(io_err("copy into", dest))?;
    out.commit()?;
    Ok(n)
}

/// Creates `dir` and any missing parents with `mode`, fsyncing each parent that gained a
/// folder. Returns the folders it created, outermost first, so a transaction can undo them.
pub fn create_dir_all(dir: &Path, mode: u32) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cur = dir;
    loop {
        match fs::symlink_metadata(cur) {
            Ok(m) if m.is_dir() => break,
            Ok(m) if m.file_type().is_symlink() && cur.is_dir() => break,
            Ok(_) => {
                return Err(Error::Io {
                    op: "create folder",
                    path: cur.to_path_buf(),
                    source: io::Error::new(io::ErrorKind::AlreadyExists, "a file is in the way"),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur.to_path_buf());
                match cur.parent() {
                    Some(p) if !p.as_os_str().is_empty() => cur = p,
                    _ => break,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Err(Error::Io {
                    op: "create folder",
                    path: dir.to_path_buf(),
                    source: io::Error::new(io::ErrorKind::AlreadyExists, "a file is in the way"),
                });
            }
            Err(e) => return Err(io_err("inspect", cur)(e)),
        }
    }
    missing.reverse();
    for d in &missing {
        crate::failpoint::hit("fs-mkdir")?;
        match fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => {}
            // Another process made it between our check and now: fine.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => continue,
            Err(e) => return Err(io_err("create folder", d)(e)),
        }
        fs::set_permissions(d, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", d))?;
        sync_dir(parent_of(d))?;
    }
    Ok(missing)
}

/// Renames `from` to `to` and fsyncs both folders.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    crate::failpoint::hit("fs-rename")?;
    fs::rename(from, to).map_err(io_err("rename", from))?;
    sync_dir(parent_of(to))?;
    if parent_of(from) != parent_of(to) {
        sync_dir(parent_of(from))?;
    }
    Ok(())
}

/// The `.partial` file a download into `dest` goes through until it is whole and checked: a
/// hidden sibling, so that folder verification never counts it.
pub fn partial_of(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.partial"))
}

/// Removes a file durably. Returns whether it existed.
pub fn remove_file(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(parent_of(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Removes an empty folder durably. Returns whether it existed.
pub fn remove_dir(path: &Path) -> Result<bool> {
    match fs::remove_dir(path) {
        Ok(()) => {
            sync_dir(parent_of(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("remove folder", path)(e)),
    }
}

/// Removes a folder and everything in it durably. Returns whether it existed.
///
/// The folder is first renamed to a hidden sibling so a crash midway never leaves a
/// half-deleted folder under its real name.
pub fn remove_dir_all(path: &Path) -> Result<bool> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(false);
    }
    let trash = temp_path_for(path);
    rename(path, &trash)?;
    fs::remove_dir_all(&trash).map_err(io_err("remove folder", path))?;
    sync_dir(parent_of(path))?;
    Ok(true)
}

/// Points the symlink `link` at `target`, atomically replacing whatever `link` was.
pub fn symlink_replace(target: &Path, link: &Path) -> Result<()> {
    let temp = temp_path_for(link);
    std::os::unix::fs::symlink(target, &temp).map_err(io_err("create link", link))?;
    crate::failpoint::hit("fs-rename")
        .and_then(|()| fs::rename(&temp, link).map_err(io_err("switch link", link)))
        .inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })?;
    sync_dir(parent_of(link))
}

/// Creates a new file for appending (a log), failing if it exists. Logs are streams, not
/// documents, so they are not written atomically; they are created with their final mode.
pub fn create_new_append(path: &Path, mode: u32) -> Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create", path))?;
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))?;
    sync_dir(parent_of(path))?;
    Ok(file)
}

/// Writes a new file only if `path` does not exist yet: atomically, durably and without ever
/// replacing another writer's file. Returns `false` when `path` already exists.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<bool> {
    let mut f = AtomicFile::create(path, mode)?;
    f.write_all(data).map_err(io_err("write", path))?;
    let Some(file) = f.file.take() else { return Ok(false) };
    file.sync_all().map_err(io_err("sync", path))?;
    drop(file);
    // link(2) fails if the name exists: the exclusive rename that rename(2) is not.
    let linked = fs::hard_link(&f.temp, path);
    let _ = fs::remove_file(&f.temp);
    match linked {
        Ok(()) => {
            sync_dir(parent_of(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err("create", path)(e)),
    }
}

/// Changes made under an undo log: dropped or rolled back before [`Transaction::commit`], each
/// change is undone in reverse order. Used where a failure must leave the device exactly as
/// it was (the installer's certificate installs).
#[derive(Debug, Default)]
pub struct Transaction {
    undo: Vec<Undo>,
    done: bool,
}

#[derive(Debug)]
enum Undo {
    RemoveFile(PathBuf),
    RemoveDir(PathBuf),
    Restore { path: PathBuf, data: Vec<u8>, mode: u32 },
}

/// The largest file a transaction backs up in memory before replacing it.
const MAX_BACKUP: u64 = 1024 * 1024;

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Transaction {
        Transaction::default()
    }

    /// [`create_dir_all`], undone by removing the folders it created.
    pub fn create_dir_all(&mut self, dir: &Path, mode: u32) -> Result<()> {
        let made = create_dir_all(dir, mode);
        // Record what was made even if a deeper level failed.
        if let Ok(made) = &made {
            self.undo.extend(made.iter().cloned().map(Undo::RemoveDir));
        }
        made.map(|_| ())
    }

    /// [`write_atomic`], undone by removing the file or restoring its old content.
    pub fn write(&mut self, path: &Path, data: &[u8], mode: u32) -> Result<()> {
        let before = read_optional(path, MAX_BACKUP)?;
        let old_mode = fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(mode);
        write_atomic(path, data, mode)?;
        self.undo.push(match before {
            Some(data) => Undo::Restore { path: path.to_path_buf(), data, mode: old_mode },
            None => Undo::RemoveFile(path.to_path_buf()),
        });
        Ok(())
    }

    /// Keeps every change.
    pub fn commit(mut self) {
        self.done = true;
    }

    /// Undoes every change, newest first. Returns the errors of undo steps that failed.
    pub fn rollback(mut self) -> Vec<Error> {
        self.undo_all()
    }

    fn undo_all(&mut self) -> Vec<Error> {
        self.done = true;
        let mut errors = Vec::new();
        while let Some(step) = self.undo.pop() {
            let r = match &step {
                Undo::RemoveFile(p) => remove_file(p).map(|_| ()),
                Undo::RemoveDir(p) => remove_dir(p).map(|_| ()),
                Undo::Restore { path, data, mode } => write_atomic(path, data, *mode),
            };
            if let Err(e) = r {
                log::error!("could not undo a change: {e}");
                errors.push(e);
            }
        }
        errors
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if !self.done {
            self.undo_all();
        }
    }
}

/// An exclusive advisory lock on a file, released when dropped or when the process dies
/// (even by SIGKILL), so a crashed holder never leaves a stale lock.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
    path: PathBuf,
}

impl LockGuard {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the lock on `path` (creating it 0600) without waiting. `None` when another process
/// holds it.
pub fn try_lock(path: &Path) -> Result<Option<LockGuard>> {
    if let Some(parent) = path.parent() {
        create_dir_all(parent, MODE_DIR)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(MODE_PRIVATE)
        .open(path)
        .map_err(io_err("open lock", path))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(LockGuard { _file: file, path: path.to_path_buf() })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(io_err("lock", path)(e.into())),
    }
}

/// Opens a download's `.partial` file to continue it: created with `mode` when missing,
/// positioned at its end. Returns the file and the bytes already there. Partial files are
/// resumable by design, not atomic; they are renamed into place with [`rename`] when complete.
pub fn open_resumable(path: &Path, mode: u32) -> Result<(File, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("open", path))?;
    let len = file.metadata().map_err(io_err("inspect", path))?.len();
    Ok((file, len))
}

/// Sets a file's permission bits.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

/// Bytes available to unprivileged writers on the file system holding `path`.
pub fn available_space(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(|e| io_err("inspect", path)(e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Opens `path` for reading only if it is a regular file (following links). The open never
/// blocks: a FIFO or a device in place of a file (a settings file, an outbox entry) would
/// otherwise hang the reader until someone writes to it.
pub fn open_regular(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(io_err("open", path))?;
    let kind = file.metadata().map_err(io_err("inspect", path))?.file_type();
    if !kind.is_file() {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
            kind: if kind.is_dir() {
                "a folder where a file belongs"
            } else {
                "not a regular file (a FIFO, socket or device)"
            },
        });
    }
    Ok(file)
}

/// Reads at most `limit` bytes of `path`; a longer file is an error, not a truncation.
pub fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata().map_err(io_err("inspect", path))?.len();
    if len > limit {
        return Err(Error::TooLarge { path: path.to_path_buf(), limit, actual: len });
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // The file may grow after the size check: read one byte past the limit to notice.
    file.take(limit + 1).read_to_end(&mut buf).map_err(io_err("read", path))?;
    if buf.len() as u64 > limit {
        return Err(Error::TooLarge { path: path.to_path_buf(), limit, actual: buf.len() as u64 });
    }
    Ok(buf)
}

/// Reads `path` when it exists, capped like [`read_capped`]; `None` when it does not.
pub fn read_optional(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    match read_capped(path, limit) {
        Ok(b) => Ok(Some(b)),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a JSON document of at most `limit` bytes; `None` when the file does not exist. A
/// document that does not parse is [`Error::InvalidData`] naming the file: never a silent
/// default.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, limit: u64) -> Result<Option<T>> {
    let Some(bytes) = read_optional(path, limit)? else { return Ok(None) };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::InvalidData { path: path.to_path_buf(), reason: e.to_string() })
}

/// Writes `value` as pretty JSON, atomically and durably, created with `mode`. The folder must
/// exist.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T, mode: u32) -> Result<()> {
    let mut body = serde_json::to_vec_pretty(value).map_err(|e| Error::InvalidData {
        path: path.to_path_buf(),
        reason: format!("cannot be written as JSON: {e}"),
    })?;
    body.push(b'\n');
    write_atomic(path, &body, mode)
}

#[cfg(test)]
mod tests {
    #[test]
    fn partial_files_are_hidden_siblings() {
        let p = super::partial_of(std::path::Path::new("/c/a/run.sh"));
        assert_eq!(p, std::path::Path::new("/c/a/.run.sh.partial"));
    }

    use super::*;

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn write_atomic_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        write_atomic(&p, b"one", MODE_PRIVATE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(mode_of(&p), 0o600);
        write_atomic(&p, b"two", MODE_PUBLIC).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(mode_of(&p), 0o644);
        // No temp files left behind.
        let names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![OsString::from("key.pem")]);
    }

    #[test]
    fn uncommitted_file_leaves_destination_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("settings.ini");
        write_atomic(&p, b"old", MODE_PRIVATE).unwrap();
        {
            let mut f = AtomicFile::create(&p, MODE_PRIVATE).unwrap();
            f.write_all(b"half-writ").unwrap();
            // dropped without commit: a crash before rename
        }
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_files_are_never_wider_than_asked() {
        // Even with a permissive umask the temp file is created 0600.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let f = AtomicFile::create(&p, MODE_PRIVATE).unwrap();
        assert_eq!(mode_of(&f.temp), 0o600);
        f.commit().unwrap();
    }

    #[test]
    fn create_dir_all_reports_what_it_made() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        let made = create_dir_all(&deep, MODE_DIR_PRIVATE).unwrap();
        assert_eq!(made, vec![dir.path().join("a"), dir.path().join("a/b"), deep.clone()]);
        assert_eq!(mode_of(&deep), 0o700);
        assert!(create_dir_all(&deep, MODE_DIR).unwrap().is_empty());
        fs::write(dir.path().join("file"), b"").unwrap();
        let err = create_dir_all(&dir.path().join("file/sub"), MODE_DIR).unwrap_err();
        assert!(err.to_string().contains("a file is in the way"), "{err}");
    }

    #[test]
    fn read_capped_refuses_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        fs::write(&p, vec![b'x'; 1000]).unwrap();
        assert_eq!(read_capped(&p, 1000).unwrap().len(), 1000);
        let err = read_capped(&p, 999).unwrap_err();
        assert!(matches!(err, Error::TooLarge { limit: 999, actual: 1000, .. }), "{err}");
        assert!(read_optional(&dir.path().join("none"), 10).unwrap().is_none());
    }

    #[test]
    fn locks_are_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/setup.lock");
        let first = try_lock(&p).unwrap().expect("free lock");
        assert!(try_lock(&p).unwrap().is_none());
        drop(first);
        assert!(try_lock(&p).unwrap().is_some());
    }

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0001.json");
        assert!(write_new(&p, b"first", MODE_PRIVATE).unwrap());
        assert!(!write_new(&p, b"second", MODE_PRIVATE).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert_eq!(mode_of(&p), 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn transaction_rolls_back_in_reverse_and_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("existing");
        write_atomic(&existing, b"old", MODE_PUBLIC).unwrap();
        let mut tx = Transaction::new();
        tx.create_dir_all(&dir.path().join("a/b"), MODE_DIR).unwrap();
        tx.write(&dir.path().join("a/b/new"), b"n", MODE_PRIVATE).unwrap();
        tx.write(&existing, b"changed", MODE_PRIVATE).unwrap();
        assert!(tx.rollback().is_empty());
        assert_eq!(fs::read(&existing).unwrap(), b"old");
        assert_eq!(mode_of(&existing), 0o644);
        assert!(!dir.path().join("a").exists());

        {
            let mut tx = Transaction::new();
            tx.write(&dir.path().join("dropped"), b"x", MODE_PRIVATE).unwrap();
        }
        assert!(!dir.path().join("dropped").exists());

        let mut tx = Transaction::new();
        tx.write(&dir.path().join("kept"), b"x", MODE_PRIVATE).unwrap();
        tx.commit();
        assert!(dir.path().join("kept").exists());
    }

    #[test]
    fn symlink_replace_switches_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        symlink_replace(Path::new("versions/1"), &link).unwrap();
        symlink_replace(Path::new("versions/2"), &link).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("versions/2"));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn json_documents_round_trip_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert_eq!(read_json::<Vec<u32>>(&p, 100).unwrap(), None);
        write_json(&p, &vec![1u32, 2, 3], MODE_PRIVATE).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&p, 100).unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(mode_of(&p), 0o600);
        fs::write(&p, b"[1, 2,").unwrap();
        let err = read_json::<Vec<u32>>(&p, 100).unwrap_err();
        assert!(matches!(err, Error::InvalidData { .. }), "{err}");
        assert!(err.to_string().contains("state.json"), "{err}");
        assert!(matches!(read_json::<Vec<u32>>(&p, 3), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn remove_dir_all_and_remove_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("v1");
        create_dir_all(&d.join("x"), MODE_DIR).unwrap();
        write_atomic(&d.join("x/f"), b"1", MODE_PUBLIC).unwrap();
        assert!(remove_dir_all(&d).unwrap());
        assert!(!remove_dir_all(&d).unwrap());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let f = dir.path().join("f");
        write_atomic(&f, b"1", MODE_PUBLIC).unwrap();
        assert!(remove_file(&f).unwrap());
        assert!(!remove_file(&f).unwrap());
    }
}

//! The SQLite database's files (the database, its `-wal` and its `-shm`) hold the devices'
//! token hashes and the administrators' password hashes: only the server's user may read
//! them (0600), whatever the umask of whoever first ran `dmmp`.
//!
//! SQLite creates a database file with mode 0644 less the umask, and gives the `-wal` and
//! `-shm` files it creates the database file's mode. So a new database file is created here,
//! 0600, before SQLite opens it; an existing file that others may read is made 0600, with a
//! warning naming it.

use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dm_shared::fs::MODE_PRIVATE;

use crate::error::Result;

/// Creates the database file 0600 if it does not exist, and makes the database's existing
/// files 0600 when group or others may use them.
pub(super) fn keep_private(db: &Path) -> Result<()> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(MODE_PRIVATE).open(db) {
        // The umask may have taken bits from the mode asked for; set it exactly.
        Ok(f) => {
            f.set_permissions(std::fs::Permissions::from_mode(MODE_PRIVATE))
                .map_err(dm_shared::fs::io_err("chmod", db))?;
            if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
                dm_shared::fs::sync_dir(dir)?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(dm_shared::fs::io_err("create", db)(e).into()),
    }
    for f in files_of(db) {
        let mode = match std::fs::metadata(&f) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(dm_shared::fs::io_err("inspect", &f)(e).into()),
        };
        if mode & 0o077 != 0 {
            dm_shared::fs::set_mode(&f, MODE_PRIVATE)?;
            log::warn!(
                "{} had mode {mode:o}: others could read the token and password hashes it holds; it is 0600 now",
                f.display()
            );
        }
    }
    Ok(())
}

/// The database file and the `-wal` and `-shm` files SQLite keeps beside it.
pub(super) fn files_of(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut s = db.as_os_str().to_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

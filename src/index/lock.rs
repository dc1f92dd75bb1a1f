//! One writer per index path: an advisory lock on `<index>.lock`, beside the
//! index directory (not inside it: the directory itself is replaced by a
//! rename). The lock is held by an open file (`File::try_lock`, `flock(2)` on
//! Unix, `LockFileEx` on Windows), so it is released when the process ends,
//! however it ends; a lock file left behind is harmless. While held, the file
//! holds the holder's pid and start time, for the message a second writer gets
//! (cleared on release; a killed holder's line stays until the next writer).
//!
//! Readers never take the lock: they open whichever complete index the path
//! names at that moment (the writer swaps it in with renames).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// The lock file of the index at `target`: `<target>.lock`.
pub fn lock_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "index".into());
    target.with_file_name(format!("{name}.lock"))
}

/// The exclusive right to write the index at a path, until dropped.
#[derive(Debug)]
pub struct IndexLock {
    path: PathBuf,
    file: File,
}

impl IndexLock {
    /// Takes the lock of the index at `target`. If another process holds it,
    /// errors at once with [`Error::Locked`] naming the path and the holder,
    /// or, with `wait`, blocks until it is released.
    pub fn acquire(target: &Path, wait: bool) -> Result<Self> {
        let path = lock_path(target);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                if !wait {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    return Err(Error::Locked {
                        path: target.to_path_buf(),
                        holder: if holder.is_empty() {
                            format!("lock file {}", path.display())
                        } else {
                            format!("{holder}; lock file {}", path.display())
                        },
                    });
                }
                file.lock().map_err(|e| Error::io(&path, e))?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        // Record who holds it (best effort: the lock is what matters).
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let _ = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| {
                writeln!(
                    file,
                    "pid {} (colwgpu {}, since unix time {since})",
                    std::process::id(),
                    env!("CARGO_PKG_VERSION")
                )
            })
            .and_then(|_| file.flush());
        Ok(Self { path, file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for IndexLock {
    /// Clears the holder line while still holding the lock (closing the file
    /// then releases it), so a stale pid is never reported.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

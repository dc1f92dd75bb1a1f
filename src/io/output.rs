//! The one way colwgpu writes a file a user named (`encode --out`, `eval --run`,
//! anything else), and the checks every output path goes through (the index
//! directory's writer in `index::store` uses [`check_not_input`] and
//! [`describe_non_regular`] too).
//!
//! Guarantees of [`OutputFile`] / [`write_file`]:
//! * only a **regular file or a new path** is written: a directory, device
//!   (`/dev/null`, `/dev/full`), FIFO or socket at the target is refused before
//!   anything is written (a symbolic link is followed to the file it names);
//! * never **an input of the same command**: the target may not be the same
//!   file (same device and inode: hard links and other spellings included) as
//!   an input file, nor an existing file inside an input directory (the model);
//! * **atomic**: the data goes to a temporary file beside the target, is
//!   fsynced, then renamed over it; the temporary file is removed on every
//!   error path (and on drop), so a failure leaves the target as it was;
//! * **permissions from the umask** (`0666 & !umask`, like `touch`), not 0600.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

fn refuse(path: &Path, message: impl Into<String>) -> Error {
    Error::Input(format!("{}: {}", path.display(), message.into()))
}

/// What kind of non-regular file `meta` describes, or `None` for a regular file.
pub fn describe_non_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
        if t.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a regular file")
}

/// The identity of an existing file: (device, inode) on Unix, its canonical
/// path elsewhere.
#[derive(PartialEq, Eq)]
enum FileId {
    #[cfg(unix)]
    Inode(u64, u64),
    #[cfg_attr(unix, allow(dead_code))]
    Path(PathBuf),
}

fn file_id(path: &Path) -> Option<FileId> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| FileId::Inode(m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        path.canonicalize().ok().map(FileId::Path)
    }
}

/// Errors if writing `target` (a file, or a directory that will be replaced)
/// would overwrite or delete one of `inputs`: `target` is the same file as an
/// input, an existing file inside an input directory, or a directory that
/// contains an input.
pub fn check_not_input(target: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(target_canon) = target.canonicalize() else {
        return Ok(()); // a new path overwrites nothing
    };
    let target_id = file_id(target);
    for input in inputs {
        let Ok(input_canon) = input.canonicalize() else {
            continue;
        };
        let same = target_id.is_some() && file_id(input) == target_id;
        if same || target_canon.starts_with(&input_canon) {
            return Err(refuse(
                target,
                format!(
                    "is {} input {} of this command; refusing to overwrite it",
                    if same { "the" } else { "inside the" },
                    input.display()
                ),
            ));
        }
        if input_canon.starts_with(&target_canon) {
            return Err(refuse(
                target,
                format!(
                    "contains the input {} of this command; refusing to replace it",
                    input.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that `target` may be written as a file (see the module docs) and
/// returns the path to write: `target` itself, or the file a symbolic link
/// there points to. Call it before long work, to fail at once.
pub fn check_file_target(target: &Path, inputs: &[&Path]) -> Result<PathBuf> {
    if target.as_os_str().is_empty() || target.file_name().is_none() {
        return Err(refuse(target, "is not a file name"));
    }
    let resolved = match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => target.to_path_buf(),
        Err(e) => return Err(Error::io(target, e)),
        Ok(m) if m.file_type().is_symlink() => match target.canonicalize() {
            Ok(p) => p,
            Err(_) => {
                return Err(refuse(
                    target,
                    "is a symbolic link to nothing; refusing to replace it",
                ))
            }
        },
        Ok(_) => target.to_path_buf(),
    };
    match std::fs::metadata(&resolved) {
        Ok(m) => {
            if let Some(kind) = describe_non_regular(&m) {
                return Err(refuse(
                    target,
                    format!("is {kind}, not a regular file; refusing to write over it"),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(target, e)),
    }
    let parent = parent_dir(&resolved);
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(refuse(parent, "is not a directory")),
        Err(e) => return Err(Error::io(parent, e)),
    }
    check_not_input(target, inputs)?;
    Ok(resolved)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory (Unix; elsewhere a no-op), so a rename in it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file being written: a temporary file beside the target, renamed over it
/// by [`OutputFile::commit`], removed if dropped uncommitted.
pub struct OutputFile {
    target: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl OutputFile {
    /// Checks `target` ([`check_file_target`]) and opens its temporary file.
    pub fn create(target: &Path, inputs: &[&Path]) -> Result<Self> {
        let resolved = check_file_target(target, inputs)?;
        let name = resolved
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent_dir(&resolved).join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // create_new: never follows a link or reuses a file planted at the name.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        Ok(Self {
            target: resolved,
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Appends `data`.
    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        match self.out.as_mut() {
            Some(w) => w.write_all(data).map_err(|e| Error::io(&self.tmp, e)),
            None => Err(Error::io(
                &self.tmp,
                std::io::Error::other("output already committed"),
            )),
        }
    }

    /// Flushes, fsyncs and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        // The target may have been replaced by a device or directory since the
        // check; rename(2) would replace a device node, so look again.
        if let Ok(m) = std::fs::symlink_metadata(&self.target) {
            if let Some(kind) = describe_non_regular(&m) {
                return Err(refuse(
                    &self.target,
                    format!("is {kind}, not a regular file; refusing to write over it"),
                ));
            }
        }
        std::fs::rename(&self.tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        self.tmp = PathBuf::new(); // nothing left to remove
        fsync_dir(parent_dir(&self.target))
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.out = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `data` to `target` through an [`OutputFile`].
pub fn write_file(target: &Path, inputs: &[&Path], data: &[u8]) -> Result<()> {
    let mut f = OutputFile::create(target, inputs)?;
    f.write_all(data)?;
    f.commit()
}

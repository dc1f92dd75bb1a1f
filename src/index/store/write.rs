//! Writing an index: a temporary directory beside the target, buffered data
//! files with their size and CRC-32, `metadata.json` last, then an atomic
//! rename into place (an existing index is moved aside only once the new one
//! is complete).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::meta::{metadata_json, FileEntry, Metadata};
use super::{bad, METADATA};
use crate::error::{Error, Result};

/// A data file being written: buffered, size and CRC-32 kept as it goes.
pub(crate) struct FileWriter {
    path: PathBuf,
    name: &'static str,
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl FileWriter {
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<()> {
        self.out
            .write_all(data)
            .map_err(|e| Error::io(&self.path, e))?;
        self.crc.update(data);
        self.bytes += data.len() as u64;
        Ok(())
    }

    pub(crate) fn write_pod<T: bytemuck::Pod>(&mut self, data: &[T]) -> Result<()> {
        self.write(bytemuck::cast_slice(data))
    }

    /// Flushes and fsyncs; records the file in `files`.
    pub(crate) fn finish(self, files: &mut BTreeMap<String, FileEntry>) -> Result<()> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        files.insert(
            self.name.to_string(),
            FileEntry {
                bytes: self.bytes,
                crc32: self.crc.finalize(),
            },
        );
        Ok(())
    }
}

/// The temporary directory of a build in progress: removed on drop unless
/// committed.
pub(crate) struct TempIndexDir {
    target: PathBuf,
    tmp: PathBuf,
    committed: bool,
    /// Held from creation to commit (or failure): one writer per index path.
    _lock: crate::index::lock::IndexLock,
}

fn sibling(target: &Path, tag: &str, pid: u32) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "index".into());
    target.with_file_name(format!("{name}.{tag}-{pid}"))
}

/// Whether process `pid` is alive (Linux: `/proc/<pid>`; elsewhere assume so).
fn process_alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        pid == std::process::id()
    }
}

/// Leftovers of builds at `target` whose process is gone: `(path, is_old)`.
pub(super) fn stale_siblings(target: &Path) -> Vec<(PathBuf, bool)> {
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Vec::new();
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let name = name.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let fname = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = fname.strip_prefix(&name) else {
            continue;
        };
        let (is_old, pid) = if let Some(p) = rest.strip_prefix(".tmp-") {
            (false, p)
        } else if let Some(p) = rest.strip_prefix(".old-") {
            (true, p)
        } else {
            continue;
        };
        if let Ok(pid) = pid.parse::<u32>() {
            if pid == std::process::id() || !process_alive(pid) {
                out.push((e.path(), is_old));
            }
        }
    }
    out
}

fn fsync_dir(dir: &Path) -> Result<()> {
    // Directories can be opened and fsynced on Unix; elsewhere this is best effort.
    match File::open(dir) {
        Ok(f) => {
            #[cfg(unix)]
            f.sync_all().map_err(|e| Error::io(dir, e))?;
            drop(f);
            Ok(())
        }
        Err(e) if cfg!(unix) => Err(Error::io(dir, e)),
        Err(_) => Ok(()),
    }
}

/// Errors unless `target` is free, an empty directory or a colwgpu index
/// (what a build may replace): never a device, FIFO, file or other directory.
fn check_replaceable(target: &Path) -> Result<()> {
    let Ok(m) = std::fs::metadata(target) else {
        return Ok(());
    };
    if let Some(kind) = crate::io::output::describe_non_regular(&m).filter(|_| !m.is_dir()) {
        return Err(Error::Input(format!(
            "'{}' is {kind}, not an index directory; refusing to replace it",
            target.display()
        )));
    }
    let is_index = m.is_dir() && target.join(METADATA).is_file();
    let is_empty_dir = m.is_dir()
        && std::fs::read_dir(target)
            .map_err(|e| Error::io(target, e))?
            .next()
            .is_none();
    if !is_index && !is_empty_dir {
        return Err(Error::Input(format!(
            "'{}' exists and is not a colwgpu index (no {METADATA}); refusing to replace it",
            target.display()
        )));
    }
    Ok(())
}

impl TempIndexDir {
    /// Checks that `target` may be (re)placed by an index, tidies leftovers of
    /// dead builds there, and creates `<target>.tmp-<pid>`.
    /// Takes the index's writer lock first ([`crate::index::lock::IndexLock`]; with
    /// `wait`, waits for another writer to finish instead of failing).
    pub(crate) fn create(target: &Path, wait: bool) -> Result<Self> {
        if target.file_name().is_none() {
            return Err(Error::Input(format!(
                "index path '{}' has no directory name",
                target.display()
            )));
        }
        // Checked before taking the lock (no lock file beside a wrong target)
        // and again under it.
        check_replaceable(target)?;
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let lock = crate::index::lock::IndexLock::acquire(target, wait)?;
        Self::create_locked(target, lock)
    }

    /// [`TempIndexDir::create`] for a caller that already holds the index's
    /// lock (a live index's writer compacting it).
    pub(crate) fn create_locked(
        target: &Path,
        lock: crate::index::lock::IndexLock,
    ) -> Result<Self> {
        // A crash between the two renames of a commit leaves the previous index
        // as `<target>.old-<pid>` and no target: put it back first.
        let stale = stale_siblings(target);
        if !target.exists() {
            if let Some((old, _)) = stale.iter().find(|(_, is_old)| *is_old) {
                std::fs::rename(old, target).map_err(|e| Error::io(old, e))?;
            }
        }
        for (p, _) in stale_siblings(target) {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
        check_replaceable(target)?;
        let tmp = sibling(target, "tmp", std::process::id());
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            tmp,
            committed: false,
            _lock: lock,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.tmp
    }

    pub(crate) fn file(&self, name: &'static str) -> Result<FileWriter> {
        let path = self.tmp.join(name);
        let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(FileWriter {
            path,
            name,
            out: BufWriter::with_capacity(1 << 20, f),
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        })
    }

    /// Writes a whole data file.
    pub(crate) fn write_file<T: bytemuck::Pod>(
        &self,
        name: &'static str,
        data: &[T],
        files: &mut BTreeMap<String, FileEntry>,
    ) -> Result<()> {
        let mut w = self.file(name)?;
        w.write_pod(data)?;
        w.finish(files)
    }

    /// Writes indices (values below 2^16 when `name` ends in `.u16`, as
    /// [`codes_file`] / [`ivf_file`] choose) at the width its name says.
    pub(crate) fn write_indices(
        &self,
        name: &'static str,
        data: &[u32],
        files: &mut BTreeMap<String, FileEntry>,
    ) -> Result<()> {
        if !name.ends_with(".u16") {
            return self.write_file(name, data, files);
        }
        let mut w = self.file(name)?;
        for chunk in data.chunks(1 << 16) {
            let narrow = chunk
                .iter()
                .map(|&v| {
                    u16::try_from(v).map_err(|_| {
                        bad(
                            &self.tmp.join(name),
                            format!("value {v} does not fit the u16 file"),
                        )
                    })
                })
                .collect::<Result<Vec<u16>>>()?;
            w.write_pod(&narrow)?;
        }
        w.finish(files)
    }

    /// Writes `metadata.json`, fsyncs, and moves the index into place.
    pub(crate) fn commit(mut self, metadata: &Metadata) -> Result<()> {
        let path = self.tmp.join(METADATA);
        let json = metadata_json(metadata).map_err(|e| Error::IndexFormat {
            path: path.clone(),
            message: e.to_string(),
        })?;
        {
            let mut f = File::create(&path).map_err(|e| Error::io(&path, e))?;
            f.write_all(&json).map_err(|e| Error::io(&path, e))?;
            f.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        fsync_dir(&self.tmp)?;
        let target = self.target.clone();
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if target.exists() {
            let old = sibling(&target, "old", std::process::id());
            std::fs::rename(&target, &old).map_err(|e| Error::io(&target, e))?;
            if let Err(e) = std::fs::rename(&self.tmp, &target) {
                // Put the previous index back; the temporary one is removed on drop.
                let _ = std::fs::rename(&old, &target);
                return Err(Error::io(&target, e));
            }
            self.committed = true;
            fsync_dir(&parent)?;
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        } else {
            std::fs::rename(&self.tmp, &target).map_err(|e| Error::io(&target, e))?;
            self.committed = true;
        }
        fsync_dir(&parent)
    }
}

impl Drop for TempIndexDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

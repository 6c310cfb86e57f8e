//! The file operations the durable log needs, behind one small trait, so the same log
//! code runs on the real file system and on turmoil's simulated one (whose crashes drop
//! what was never synced). Both implementations are one macro body instantiated over a
//! module that has `std::fs`'s names: [`RealDisk`] here over `std::fs`, the
//! simulator's over `turmoil::fs::shim::std::fs`. Nothing in the log knows which.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory of log files.
pub trait Disk: Send + Sync + Debug {
    /// Creates `dir` (and its parents) and makes its entry durable.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The files in `dir` whose name ends in `suffix`, sorted.
    fn list(&self, dir: &Path, suffix: &str) -> io::Result<Vec<PathBuf>>;
    /// A whole file; `None` when it does not exist.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Opens `path` for appending, creating it (durably: its directory is synced) when
    /// missing.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    /// Cuts `path` to `len` bytes, durably.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Replaces `path` with `bytes` atomically: a crash leaves the old file or the new
    /// one, never a mix (write a temporary file, sync it, rename, sync the directory).
    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Whether file calls may block for real (a thread pool is worth it): true on a
    /// real disk, false in simulation, where they complete at once.
    fn blocks(&self) -> bool;
}

/// An open log file.
pub trait LogFile: Send + Debug {
    /// Writes `bytes` at the end (to the OS: they survive a killed process).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (survives power loss).
    fn sync(&mut self) -> io::Result<()>;
    /// Another handle on the same file, to sync it without holding this one (group
    /// commit syncs outside the workspace's lock).
    fn try_clone(&self) -> io::Result<Box<dyn LogFile>>;
}

/// Which disk a server writes to. `Default` is the real one.
#[derive(Debug, Clone)]
pub struct DiskHandle(pub Arc<dyn Disk>);

impl Default for DiskHandle {
    fn default() -> Self {
        DiskHandle(Arc::new(RealDisk))
    }
}

impl std::ops::Deref for DiskHandle {
    type Target = dyn Disk;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// Implements [`Disk`] for `$name` over the module `$fs`, which must have `std::fs`'s
/// `File`, `OpenOptions`, `create_dir_all`, `read`, `read_dir`, `rename` and a
/// `sync_dir(path)`. `$blocks` is [`Disk::blocks`].
#[macro_export]
macro_rules! disk_impl {
    ($name:ident, $fs:path, $blocks:expr) => {
        const _: () = {
            use std::io::{self, Write as _};
            use std::path::{Path, PathBuf};
            use $crate::storage::{Disk, LogFile};
            use $fs as fs;

            #[derive(Debug)]
            struct Appender(fs::File);

            impl LogFile for Appender {
                fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
                    self.0.write_all(bytes)
                }
                fn sync(&mut self) -> io::Result<()> {
                    self.0.sync_data()
                }
                fn try_clone(&self) -> io::Result<Box<dyn LogFile>> {
                    Ok(Box::new(Appender(self.0.try_clone()?)))
                }
            }

            fn parent(path: &Path) -> &Path {
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
            }

            impl Disk for $name {
                fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
                    fs::create_dir_all(dir)?;
                    fs::sync_dir(dir)?;
                    fs::sync_dir(parent(dir))
                }
                fn list(&self, dir: &Path, suffix: &str) -> io::Result<Vec<PathBuf>> {
                    let mut out = Vec::new();
                    for e in fs::read_dir(dir)? {
                        let p = e?.path();
                        if p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.ends_with(suffix))
                        {
                            out.push(p);
                        }
                    }
                    out.sort();
                    Ok(out)
                }
                fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
                    match fs::read(path) {
                        Ok(b) => Ok(Some(b)),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                        Err(e) => Err(e),
                    }
                }
                fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
                    let existed = fs::metadata(path).is_ok();
                    let f = fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)?;
                    if !existed {
                        f.sync_all()?;
                        fs::sync_dir(parent(path))?;
                    }
                    Ok(Box::new(Appender(f)))
                }
                fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
                    let f = fs::OpenOptions::new().write(true).open(path)?;
                    f.set_len(len)?;
                    f.sync_all()
                }
                fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
                    let mut tmp = path.as_os_str().to_owned();
                    tmp.push(".tmp");
                    let tmp = PathBuf::from(tmp);
                    let mut f = fs::OpenOptions::new()
                        .create(true)
                        .write(true)
                        .truncate(true)
                        .open(&tmp)?;
                    f.write_all(bytes)?;
                    f.sync_all()?;
                    drop(f);
                    fs::rename(&tmp, path)?;
                    fs::sync_dir(parent(path))
                }
                fn blocks(&self) -> bool {
                    $blocks
                }
            }
        };
    };
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

/// `std::fs`, plus the directory sync it lacks (open the directory, fsync it).
pub mod real_fs {
    pub use std::fs::{File, OpenOptions, create_dir_all, metadata, read, read_dir, rename};

    pub fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

crate::disk_impl!(RealDisk, crate::storage::disk::real_fs, true);

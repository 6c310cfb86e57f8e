//! The simulated server's disk: turmoil's file system (per host; a crash drops what was
//! not synced, pending writes torn at a block size) under the same log code as a real
//! disk (`rtsync_server::disk_impl!`), plus the timeline's disk faults — a full disk,
//! an I/O error rate, a byte of a log flipped while the server is down.

use rtsync_client::rng::Rng;
use rtsync_server::storage::{Disk, LogFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Where the simulated server keeps its logs, on its host's simulated disk.
pub const SIM_DATA_DIR: &str = "/data";

/// turmoil's file system, through the real log code.
#[derive(Debug, Clone, Copy)]
struct TurmoilDisk;
rtsync_server::disk_impl!(TurmoilDisk, turmoil::fs::shim::std::fs, false);

/// The disk faults in force, set by the timeline and read by the server's disk.
#[derive(Debug)]
pub struct DiskFaults {
    full: AtomicBool,
    /// Chance that one write fails with EIO, and the stream its draws come from.
    errors: Mutex<(f64, Rng)>,
    /// A log is to be damaged before the server next starts.
    corrupt: AtomicBool,
}

impl DiskFaults {
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(DiskFaults {
            full: AtomicBool::new(false),
            errors: Mutex::new((0.0, Rng::new(seed))),
            corrupt: AtomicBool::new(false),
        })
    }

    pub fn set(&self, full: bool, error_rate: f64) {
        self.full.store(full, Ordering::Relaxed);
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).0 = error_rate;
    }

    pub fn corrupt_next_start(&self) {
        self.corrupt.store(true, Ordering::Relaxed);
    }

    /// The error this write gets, if any.
    fn check(&self) -> io::Result<()> {
        if self.full.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            ));
        }
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let rate = e.0;
        if rate > 0.0 && e.1.chance(rate) {
            return Err(io::Error::other("input/output error (simulated)"));
        }
        Ok(())
    }

    /// Run by the server host as it starts: flips the middle byte of the first log, as
    /// bit rot found by the next start would. Returns the file, if one was damaged.
    pub fn damage_if_due(&self) -> Option<PathBuf> {
        if !self.corrupt.swap(false, Ordering::Relaxed) {
            return None;
        }
        use turmoil::fs::shim::std::fs;
        let path = TurmoilDisk
            .list(Path::new(SIM_DATA_DIR), ".log")
            .ok()?
            .into_iter()
            .next()?;
        let mut bytes = fs::read(&path).ok()?;
        let at = bytes.len() / 2;
        *bytes.get_mut(at)? ^= 0x5a;
        fs::write(&path, &bytes).ok()?;
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.sync_all())
            .ok()?;
        Some(path)
    }
}

/// The simulated server's disk: turmoil's, with the timeline's faults on every write.
#[derive(Debug, Clone)]
pub struct SimDisk(pub Arc<DiskFaults>);

#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn LogFile>,
    faults: Arc<DiskFaults>,
}

impl LogFile for FaultyFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.faults.check()?;
        self.inner.append(bytes)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.faults.check()?;
        self.inner.sync()
    }
    fn try_clone(&self) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(FaultyFile {
            inner: self.inner.try_clone()?,
            faults: self.faults.clone(),
        }))
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        TurmoilDisk.create_dir_all(dir)
    }
    fn list(&self, dir: &Path, suffix: &str) -> io::Result<Vec<PathBuf>> {
        TurmoilDisk.list(dir, suffix)
    }
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        TurmoilDisk.read(path)
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        // Creating a file takes space; opening one that exists does not.
        if !turmoil::fs::shim::std::fs::exists(path) {
            self.0.check()?;
        }
        Ok(Box::new(FaultyFile {
            inner: TurmoilDisk.open_append(path)?,
            faults: self.0.clone(),
        }))
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        TurmoilDisk.truncate(path, len)
    }
    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.0.check()?;
        TurmoilDisk.replace(path, bytes)
    }
    fn blocks(&self) -> bool {
        false
    }
}

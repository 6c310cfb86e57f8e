//! One workspace's durable log: open (scan, cut a torn tail, replay into a fresh core),
//! append a step's records, sync, compact (docs/durability.md).

use super::frame::{self, End, MAGIC};
use super::{Disk, Durability, LogFile};
use crate::core::journal::Record;
use crate::core::{CoreConfig, Workspace};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a workspace's log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path}: damaged at byte {offset} ({why}); the records after it would be lost. \
         Start with --accept-damage to keep what comes before and begin a new epoch"
    )]
    Damaged {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("{path}: no whole record (a log created by a start that crashed at once)")]
    Empty { path: PathBuf },
    #[error("{path}: record at byte {offset}: {why}")]
    BadRecord {
        path: PathBuf,
        offset: u64,
        why: String,
    },
}

/// What opening found, for the operator's log and `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub records: u64,
    /// Bytes of a torn tail cut off.
    pub torn_bytes: u64,
    /// Bytes after damage given up (only with `accept_damage`).
    pub damaged_bytes: u64,
}

/// A group-commit sync to run outside the workspace's lock: a handle on the log, and
/// how far (appended bytes ever, bytes of the file) its success makes it durable.
#[derive(Debug)]
pub struct SyncJob {
    total: u64,
    written: u64,
    pub file: Box<dyn LogFile>,
}

/// How a log is kept (from the server's config).
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    pub mode: Durability,
    pub compact_bytes: u64,
    pub accept_damage: bool,
}

/// An open log: where it is, how far it is written and synced.
#[derive(Debug)]
pub struct WorkspaceLog {
    path: PathBuf,
    file: Box<dyn LogFile>,
    written_bytes: u64,
    synced_bytes: u64,
    /// Bytes ever appended, and ever made durable, by this open log: never reset (a
    /// compaction rewrites the file, not these), so frames can wait on them.
    appended_total: u64,
    synced_total: u64,
    mode: Durability,
    compact_bytes: u64,
    buf: Vec<u8>,
    /// A compaction replaced the file but could not open the new one: reopen the log.
    broken: bool,
}

/// The file of workspace `id` in `dir`: the id itself when it is short and plain, else
/// escaped (`_` and every byte outside `[A-Za-z0-9.-]` as `_XX`), else a hash. The id
/// is also in the file's first record, which is what opening trusts.
pub fn path_of(dir: &Path, id: &str) -> PathBuf {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    let mut name = String::new();
    for b in id.bytes() {
        if plain(b) && !(name.is_empty() && b == b'.') {
            name.push(b as char);
        } else {
            name.push_str(&format!("_{b:02x}"));
        }
    }
    if name.is_empty() || name.len() > 160 {
        use sha2::Digest;
        let h = sha2::Sha256::digest(id.as_bytes());
        name = format!(
            "h_{}",
            h.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
    }
    dir.join(format!("{name}.log"))
}

impl WorkspaceLog {
    /// Opens (or creates) a log and replays it into a fresh core. A torn tail is cut;
    /// damage refuses to open unless `accept_damage`, which keeps the good prefix and
    /// starts `new_epoch` (clients learn continuity is lost). A new log starts at
    /// `new_epoch`.
    /// `id_if_new` names the workspace when the file is new or empty (`None` when
    /// opening what a directory listing found: such a file is named by its records).
    pub fn open(
        disk: &dyn Disk,
        path: &Path,
        id_if_new: Option<&str>,
        new_epoch: u64,
        cfg: &Arc<CoreConfig>,
        opts: &LogOptions,
    ) -> Result<(Workspace, WorkspaceLog, Recovery), OpenError> {
        let io_err = |source| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = disk.read(path).map_err(io_err)?.unwrap_or_default();
        let scan = frame::scan(&bytes);
        let mut rec = Recovery::default();
        let mut core: Option<Workspace> = None;
        let mut restored = false;
        for (offset, payload) in &scan.entries {
            let bad = |why: String| OpenError::BadRecord {
                path: path.to_owned(),
                offset: *offset,
                why,
            };
            let step: Vec<Record> = if scan.format == 1 {
                vec![serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?]
            } else {
                serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?
            };
            for r in step {
                let ws = core.get_or_insert_with(|| {
                    let id = match &r {
                        Record::Epoch { workspace, .. } => workspace.clone(),
                        _ => id_if_new.unwrap_or_default().to_owned(),
                    };
                    Workspace::new(id, new_epoch, cfg.clone())
                });
                ws.restore(r, &mut restored)
                    .map_err(|e| bad(e.to_string()))?;
                rec.records += 1;
            }
        }
        let mut rewrite = false;
        match &scan.end {
            End::Clean => {}
            End::Torn { offset } => {
                rec.torn_bytes = bytes.len() as u64 - offset;
                disk.truncate(path, *offset).map_err(io_err)?;
            }
            End::Damaged { offset, why } if !opts.accept_damage => {
                return Err(OpenError::Damaged {
                    path: path.to_owned(),
                    offset: *offset,
                    why: why.clone(),
                });
            }
            End::Damaged { offset, .. } => {
                rec.damaged_bytes = bytes.len() as u64 - offset;
                rewrite = true;
            }
        }
        let fresh = core.is_none();
        let mut ws = match core {
            Some(ws) => ws,
            None => {
                let Some(id) = id_if_new else {
                    // A file with no whole record names no workspace: nothing to keep.
                    return Err(OpenError::Empty {
                        path: path.to_owned(),
                    });
                };
                Workspace::new(id, new_epoch, cfg.clone())
            }
        };
        if rewrite {
            // Continuity is lost: a new epoch, and the file rewritten whole.
            ws.start_epoch(new_epoch.max(ws.epoch() + 1));
        }
        ws.enable_journal();
        let file = disk.open_append(path).map_err(io_err)?;
        let len = if rewrite {
            0
        } else {
            scan.good_bytes().min(bytes.len() as u64)
        };
        let mut log = WorkspaceLog {
            path: path.to_owned(),
            file,
            written_bytes: len,
            synced_bytes: len,
            appended_total: 0,
            synced_total: 0,
            mode: opts.mode,
            compact_bytes: opts.compact_bytes,
            buf: Vec::new(),
            broken: false,
        };
        // A format 01 file is rewritten in 02 before anything is appended to it.
        if fresh || rewrite || !restored || scan.format == 1 {
            log.compact(disk, &ws).map_err(io_err)?;
        }
        Ok((ws, log, rec))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn written_bytes(&self) -> u64 {
        self.written_bytes
    }

    pub fn unsynced(&self) -> bool {
        self.synced_bytes < self.written_bytes
    }

    /// Writes one step's records as one entry (a crash keeps all of them or none), and
    /// syncs when the mode says so. On an error the caller must not let the step's
    /// frames leave.
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        let payload = serde_json::to_vec(records).map_err(io::Error::other)?;
        frame::encode(&payload, &mut self.buf);
        self.file.append(&self.buf)?;
        if self.mode == Durability::Fsync {
            self.file.sync()?;
        }
        self.written_bytes += self.buf.len() as u64;
        self.appended_total += self.buf.len() as u64;
        if self.mode == Durability::Fsync {
            self.synced_bytes = self.written_bytes;
            self.synced_total = self.appended_total;
        }
        Ok(())
    }

    /// Group commit: how far frames must wait (`appended_total`), or 0 when everything
    /// appended is synced.
    pub fn unsynced_through(&self) -> u64 {
        // Only group commit holds frames back: `process` promises no sync, `fsync` has
        // synced before this is asked.
        if self.mode == Durability::Group && self.synced_total < self.appended_total {
            self.appended_total
        } else {
            0
        }
    }

    /// After a reload (a failed write), the new open log goes on counting where `old`
    /// stopped: frames already waiting carry `old`'s offsets, and what `old` appended
    /// and did not sync is still in the file, to be synced by the next group sync.
    pub fn carry_totals(&mut self, old: &WorkspaceLog) {
        self.appended_total = old.appended_total;
        self.synced_total = old.synced_total;
    }

    /// Group commit: what a sync started now would make durable, and a handle to sync
    /// with outside the lock; `None` when nothing waits.
    pub fn sync_job(&self) -> Option<io::Result<SyncJob>> {
        (self.unsynced_through() > 0).then(|| {
            self.file.try_clone().map(|file| SyncJob {
                total: self.appended_total,
                written: self.written_bytes,
                file,
            })
        })
    }

    /// Group commit: a sync of `job`'s handle succeeded.
    pub fn mark_synced(&mut self, job: &SyncJob) {
        self.synced_total = self.synced_total.max(job.total);
        self.synced_bytes = self.synced_bytes.max(job.written.min(self.written_bytes));
    }

    pub fn synced_total(&self) -> u64 {
        self.synced_total
    }

    /// After a failed `append`: cuts the file back to where that step began, so
    /// whatever part of it reached the file (a write that landed, a sync that failed)
    /// is not replayed as applied — the writer was told nothing was.
    pub fn roll_back(&mut self, disk: &dyn Disk) -> io::Result<()> {
        disk.truncate(&self.path, self.written_bytes)
    }

    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced() {
            self.file.sync()?;
            self.synced_bytes = self.written_bytes;
            self.synced_total = self.appended_total;
        }
        Ok(())
    }

    /// A compaction left this handle on a replaced file (see `compact`).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether the log has grown past the compaction threshold.
    pub fn wants_compaction(&self) -> bool {
        self.written_bytes > self.compact_bytes
    }

    /// Rewrites the file as a snapshot of `ws` (atomically), so the log and the start-up
    /// replay stay bounded by the state, not by its history. The new file is synced.
    pub fn compact(&mut self, disk: &dyn Disk, ws: &Workspace) -> io::Result<()> {
        let mut bytes = MAGIC.to_vec();
        // One record per entry: the file is whole before it replaces the old one, so
        // nothing needs them together, and no entry grows with the workspace.
        for r in ws.snapshot_records() {
            let payload = serde_json::to_vec(&[r]).map_err(io::Error::other)?;
            frame::encode(&payload, &mut bytes);
        }
        // An error here leaves the old file, and this handle on it, as they were.
        disk.replace(&self.path, &bytes)?;
        // Opened after the rename (a simulated file system's handles follow paths, not
        // inodes). If this fails, the handle still points at the replaced file: appends
        // through it would vanish, so the log is unusable until reopened.
        self.file = disk
            .open_append(&self.path)
            .inspect_err(|_| self.broken = true)?;
        self.written_bytes = bytes.len() as u64;
        self.synced_bytes = self.written_bytes;
        // The new file holds everything appended so far, synced.
        self.synced_total = self.appended_total;
        Ok(())
    }
}

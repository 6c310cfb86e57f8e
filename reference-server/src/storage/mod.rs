//! Durable storage for the server: each workspace's state in an append-only log of
//! the core's records (docs/durability.md).
//!
//! - [`disk`] — the file operations behind a trait: the real file system, or turmoil's
//!   simulated one (`disk_impl!`), through the same code.
//! - [`frame`] — the file format: length- and checksum-framed entries, one per step; the scan that
//!   tells a torn tail from damage.
//! - [`wal`] — one workspace's log: open and replay, append, sync, compact.

pub mod disk;
pub mod frame;
pub mod wal;

pub use disk::{Disk, DiskHandle, LogFile, RealDisk};
pub use wal::{LogOptions, OpenError, Recovery, SyncJob, WorkspaceLog, path_of};

/// What an acknowledgement promises (docs/durability.md, "Modes").
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Nothing on disk: a restart loses every workspace (tests, benchmarks).
    Memory,
    /// Each write is handed to the OS before its ACK: survives a killed process, not
    /// power loss.
    Process,
    /// Writes are synced together every `group_commit_ms` (one sync for all the
    /// writes of every workspace in that window), and nothing that depends on them —
    /// ACK, fan-out, replay, a read — leaves before: survives power loss.
    Group,
    /// Each write is synced to disk before its ACK: survives power loss.
    #[default]
    Fsync,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Memory => "memory",
            Durability::Process => "process",
            Durability::Group => "group",
            Durability::Fsync => "fsync",
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

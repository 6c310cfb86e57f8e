//! The binaries end to end, run as a user runs them: `simulate` on scenario files (exit
//! codes, report files, `live --spawn-server`) and `reference-server serve` with real
//! WebSocket clients and an HTTP probe. Unit and crate-level tests stay beside their
//! code (protocol/, client/, reference-server/, simulator/ each have a `tests/`).

mod server;
mod simulate;

use std::path::PathBuf;
use std::process::Command;

/// A fresh, empty folder under the system's temp dir, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rtsync-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Writes `text` to `name` inside the folder and returns its path as a string.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p.to_str().expect("utf-8 temp path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `simulate` with `args`; returns its exit code and stdout + stderr.
pub fn simulate(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(args)
        .output()
        .expect("simulate runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

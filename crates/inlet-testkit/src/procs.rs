//! Private service processes, for tests that stop, kill or restart a
//! server (which they must never do to the shared ones).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A private `redis-server` on its own port; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port (no persistence).
    pub fn start() -> RedisServer {
        let mut s = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(10)),
            "private redis-server did not start on port {}",
            self.port
        );
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where a private SecantusDB keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecantusStorage {
    /// In memory: lost on stop.
    Memory,
    /// On disk in a temporary directory: survives stop/restart.
    Disk,
}

/// A private SecantusDB (MongoDB wire protocol) server; killed on drop.
#[derive(Debug)]
pub struct SecantusServer {
    port: u16,
    storage: SecantusStorage,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The `secantusd-py` executable: `INLET_SECANTUS_BIN`, else on `PATH`,
/// else the venv `scripts/test` creates (`~/.cache/inlet-venv`).
pub fn secantus_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("INLET_SECANTUS_BIN") {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("secantusd-py");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/inlet-venv/bin/secantusd-py")
}

impl SecantusServer {
    /// Starts a server on a free port.
    pub fn start(storage: SecantusStorage) -> SecantusServer {
        let mut s = SecantusServer {
            port: free_port(),
            storage,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        s.spawn();
        s
    }

    fn storage_arg(&self) -> PathBuf {
        match self.storage {
            SecantusStorage::Memory => PathBuf::from(":memory:"),
            SecantusStorage::Disk => self.dir.path().join("data"),
        }
    }

    fn spawn(&mut self) {
        let bin = secantus_bin();
        let log = std::fs::File::create(self.dir.path().join("secantus.log")).expect("log file");
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--storage-path")
            .arg(self.storage_arg())
            .args(["--log-level", "WARNING"])
            // On disk, make every acknowledged write durable: tests kill
            // the server and expect acknowledged data to survive.
            .args(if self.storage == SecantusStorage::Disk {
                &["--sync-on-commit"][..]
            } else {
                &[][..]
            })
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); run scripts/test", bin.display()));
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(30)),
            "private SecantusDB did not start on port {}",
            self.port
        );
    }

    /// `mongodb://127.0.0.1:PORT/?retryWrites=false` (see
    /// [`crate::services::mongo_url`]).
    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?retryWrites=false", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding its log (and data, on disk).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (SIGKILL).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port (data kept with disk storage).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for SecantusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

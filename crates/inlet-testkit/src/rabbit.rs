//! A private RabbitMQ node, for tests that stop, kill or restart the
//! broker (which they must never do to the shared one).
//!
//! Started the way `scripts/lib/services.sh` (`ensure_amqp`) starts one:
//! its own node name, AMQP and distribution ports, Mnesia and log
//! directories, and its own config file (`listeners.tcp.local`) with an
//! empty `rabbitmq-env.conf`, so the system configuration (which may pin
//! the listener to 5672 or the node name to `rabbit@localhost`) does not
//! apply. Debian's `rabbitmq-server` wrapper runs the node as the
//! `rabbitmq` user when called by root, so the directories are handed to
//! that user.
//!
//! A restart is a stop and a start on the same ports and directories:
//! durable queues and persistent (confirmed) messages survive it.
//!
//! [`RabbitCluster`] joins several such nodes into one cluster
//! (`rabbitmqctl join_cluster`), for tests that lose a node while quorum
//! queues keep their majority. The nodes share the Erlang cookie of the
//! user they run as.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// How long a node may take to open its port and finish booting.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The client-provided `connection_name` in a `client_properties` column of
/// `rabbitmqctl list_connections` (Erlang term text), if any.
pub fn client_connection_name(props: &str) -> Option<&str> {
    const KEY: &str = "{\"connection_name\",";
    let mut rest = &props[props.find(KEY)? + KEY.len()..];
    rest = rest.strip_prefix("longstr,").unwrap_or(rest);
    let rest = rest.strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

/// A private `rabbitmq-server` node; stopped on drop.
#[derive(Debug)]
pub struct RabbitNode {
    node: String,
    port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
    running: bool,
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn run_as_rabbitmq_user() -> bool {
    // Debian's wrapper switches to `rabbitmq` when called by root.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root && Command::new("id")
        .arg("rabbitmq")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `pid` is a live (not zombie) process.
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) state …`: the state follows the last `)`.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

impl RabbitNode {
    /// Starts a node on free ports in a temporary directory and waits
    /// until it has booted (`rabbitmqctl await_startup`). Blocks for a few
    /// seconds: from async code, call it inside
    /// `tokio::task::block_in_place`.
    pub fn start() -> RabbitNode {
        let dir = tempfile::Builder::new()
            .prefix("inlet-rabbit.")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let dist_port = free_port();
        let node = format!("inlet-test-{}@localhost", crate::unique_id());
        let base = dir.path();
        std::fs::create_dir_all(base.join("mnesia")).expect("mnesia dir");
        std::fs::create_dir_all(base.join("log")).expect("log dir");
        std::fs::write(
            base.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .expect("rabbitmq.conf");
        std::fs::write(base.join("rabbitmq-env.conf"), "").expect("rabbitmq-env.conf");
        if run_as_rabbitmq_user() {
            let _ = Command::new("chmod").arg("755").arg(base).status();
            let ok = Command::new("chown")
                .arg("-R")
                .arg("rabbitmq:")
                .arg(base)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown -R rabbitmq: {}", base.display());
        }
        let mut n = RabbitNode {
            node,
            port,
            dist_port,
            dir,
            running: false,
        };
        n.spawn();
        n
    }

    fn env(&self, c: &mut Command) {
        let base = self.dir.path();
        c.env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", base.join("log"))
            .env("RABBITMQ_PID_FILE", base.join("rabbit.pid"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                base.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", base.join("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", base.join("rabbitmq-env.conf"));
    }

    fn ctl(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    fn spawn(&mut self) {
        let mut c = Command::new("rabbitmq-server");
        self.env(&mut c);
        let status = c
            .arg("-detached")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("rabbitmq-server on PATH");
        assert!(status.success(), "rabbitmq-server -detached: {status:?}");
        self.running = true;
        let deadline = Instant::now() + START_TIMEOUT;
        while !port_open(self.port) {
            assert!(
                Instant::now() < deadline,
                "private RabbitMQ node {} did not open port {} within {START_TIMEOUT:?}; log:\n{}",
                self.node,
                self.port,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = self
            .ctl(&["--timeout", "120", "await_startup"])
            .expect("rabbitmqctl on PATH");
        assert!(
            out.status.success(),
            "rabbitmqctl await_startup for {}: {}{}",
            self.node,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The AMQP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node name, for `rabbitmqctl -n`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The directory holding its data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the node was started and not stopped since.
    pub fn is_running(&self) -> bool {
        self.running
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("rabbit.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The last `lines` lines of the node's log files.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        let logs: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("log"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        for p in logs {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("== {}\n", p.display()));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Stops the node gracefully (`rabbitmqctl stop`), killing it if that
    /// fails. Durable queues and persistent messages are kept on disk.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let pid = self.pid();
        let stopped = self
            .ctl(&["--timeout", "60", "stop"])
            .is_ok_and(|o| o.status.success());
        if !stopped {
            self.kill_pid(pid);
        }
        self.wait_port_closed();
        self.running = false;
    }

    /// Kills the node at once (SIGKILL): a crash. Only what the broker had
    /// confirmed (and so fsynced) survives.
    pub fn kill(&mut self) {
        if !self.running {
            return;
        }
        let pid = self.pid();
        self.kill_pid(pid);
        self.wait_port_closed();
        self.running = false;
    }

    fn kill_pid(&self, pid: Option<u32>) {
        if let Some(pid) = pid {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }

    fn wait_port_closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while port_open(self.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // The Erlang VM may linger a moment after closing its listener.
        if let Some(pid) = self.pid() {
            while process_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Joins this (freshly started, empty) node to the cluster of `seed`:
    /// `stop_app`, `join_cluster`, `start_app`, `await_startup`.
    fn join(&self, seed: &RabbitNode) {
        for args in [
            vec!["stop_app"],
            vec!["join_cluster", seed.node()],
            vec!["start_app"],
            vec!["--timeout", "120", "await_startup"],
        ] {
            let out = self.ctl(&args).expect("rabbitmqctl on PATH");
            assert!(
                out.status.success(),
                "rabbitmqctl -n {} {}: {}{}",
                self.node,
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Starts the node again on the same ports and directories (after
    /// [`Self::stop`] or [`Self::kill`]).
    pub fn start_again(&mut self) {
        assert!(!self.running, "the node is still running");
        self.spawn();
    }

    /// Stops and starts the node again.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if self.running {
            let pid = self.pid();
            // No graceful stop: a dropped node's data is discarded anyway.
            self.kill_pid(pid);
            if pid.is_none() {
                let _ = self.ctl(&["--timeout", "30", "stop"]);
            }
            self.wait_port_closed();
            self.running = false;
        }
    }
}

/// Several private nodes joined into one RabbitMQ cluster; every node is
/// stopped on drop.
#[derive(Debug)]
pub struct RabbitCluster {
    nodes: Vec<RabbitNode>,
}

impl RabbitCluster {
    /// Starts `n` nodes (at least 1) and joins each to the first. Blocks
    /// for several seconds per node (see [`RabbitNode::start`]).
    pub fn start(n: usize) -> RabbitCluster {
        assert!(n >= 1, "a cluster has at least one node");
        let mut nodes = vec![RabbitNode::start()];
        for _ in 1..n {
            let node = RabbitNode::start();
            node.join(&nodes[0]);
            nodes.push(node);
        }
        RabbitCluster { nodes }
    }

    /// The nodes, in the order they joined.
    pub fn nodes(&self) -> &[RabbitNode] {
        &self.nodes
    }

    /// Node `i`, to stop, kill or start again.
    pub fn node_mut(&mut self, i: usize) -> &mut RabbitNode {
        &mut self.nodes[i]
    }

    /// The AMQP URLs of every node, starting with node `first` and going
    /// round (the order a client given `url` + `failover_urls` tries).
    pub fn urls_from(&self, first: usize) -> Vec<String> {
        let n = self.nodes.len();
        (0..n).map(|k| self.nodes[(first + k) % n].url()).collect()
    }

    /// The client-provided names of every connection to the cluster's
    /// running nodes, asked of one of them (`None` when none answers).
    pub fn connection_names(&self) -> Option<Vec<String>> {
        let asked = self.nodes.iter().find(|n| n.is_running())?;
        let out = asked
            .ctl(&[
                "--timeout",
                "30",
                "list_connections",
                "--quiet",
                "--no-table-headers",
                "client_properties",
            ])
            .ok()
            .filter(|o| o.status.success())?;
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(client_connection_name)
                .map(str::to_owned)
                .collect(),
        )
    }

    /// The index of the node that leads the quorum queue `queue`, asked of
    /// any running node (`rabbitmqctl list_queues name leader`); `None`
    /// when no running node knows the queue or names a leader.
    pub fn leader_of(&self, queue: &str) -> Option<usize> {
        let asked = self.nodes.iter().find(|n| n.is_running())?;
        let out = asked
            .ctl(&[
                "--timeout",
                "30",
                "list_queues",
                "--quiet",
                "--no-table-headers",
                "name",
                "leader",
            ])
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let leader = text.lines().find_map(|line| {
            let mut cols = line.split('\t');
            (cols.next()? == queue).then(|| cols.next().map(str::trim).map(str::to_owned))?
        })?;
        self.nodes.iter().position(|n| n.node() == leader)
    }
}

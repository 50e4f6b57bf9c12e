//! The Python OpenTelemetry SDK as a test client: the venv
//! (`INLET_VENV`, else `~/.cache/inlet-venv`, which `.ci/run` fills) and
//! `scripts/otlp/emit.py`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// What `emit.py` imports.
const MODULES: &str = "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http";

fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("INLET_VENV") {
        return PathBuf::from(v);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/inlet-venv")
}

/// The venv's Python when it has the SDK and the OTLP/HTTP exporter.
/// Without them: a failure under `INLET_CI=1` (CI installs them), else
/// `None` after saying loudly that `test` did not run.
pub fn python_with_sdk(test: &str) -> Option<PathBuf> {
    let python = venv().join("bin/python");
    let found = std::process::Command::new(&python)
        .args(["-c", MODULES])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let why = match found {
        Ok(out) if out.status.success() => return Some(python),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        Err(e) => e.to_string(),
    };
    let hint = format!(
        "the OpenTelemetry Python SDK is not usable from {} ({why}); install it with \
         `{}/bin/pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http` \
         (.ci/run does)",
        python.display(),
        venv().display()
    );
    assert!(
        std::env::var("INLET_CI").as_deref() != Ok("1"),
        "{test}: {hint}"
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!("\n!!! SKIPPED {test}: {hint}\n");
    }
    None
}

/// `scripts/otlp/emit.py`.
pub fn emit_script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/otlp/emit.py"
    ))
}

/// A running `emit.py`: its event lines, and its stdin for `--gate`.
pub struct Emitter {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

/// One line of `emit.py`'s output.
pub type Event = serde_json::Value;

impl Emitter {
    /// Starts `emit.py args…` with `env` (the `OTEL_*` variables) and
    /// nothing else from the test's environment that would change what
    /// the SDK does.
    pub fn start(python: &PathBuf, args: &[&str], env: &[(&str, String)]) -> Emitter {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("emit.stderr");
        let mut cmd = tokio::process::Command::new(python);
        cmd.arg(emit_script()).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Emitter {
            child,
            stdin,
            lines,
            stderr,
            _dir: dir,
        }
    }

    /// What the script wrote to stderr so far (the SDK's warnings).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next event, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Event {
        match tokio::time::timeout(timeout, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("emit.py wrote {line:?}, not a JSON event: {e}")),
            Ok(Ok(None)) => panic!("emit.py ended its output early; stderr:\n{}", self.stderr()),
            Ok(Err(e)) => panic!("reading emit.py's output: {e}"),
            Err(_) => panic!(
                "no event from emit.py within {timeout:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Skips events until one of kind `kind` arrives (which it returns),
    /// handing each skipped one to `seen`.
    pub async fn until(
        &mut self,
        kind: &str,
        timeout: Duration,
        mut seen: impl FnMut(&Event),
    ) -> Event {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self.next(left).await;
            if e["event"] == kind {
                return e;
            }
            seen(&e);
        }
    }

    /// Lets a `--gate`d script go on with its next phase.
    pub async fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"go\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits for the script to exit; panics (with its stderr) unless it
    /// succeeded, i.e. every export finally succeeded.
    pub async fn finish(mut self, timeout: Duration) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("emit.py did not exit within {timeout:?}"))
            .unwrap();
        assert!(
            status.success(),
            "emit.py failed ({status}): an export did not succeed; stderr:\n{}",
            self.stderr()
        );
    }
}

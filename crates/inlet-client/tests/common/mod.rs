//! A scripted push API: a tiny HTTP/1.1 server that answers each request
//! from a script (a queue of replies, then a default, or a function of the
//! request) and records every request's arrival time, headers and decoded
//! body.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inlet_api::{ApiError, ApiSettings};
use inlet_client::{Client, ClientBuilder, ClientEvent};
use inlet_domain::{ContentEncoding, Verdict, WireBatch, WireTransaction, now_ms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A legacy-format key: passes the client's format check.
pub const KEY: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";

/// The API settings behind [`Reply::api`]: the defaults, but a 1 s
/// `Retry-After` without jitter and a 1 s `probe_after_s`, so that tests
/// do not wait the production minutes.
pub fn api_settings() -> ApiSettings {
    ApiSettings {
        retry_after_s: 1,
        retry_after_jitter_s: 0,
        probe_after_s: 1,
        ..ApiSettings::default()
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Close the connection instead of answering.
    pub close: bool,
}

impl Reply {
    pub fn new(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: body.to_string(),
            delay: Duration::ZERO,
            close: false,
        }
    }

    pub fn accepted() -> Reply {
        Reply::new(
            202,
            serde_json::json!({"id": uuid::Uuid::new_v4().to_string(), "request_id": "r"}),
        )
    }

    /// An answer the push API never gives (a proxy's 5xx, a problem body
    /// without `Retry-After`): for what the client must survive anyway.
    pub fn foreign(status: u16, code: &str, retryable: bool) -> Reply {
        Reply::new(
            status,
            serde_json::json!({"code": code, "message": format!("scripted {code}"), "retryable": retryable, "request_id": "r"}),
        )
    }

    /// The push API's own answer to `err`, built by `inlet-api` (status,
    /// problem body, `Retry-After`), with [`api_settings`]: the real
    /// contract, with waits short enough for tests.
    pub fn api(err: ApiError) -> Reply {
        let (status, problem) = err.problem(&api_settings(), "r");
        let retry_after = problem.retry_after_s;
        let reply = Reply::new(status.as_u16(), serde_json::to_value(&problem).unwrap());
        match retry_after {
            Some(s) => reply.header("Retry-After", &format!("{s}")),
            None => reply,
        }
    }

    /// 401 `unknown_key`, `probe_after_s` 1.
    pub fn unauthorized() -> Reply {
        Reply::api(ApiError::Auth(Verdict::UnknownKey))
    }

    /// 403 `account_suspended`, `probe_after_s` 1.
    pub fn suspended() -> Reply {
        Reply::api(ApiError::Auth(Verdict::SuspendedAccount))
    }

    /// 503 `server_busy`, `Retry-After: 1`.
    pub fn unavailable() -> Reply {
        Reply::api(ApiError::ServerBusy)
    }

    /// Without the header `name`.
    pub fn without_header(mut self, name: &str) -> Reply {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// Sets a header, replacing one of the same name.
    pub fn header(self, name: &str, value: &str) -> Reply {
        let mut reply = self.without_header(name);
        reply.headers.push((name.into(), value.into()));
        reply
    }

    pub fn body_field(mut self, name: &str, value: serde_json::Value) -> Reply {
        let mut v: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        v[name] = value;
        self.body = v.to_string();
        self
    }

    pub fn hang(d: Duration) -> Reply {
        Reply {
            delay: d,
            ..Reply::accepted()
        }
    }

    pub fn close() -> Reply {
        Reply {
            close: true,
            ..Reply::accepted()
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When its last byte arrived.
    pub at: Instant,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    /// The body after `Content-Encoding` was undone.
    pub body: Vec<u8>,
    pub batch: Option<WireBatch>,
}

impl Recorded {
    pub fn batch_id(&self) -> String {
        self.batch
            .as_ref()
            .and_then(|b| b.batch_id.clone())
            .unwrap_or_default()
    }

    pub fn actions(&self) -> Vec<String> {
        self.batch
            .as_ref()
            .map(|b| b.transactions.iter().map(|t| t.action.clone()).collect())
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

type Responder = Box<dyn FnMut(&Recorded, &[Recorded]) -> Reply + Send>;

enum Script {
    Queue {
        queue: VecDeque<Reply>,
        default: Reply,
    },
    Custom(Responder),
}

struct State {
    script: Mutex<Script>,
    requests: Mutex<Vec<Recorded>>,
    /// Each request's answer status (in arrival order; 0 for no answer).
    answers: Mutex<Vec<u16>>,
}

/// A running scripted server; stops when dropped.
pub struct ScriptedServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedServer {
    /// Answers with `replies` in order, then `default` forever.
    pub async fn sequence(replies: Vec<Reply>, default: Reply) -> ScriptedServer {
        Self::with_script(Script::Queue {
            queue: replies.into(),
            default,
        })
        .await
    }

    /// Answers every request with `default`.
    pub async fn always(default: Reply) -> ScriptedServer {
        Self::sequence(vec![], default).await
    }

    /// Answers with `f(request, earlier requests)`.
    pub async fn custom(
        f: impl FnMut(&Recorded, &[Recorded]) -> Reply + Send + 'static,
    ) -> ScriptedServer {
        Self::with_script(Script::Custom(Box::new(f))).await
    }

    async fn with_script(script: Script) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            script: Mutex::new(script),
            requests: Mutex::new(Vec::new()),
            answers: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        ScriptedServer { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the default answer (queued ones still go first).
    pub fn set_default(&self, reply: Reply) {
        if let Script::Queue { default, .. } = &mut *self.state.script.lock().unwrap() {
            *default = reply;
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn answers(&self) -> Vec<u16> {
        self.state.answers.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Waits (polling, with a deadline) until `n` requests have arrived.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        inlet_testkit::wait_until(timeout, &format!("{n} requests"), || async {
            self.count() >= n
        })
        .await;
        self.requests()
    }
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let mut buf = Vec::new();
    loop {
        // Headers.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut headers = HashMap::new();
        for line in head.split("\r\n").skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let raw: Vec<u8> = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let encoding =
            ContentEncoding::parse(headers.get("content-encoding").map_or("", String::as_str))
                .unwrap();
        let body = encoding.decode(&raw, 64 << 20).unwrap().into_owned();
        let batch = serde_json::from_slice(&body).ok();
        let recorded = Recorded {
            at: Instant::now(),
            headers,
            body,
            batch,
        };
        let reply = {
            let mut script = state.script.lock().unwrap();
            let mut requests = state.requests.lock().unwrap();
            let reply = match &mut *script {
                Script::Queue { queue, default } => {
                    queue.pop_front().unwrap_or_else(|| default.clone())
                }
                Script::Custom(f) => f(&recorded, &requests),
            };
            requests.push(recorded);
            state
                .answers
                .lock()
                .unwrap()
                .push(if reply.close || !reply.delay.is_zero() {
                    0
                } else {
                    reply.status
                });
            reply
        };
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        if reply.close {
            return;
        }
        let mut out = format!(
            "HTTP/1.1 {} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&reply.body);
        if stream.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A transaction whose action names its sequence number.
pub fn tx(n: usize) -> WireTransaction {
    WireTransaction {
        action: format!("T#{n}"),
        namespace: None,
        start_ms: now_ms(),
        duration_ms: 1.0,
        status: Some(200),
        error: None,
    }
}

/// A builder with fast timings for tests: no interval flush unless asked,
/// short backoffs.
pub fn builder(server: &ScriptedServer) -> ClientBuilder {
    Client::builder(&server.url(), KEY)
        .app("shop")
        .environment("test")
        .agent("inlet-test", "9.9.9")
        .hostname("test-host")
        .flush_interval(Duration::from_secs(3600))
        .initial_backoff(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(200))
        .request_timeout(Duration::from_secs(5))
}

/// Collects the client's events with the time they happened.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<(Instant, ClientEvent)>>>);

impl Events {
    pub fn hook(&self) -> impl Fn(&ClientEvent) + Send + Sync + 'static {
        let events = self.0.clone();
        move |e| events.lock().unwrap().push((Instant::now(), e.clone()))
    }

    pub fn all(&self) -> Vec<(Instant, ClientEvent)> {
        self.0.lock().unwrap().clone()
    }

    pub fn first(&self, matches: impl Fn(&ClientEvent) -> bool) -> Option<(Instant, ClientEvent)> {
        self.all().into_iter().find(|(_, e)| matches(e))
    }
}

/// Waits until the client's stats satisfy `cond`.
pub async fn wait_stats(
    client: &Client,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&inlet_client::ClientStats) -> bool,
) {
    inlet_testkit::wait_until(timeout, what, || {
        let ok = cond(&client.stats());
        async move { ok }
    })
    .await;
}

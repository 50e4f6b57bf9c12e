//! A health-checking TCP load balancer that also records the HTTP
//! responses passing through it.
//!
//! [`LoadBalancer::health_checked`] polls each upstream's readiness path
//! (`GET /health/ready`) every ~100 ms and forwards each *new* client
//! connection to the next ready upstream (round robin); an upstream that is
//! not ready, or refuses a connection, gets no new connections until a check
//! passes again. Established connections are left alone, as a TCP load
//! balancer does: draining them is the upstream's job. When no upstream can
//! take a connection, the client's connection is closed (the agent sees a
//! connection error and retries).
//!
//! [`LoadBalancer::passthrough`] forwards to its upstreams without checking
//! them, which makes it a recording proxy in front of one instance.
//!
//! Either way, the upstream-to-client byte stream is parsed (HTTP/1.1:
//! `Content-Length`, chunked, or until close) without being altered, and
//! every response is recorded: its status, the `code` of its JSON body, and
//! whether a 5xx carried `Retry-After`. That is an independent view of what
//! agents were told, next to the agents' own counters and the server's
//! metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the balancer chooses upstreams.
#[derive(Debug, Clone)]
pub struct BalancerOptions {
    /// The readiness path polled on each upstream (`None`: no checks, every
    /// upstream is always eligible).
    pub health_path: Option<String>,
    /// Time between two checks of one upstream.
    pub interval: Duration,
    /// Timeout of one check (connect to status line), and of connecting to
    /// an upstream for a client.
    pub timeout: Duration,
}

impl Default for BalancerOptions {
    fn default() -> Self {
        BalancerOptions {
            health_path: Some("/health/ready".into()),
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
        }
    }
}

/// What the balancer saw of the responses it forwarded.
#[derive(Debug, Clone, Default)]
pub struct ResponseStats {
    /// Responses seen (heads parsed).
    pub responses: u64,
    /// Responses per status.
    pub by_status: BTreeMap<u16, u64>,
    /// Responses per status and `code` (from the JSON body; empty when the
    /// body has none, e.g. a 202 or a bare 431).
    pub by_code: BTreeMap<(u16, String), u64>,
    /// 5xx responses.
    pub server_errors: u64,
    /// 5xx responses without a `Retry-After` header.
    pub server_errors_without_retry_after: u64,
    /// Heads of the first few 5xx responses without `Retry-After`.
    pub examples_without_retry_after: Vec<String>,
    /// Connections whose response stream could not be followed (not
    /// HTTP/1.x as expected); their later responses are not counted.
    pub unparsed_connections: u64,
    /// Client connections closed because no upstream could take them.
    pub refused_connections: u64,
}

impl ResponseStats {
    /// Responses with this status.
    pub fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// Responses with a status in `range`.
    pub fn statuses(&self, range: std::ops::RangeInclusive<u16>) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| range.contains(s))
            .map(|(_, n)| n)
            .sum()
    }
}

/// One recorded response: when its head passed, and its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// When the response head was forwarded.
    pub at: Instant,
    /// Its status.
    pub status: u16,
    /// The upstream that answered (index into the balancer's upstreams).
    pub upstream: usize,
}

/// Most responses kept in the timeline ([`LoadBalancer::timeline`]).
const TIMELINE_MAX: usize = 4_000_000;

#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    ready: AtomicBool,
    connections: AtomicU64,
}

#[derive(Debug, Default)]
struct Recorder {
    stats: ResponseStats,
    timeline: Vec<Seen>,
}

#[derive(Debug)]
struct Shared {
    upstreams: Vec<Upstream>,
    checked: bool,
    next: AtomicUsize,
    recorder: Mutex<Recorder>,
    timeout: Duration,
}

impl Shared {
    fn record(&self, r: Response, upstream: usize) {
        let mut rec = self.recorder.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut rec.stats;
        s.responses += 1;
        *s.by_status.entry(r.status).or_insert(0) += 1;
        *s.by_code
            .entry((r.status, r.code.unwrap_or_default()))
            .or_insert(0) += 1;
        if r.status >= 500 {
            s.server_errors += 1;
            if !r.retry_after {
                s.server_errors_without_retry_after += 1;
                if s.examples_without_retry_after.len() < 10 {
                    s.examples_without_retry_after.push(r.head);
                }
            }
        }
        if rec.timeline.len() < TIMELINE_MAX {
            rec.timeline.push(Seen {
                at: r.at,
                status: r.status,
                upstream,
            });
        }
    }

    fn count(&self, f: impl FnOnce(&mut ResponseStats)) {
        f(&mut self
            .recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats);
    }
}

/// A running load balancer; stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct LoadBalancer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    closed: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LoadBalancer {
    /// A balancer over `upstreams` that polls `/health/ready` every 100 ms.
    pub async fn health_checked(upstreams: &[SocketAddr]) -> LoadBalancer {
        LoadBalancer::start(upstreams, BalancerOptions::default()).await
    }

    /// A recording proxy: forwards to `upstream` (no health checks).
    pub async fn passthrough(upstream: SocketAddr) -> LoadBalancer {
        LoadBalancer::start(
            &[upstream],
            BalancerOptions {
                health_path: None,
                ..BalancerOptions::default()
            },
        )
        .await
    }

    /// Starts a balancer on a free local port.
    pub async fn start(upstreams: &[SocketAddr], options: BalancerOptions) -> LoadBalancer {
        assert!(!upstreams.is_empty(), "a balancer needs an upstream");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind balancer");
        let addr = listener.local_addr().expect("balancer addr");
        let checked = options.health_path.is_some();
        let shared = Arc::new(Shared {
            upstreams: upstreams
                .iter()
                .map(|a| Upstream {
                    addr: *a,
                    ready: AtomicBool::new(!checked),
                    connections: AtomicU64::new(0),
                })
                .collect(),
            checked,
            next: AtomicUsize::new(0),
            recorder: Mutex::new(Recorder::default()),
            timeout: options.timeout,
        });
        let (closed, closed_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if let Some(path) = options.health_path {
            for i in 0..upstreams.len() {
                let shared = shared.clone();
                let path = path.clone();
                let interval = options.interval;
                tasks.push(tokio::spawn(async move {
                    loop {
                        let u = &shared.upstreams[i];
                        let ok = check(u.addr, &path, shared.timeout).await;
                        u.ready.store(ok, Ordering::Relaxed);
                        tokio::time::sleep(interval).await;
                    }
                }));
            }
        }
        {
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(serve(client, shared.clone(), closed_rx.clone()));
                }
            }));
        }
        LoadBalancer {
            addr,
            shared,
            closed,
            tasks,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether upstream `i` currently gets new connections.
    pub fn is_routable(&self, i: usize) -> bool {
        self.shared.upstreams[i].ready.load(Ordering::Relaxed)
    }

    /// Connections forwarded to upstream `i` so far.
    pub fn connections(&self, i: usize) -> u64 {
        self.shared.upstreams[i].connections.load(Ordering::Relaxed)
    }

    /// A snapshot of the responses seen so far.
    pub fn responses(&self) -> ResponseStats {
        self.shared
            .recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats
            .clone()
    }

    /// Every response seen so far, in order (the first few million).
    pub fn timeline(&self) -> Vec<Seen> {
        self.shared
            .recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .timeline
            .clone()
    }

    /// The first response at or after `t` whose status satisfies `pred`.
    pub fn first_after(&self, t: Instant, pred: impl Fn(u16) -> bool) -> Option<Seen> {
        let rec = self
            .shared
            .recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let start = rec.timeline.partition_point(|s| s.at < t);
        rec.timeline[start..]
            .iter()
            .find(|s| pred(s.status))
            .copied()
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.closed.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One readiness check: `GET path` answered 200 within `timeout`.
async fn check(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 || buf.len() > 4096 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(status == 200)
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Connects a client to the next upstream that takes it.
async fn pick(shared: &Shared) -> Option<(usize, TcpStream)> {
    let n = shared.upstreams.len();
    let start = shared.next.fetch_add(1, Ordering::Relaxed);
    for k in 0..n {
        let i = (start + k) % n;
        let u = &shared.upstreams[i];
        if !u.ready.load(Ordering::Relaxed) {
            continue;
        }
        match tokio::time::timeout(shared.timeout, TcpStream::connect(u.addr)).await {
            Ok(Ok(s)) => {
                u.connections.fetch_add(1, Ordering::Relaxed);
                return Some((i, s));
            }
            _ => {
                if shared.checked {
                    // Refused: no new connections until a check passes.
                    u.ready.store(false, Ordering::Relaxed);
                }
            }
        }
    }
    None
}

async fn serve(client: TcpStream, shared: Arc<Shared>, mut closed: watch::Receiver<bool>) {
    let Some((upstream_index, upstream)) = pick(&shared).await else {
        shared.count(|s| s.refused_connections += 1);
        drop(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let to_upstream = async {
        let _ = tokio::io::copy(&mut cr, &mut uw).await;
        let _ = uw.shutdown().await;
    };
    let to_client = async {
        let mut parser = Parser::default();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for r in parser.feed(&buf[..n]) {
                shared.record(r, upstream_index);
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        for r in parser.finish() {
            shared.record(r, upstream_index);
        }
        if parser.lost {
            shared.count(|s| s.unparsed_connections += 1);
        }
        let _ = cw.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(to_upstream, to_client) } => {}
        _ = closed.wait_for(|c| *c) => {}
    }
}

/// A response whose head was parsed.
#[derive(Debug)]
struct Response {
    at: Instant,
    status: u16,
    retry_after: bool,
    code: Option<String>,
    head: String,
}

#[derive(Debug, Default)]
enum State {
    /// Reading a response head.
    #[default]
    Head,
    /// Reading `n` more body bytes.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Reading `n` more bytes of chunk data, then its CRLF.
    ChunkData(u64),
    /// Reading the CRLF after chunk data (`n` bytes left).
    ChunkEnd(u8),
    /// Reading trailers after the last chunk, until an empty line.
    Trailers,
    /// The body runs until the connection closes.
    UntilClose,
}

/// Follows HTTP/1.x responses in a byte stream without altering it.
#[derive(Debug, Default)]
struct Parser {
    state: State,
    line: Vec<u8>,
    /// The response whose body is being read.
    current: Option<Response>,
    /// The first bytes of its body (to find the JSON `code`).
    body: Vec<u8>,
    lost: bool,
}

/// Largest response head followed.
const MAX_HEAD: usize = 64 * 1024;
/// Body bytes kept to find the `code`.
const BODY_KEEP: usize = 512;

impl Parser {
    fn feed(&mut self, mut data: &[u8]) -> Vec<Response> {
        let mut done = Vec::new();
        while !data.is_empty() && !self.lost {
            match self.state {
                State::Head => {
                    let (line_done, used) = take_until(&mut self.line, data, b"\r\n\r\n");
                    data = &data[used..];
                    if self.line.len() > MAX_HEAD {
                        self.lost = true;
                    } else if line_done {
                        let head = std::mem::take(&mut self.line);
                        match self.start_response(&head) {
                            Some(r) => {
                                if let Some(r) = r {
                                    done.push(r);
                                }
                            }
                            None => self.lost = true,
                        }
                    }
                }
                State::Body(n) => {
                    let take = (n as usize).min(data.len());
                    self.keep(&data[..take]);
                    data = &data[take..];
                    let left = n - take as u64;
                    if left == 0 {
                        self.finish_response(&mut done);
                    } else {
                        self.state = State::Body(left);
                    }
                }
                State::UntilClose => {
                    let d = data;
                    self.keep(d);
                    data = &[];
                }
                State::ChunkSize => {
                    let (line_done, used) = take_until(&mut self.line, data, b"\r\n");
                    data = &data[used..];
                    if self.line.len() > 1024 {
                        self.lost = true;
                    } else if line_done {
                        let line = std::mem::take(&mut self.line);
                        let text = String::from_utf8_lossy(&line[..line.len() - 2]).to_string();
                        let size = text.split(';').next().unwrap_or("").trim();
                        match u64::from_str_radix(size, 16) {
                            Ok(0) => self.state = State::Trailers,
                            Ok(n) => self.state = State::ChunkData(n),
                            Err(_) => self.lost = true,
                        }
                    }
                }
                State::ChunkData(n) => {
                    let take = (n as usize).min(data.len());
                    self.keep(&data[..take]);
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd(2)
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::ChunkEnd(n) => {
                    let take = (n as usize).min(data.len());
                    data = &data[take..];
                    let left = n - take as u8;
                    self.state = if left == 0 {
                        State::ChunkSize
                    } else {
                        State::ChunkEnd(left)
                    };
                }
                State::Trailers => {
                    let (line_done, used) = take_until(&mut self.line, data, b"\r\n");
                    data = &data[used..];
                    if self.line.len() > MAX_HEAD {
                        self.lost = true;
                    } else if line_done {
                        let empty = self.line.len() == 2;
                        self.line.clear();
                        if empty {
                            self.finish_response(&mut done);
                        }
                    }
                }
            }
        }
        done
    }

    /// The connection closed: a response still being read counts.
    fn finish(&mut self) -> Vec<Response> {
        let mut done = Vec::new();
        if self.current.is_some() {
            self.finish_response(&mut done);
        }
        done
    }

    fn keep(&mut self, data: &[u8]) {
        let room = BODY_KEEP.saturating_sub(self.body.len());
        self.body.extend_from_slice(&data[..room.min(data.len())]);
    }

    fn finish_response(&mut self, done: &mut Vec<Response>) {
        if let Some(mut r) = self.current.take() {
            r.code = json_code(&self.body);
            done.push(r);
        }
        self.body.clear();
        self.state = State::Head;
    }

    /// Parses a head. `None`: not HTTP; `Some(None)`: a response with a
    /// body to read; `Some(Some(r))`: a complete response without a body.
    fn start_response(&mut self, head: &[u8]) -> Option<Option<Response>> {
        let text = String::from_utf8_lossy(head).to_string();
        let mut lines = text.split("\r\n");
        let status_line = lines.next()?;
        if !status_line.starts_with("HTTP/1.") {
            return None;
        }
        let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
        let mut length = None;
        let mut chunked = false;
        let mut retry_after = false;
        for l in lines {
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim();
            match name.as_str() {
                "content-length" => length = value.parse::<u64>().ok(),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "retry-after" => retry_after = !value.is_empty(),
                _ => {}
            }
        }
        let r = Response {
            at: Instant::now(),
            status,
            retry_after,
            code: None,
            head: text.trim_end().chars().take(600).collect(),
        };
        if (100..200).contains(&status) {
            // Interim response: the real one follows.
            return Some(None);
        }
        self.body.clear();
        if status == 204 || status == 304 {
            self.state = State::Head;
            return Some(Some(r));
        }
        self.current = Some(r);
        self.state = if chunked {
            State::ChunkSize
        } else {
            match length {
                Some(0) => {
                    let r = self.current.take();
                    self.state = State::Head;
                    return Some(r);
                }
                Some(n) => State::Body(n),
                None => State::UntilClose,
            }
        };
        Some(None)
    }
}

/// Appends `data` to `acc` up to and including the first `delim` that
/// completes in `acc`. Returns whether it completed, and how many bytes of
/// `data` were used.
fn take_until(acc: &mut Vec<u8>, data: &[u8], delim: &[u8]) -> (bool, usize) {
    for (i, b) in data.iter().enumerate() {
        acc.push(*b);
        if acc.ends_with(delim) {
            return (true, i + 1);
        }
    }
    (false, data.len())
}

/// The `code` of a JSON problem body (`{"code":"…",…}`), if any.
fn json_code(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let start = text.find("\"code\"")? + "\"code\"".len();
    let rest = text[start..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny HTTP server: `/health/ready` answers 200 while `ready`, any
    /// other request `name` (one request per connection).
    async fn upstream(name: &'static str, ready: Arc<AtomicBool>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let ready = ready.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1024];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let resp = if got.starts_with(b"GET /health/ready") {
                        if ready.load(Ordering::Relaxed) {
                            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_owned()
                        } else {
                            "HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\n\r\n".to_owned()
                        }
                    } else {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{name}")
                    };
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        addr
    }

    async fn ask(lb: &LoadBalancer) -> Option<String> {
        let mut s = TcpStream::connect(lb.addr()).await.ok()?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.ends_with(b"A") || out.ends_with(b"B") {
                        break;
                    }
                }
            }
        }
        let text = String::from_utf8_lossy(&out).to_string();
        text.ends_with(['A', 'B'])
            .then(|| text[text.len() - 1..].to_owned())
    }

    #[tokio::test]
    async fn routes_new_connections_to_ready_upstreams_only() {
        let (ra, rb) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicBool::new(true)),
        );
        let a = upstream("A", ra.clone()).await;
        let b = upstream("B", rb.clone()).await;
        let lb = LoadBalancer::health_checked(&[a, b]).await;
        crate::wait_until(Duration::from_secs(5), "both routable", || async {
            lb.is_routable(0) && lb.is_routable(1)
        })
        .await;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            seen.insert(ask(&lb).await.unwrap());
        }
        assert_eq!(seen.len(), 2, "round robin over both: {seen:?}");

        ra.store(false, Ordering::Relaxed);
        crate::wait_until(Duration::from_secs(5), "A not routable", || async {
            !lb.is_routable(0)
        })
        .await;
        for _ in 0..6 {
            assert_eq!(ask(&lb).await.as_deref(), Some("B"));
        }
        rb.store(false, Ordering::Relaxed);
        crate::wait_until(Duration::from_secs(5), "none routable", || async {
            !lb.is_routable(1)
        })
        .await;
        assert_eq!(
            ask(&lb).await,
            None,
            "no upstream: the connection is closed"
        );
        assert!(lb.responses().refused_connections >= 1);
        let r = lb.responses();
        assert_eq!(r.status(200), 10, "{r:?}");
    }

    fn statuses(p: &mut Parser, chunks: &[&[u8]]) -> Vec<(u16, bool, Option<String>)> {
        let mut out = Vec::new();
        for c in chunks {
            for r in p.feed(c) {
                out.push((r.status, r.retry_after, r.code));
            }
        }
        out
    }

    #[test]
    fn follows_keep_alive_responses_split_anywhere() {
        let stream = b"HTTP/1.1 202 Accepted\r\ncontent-length: 9\r\n\r\n{\"id\":1}\nHTTP/1.1 503 Service Unavailable\r\nretry-after: 3\r\ncontent-length: 28\r\n\r\n{\"code\":\"queue_unavailable\"}HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\nHTTP/1.1 500 Internal\r\ncontent-length: 2\r\n\r\n{}";
        for split in 1..stream.len() {
            let mut p = Parser::default();
            let got = statuses(&mut p, &[&stream[..split], &stream[split..]]);
            assert_eq!(
                got,
                vec![
                    (202, false, None),
                    (503, true, Some("queue_unavailable".into())),
                    (200, false, None),
                    (500, false, None)
                ],
                "split at {split}"
            );
            assert!(!p.lost);
        }
    }

    #[test]
    fn a_body_until_close_is_counted_at_the_end() {
        let mut p = Parser::default();
        assert!(
            p.feed(b"HTTP/1.0 431 Too Large\r\n\r\nno body length")
                .is_empty()
        );
        let r = p.finish();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, 431);
    }

    #[test]
    fn garbage_is_reported_lost() {
        let mut p = Parser::default();
        let _ = p.feed(b"SSH-2.0-OpenSSH\r\n\r\n");
        assert!(p.lost);
    }
}

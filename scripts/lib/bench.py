#!/usr/bin/env python3
"""Runs every benchmark in one run on this machine and writes docs/benchmarks.md.

Called by scripts/bench after the release build and with the services
running (INLET_TEST_*_URL exported). Everything is measured in the same
run, so the ratios are the headline; absolute numbers vary by machine.
Every figure in the report is computed from this run's measurements; the
report names the commit it measured.

`python3 scripts/lib/bench.py --criterion-report` only reads the
criterion results already on disk (estimates.json) and prints their table;
nothing is run or written.
"""

import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/inlet-target"))
REL = TARGET / "release"
INLET = REL / "inlet"
MONGO = os.environ.get("INLET_TEST_MONGO_URL", "")
REDIS = os.environ.get("INLET_TEST_REDIS_URL", "")
AMQP = os.environ.get("INLET_TEST_AMQP_URL", "")
# The commit measured, taken before anything runs (the release build
# scripts/bench made just before is of this tree).
COMMIT = commit(["docs/benchmarks.md"])
DURATION = os.environ.get("BENCH_DURATION", "20s")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
# The push comparison is made at these depths: wrk connections for (c),
# publishes in flight for (b). 64 is the connection count of the p99
# target; 256 is the depth the bare publish loop was first measured at.
PUSH_DEPTHS = sorted({CONNECTIONS, int(os.environ.get("BENCH_PUSH_DEEP", "256"))})
PUSH_RUNS = int(os.environ.get("BENCH_PUSH_RUNS", "3"))
SYNC_SIZES = [int(x) for x in os.environ.get("BENCH_SYNC_KEYS", "100000,1000000").split(",") if x]
# Spans per `/v1/traces` request, and transactions per `/v1/push` request,
# in the OTLP comparison.
OTLP_SPANS = 8
# BENCH_ONLY=otlp measures only the OTLP comparison (and its criterion
# bench) and prints its report section; docs/benchmarks.md is not written.
ONLY = os.environ.get("BENCH_ONLY", "")
if ONLY not in ("", "otlp", "worker", "sustained", "push", "scaling"):
    raise SystemExit(f"BENCH_ONLY={ONLY}: only 'otlp', 'worker', 'sustained', 'push', 'scaling' (or unset) are known")
# The worker is measured at these shapes (transactions per message: a
# real agent's small, frequent batches up to large ones), each with
# enough messages to run for seconds.
WORKER_SHAPES = [(1, 10000), (5, 4000), (20, 2000), (50, 2000)]
# The worker is measured with combining off, then on.
WORKER_MODES = ("off", "on")
# The sustained pipeline run: `inlet load` at this rate (requests/s) for
# this long, with one worker alongside on the same machine.
SUSTAINED_RATE = float(os.environ.get("BENCH_SUSTAINED_RATE", "300"))
SUSTAINED_S = int(os.environ.get("BENCH_SUSTAINED_S", "180"))
SUSTAINED_SAMPLE_S = 10
RUN_ID = f"bench{os.getpid()}"
STARTED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
RAW = []  # (title, text) of raw outputs for the appendix
COMMANDS = []
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


FAILURES = []  # (what, error) of sections that failed; reported, not fatal


def sh(cmd, **kw):
    COMMANDS.append(" ".join(str(c) for c in cmd))
    env = dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)
    if r.returncode != 0:
        err = r.stderr.strip()
        # The error line comes first; a backtrace may follow.
        raise RuntimeError(f"{' '.join(str(c) for c in cmd)} exited {r.returncode}: {err[:1500]}")
    return r


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout}s")


def proc_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def brokers_cpu_seconds(pids):
    """CPU seconds of the broker VMs `pids`; one that exited counts 0 (a
    cluster node stopping)."""
    total = 0.0
    for p in pids:
        try:
            total += proc_cpu_seconds(p)
        except OSError:
            pass
    return total


def proc_peak_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def parse_wrk(text):
    def dur(s):
        m = re.match(r"([\d.]+)(us|ms|s|m)", s)
        v, u = float(m.group(1)), m.group(2)
        return v * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[u]

    out = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else 0
    for q in ("50%", "90%", "99%"):
        m = re.search(rf"^\s+{q}\s+(\S+)", text, re.M)
        out["p" + q[:-1]] = dur(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", text)
    out["socket_errors"] = m.group(1).strip() if m else ""
    return out


def wrk(url, lua, title, connections=CONNECTIONS):
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{DURATION}", "--latency", "-s", lua, url]
    COMMANDS.append(" ".join(cmd))
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    RAW.append((title, text))
    return parse_wrk(text)


def broker_pids():
    """The RabbitMQ VM(s) on this machine, to see where the CPU goes; not
    the short-lived VMs of `rabbitmqctl` (the stacks run it), which would
    be gone by the time their CPU is read again."""
    out = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True).stdout
    pids = []
    for p in out.split():
        try:
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if b"rabbitmqctl" not in cmdline and b"escript" not in cmdline:
            pids.append(int(p))
    return pids


def settle_broker(max_wait=90.0):
    """Waits until RabbitMQ is idle (under 5% of a core over a second).
    Deleting the previous run's queue or vhost (hundreds of thousands of
    persisted messages) keeps the broker busy for a while afterwards; a
    measurement started then would be charged for it."""
    brokers = broker_pids()
    if not brokers:
        return
    deadline = time.time() + max_wait
    while time.time() < deadline:
        before = brokers_cpu_seconds(brokers)
        time.sleep(1.0)
        if brokers_cpu_seconds(brokers) - before < 0.05:
            return
    log("RabbitMQ did not go idle; measuring anyway")


def measured_wrk(pid, url, lua, title, connections=CONNECTIONS):
    settle_broker()
    # Warm up (connections, caches, JIT-free but page faults), then measure.
    subprocess.run(["wrk", "-t2", f"-c{connections}", "-d3s", "-s", lua, url], capture_output=True)
    brokers = broker_pids()
    cpu0 = proc_cpu_seconds(pid)
    broker0 = brokers_cpu_seconds(brokers)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.monotonic()
    r = wrk(url, lua, title, connections)
    wall = time.monotonic() - wall0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = proc_cpu_seconds(pid) - cpu0
    r["cpu_s_per_10k"] = cpu / max(r["requests"], 1) * 10_000
    r["peak_rss_mib"] = proc_peak_rss_mib(pid)
    # Where the machine's CPU went during the measurement, in cores.
    r["cores_server"] = cpu / wall
    r["cores_broker"] = (brokers_cpu_seconds(brokers) - broker0) / wall
    r["cores_wrk"] = ((children.ru_utime + children.ru_stime)
                      - (children0.ru_utime + children0.ru_stime)) / wall
    return r


def write_lua(body_path, keys, name, content_type="application/json", path=None):
    """A wrk script POSTing the file's bytes with `content_type`, to `path`
    (None: the URL's path), keys round robin as Bearer tokens."""
    lua = Path(tempfile.gettempdir()) / f"{RUN_ID}-{name}.lua"
    path_lua = "nil" if path is None else f'"{path}"'
    keys_lua = ",".join(f'"{k}"' for k in keys)
    lua.write_text(
        f"""
local f = io.open("{body_path}", "rb")
local body = f:read("*a")
f:close()
local keys = {{{keys_lua}}}
local n = 0
request = function()
  n = n + 1
  local headers = {{}}
  headers["Content-Type"] = "{content_type}"
  headers["Authorization"] = "Bearer " .. keys[(n % #keys) + 1]
  return wrk.format("POST", {path_lua}, headers, body)
end
"""
    )
    return str(lua)


@contextlib.contextmanager
def fresh_mongo():
    """A private in-memory SecantusDB for one measurement (the shared URL
    when INLET_SECANTUS_BIN is not set, i.e. a real MongoDB is in use)."""
    binary = os.environ.get("INLET_SECANTUS_BIN")
    if not binary:
        yield MONGO
        return
    port = free_port()
    proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--storage-path", ":memory:",
                             "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"SecantusDB did not open port {port}")
        # Long monitor timeouts: during a 1M-key insert the single-process
        # server answers the driver's heartbeat late, and the default
        # timeout dropped the connection ("server monitor timeout").
        yield f"mongodb://127.0.0.1:{port}/?retryWrites=false&connectTimeoutMS=120000&heartbeatFrequencyMS=60000"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


class Stack:
    """`inlet api` (release) against the test services, isolated by a vhost,
    a database and a key prefix."""

    def __init__(self, name, extra_env=None, keys=1):
        self.name = name
        self.vhost = f"{RUN_ID}-{name}"
        self.port = free_port()
        self.ctl = ["rabbitmqctl"] + (["-n", os.environ["INLET_TEST_RABBITMQ_NODE"]] if os.environ.get("INLET_TEST_RABBITMQ_NODE") else [])
        subprocess.run(self.ctl + ["-q", "add_vhost", self.vhost], check=True, capture_output=True)
        subprocess.run(self.ctl + ["-q", "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*"], check=True, capture_output=True)
        self.env = dict(os.environ)
        self.env.update({
            "INLET_CONFIG_DIR": str(ROOT / "config"), "INLET_ENV": "local",
            "INLET__LOG__FILTER": "warn",
            "INLET__MONGO__URL": MONGO, "INLET__MONGO__DATABASE": f"{RUN_ID}_{name}",
            "INLET__REDIS__URL": REDIS, "INLET__REDIS__PREFIX": f"{RUN_ID}-{name}:",
            "INLET__QUEUE__URL": AMQP.rsplit("/", 1)[0] + "/" + self.vhost,
            "INLET__API__LISTEN": f"127.0.0.1:{self.port}",
            "INLET__API__SHUTDOWN_DELAY_MS": "0",
            "INLET__API__DEFAULT_RATE_PER_S": "10000000", "INLET__API__DEFAULT_BURST": "10000000",
        })
        self.env.update(extra_env or {})
        self.run(["migrate"])
        self.run(["accounts", "create", "bench", "--rate-limit", "100000000", "--burst", "100000000"])
        self.keys = [self.run(["keys", "create", "--account", "bench"]).strip() for _ in range(keys)]
        self.run(["sync", "--once"])
        self.proc = subprocess.Popen([str(INLET), "api"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.port}/health/ready")

    def run(self, args):
        return subprocess.run([str(INLET)] + args, env=self.env, check=True, capture_output=True, text=True).stdout

    def url(self, path="/v1/push"):
        return f"http://127.0.0.1:{self.port}{path}"

    def purge_queues(self):
        """Empties every queue of the stack's vhost, so the next measurement
        starts against an empty queue as the previous one did."""
        names = subprocess.run(self.ctl + ["-q", "list_queues", "-p", self.vhost, "--no-table-headers", "name"],
                               check=True, capture_output=True, text=True).stdout.split()
        for name in names:
            subprocess.run(self.ctl + ["-q", "purge_queue", "-p", self.vhost, name], check=True, capture_output=True)

    def close(self):
        stop(self.proc)
        subprocess.run(self.ctl + ["-q", "delete_vhost", self.vhost], capture_output=True)
        venv_py = Path(os.environ.get("INLET_VENV", Path.home() / ".cache/inlet-venv")) / "bin/python"
        subprocess.run([str(venv_py), "-c",
                        f"import pymongo; pymongo.MongoClient({MONGO!r}).drop_database({self.env['INLET__MONGO__DATABASE']!r})"],
                       capture_output=True)


def stop(proc):
    """SIGTERM, then SIGKILL if `proc` has not exited within 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def start_worker(env):
    """An `inlet worker` (release) with `env` and its admin listener on a
    free port: the process and the listener's base URL."""
    port = free_port()
    proc = subprocess.Popen([str(INLET), "worker"], env=dict(env, INLET__ADMIN__WORKER_LISTEN=f"127.0.0.1:{port}"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def accepted_pushes(page):
    """Pushes an API answered 202 (each confirmed by the broker), from its
    `/metrics` page: not `inlet_queue_publish_total`, which counts broker
    messages, and a combined message holds several pushes."""
    return sum(v for (n, labels), v in page.items() if n == "inlet_api_requests_total"
               and dict(labels).get("route") == "/v1/push" and dict(labels).get("status") == "202")


def median_run(runs, key):
    """The run with the median `key` (the upper middle of an even count)."""
    return sorted(runs, key=lambda r: r[key])[len(runs) // 2]


def push_path(body_path):
    """(a) once, then (b) and (c) PUSH_RUNS times each, interleaved: the
    broker's speed drifts between runs on a shared machine (queue deletes,
    WAL roll-overs), so one run of each can compare a fast (b) with a slow
    (c) or the other way round. The report uses the median run of each and
    lists every run. (d) is (c) with combining off, for the combining
    comparison."""
    log("push path: bare actix")
    port = free_port()
    bare = subprocess.Popen([str(REL / "bare-actix"), f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    COMMANDS.append(f"{REL / 'bare-actix'} 127.0.0.1:{port}")
    time.sleep(1)
    lua = write_lua(body_path, ["unused"], "bare")
    a = measured_wrk(bare.pid, f"http://127.0.0.1:{port}/v1/push", lua, "(a) bare actix-web handler")
    bare.terminate()
    bare.wait()

    size = Path(body_path).stat().st_size
    seconds = float(DURATION.rstrip("s"))
    by_depth, off_by_depth = {}, {}
    for depth in PUSH_DEPTHS:
        bs, cs, ds = [], [], []
        for i in range(PUSH_RUNS):
            log(f"push path at depth {depth}: bare lapin publish, run {i + 1}/{PUSH_RUNS}")
            settle_broker()
            brokers = broker_pids()
            broker0, wall0 = brokers_cpu_seconds(brokers), time.monotonic()
            b = json.loads(sh([REL / "bare-publish", "--url", AMQP, "--body-bytes", size, "--in-flight", depth,
                               "--seconds", seconds, "--messages", 10_000_000]).stdout)
            b["cores_broker"] = (brokers_cpu_seconds(brokers) - broker0) / (time.monotonic() - wall0)
            RAW.append((f"(b) bare lapin confirmed publish, {depth} in flight, run {i + 1}", json.dumps(b, indent=2)))
            bs.append(b)

            log(f"push path at depth {depth}: inlet /v1/push, cached key, run {i + 1}/{PUSH_RUNS}")
            cs.append(inlet_push(body_path, f"push{depth}-{i}", depth,
                                 f"(c) Inlet /v1/push, cached key, {depth} connections, run {i + 1}"))
            log(f"push path at depth {depth}: inlet /v1/push, combining off, run {i + 1}/{PUSH_RUNS}")
            ds.append(inlet_push(body_path, f"push{depth}-off-{i}", depth,
                                 f"(d) Inlet /v1/push, combining off, {depth} connections, run {i + 1}",
                                 COMBINING_OFF))
        by_depth[depth] = (bs, cs)
        off_by_depth[depth] = ds
    return a, by_depth, off_by_depth


# `[queue] combine_max_parts = 1`: every push its own broker message.
COMBINING_OFF = {"INLET__QUEUE__COMBINE_MAX_PARTS": "1"}


def inlet_push(body_path, name, depth, title, extra_env=None):
    """One wrk run against a fresh `inlet api`; also how many pushes each
    broker message carried (`inlet_queue_publish_parts`, warm-up
    included)."""
    stack = Stack(name, extra_env)
    lua = write_lua(body_path, stack.keys, name)
    r = measured_wrk(stack.proc.pid, stack.url(), lua, title, depth)
    page = scrape(stack.url("/metrics"))
    r["pushes_per_message"] = (metric_sum(page, "inlet_queue_publish_parts_sum")
                               / max(metric_sum(page, "inlet_queue_publish_parts_count"), 1))
    stack.close()
    return r


PUSH_KEYS = int(os.environ.get("BENCH_PUSH_KEYS", "200"))
AUTH_PUSH_CONFIGS = {
    "v1_mongo_per_decision": {"INLET__AUTH__PRIMARY": "none", "INLET__AUTH__CACHE_MAX_ENTRIES": "1"},
    "v2_redis_per_decision": {"INLET__AUTH__PRIMARY": "redis", "INLET__AUTH__SOURCE_OF_TRUTH": "false",
                              "INLET__AUTH__CACHE_MAX_ENTRIES": "1"},
    "inlet_cached_layered": {},
}


def auth_designs_push(body_path):
    """The three designs through /v1/push: PUSH_KEYS keys round robin, and
    a decision cache of one entry (so every push misses it) for v1 and v2."""
    out = {}
    for name, env in AUTH_PUSH_CONFIGS.items():
        log(f"auth designs through /v1/push: {name}")
        stack = Stack(name.split("_")[0], env, keys=PUSH_KEYS)
        lua = write_lua(body_path, stack.keys, name)
        out[name] = measured_wrk(stack.proc.pid, stack.url(), lua, f"auth design {name} through /v1/push")
        stack.close()
    return out


def otlp_vs_push():
    """`/v1/push` with a JSON batch of OTLP_SPANS transactions against
    `/v1/traces` with a protobuf export of OTLP_SPANS SERVER spans, both
    written by `otlp-body` (the push batch is what the export maps onto,
    so both routes carry the same samples). Per run one stack and one
    cached key serve both measurements; the queue is purged between them
    (each starts against an empty queue) and the order alternates (neither
    route always meets the broker's drift). PUSH_RUNS runs; the report
    uses the median runs."""
    tmp = Path(tempfile.gettempdir())
    pb, js = tmp / f"{RUN_ID}-traces{OTLP_SPANS}.pb", tmp / f"{RUN_ID}-push{OTLP_SPANS}.json"
    bodies = json.loads(sh([REL / "otlp-body", "--spans", OTLP_SPANS, "--out", pb, "--push-json", js]).stdout)
    if bodies["push_transactions"] != OTLP_SPANS:
        raise RuntimeError(f"otlp-body mapped {OTLP_SPANS} spans onto {bodies['push_transactions']} transactions")
    RAW.append(("OTLP comparison bodies (otlp-body)", json.dumps(bodies, indent=2)))
    log(f"OTLP comparison bodies: {bodies}")
    routes = {
        "push": ("/v1/push", js, "application/json", f"`/v1/push`, JSON, {OTLP_SPANS} transactions"),
        "otlp": ("/v1/traces", pb, "application/x-protobuf", f"`/v1/traces`, protobuf, {OTLP_SPANS} spans"),
    }
    runs = []
    for i in range(PUSH_RUNS):
        order = ["push", "otlp"] if i % 2 == 0 else ["otlp", "push"]
        stack = Stack(f"otlp{i}")
        try:
            run = {"order": order}
            for j, kind in enumerate(order):
                path, body, content_type, title = routes[kind]
                if j:
                    stack.purge_queues()
                log(f"OTLP comparison: {path}, cached key, {CONNECTIONS} connections, run {i + 1}/{PUSH_RUNS}")
                lua = write_lua(body, stack.keys[:1], f"otlp{i}-{kind}", content_type, path)
                run[kind] = measured_wrk(stack.proc.pid, stack.url(path), lua,
                                         f"OTLP comparison: {title}, cached key, {CONNECTIONS} connections, run {i + 1}")
        finally:
            stack.close()
        runs.append(run)
    return {"runs": runs, "bodies": bodies, "titles": {k: v[3] for k, v in routes.items()}}


def main():
    docs = ROOT / "docs" / "benchmarks.md"
    if ONLY == "otlp":
        otlp = otlp_vs_push()
        crit = run_criterion([b for b in CRITERION_BENCHES if b[0] == "inlet-otlp"])
        print("\n".join(otlp_summary_rows(otlp) + [""] + otlp_section(otlp, crit)))
        log("BENCH_ONLY=otlp: printed the OTLP section; docs/benchmarks.md was not written")
        return
    if ONLY == "sustained":
        r = sustained_pipeline()
        print("\n".join(sustained_summary_rows(r) + [""] + sustained_section(r)))
        log("BENCH_ONLY=sustained: printed the sustained section; docs/benchmarks.md was not written")
        return
    if ONLY == "scaling":
        print("\n".join(scaling_section(worker_scaling())))
        log("BENCH_ONLY=scaling: printed the worker-processes section; docs/benchmarks.md was not written")
        return
    if ONLY == "push":
        body_path = Path(tempfile.gettempdir()) / f"{RUN_ID}-body.json"
        body_path.write_text(subprocess.run([sys.executable, "-c", BODY_SCRIPT], check=True,
                                            capture_output=True, text=True).stdout)
        _, by_depth, off = push_path(body_path)
        print("\n".join(combining_summary_rows(by_depth, off) + [""] + combining_section(by_depth, off)))
        log("BENCH_ONLY=push: printed the combining comparison; docs/benchmarks.md was not written")
        return
    if ONLY == "worker":
        worker = worker_shapes()
        print("\n".join(worker_summary_rows(worker) + [""] + worker_section(worker)))
        log("BENCH_ONLY=worker: printed the worker section; docs/benchmarks.md was not written")
        return
    body_path = Path(tempfile.gettempdir()) / f"{RUN_ID}-body.json"
    body = subprocess.run([sys.executable, "-c", BODY_SCRIPT], check=True, capture_output=True, text=True).stdout
    body_path.write_text(body)
    log(f"push body: {len(body)} bytes")

    a, by_depth, off = push_path(body_path)

    log("OTLP comparison")
    otlp = otlp_vs_push()

    log("auth designs (harness)")
    # The harness exits non-zero when a lookup failed, after printing every
    # design's line (with its failures): keep the lines, record the failure.
    cmd = [REL / "auth-designs", "--mongo", MONGO, "--redis", REDIS, "--migrations", ROOT / "migrations",
           "--seconds", "10"]
    COMMANDS.append(" ".join(str(c) for c in cmd))
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                       env=dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0"))
    designs = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode != 0:
        FAILURES.append(("auth designs (harness)", f"exited {r.returncode}: {r.stderr.strip()[:1500]}"))
    if len(designs) != 3:
        raise RuntimeError(f"auth designs printed {len(designs)} of 3 designs: {r.stderr.strip()[:1500]}")
    RAW.append(("auth designs (harness)", "\n".join(json.dumps(d) for d in designs)))
    through_push = auth_designs_push(body_path)

    worker = worker_shapes()
    sustained = sustained_pipeline()
    scaling = worker_scaling()

    syncs = []
    for n in SYNC_SIZES:
        log(f"sync backfill of {n} keys")
        try:
            # Each size on a fresh in-memory SecantusDB: after the other
            # sections, the shared one (a Python process) has been seen to
            # drop the connection during a 1M-key insert.
            with fresh_mongo() as mongo:
                s = json.loads(sh([REL / "sync-backfill", "--mongo", mongo, "--redis", REDIS, "--keys", n]).stdout)
        except RuntimeError as e:
            log(f"sync backfill of {n} keys FAILED: {e}")
            FAILURES.append((f"sync backfill of {n} keys", str(e)))
            continue
        RAW.append((f"sync backfill {n}", json.dumps(s, indent=2)))
        syncs.append(s)

    log("criterion micro-benchmarks")
    crit = run_criterion()

    write_report(docs, a, by_depth, off, otlp, designs, through_push, worker, sustained, scaling, syncs, crit,
                 len(body), PUSH_KEYS)
    log(f"wrote {docs}")


CRITERION_BENCHES = [("inlet-domain", "domain"), ("inlet-auth", "decide"), ("inlet-queue", "publish"),
                     ("inlet-otlp", "decode_map")]


def criterion_home():
    """Where criterion writes (its own rule: $CRITERION_HOME, else
    $CARGO_TARGET_DIR/criterion)."""
    return Path(os.environ.get("CRITERION_HOME") or TARGET / "criterion")


def criterion_results(since=0.0):
    """Every benchmark criterion wrote at or after `since` (a time.time()),
    read from its own files, not its console output:
    <home>/<group>/<bench>[/<input>]/new/benchmark.json (the id and the
    throughput per iteration) and .../new/estimates.json (the statistics,
    in ns per iteration). Sorted by id."""
    out = []
    for meta_path in criterion_home().glob("**/new/benchmark.json"):
        est_path = meta_path.with_name("estimates.json")
        if not est_path.exists() or est_path.stat().st_mtime < since:
            continue
        meta = json.loads(meta_path.read_text())
        median = json.loads(est_path.read_text())["median"]
        out.append({
            "id": meta["full_id"],
            "median_ns": median["point_estimate"],
            "low_ns": median["confidence_interval"]["lower_bound"],
            "high_ns": median["confidence_interval"]["upper_bound"],
            "throughput": meta.get("throughput"),
            "file": str(est_path),
        })
    return sorted(out, key=lambda r: r["id"])


def run_criterion(benches=CRITERION_BENCHES):
    """Runs the criterion benchmarks; returns what they wrote (see
    `criterion_results`). A failing bench is reported, not fatal."""
    started = time.time()
    for pkg, bench in benches:
        cmd = ["cargo", "bench", "--locked", "-p", pkg, "--bench", bench, "--", "--noplot"]
        COMMANDS.append(" ".join(cmd))
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            log(f"criterion {pkg}/{bench} FAILED")
            FAILURES.append((f"criterion {pkg}/{bench}", r.stderr.strip()[-2000:]))
    crit = criterion_results(since=started)
    RAW.append(("criterion (median of each benchmark, ns per iteration, from new/estimates.json)",
                "\n".join(json.dumps({k: v for k, v in c.items() if k != "file"}) for c in crit)))
    return crit


def fmt_ns(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_throughput(c):
    """Per second, from the throughput per iteration and the median time."""
    t = c["throughput"] or {}
    per_s = 1e9 / c["median_ns"]
    if "Elements" in t:
        return f"{t['Elements'] * per_s:,.0f} elem/s"
    for kind in ("Bytes", "BytesDecimal"):
        if kind in t:
            return f"{t[kind] * per_s / 2**20:,.1f} MiB/s"
    return ""


def criterion_table(crit):
    lines = ["| benchmark | median (95% CI) | throughput |", "|---|---|---|"]
    for c in crit:
        lines.append(f"| {c['id']} | {fmt_ns(c['median_ns'])} ({fmt_ns(c['low_ns'])} – {fmt_ns(c['high_ns'])}) "
                     f"| {fmt_throughput(c)} |")
    return lines


BODY_SCRIPT = r"""
import json, time
now = int(time.time() * 1000)
tx = []
doc = {"agent": {"name": "inlet-bench", "version": "1.0.0", "hostname": "bench-host-1"},
       "app": "shop", "environment": "production"}
i = 0
while True:
    tx.append({"action": "OrdersController#action%d" % (i % 7), "namespace": "web",
               "start_ms": now - 1000, "duration_ms": 12.5 + i, "status": 500 if i % 13 == 0 else 200})
    i += 1
    doc["transactions"] = tx
    if len(json.dumps(doc)) >= 1000:
        break
print(json.dumps(doc), end="")
"""


def publisher_ratios(crit):
    """(size, publisher / bare lapin throughput) from the inlet-queue
    criterion group: both publish the same messages per iteration, so the
    ratio of throughputs is bare time / publisher time."""
    by_id = {c["id"]: c for c in crit}
    out = []
    for c in crit:
        m = re.match(r"(confirmed_publish_\w+)/publisher/(\d+)$", c["id"])
        bare = by_id.get(f"{m.group(1)}/bare_lapin/{m.group(2)}") if m else None
        if bare and c["median_ns"] > 0:
            out.append((m.group(2), bare["median_ns"] / c["median_ns"]))
    return out


def verdict(ok):
    return "**met**" if ok else "**missed**"


def publisher_channels():
    """`queue.publisher_channels` as the API under test runs it
    (config/default.toml, then config/local.toml)."""
    n = None
    for name in ("default", "local"):
        f = ROOT / "config" / f"{name}.toml"
        if f.exists():
            n = tomllib.loads(f.read_text()).get("queue", {}).get("publisher_channels", n)
    return n


def cores_prose(a, medians, by_depth, push_ratio):
    """What the CPU table says, in sentences whose every number comes from
    this run's measurements."""
    out = []
    for d, (mb, mc) in medians.items():
        procs = {"the API": mc["cores_server"], "RabbitMQ": mc["cores_broker"], "wrk": mc["cores_wrk"]}
        busiest = max(procs, key=procs.get)
        out.append(f"In (c) at {d} connections (median run) the busiest process was {busiest} "
                   f"({procs[busiest]:.2f} of {os.cpu_count()} cores; "
                   + ", ".join(f"{k} {v:.2f}" for k, v in procs.items() if k != busiest) + ").")
    per_msg = {d: sorted(rc["cores_broker"] / max(rc["rps"], 1) * 1e6 for rc in cs_d)[len(cs_d) // 2]
               for d, (_, cs_d) in by_depth.items()}
    if len(per_msg) > 1:
        ds = sorted(per_msg)
        trend = "fell" if per_msg[ds[-1]] < per_msg[ds[0]] else "did not fall"
        out.append(f"RabbitMQ's CPU per message in (c) {trend} with depth: "
                   + ", ".join(f"{per_msg[d]:.0f} µs at {d}" for d in ds)
                   + " (median of the runs at each depth).")
    channels = publisher_channels()
    if channels is not None:
        out.append(f"The API published on {channels} confirm channel(s) (`queue.publisher_channels` in config/).")
    if push_ratio < 0.8:
        out.append("")
        out.append("**Where the machine went while the push target was missed.** Load generator, RabbitMQ and")
        out.append("the API share this machine's cores. Per depth, the broker's share in (b), where it had the")
        out.append("machine to itself, against its share in (c), and what was left for wrk and the API:")
        out.append("")
        out.append("| depth | (b) RabbitMQ cores | (c) RabbitMQ cores | (c) wrk cores | (c) API cores | (c) API CPU s / 10k req | (a) CPU s / 10k req |")
        out.append("|---|---|---|---|---|---|---|")
        for d, (mb, mc) in medians.items():
            out.append(f"| {d} | {mb.get('cores_broker', float('nan')):.2f} | {mc['cores_broker']:.2f} | "
                       f"{mc['cores_wrk']:.2f} | {mc['cores_server']:.2f} | {mc['cpu_s_per_10k']:.2f} | "
                       f"{a['cpu_s_per_10k']:.2f} |")
        out.append("")
        out.append("The API's own cost per request is its `CPU s / 10k req` against (a)'s; to see where it goes,")
        out.append("profile the API (`perf record -g -p <pid>`) during a (c) run.")
    return out


def median(xs):
    """The median (the upper middle of an even count)."""
    return sorted(xs)[len(xs) // 2]


def worker_shapes():
    """The worker against the bare bulk-upsert loop at every shape of
    WORKER_SHAPES, one after the other on the same servers: the queue
    filled with one broker message per push (combining off), then with
    the pushes combined as the API combines them under load."""
    runs = []
    for tpm, messages in WORKER_SHAPES:
        run = {}
        for mode in WORKER_MODES:
            log(f"worker throughput: {messages} pushes x {tpm} transactions, combining {mode}")
            r = json.loads(sh([REL / "worker-throughput", "--mongo", MONGO, "--amqp", AMQP,
                               "--migrations", ROOT / "migrations", "--messages", messages,
                               "--transactions-per-message", tpm] + (["--combine"] if mode == "on" else [])).stdout)
            RAW.append((f"worker throughput, {tpm} transactions per push, combining {mode}", json.dumps(r, indent=2)))
            run[mode] = r
        runs.append(run)
    return runs


def scrape(url):
    """A Prometheus text page: {(name, frozenset(labels)): value}."""
    out = {}
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
            if not m:
                continue
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric_sum(page, name, exclude=None):
    """The sum of `name` over its series, leaving out those with a label
    value in `exclude` ({label: {values}})."""
    exclude = exclude or {}
    return sum(v for (n, labels), v in page.items() if n == name
               and not any(dict(labels).get(k) in vs for k, vs in exclude.items()))


def histogram_buckets(page, name):
    """[(le, cumulative count)] of a histogram summed over its series."""
    by_le = {}
    for (n, labels), v in page.items():
        if n == f"{name}_bucket":
            le = dict(labels)["le"]
            le = float("inf") if le == "+Inf" else float(le)
            by_le[le] = by_le.get(le, 0.0) + v
    return sorted(by_le.items())


def histogram_quantile(q, buckets):
    """Prometheus's histogram_quantile: linear within the bucket that holds
    the q-th observation; None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = le, count
    return lower


def bucket_delta(later, earlier):
    """The observations between two scrapes of one histogram."""
    before = dict(earlier)
    return [(le, c - before.get(le, 0.0)) for le, c in later]


def sustained_pipeline():
    """`inlet load` at SUSTAINED_RATE for SUSTAINED_S with `inlet api` and
    one `inlet worker` (release) on this machine: the backlog (published
    and confirmed minus settled by the worker) and the freshness (the
    worker's received → committed histogram) every SUSTAINED_SAMPLE_S, then
    the drain after the load."""
    log(f"sustained pipeline: {SUSTAINED_RATE:.0f} req/s for {SUSTAINED_S} s")
    with fresh_mongo() as mongo:
        stack = Stack("sustained", {"INLET__MONGO__URL": mongo}, keys=20)
        worker, worker_url = start_worker(stack.env)
        keys = Path(tempfile.gettempdir()) / f"{RUN_ID}-sustained-keys.txt"
        keys.write_text("\n".join(stack.keys) + "\n")
        try:
            wait_http(f"{worker_url}/health/ready")
            api_m, worker_m = stack.url("/metrics"), f"{worker_url}/metrics"

            def sample(t0):
                a, w = scrape(api_m), scrape(worker_m)
                published = accepted_pushes(a)
                settled = metric_sum(w, "inlet_worker_messages_total", {"outcome": {"retried"}})
                return {"t_s": round(time.time() - t0, 1), "published": published, "settled": settled,
                        "backlog": published - settled, "freshness": histogram_buckets(w, "inlet_worker_freshness_seconds"),
                        "worker_tx": metric_sum(w, "inlet_worker_items_total", {"kind": {"metric", "error"}})}

            cmd = [str(INLET), "load", "--rate", str(SUSTAINED_RATE), "--duration", f"{SUSTAINED_S}s", "--keys", str(keys),
                   "--agents", "20", "--endpoint", stack.url(""), "--json"]
            COMMANDS.append(" ".join(cmd))
            t0 = time.time()
            load = subprocess.Popen(cmd, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            samples = [sample(t0)]
            while load.poll() is None:
                time.sleep(SUSTAINED_SAMPLE_S)
                samples.append(sample(t0))
            out, err = load.communicate()
            if load.returncode != 0:
                raise RuntimeError(f"inlet load exited {load.returncode}: {err.strip()[:1500]}")
            report = json.loads(out)
            load_end = time.time()
            drained = None
            while time.time() - load_end < 600:
                last = sample(t0)
                if last["published"] > 0 and last["backlog"] <= 0:
                    drained = time.time() - load_end
                    break
                time.sleep(1)
            end = sample(t0)
        finally:
            stop(worker)
            stack.close()
    windows = []
    for prev, cur in zip(samples, samples[1:]):
        d = bucket_delta(cur["freshness"], prev["freshness"])
        windows.append({"t_s": cur["t_s"], "backlog": cur["backlog"],
                        "settled_per_s": (cur["settled"] - prev["settled"]) / max(cur["t_s"] - prev["t_s"], 1e-9),
                        "freshness_p50_s": histogram_quantile(0.5, d), "freshness_p99_s": histogram_quantile(0.99, d)})
    during = bucket_delta(samples[-1]["freshness"], samples[0]["freshness"])
    r = {"rate": SUSTAINED_RATE, "duration_s": SUSTAINED_S, "achieved_rps": report["achieved_rps"],
         "accepted": report["statuses"].get("202", 0), "statuses": report["statuses"],
         "push_latency_ms": report["latency_ms"], "items_sent": report["items_sent"],
         "settled_messages": end["settled"], "published_messages": end["published"],
         "worker_items": end["worker_tx"], "drain_s": drained,
         "freshness_p50_s": histogram_quantile(0.5, during), "freshness_p99_s": histogram_quantile(0.99, during),
         "freshness_p50_all_s": histogram_quantile(0.5, end["freshness"]),
         "freshness_p99_all_s": histogram_quantile(0.99, end["freshness"]),
         "max_backlog": max(s["backlog"] for s in samples), "windows": windows}
    RAW.append(("sustained pipeline", json.dumps(r, indent=2)))
    return r


SCALING_WORKERS = (1, 2, 4)
SCALING_RATE = float(os.environ.get("BENCH_SCALING_RATE", "1000"))
SCALING_FILL_S = int(os.environ.get("BENCH_SCALING_FILL_S", "10"))


def worker_scaling():
    """1, 2 and 4 `inlet worker` processes draining one queue whose pushes
    fold into the same hot buckets; and, as the control, 2 and 4 workers
    each draining its own stack's queue into its own database on the same
    server (the same total load, no bucket shared)."""
    runs = [scaling_run(n, shared=True) for n in SCALING_WORKERS]
    runs += [scaling_run(n, shared=False) for n in SCALING_WORKERS if n > 1]
    return runs


def scaling_run(n, shared):
    """`n` workers on a fresh SecantusDB: one stack (`shared`: every worker
    on its queue and database) or one stack per worker. Each stack's queue
    is filled first by `inlet load` (20 agents of one account: their
    batches fold into the same hot bucket documents) with no worker
    running, SCALING_RATE pushes/s in all; then the workers start together
    and are timed from all ready to every accepted push settled. Conflicts:
    `inlet_worker_transaction_retries_total` summed over the workers."""
    n_stacks = 1 if shared else n
    log(f"worker scaling: {n} worker process(es), {'one queue' if shared else 'a queue and database each'}")
    with fresh_mongo() as mongo:
        stacks, workers, urls, statuses = [], [], [], []
        try:
            accepted = 0.0
            for i in range(n_stacks):
                stack = Stack(f"scaling{n}{'s' if shared else 'p'}{i}", {"INLET__MONGO__URL": mongo}, keys=20)
                stacks.append(stack)
                keys = Path(tempfile.gettempdir()) / f"{RUN_ID}-scaling-keys.txt"
                keys.write_text("\n".join(stack.keys) + "\n")
                cmd = [str(INLET), "load", "--rate", str(SCALING_RATE / n_stacks), "--duration", f"{SCALING_FILL_S}s",
                       "--keys", str(keys), "--agents", "20", "--endpoint", stack.url(""), "--json",
                       # The stack lifts the keys' limits: no cap at 100/s per key.
                       "--per-key-rate", "0"]
                COMMANDS.append(" ".join(cmd))
                out = subprocess.run(cmd, env=stack.env, check=True, capture_output=True, text=True).stdout
                statuses.append(json.loads(out)["statuses"])
                accepted += accepted_pushes(scrape(stack.url("/metrics")))
            for i in range(n):
                proc, url = start_worker(stacks[i % n_stacks].env)
                workers.append(proc)
                urls.append(url)
            for u in urls:
                wait_http(f"{u}/health/ready")

            def totals():
                pages = [scrape(f"{u}/metrics") for u in urls]
                per_worker = [metric_sum(p, "inlet_worker_messages_total", {"outcome": {"retried"}}) for p in pages]
                return {"settled": sum(per_worker), "per_worker": per_worker,
                        "transactions": sum(metric_sum(p, "inlet_worker_items_total", {"kind": {"metric", "error"}})
                                            for p in pages),
                        "retries": sum(metric_sum(p, "inlet_worker_transaction_retries_total") for p in pages),
                        "dead_letters": sum(metric_sum(p, "inlet_worker_dead_letters_total") for p in pages)}
            start, t0 = totals(), time.monotonic()
            if start["settled"] > accepted / 10:
                raise RuntimeError(f"{n} workers had settled {start['settled']:.0f} of {accepted:.0f} pushes before "
                                   "the last was ready: fill the queue with more (BENCH_SCALING_FILL_S)")
            end, took = start, None
            while time.monotonic() - t0 < 600:
                end = totals()
                if end["settled"] >= accepted:
                    took = time.monotonic() - t0
                    break
                time.sleep(0.2)
            if took is None:
                raise RuntimeError(f"{n} workers settled {end['settled']:.0f} of {accepted:.0f} pushes in 600 s")
        finally:
            for w in workers:
                stop(w)
            for stack in stacks:
                stack.close()
    r = {"workers": n, "shared": shared, "accepted": accepted, "load_statuses": statuses,
         "settled_before_timing": start["settled"],
         "seconds": took, "pushes_per_s": (end["settled"] - start["settled"]) / took,
         "transactions_per_s": (end["transactions"] - start["transactions"]) / took,
         "retries": end["retries"], "dead_letters": end["dead_letters"], "per_worker": end["per_worker"]}
    RAW.append((f"worker scaling, {n} worker process(es), {'shared' if shared else 'separate'}", json.dumps(r, indent=2)))
    return r


def scaling_section(runs):
    one = next(r["pushes_per_s"] for r in runs if r["workers"] == 1)
    out = ["## Worker processes on one queue", "",
           f"`inlet load --duration {SCALING_FILL_S}s --agents 20` at {SCALING_RATE:.0f} pushes/s (20 keys of one "
           "account, gzip batches of 3–8 transactions plus metrics: the agents' batches fold into the same hot bucket "
           "documents) fills the push queue of one `inlet api` with no worker running; then 1, 2 or 4 `inlet worker` "
           "processes (2 pipelines each) start together and are timed from all ready to every accepted push settled. "
           "The control (*separate*): as many stacks as workers, each with its own queue and database on the same "
           "server, filled at the same total rate, one worker each: the same load on the database, no bucket shared, "
           "so no conflict. Each row on a fresh in-memory SecantusDB; the workers, RabbitMQ and the database share the "
           "machine's 2 cores, and SecantusDB is one Python process, so this shows what more workers cost in conflicts "
           "against one database server, not how a real MongoDB scales. Conflicts: "
           "`inlet_worker_transaction_retries_total` summed over the processes.", "",
           "| worker processes | buckets | pushes | pushes/s | transactions/s | vs 1 process | conflict retries | "
           "dead-lettered | pushes settled per process |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        out.append(f"| {r['workers']} | {'shared' if r['shared'] else 'separate'} | {r['accepted']:.0f} | "
                   f"{r['pushes_per_s']:.0f} | {r['transactions_per_s']:.0f} | {r['pushes_per_s'] / one:.2f}× | "
                   f"{r['retries']:.0f} | {r['dead_letters']:.0f} | {', '.join(f'{p:.0f}' for p in r['per_worker'])} |")
    out.append("")
    return out


def sustained_growth(r):
    """Messages/s the backlog grew by over the second half of the load (≤ 0:
    it stopped growing)."""
    w = r["windows"]
    half = w[len(w) // 2:]
    if len(half) < 2:
        return None
    return (half[-1]["backlog"] - half[0]["backlog"]) / max(half[-1]["t_s"] - half[0]["t_s"], 1e-9)


def fmt_s(x):
    return "n/a" if x is None else f"{x:.2f} s"


def sustained_summary_rows(r):
    """The queue "stops growing" when the worker settles what is left
    within one sample period of the load's end: the backlog stayed within
    what the worker clears in seconds, it did not accumulate."""
    growth = sustained_growth(r)
    held = r["drain_s"] is not None and r["drain_s"] <= SUSTAINED_SAMPLE_S
    return [f"| sustained pipeline: the queue stops growing at {r['achieved_rps']:.0f} pushes/s for {r['duration_s']} s "
            f"(drained within {SUSTAINED_SAMPLE_S} s of the load's end), freshness p99 reported | drained "
            f"{fmt_s(r['drain_s'])} after the load; max backlog {r['max_backlog']:.0f}, growth over the second half "
            f"{growth:+.1f} pushes/s; freshness p50 {fmt_s(r['freshness_p50_s'])}, p99 {fmt_s(r['freshness_p99_s'])} | "
            f"{verdict(held)} |"]


def sustained_section(r):
    growth = sustained_growth(r)
    out = ["## Sustained pipeline", "",
           f"`inlet load --rate {r['rate']:.0f} --duration {r['duration_s']}s --agents 20` (20 keys, gzip batches of 3–8 "
           "transactions plus metrics and now and then an error) through one `inlet api` with one `inlet worker` (2 pipelines) "
           "alongside, release builds, the same machine, RabbitMQ and a fresh in-memory SecantusDB. Backlog: pushes the "
           "API accepted (202, each confirmed by the broker; several may share one broker message) minus pushes the worker "
           "settled (stored, duplicate or dead-lettered), from both processes' `/metrics`. Freshness: `inlet_worker_freshness_seconds` (the 202's receive time → the commit that "
           "made the aggregate visible), quantiles interpolated within its buckets as `histogram_quantile` does.", "",
           f"Achieved {r['achieved_rps']:.0f} pushes/s ({r['accepted']} answered 202 of statuses {r['statuses']}), push "
           f"latency p50 {r['push_latency_ms']['p50']:.1f} ms / p99 {r['push_latency_ms']['p99']:.1f} ms. The backlog grew by "
           f"{growth:+.1f} pushes/s over the second half of the run (max {r['max_backlog']:.0f}); freshness during the load "
           f"p50 {fmt_s(r['freshness_p50_s'])}, p99 {fmt_s(r['freshness_p99_s'])}; the worker had settled everything "
           f"{fmt_s(r['drain_s'])} after the load stopped ({r['settled_messages']:.0f} of {r['published_messages']:.0f} pushes).", "",
           "| t (s) | backlog (pushes) | worker settled/s | freshness p50 | freshness p99 |", "|---|---|---|---|---|"]
    for w in r["windows"]:
        out.append(f"| {w['t_s']:.0f} | {w['backlog']:.0f} | {w['settled_per_s']:.0f} | {fmt_s(w['freshness_p50_s'])} | "
                   f"{fmt_s(w['freshness_p99_s'])} |")
    out.append("")
    return out


# Combining must at least double the worker's pushes/s at these shapes.
COMBINED_WORKER_SHAPES = (1, 5)


def worker_summary_rows(worker):
    rows = []
    for run in worker:
        r = run["off"]
        rows.append(f"| worker: ≥ 70% of bare bulk-upsert loops at {r['transactions_per_message']} transactions per message, "
                    f"same concurrency ({r['concurrency']}) | {r['ratio']:.0%} ({r['worker_tx_per_s']:.0f} vs "
                    f"{r['bare_tx_per_s']:.0f} transactions/s) | {verdict(r['ratio'] >= 0.7)} |")
    for run in worker:
        off, on = run["off"], run["on"]
        if off["transactions_per_message"] not in COMBINED_WORKER_SHAPES:
            continue
        gain = on["worker_messages_per_s"] / off["worker_messages_per_s"]
        rows.append(f"| worker: combining at least doubles pushes/s and transactions/s at "
                    f"{off['transactions_per_message']} transactions per push | {gain:.2f}× "
                    f"({on['worker_messages_per_s']:.0f} vs {off['worker_messages_per_s']:.0f} pushes/s, "
                    f"{on['worker_tx_per_s']:.0f} vs {off['worker_tx_per_s']:.0f} transactions/s; "
                    f"{on['messages'] / max(on['broker_messages'], 1):.1f} pushes per broker message) | "
                    f"{verdict(gain >= 2.0)} |")
    return rows


def worker_runs(worker):
    """(mode, result) of every run of `worker_shapes`, shape by shape,
    combining off then on."""
    for run in worker:
        for mode in WORKER_MODES:
            yield mode, run[mode]


def worker_section(worker):
    first = worker[0]["off"]
    out = ["## Worker", "",
           f"{first['concurrency']} worker pipelines against {first['concurrency']} bare loops (equal concurrency), "
           "one run per shape and mode, the same RabbitMQ and MongoDB-wire server. The queue is filled first, "
           f"{first.get('publish_concurrency', 256)} publishes in flight, with combining off (one broker message per push) "
           "or on (the API's default: concurrent pushes combined into bundles). The worker decodes, validates, folds, "
           "writes one transaction with the dedup markers and acks; the bare loop bulk-upserts the same bucket "
           "documents (no queue, transaction or dedup), in batches of as many pushes as the worker's batches held "
           "on average.", "",
           "| transactions per push | pushes | combining | broker messages | worker pushes/s | worker tx/s | bare pushes/s "
           "| bare tx/s | worker / bare |",
           "|---|---|---|---|---|---|---|---|---|"]
    for mode, r in worker_runs(worker):
        out.append(f"| {r['transactions_per_message']} | {r['messages']} | {mode} | {r['broker_messages']} | "
                   f"{r['worker_messages_per_s']:.0f} | {r['worker_tx_per_s']:.0f} | {r['bare_messages_per_s']:.0f} | "
                   f"{r['bare_tx_per_s']:.0f} | {r['ratio']:.0%} |")
    out += ["", "Where a push's time goes: pipeline time per push (µs), from the worker's own metrics "
            "(`inlet_worker_stage_duration_seconds`, `inlet_worker_mongo_write_duration_seconds`, "
            "`inlet_worker_batch_duration_seconds`). `check`: decode and validate; `dedup`: the applied-marker "
            "lookup; `write`: the transaction (session, markers, bulk upserts, commit, conflict retries); "
            "`settle`: the acks; `rest of batch`: folding and waiting for the turn to write (the pipelines of a worker "
            "take turns, one transaction attempt at a time); `between batches`: waiting for and collecting deliveries (linger).", "",
            "| transactions per push | combining | pushes per batch | check | dedup | write | settle | rest of batch "
            "| between batches | total |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, r in worker_runs(worker):
        b = r["breakdown_us_per_message"]
        parts = [b["check"], b["dedup"], b["write"], b["settle"], b["batch_other"], b["between_batches"]]
        out.append(f"| {r['transactions_per_message']} | {mode} | {b['messages_per_batch']:.1f} | "
                   + " | ".join(f"{x:.0f}" for x in parts) + f" | {sum(parts):.0f} |")
    out.append("")
    return out


def otlp_figures(otlp):
    """The OTLP comparison's headline figures: the median run of each route
    by req/s, and the median over runs of each route's CPU per request."""
    runs = otlp["runs"]
    f = {kind: median_run([r[kind] for r in runs], "rps") for kind in ("push", "otlp")}
    cpu = {kind: median([r[kind]["cpu_s_per_10k"] for r in runs]) for kind in ("push", "otlp")}
    non2xx = {kind: sum(r[kind]["non2xx"] for r in runs) for kind in ("push", "otlp")}
    worst_p99 = max(r["otlp"]["p99"] or float("inf") for r in runs)
    return {"push": f["push"], "otlp": f["otlp"], "ratio": f["otlp"]["rps"] / max(f["push"]["rps"], 1e-9),
            "cpu": cpu, "cpu_diff": cpu["otlp"] - cpu["push"], "non2xx": non2xx, "worst_p99": worst_p99,
            "spans_per_s": f["otlp"]["rps"] * otlp["bodies"]["spans"]}


def otlp_summary_rows(otlp):
    x = otlp_figures(otlp)
    p, o, bad = x["push"], x["otlp"], x["non2xx"]
    n = len(otlp["runs"])
    runs = f"median of {n} runs" if n > 1 else "one run"
    spans = otlp["bodies"]["spans"]
    return [
        f"| OTLP: `/v1/traces` (protobuf, {spans} spans) ≥ 80% of `/v1/push` ({spans} transactions) in req/s, same cached key, "
        f"{CONNECTIONS} connections, every answer 2xx | {x['ratio']:.0%} ({o['rps']:.0f} vs {p['rps']:.0f} req/s, "
        f"{x['spans_per_s']:.0f} spans/s; {runs}); non-2xx: {bad['otlp']} OTLP, {bad['push']} push "
        f"| {verdict(x['ratio'] >= 0.8 and bad['otlp'] == 0 and bad['push'] == 0)} |",
        f"| OTLP: `/v1/traces` p99 < 25 ms at {CONNECTIONS} connections, every answer 2xx | {o['p99']:.1f} ms "
        f"(worst run {x['worst_p99']:.1f} ms; `/v1/push` {p['p99']:.1f} ms); {bad['otlp']} non-2xx answers "
        f"| {verdict(o['p99'] is not None and o['p99'] < 25 and bad['otlp'] == 0)} |",
    ]


def otlp_criterion(crit, spans):
    """(decode+map ns, serialise ns) per request of `spans` spans from the
    inlet-otlp criterion bench of this run, None where it did not run."""
    by_id = {c["id"]: c["median_ns"] for c in crit}
    return (by_id.get(f"otlp/traces/Protobuf/decode+map/{spans}"),
            by_id.get(f"otlp/traces/serialize_batches/{spans}"))


def otlp_section(otlp, crit):
    """The report's OTLP section; every number from this run."""
    x = otlp_figures(otlp)
    p, o, cpu = x["push"], x["otlp"], x["cpu"]
    b = otlp["bodies"]
    spans = b["spans"]
    n = len(otlp["runs"])
    lines = ["## OTLP traces vs push", ""]
    w = lines.append
    w(f"One `inlet api` and one cached key per run serve both routes at {CONNECTIONS} connections:")
    w(f"`/v1/push` with a JSON batch of {b['push_transactions']} transactions ({b['push_json_bytes']} bytes; the batch")
    w("the OTLP export maps onto, so both routes carry the same samples) and `/v1/traces` with a protobuf")
    w(f"export of {spans} SERVER spans ({b['protobuf_bytes']} bytes, `inlet_otlp::example::traces`), both written")
    w("by `otlp-body`. The queue is purged between the two measurements of a run, and the order alternates")
    w("from run to run.")
    w(f"Rows: the median run of each route by req/s ({'median of ' + str(n) + ' runs' if n > 1 else 'one run'});"
      " CPU: the median over runs.")
    w("")
    w("| | req/s | samples/s | p50 ms | p99 ms | API CPU s / 10k req | API cores | RabbitMQ cores | wrk cores | non-2xx |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for kind, r in (("push", p), ("otlp", o)):
        w(f"| {otlp['titles'][kind]} | {r['rps']:.0f} | {r['rps'] * spans:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
          f"{cpu[kind]:.3f} | {r['cores_server']:.2f} | {r['cores_broker']:.2f} | {r['cores_wrk']:.2f} | "
          f"{x['non2xx'][kind]} |")
    w(f"| OTLP / push | {x['ratio']:.0%} | | | | {cpu['otlp'] - cpu['push']:+.3f} | | | | |")
    w("")
    w(f"OTLP carried {x['spans_per_s']:.0f} spans/s. Its API CPU per 10k requests was {cpu['otlp']:.3f} s against")
    w(f"push's {cpu['push']:.3f} s: a difference of {x['cpu_diff']:+.3f} s per 10k requests "
      f"({x['cpu_diff'] / 10_000 * 1e6:+.1f} µs per request),")
    w("what decoding the protobuf, mapping it and serialising the batch for the queue cost beyond push's")
    w("own JSON validation (both publish one message per request).")
    dm, ser = otlp_criterion(crit, spans)
    if dm is not None and ser is not None:
        per_10k = (dm + ser) * 10_000 / 1e9
        w(f"Criterion in this run, one core, {spans} spans: decode+map {fmt_ns(dm)} + serialise {fmt_ns(ser)} = "
          f"{fmt_ns(dm + ser)} per request, {per_10k:.3f} CPU s per 10k requests"
          f" ({per_10k / max(cpu['otlp'], 1e-9):.0%} of OTLP's measured API CPU per request).")
    else:
        w("Criterion's `otlp/traces` figures are not in this run's results (see the failures below).")
    w("")
    w("Every run (order: which route was measured first):")
    w("")
    w("| run | order | push req/s | OTLP req/s | OTLP / push | push p99 ms | OTLP p99 ms | push CPU s / 10k | OTLP CPU s / 10k |")
    w("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(otlp["runs"]):
        rp, ro = r["push"], r["otlp"]
        w(f"| {i + 1} | {' then '.join(r['order'])} | {rp['rps']:.0f} | {ro['rps']:.0f} | {ro['rps'] / max(rp['rps'], 1e-9):.0%} | "
          f"{rp['p99']:.2f} | {ro['p99']:.2f} | {rp['cpu_s_per_10k']:.3f} | {ro['cpu_s_per_10k']:.3f} |")
    w("")
    return lines


def combining_figures(by_depth, off):
    """Per depth: the median runs of (b) bare publish, (c) combining on and
    (d) combining off."""
    return {d: (median_run(bs, "msgs_per_s"), median_run(cs, "rps"), median_run(off[d], "rps"))
            for d, (bs, cs) in by_depth.items()}


def combining_summary_rows(by_depth, off):
    rows = []
    for d, (b, c, o) in combining_figures(by_depth, off).items():
        bad = sum(r["non2xx"] for r in by_depth[d][1])
        ratio = c["rps"] / b["msgs_per_s"]
        rows.append(f"| push, combining on: ≥ 1.5× the bare one-message-per-push confirmed-publish ceiling at depth {d}, "
                    f"p99 < 25 ms, every answer 2xx | {ratio:.2f}× ({c['rps']:.0f} req/s vs {b['msgs_per_s']:.0f} msgs/s), "
                    f"p99 {c['p99']:.1f} ms, {c['pushes_per_message']:.1f} pushes per message, {bad} non-2xx; "
                    f"combining off: {o['rps'] / b['msgs_per_s']:.2f}× | "
                    f"{verdict(ratio >= 1.5 and c['p99'] is not None and c['p99'] < 25 and bad == 0)} |")
    return rows


def combining_section(by_depth, off):
    lines = ["## Combining pushes into fewer broker messages", ""]
    w = lines.append
    q = tomllib.loads((ROOT / "config" / "default.toml").read_text())["queue"]
    w(f"(c) is `/v1/push` as configured by default (`[queue] combine_in_flight` {q['combine_in_flight']}, "
      f"`combine_max_parts` {q['combine_max_parts']}, `combine_linger_us` {q['combine_linger_us']}):")
    w("while that many publishes await confirms, concurrent pushes gather into one broker message, published")
    w("when a confirm frees a place (or it is full, or the linger passed). (d) is the")
    w("same with `combine_max_parts = 1`, one message per push. (b) is bare lapin publishing one")
    w("confirmed message per push: the ceiling of one-message-per-push designs. Runs interleaved with")
    w("the push path's; medians:")
    w("")
    w("| depth | (b) msgs/s | (c) on req/s | (c) p50 / p99 ms | pushes per message | (d) off req/s | (d) p50 / p99 ms | (c) / (b) | (c) / (d) | RabbitMQ µs CPU per push, on / off |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for d, (b, c, o) in combining_figures(by_depth, off).items():
        w(f"| {d} | {b['msgs_per_s']:.0f} | {c['rps']:.0f} | {c['p50']:.2f} / {c['p99']:.2f} | {c['pushes_per_message']:.1f} | "
          f"{o['rps']:.0f} | {o['p50']:.2f} / {o['p99']:.2f} | {c['rps'] / b['msgs_per_s']:.2f}× | {c['rps'] / o['rps']:.2f}× | "
          f"{c['cores_broker'] / max(c['rps'], 1) * 1e6:.0f} / {o['cores_broker'] / max(o['rps'], 1) * 1e6:.0f} |")
    w("")
    w("Every (d) run: " + "; ".join(
        f"depth {d} run {i + 1}: {r['rps']:.0f} req/s, p99 {r['p99']:.1f} ms, {r['non2xx']} non-2xx"
        for d, runs in off.items() for i, r in enumerate(runs)) + ".")
    w("")
    return lines


def write_report(path, a, by_depth, off, otlp, designs, through_push, worker, sustained, scaling, syncs, crit, body_bytes,
                 push_keys):
    medians = {d: (median_run(bs, "msgs_per_s"), median_run(cs, "rps")) for d, (bs, cs) in by_depth.items()}
    b, c = medians[CONNECTIONS]
    bs, cs = by_depth[CONNECTIONS]
    c_peak_rss = max(r["peak_rss_mib"] for _, runs in by_depth.values() for r in runs)
    c_worst_p99 = max(r["p99"] or float("inf") for r in cs)
    deep = max(PUSH_DEPTHS)
    d = {x["design"]: x for x in designs}
    v1, v2, inl = d["v1_mongo_per_decision"], d["v2_redis_per_decision"], d["inlet_cached_layered"]
    r1 = inl["decisions_per_s"] / v1["decisions_per_s"]
    r2 = inl["decisions_per_s"] / v2["decisions_per_s"]
    ratios = {d: mc["rps"] / min(a["rps"], mb["msgs_per_s"]) for d, (mb, mc) in medians.items()}
    push_ratio = min(ratios.values())
    # A push that was not answered 2xx is not a push the API can count:
    # any such answer fails the push verdicts at its depth.
    non2xx = {d: sum(r["non2xx"] for r in cs_d) for d, (_, cs_d) in by_depth.items()}
    auth_failures = sum(x.get("failures", 0) + x.get("warmup_failures", 0) for x in designs)
    mixed = c["rps"] / min(a["rps"], medians[deep][0]["msgs_per_s"])
    lines = []
    w = lines.append
    w("# Benchmarks")
    w("")
    w("Generated by `scripts/bench` in one run on one machine; ratios are the headline, absolute")
    w("numbers vary between machines. Load generator and servers share the machine's cores.")
    w("Every figure below was measured by this run.")
    w("")
    w(f"- commit measured: `{COMMIT}`")
    w(f"- run started {STARTED}")
    w("")
    w("## Machine")
    w("")
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    w(f"- CPU: {cpu.group(1) if cpu else '?'} × {os.cpu_count()} cores; memory {int(mem.group(1)) // 1024 // 1024 if mem else '?'} GiB")
    w(f"- OS: {platform.platform()}")
    for name, cmd in [("rustc", ["rustc", "--version"]), ("redis", ["redis-server", "--version"]),
                      ("wrk", ["wrk", "--version"])]:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except Exception:
            out = "?"
        w(f"- {name}: {out}")
    w(f"- RabbitMQ: {AMQP.split('@')[-1]}; MongoDB-wire server: SecantusDB at {MONGO.split('@')[-1]}")
    w(f"- wrk: 2 threads, {CONNECTIONS} connections ({' and '.join(str(d) for d in PUSH_DEPTHS)} for the push comparison), {DURATION}; push body {body_bytes} bytes of JSON (identity)")
    w("")
    w("## Summary: targets")
    w("")
    w("| target | measured | |")
    w("|---|---|---|")
    runs = f"median of {len(cs)} runs" if len(cs) > 1 else "one run"
    for d, (mb, mc) in medians.items():
        bad = non2xx[d]
        w(f"| push: Inlet ≥ 80% of min(bare actix, bare publish) in req/s, both at depth {d}, every answer 2xx | {ratios[d]:.0%} ({mc['rps']:.0f} vs min({a['rps']:.0f}, {mb['msgs_per_s']:.0f}); {runs} of (b) and (c)); {bad} non-2xx answers in (c) at this depth | {verdict(ratios[d] >= 0.8 and bad == 0)} |")
    w(f"| push: p99 < 25 ms at {CONNECTIONS} connections, every answer 2xx | {c['p99']:.1f} ms (median run; worst run {c_worst_p99:.1f} ms); {non2xx[CONNECTIONS]} non-2xx answers | {verdict(c['p99'] is not None and c['p99'] < 25 and non2xx[CONNECTIONS] == 0)} |")
    for row in combining_summary_rows(by_depth, off):
        w(row)
    w(f"| push: API peak RSS < 100 MiB under load | {c_peak_rss:.0f} MiB (highest of the runs) | {verdict(c_peak_rss < 100)} |")
    for line in otlp_summary_rows(otlp):
        w(line)
    w(f"| auth: Inlet ≥ 20× v1 in decisions/s, no failed lookup | {r1:.1f}×; {auth_failures} failed lookups or decisions | {verdict(r1 >= 20 and auth_failures == 0)} |")
    w(f"| auth: Inlet ≥ 5× v2 in decisions/s, no failed lookup | {r2:.1f}×; {auth_failures} failed lookups or decisions | {verdict(r2 >= 5 and auth_failures == 0)} |")
    for row in worker_summary_rows(worker):
        w(row)
    for row in sustained_summary_rows(sustained):
        w(row)
    for size, ratio in publisher_ratios(crit):
        w(f"| queue: `Publisher` ≥ 90% of bare lapin, {size} B persistent confirmed (criterion) | {ratio:.0%} | {verdict(ratio >= 0.9)} |")
    w("")
    w("## Push path")
    w("")
    w("| | req/s | p50 ms | p99 ms | CPU s / 10k req | peak RSS MiB |")
    w("|---|---|---|---|---|---|")
    w(f"| (a) bare actix-web handler (same route, reads the body, 202) | {a['rps']:.0f} | {a['p50']:.2f} | {a['p99']:.2f} | {a['cpu_s_per_10k']:.2f} | {a['peak_rss_mib']:.0f} |")
    for d, (mb, mc) in medians.items():
        w(f"| (b) bare lapin confirmed publish, {d} in flight (msgs/s) | {mb['msgs_per_s']:.0f} | | | | |")
        w(f"| (c) Inlet `/v1/push`, cached key, {d} connections (auth, validate, publish, confirm) | {mc['rps']:.0f} | {mc['p50']:.2f} | {mc['p99']:.2f} | {mc['cpu_s_per_10k']:.2f} | {mc['peak_rss_mib']:.0f} |")
    w("")
    all_c = [r for _, runs in by_depth.values() for r in runs]
    w(f"Non-2xx answers during (c), all runs: {sum(r['non2xx'] for r in all_c)}. "
      f"Socket errors: {'; '.join(r['socket_errors'] for r in all_c if r['socket_errors']) or 'none'}.")
    w("")
    w("(b) and (c) are compared at the same depth: (c) can never have more publishes in flight than wrk has")
    w("connections, since each push waits for its own confirm. (b) runs for as long as a wrk run, so both")
    w(f"fill the queue alike. For comparison with earlier reports: (c) at {CONNECTIONS} connections against")
    w(f"(b) at {deep} in flight is {mixed:.0%}.")
    w("")
    w("Every run of (b) and (c), interleaved in this order (the rows above are the median runs):")
    w("")
    w("| depth | run | (b) msgs/s | (c) req/s | (c) p50 ms | (c) p99 ms | (c) / (b) | (c) RabbitMQ µs CPU per msg |")
    w("|---|---|---|---|---|---|---|---|")
    for d, (bs_d, cs_d) in by_depth.items():
        for i, (rb, rc) in enumerate(zip(bs_d, cs_d)):
            w(f"| {d} | {i + 1} | {rb['msgs_per_s']:.0f} | {rc['rps']:.0f} | {rc['p50']:.2f} | {rc['p99']:.2f} | "
              f"{rc['rps'] / rb['msgs_per_s']:.0%} | {rc['cores_broker'] / max(rc['rps'], 1) * 1e6:.0f} |")
    w("")
    w(f"Where the {os.cpu_count()} cores went (average cores busy during the measured run):")
    w("")
    w("| run | server | RabbitMQ | wrk |")
    w("|---|---|---|---|")
    w(f"| (a) bare actix | {a['cores_server']:.2f} | {a['cores_broker']:.2f} | {a['cores_wrk']:.2f} |")
    for d, (_, mc) in medians.items():
        w(f"| (c) Inlet `/v1/push`, {d} connections | {mc['cores_server']:.2f} | {mc['cores_broker']:.2f} | {mc['cores_wrk']:.2f} |")
    w("")
    for line in cores_prose(a, medians, by_depth, push_ratio):
        w(line)
    w("")
    for line in combining_section(by_depth, off):
        w(line)
    for line in otlp_section(otlp, crit):
        w(line)
    w("## Auth designs: the incident's history side by side")
    w("")
    w(f"Harness: {inl['tasks']} concurrent tasks over {inl['keys']} keys for {inl['seconds']:.1f} s each "
      "(the measured run), same stores. Only a lookup that found the key, or a decision that accepted it,")
    w("counts as a decision; every other answer is a failure.")
    w("")
    w("| design | decisions/s | failures (warm-up) | p50 µs | p99 µs | vs v1 | vs v2 |")
    w("|---|---|---|---|---|---|---|")
    for x in (v1, v2, inl):
        w(f"| {x['design']} | {x['decisions_per_s']:.0f} | {x['failures']} ({x['warmup_failures']}) | {x['p50_us']:.0f} | {x['p99_us']:.0f} | "
          f"{x['decisions_per_s'] / v1['decisions_per_s']:.1f}× | {x['decisions_per_s'] / v2['decisions_per_s']:.1f}× |")
    w("")
    w(f"Through `/v1/push` ({push_keys} keys round robin; v1 and v2 emulated with a decision cache of "
      f"{AUTH_PUSH_CONFIGS['v1_mongo_per_decision']['INLET__AUTH__CACHE_MAX_ENTRIES']} entry, so every push asks the store):")
    w("")
    w("| design | req/s | p50 ms | p99 ms |")
    w("|---|---|---|---|")
    for name, r in through_push.items():
        w(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} |")
    w("")
    for line in worker_section(worker):
        w(line)
    for line in sustained_section(sustained):
        w(line)
    for line in scaling_section(scaling):
        w(line)
    w("## Key sync")
    w("")
    w("| keys | load into Redis, s | keys/s | (inserting them into MongoDB first took, s) |")
    w("|---|---|---|---|")
    for s in syncs:
        w(f"| {s['keys']} | {s['backfill_seconds']:.1f} | {s['keys_per_s']:.0f} | {s['mongo_insert_seconds']:.1f} |")
    w("")
    w("## Criterion micro-benchmarks")
    w("")
    w(f"From criterion's own files (`{criterion_home()}/<group>/<bench>/new/estimates.json`), written by this run.")
    w("")
    for line in criterion_table(crit):
        w(line)
    w("")
    if FAILURES:
        w("## Failures in this run")
        w("")
        for what, err in FAILURES:
            w(f"- **{what}** failed:")
            w("")
            w("```text")
            w(err)
            w("```")
        w("")
    w("## Commands")
    w("")
    w("```sh")
    for cmd in COMMANDS:
        w(cmd.replace(str(ROOT) + "/", ""))
    w("```")
    w("")
    w("## Raw outputs")
    for title, text in RAW:
        w("")
        w(f"### {title}")
        w("")
        w("```text")
        w(text.rstrip())
        w("```")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--criterion-report"]:
        found = criterion_results()
        if not found:
            raise SystemExit(f"no criterion results under {criterion_home()} (run cargo bench first)")
        print("\n".join(criterion_table(found)))
        for size, ratio in publisher_ratios(found):
            print(f"queue: Publisher / bare lapin at {size} B: {ratio:.0%}")
    elif sys.argv[1:]:
        raise SystemExit(__doc__)
    else:
        main()

//! The background task: forms batches, sends them one at a time, and
//! applies the retry policy's answers.
//!
//! One batch is in flight at a time. It gets its `batch_id` when it is
//! formed and its body is compressed once; every retry and probe re-sends
//! exactly those bytes, so the server's deduplication by `batch_id` turns a
//! retry after a lost response into a no-op. Items recorded meanwhile wait
//! in the bounded buffer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant as StdInstant};

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use crate::config::WhenAuthPaused;
use crate::policy::{self, BatchFate, Machine, Mode, Step, Timing};
use crate::shared::{Lifecycle, Shared, ShutdownReport};
use crate::status::{ClientEvent, ClientState, Counters, DropReason, LastError, lock};
use crate::transport::Transport;

const TARGET: &str = "inlet_client";

/// Bodies larger than this are compressed on the blocking pool rather
/// than on the runtime's worker thread.
const COMPRESS_INLINE_MAX: usize = 64 * 1024;

/// A batch being sent.
#[derive(Debug)]
struct Pending {
    id: String,
    /// The body as sent (compressed when gzip is on).
    body: Vec<u8>,
    items: usize,
    /// Attempts made so far.
    attempts: u32,
    /// Whether the last attempt got no answer (timeout, connection lost,
    /// or cut off by the shutdown deadline): the server may have it.
    unanswered: bool,
}

/// Bookkeeping of a shutdown in progress.
#[derive(Debug, Clone, Copy)]
struct Drain {
    deadline: Instant,
    started: Instant,
    accepted_before: u64,
}

impl Drain {
    fn of(life: Lifecycle) -> Option<Drain> {
        match life {
            Lifecycle::Running => None,
            Lifecycle::Draining {
                deadline,
                started,
                accepted_before,
            } => Some(Drain {
                deadline,
                started,
                accepted_before,
            }),
        }
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    transport: Transport,
    mut life: watch::Receiver<Lifecycle>,
    done: watch::Sender<Option<ShutdownReport>>,
) {
    let cfg = &shared.config;
    let mut machine = Machine::new(Timing {
        initial_backoff: cfg.initial_backoff,
        max_backoff: cfg.max_backoff,
        auth_grace: cfg.auth_grace,
        probe_interval: cfg.probe_interval,
    });
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut current: Option<Pending> = None;
    let mut next_tick = Instant::now() + cfg.flush_interval;
    let mut drain: Option<Drain> = None;

    loop {
        if drain.is_none()
            && let Some(d) = Drain::of(*life.borrow_and_update())
        {
            info!(target: TARGET, timeout_ms = d.deadline.saturating_duration_since(Instant::now()).as_millis() as u64, "shutting down: flushing the buffer");
            drain = Some(d);
        }
        let now = Instant::now();
        if drain.is_some_and(|d| now >= d.deadline) {
            break;
        }

        // 1. A batch to send?
        if current.is_none() {
            let requested = shared.flush_requested.swap(false, Ordering::AcqRel);
            let full = {
                let b = lock(&shared.buffer);
                b.has_full_batch(&shared.shape, shared.overhead)
            };
            if drain.is_some() || requested || full || now >= next_tick {
                if now >= next_tick {
                    next_tick = now + cfg.flush_interval;
                }
                current = form_batch(&shared).await;
            }
            if current.is_none() {
                if drain.is_some() {
                    break; // everything was flushed
                }
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = sleep_until(next_tick) => {}
                    r = life.changed() => if r.is_err() { return abandon(&shared) },
                }
                continue;
            }
        }

        // 2. Not before the policy allows it.
        if let Some(at) = machine.ready_at().map(Instant::from_std)
            && at > now
        {
            let wake_at = drain.map_or(at, |d| at.min(d.deadline));
            tokio::select! {
                _ = sleep_until(wake_at) => {}
                r = life.changed() => if r.is_err() { return abandon(&shared) },
            }
            continue;
        }

        // 3. Send it.
        let Some(batch) = current.as_mut() else {
            continue;
        };
        batch.attempts += 1;
        let items = batch.items as u64;
        let c = &shared.counters;
        Counters::add(&c.sent_batches, 1);
        Counters::add(&c.sent_items, items);
        if batch.attempts > 1 {
            Counters::add(&c.retried_batches, 1);
            Counters::add(&c.retried_items, items);
        }
        if machine.is_paused() {
            Counters::add(&c.probes, 1);
            debug!(target: TARGET, batch_id = %batch.id, "probing the paused key");
            shared.emit(&ClientEvent::Probing {
                batch_id: batch.id.clone(),
            });
        }
        let timeout = match drain {
            Some(d) => cfg
                .request_timeout
                .min(d.deadline.saturating_duration_since(now))
                .max(Duration::from_millis(1)),
            None => cfg.request_timeout,
        };
        let send = transport.send(batch.body.clone(), cfg.gzip, timeout);
        let result = tokio::select! {
            r = send => r,
            stop = interrupted(&mut life) => match stop {
                Interrupt::Abandoned => return abandon(&shared),
                Interrupt::Deadline => {
                    batch.unanswered = true;
                    break;
                }
            },
        };

        // 4. Apply the policy.
        batch.unanswered = result.is_err();
        let (fate, error) = match result {
            Ok(resp) => {
                let d = policy::classify(resp.status, resp.retry_after, resp.probe_after);
                let error = (d != BatchFate::Accept).then(|| LastError {
                    status: Some(resp.status),
                    code: resp.code().map(str::to_owned),
                    message: resp
                        .message()
                        .map_or_else(|| format!("HTTP {}", resp.status), str::to_owned),
                    at: std::time::SystemTime::now(),
                });
                (d, error)
            }
            Err(e) => (
                BatchFate::Retry { at_least: None },
                Some(LastError {
                    status: None,
                    code: Some(e.kind.to_owned()),
                    message: e.message,
                    at: std::time::SystemTime::now(),
                }),
            ),
        };
        let step = machine.on_answer(StdInstant::now(), fate, &mut rng);
        apply(&shared, &mut current, step, error, &machine);
    }

    // Stopped: by an empty buffer or by the deadline (possibly reached
    // during a request, before this loop saw the shutdown request).
    let Some(drain) = drain.or_else(|| Drain::of(*life.borrow())) else {
        return abandon(&shared);
    };
    let left_in_flight = current.take();
    let in_flight_items = left_in_flight.as_ref().map_or(0, |b| b.items as u64);
    let unconfirmed = match &left_in_flight {
        Some(b) if b.unanswered => in_flight_items,
        _ => 0,
    };
    let buffered = lock(&shared.buffer).clear() as u64;
    shared.stopped.store(true, Ordering::Release);
    let left = buffered + in_flight_items;
    shared.dropped(
        DropReason::Shutdown,
        in_flight_items,
        left_in_flight.map(|b| b.id),
    );
    shared.dropped(DropReason::Shutdown, buffered, None);
    {
        let mut status = lock(&shared.status);
        status.state = ClientState::Stopped;
        status.in_flight_items = 0;
    }
    let delivered = shared
        .counters
        .accepted_items
        .load(Ordering::Relaxed)
        .saturating_sub(drain.accepted_before);
    let deadline_reached = Instant::now() >= drain.deadline && left > 0;
    if left > 0 {
        warn!(target: TARGET, delivered, left, unconfirmed, "shut down with data left undelivered");
    } else {
        info!(target: TARGET, delivered, "shut down; everything was delivered");
    }
    shared.emit(&ClientEvent::Stopped { left_items: left });
    let report = ShutdownReport {
        delivered_items: delivered,
        left_items: left,
        unconfirmed_items: unconfirmed,
        deadline_reached,
        elapsed: drain.started.elapsed(),
        stats: shared.stats(),
    };
    done.send_replace(Some(report));
}

/// Takes the next batch out of the buffer, assigns its id and builds its
/// body. `None` when the buffer is empty.
async fn form_batch(shared: &Shared) -> Option<Pending> {
    let items = {
        let mut b = lock(&shared.buffer);
        b.take(&shared.shape, shared.overhead)
    };
    shared.full_warned.store(false, Ordering::Relaxed);
    if items.is_empty() {
        return None;
    }
    let id = uuid::Uuid::now_v7().to_string();
    let json = shared.header.assemble(&id, &items);
    let count = items.len();
    drop(items);
    let body = if !shared.config.gzip {
        json
    } else if json.len() <= COMPRESS_INLINE_MAX {
        inlet_domain::ContentEncoding::Gzip.encode(&json)
    } else {
        let compress = move || inlet_domain::ContentEncoding::Gzip.encode(&json);
        match tokio::task::spawn_blocking(compress).await {
            Ok(body) => body,
            // The blocking pool is gone (runtime shutting down): the
            // batch cannot be sent anyway.
            Err(_) => return None,
        }
    };
    lock(&shared.status).in_flight_items = count;
    debug!(target: TARGET, batch_id = %id, items = count, bytes = body.len(), "batch formed");
    Some(Pending {
        id,
        body,
        items: count,
        attempts: 0,
        unanswered: false,
    })
}

/// Applies one step of the state machine to the batch, the counters, the
/// state and the hook.
fn apply(
    shared: &Shared,
    current: &mut Option<Pending>,
    step: Step,
    error: Option<LastError>,
    machine: &Machine,
) {
    let Some(batch) = current.as_ref() else {
        return;
    };
    let c = &shared.counters;
    let items = batch.items as u64;
    let mut status = lock(&shared.status);
    if let Some(e) = &error {
        status.last_error = Some(e.clone());
    }
    status.state = match machine.mode() {
        Mode::Sending => ClientState::Sending,
        Mode::BackingOff { until } => ClientState::BackingOff { until },
        Mode::AuthPaused { until, since } => ClientState::AuthPaused { until, since },
    };
    let mut events = Vec::with_capacity(2);
    let mut finished = false;
    match step {
        Step::Delivered { resumed_after } => {
            Counters::add(&c.accepted_batches, 1);
            Counters::add(&c.accepted_items, items);
            debug!(target: TARGET, batch_id = %batch.id, items, attempt = batch.attempts, "batch accepted");
            if let Some(rejected_for) = resumed_after {
                info!(target: TARGET, rejected_for_s = rejected_for.as_secs(), "the key is accepted again: sending resumed");
                shared.dropping_while_paused.store(false, Ordering::Release);
                events.push(ClientEvent::Resumed { rejected_for });
            } else if batch.attempts > 1 {
                info!(target: TARGET, batch_id = %batch.id, attempt = batch.attempts, "delivered after retrying");
            }
            events.push(ClientEvent::Accepted {
                batch_id: batch.id.clone(),
                items: batch.items,
                attempt: batch.attempts,
            });
            finished = true;
        }
        Step::Dropped(reason) => {
            let e = error.as_ref();
            warn!(
                target: TARGET,
                batch_id = %batch.id,
                items,
                reason = reason.as_str(),
                code = e.and_then(|e| e.code.as_deref()),
                message = e.map(|e| e.message.as_str()),
                "batch rejected by the server: dropped, not retried"
            );
            c.dropped(reason, 1, items);
            events.push(ClientEvent::Dropped {
                reason,
                items,
                batch_id: Some(batch.id.clone()),
            });
            finished = true;
        }
        Step::Retry {
            delay, grace_left, ..
        } => {
            if let Some(error) = error {
                let log_at_warn = batch.attempts == 1;
                let (status_code, code) = (error.status, error.code.as_deref());
                if log_at_warn {
                    warn!(target: TARGET, batch_id = %batch.id, status = status_code, code, error = %error.message, delay_ms = delay.as_millis() as u64, auth_grace_left_s = grace_left.map(|g| g.as_secs()), "send failed; will retry");
                } else {
                    debug!(target: TARGET, batch_id = %batch.id, attempt = batch.attempts, status = status_code, code, error = %error.message, delay_ms = delay.as_millis() as u64, "send failed again; will retry");
                }
                events.push(ClientEvent::Retrying {
                    batch_id: batch.id.clone(),
                    attempt: batch.attempts,
                    delay,
                    auth_grace_left: grace_left,
                    error,
                });
            }
        }
        Step::Paused { until, entered } => {
            let probe_in = until.saturating_duration_since(StdInstant::now());
            if entered {
                let drop_mode = shared.config.when_auth_paused == WhenAuthPaused::Drop;
                warn!(
                    target: TARGET,
                    status = error.as_ref().and_then(|e| e.status),
                    code = error.as_ref().and_then(|e| e.code.as_deref()),
                    probe_in_s = probe_in.as_secs(),
                    keep_data = !drop_mode,
                    "the key has been rejected for the whole auth grace window: pausing, probing periodically"
                );
                if drop_mode {
                    shared.dropping_while_paused.store(true, Ordering::Release);
                }
                if let Some(error) = error {
                    events.push(ClientEvent::AuthPaused { until, error });
                }
            } else {
                debug!(target: TARGET, batch_id = %batch.id, probe_in_s = probe_in.as_secs(), "probe rejected; still paused");
            }
        }
    }
    if finished {
        status.in_flight_items = 0;
        *current = None;
    }
    drop(status);
    // In drop mode, a pause empties the buffer (outside the status lock).
    if shared.dropping_while_paused.load(Ordering::Acquire) {
        let n = lock(&shared.buffer).clear() as u64;
        shared.dropped(DropReason::AuthPausedDrop, n, None);
    }
    for e in &events {
        shared.emit(e);
    }
}

enum Interrupt {
    /// Every client handle is gone.
    Abandoned,
    /// The shutdown deadline passed.
    Deadline,
}

/// Resolves when an in-flight request must be abandoned. A shutdown request
/// arriving meanwhile only sets the deadline: the request goes on.
async fn interrupted(life: &mut watch::Receiver<Lifecycle>) -> Interrupt {
    loop {
        let state = *life.borrow_and_update();
        match state {
            Lifecycle::Running => {
                if life.changed().await.is_err() {
                    return Interrupt::Abandoned;
                }
            }
            Lifecycle::Draining { deadline, .. } => {
                tokio::select! {
                    _ = sleep_until(deadline) => return Interrupt::Deadline,
                    r = life.changed() => if r.is_err() { return Interrupt::Abandoned },
                }
            }
        }
    }
}

/// Every handle was dropped without `shutdown`: stop, counting what is
/// lost.
fn abandon(shared: &Shared) {
    let report = shared.abandoned_report();
    if report.left_items > 0 {
        warn!(target: TARGET, left = report.left_items, "client dropped without shutdown: buffered data discarded");
    }
}

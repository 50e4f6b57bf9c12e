//! The retry policy: what a response means for the batch, how long to wait,
//! and the client's state machine (`Sending` / `BackingOff` /
//! `AuthPaused`).
//!
//! Pure code: the time and the random source are arguments, so every rule
//! is unit-tested without a network or a clock.
//!
//! | answer | the batch | the client |
//! |---|---|---|
//! | 2xx | forgotten (accepted) | `Sending`; failures and the auth window reset |
//! | 400, 413, 415 | dropped, counted by reason | `Sending` |
//! | 401, 403 within `auth_grace` | kept, retried | `BackingOff` (full jitter) |
//! | 401, 403 after `auth_grace` | kept as the probe | `AuthPaused` until the next probe |
//! | 408, 429, 5xx, other statuses, timeouts, connection errors | kept, retried | `BackingOff` (full jitter, `Retry-After` as a minimum) |

use std::time::{Duration, Instant};

use inlet_domain::backoff::{self, Jitter};
use rand::Rng;

use crate::status::DropReason;

/// What an answer means for the batch that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFate {
    /// 2xx: the server has it.
    Accept,
    /// 400/413/415: sending it again cannot succeed.
    Drop(DropReason),
    /// 401/403: the key was rejected. The data is still good.
    AuthRejected {
        /// The server's `probe_after_s`, if it gave one.
        probe_after: Option<Duration>,
    },
    /// Anything transient: 429, 503, other 5xx, timeouts, connection
    /// errors, and statuses outside the contract.
    Retry {
        /// The server's `Retry-After` / `retry_after_s`, if any: the
        /// earliest moment to try again.
        at_least: Option<Duration>,
    },
}

/// Classifies an HTTP status (with the server's hints).
///
/// Statuses the contract does not list (404, 405, 409, 3xx…) are treated as
/// transient: they come from a misrouted request or a proxy in the middle
/// of a deploy far more often than from the data, and dropping data on
/// them would repeat the incident this crate exists for.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    probe_after: Option<Duration>,
) -> BatchFate {
    match status {
        200..=299 => BatchFate::Accept,
        400 => BatchFate::Drop(DropReason::Rejected400),
        413 => BatchFate::Drop(DropReason::TooLarge413),
        415 => BatchFate::Drop(DropReason::Unsupported415),
        401 | 403 => BatchFate::AuthRejected { probe_after },
        _ => BatchFate::Retry {
            at_least: retry_after,
        },
    }
}

/// The wait before retrying after the `n`th consecutive failure (`n` = 0
/// for the first retry), honouring the server's minimum.
///
/// Without a minimum: full jitter ([`Jitter::Full`]), a uniformly random
/// wait in `[0, ceiling(n)]` where the ceiling
/// ([`inlet_domain::backoff::ceiling`]) is `min(max, initial × 2ⁿ)`.
/// Spreading every wait over the whole range (rather than adding a little
/// noise to a fixed wait) is what keeps a fleet of agents that all failed
/// at the same moment from coming back at the same moment.
///
/// With a server minimum `m`: `max(m, full jitter)`, plus up to 10 % of
/// `m` more, so agents given the same `Retry-After` by a proxy that does
/// not jitter it do not return in lockstep either.
pub fn retry_delay<R: Rng + ?Sized>(
    initial: Duration,
    max: Duration,
    n: u32,
    at_least: Option<Duration>,
    rng: &mut R,
) -> Duration {
    let jitter = Jitter::Full.apply(backoff::ceiling(initial, max, n), initial, rng);
    match at_least {
        None => jitter,
        Some(min) => jitter.max(min) + (min / 10).mul_f64(rng.random::<f64>()),
    }
}

/// Timing knobs of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub auth_grace: Duration,
    pub probe_interval: Duration,
}

/// The client's sending state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Sending normally.
    Sending,
    /// Waiting before retrying the current batch.
    BackingOff { until: Instant },
    /// The key has been rejected for longer than the grace window; the
    /// current batch is the next probe.
    AuthPaused { until: Instant, since: Instant },
}

/// What to do with the current batch after an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Step {
    /// Accepted. `resumed_after` is set when this ended an auth pause (the
    /// pause's length).
    Delivered { resumed_after: Option<Duration> },
    /// Dropped, for this reason.
    Dropped(DropReason),
    /// Keep it; try again at `at` (`delay` from now).
    Retry {
        at: Instant,
        delay: Duration,
        /// Set for a rejection within the grace window: how much of the
        /// window is left.
        grace_left: Option<Duration>,
    },
    /// Keep it as the probe; try again at `until`. `entered` is true when
    /// this answer started the pause.
    Paused { until: Instant, entered: bool },
}

/// The state machine. One batch is in flight at a time, so the machine is
/// per client.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    timing: Timing,
    mode: Mode,
    /// Consecutive failed attempts (of any kind) since the last answer that
    /// was not a failure. Drives the backoff exponent.
    failures: u32,
    /// The first rejection of the current run of auth rejections; only a
    /// success clears it.
    auth_since: Option<Instant>,
    /// Whether the current run of rejections has paused the client (a
    /// transient answer to a probe does not end the pause's story: the
    /// next rejection continues it, the next success ends it).
    paused_in_run: bool,
}

impl Machine {
    pub(crate) fn new(timing: Timing) -> Machine {
        Machine {
            timing,
            mode: Mode::Sending,
            failures: 0,
            auth_since: None,
            paused_in_run: false,
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// The earliest moment the next attempt may be made (`None`: now).
    pub(crate) fn ready_at(&self) -> Option<Instant> {
        match self.mode {
            Mode::Sending => None,
            Mode::BackingOff { until } | Mode::AuthPaused { until, .. } => Some(until),
        }
    }

    /// Whether the next attempt is a probe of a paused key.
    pub(crate) fn is_paused(&self) -> bool {
        matches!(self.mode, Mode::AuthPaused { .. })
    }

    /// One more consecutive failure: wait [`retry_delay`] (at least the
    /// server's `at_least`), then retry the same batch.
    fn back_off<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        at_least: Option<Duration>,
        grace_left: Option<Duration>,
        rng: &mut R,
    ) -> Step {
        let delay = retry_delay(
            self.timing.initial_backoff,
            self.timing.max_backoff,
            self.failures,
            at_least,
            rng,
        );
        self.failures = self.failures.saturating_add(1);
        let at = now + delay;
        self.mode = Mode::BackingOff { until: at };
        Step::Retry {
            at,
            delay,
            grace_left,
        }
    }

    /// Applies one answer.
    pub(crate) fn on_answer<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        fate: BatchFate,
        rng: &mut R,
    ) -> Step {
        match fate {
            BatchFate::Accept => {
                let resumed_after = match self.auth_since {
                    Some(since) if self.paused_in_run => Some(now.saturating_duration_since(since)),
                    _ => None,
                };
                self.mode = Mode::Sending;
                self.failures = 0;
                self.auth_since = None;
                self.paused_in_run = false;
                Step::Delivered { resumed_after }
            }
            BatchFate::Drop(reason) => {
                // The server answered and decided about the data; nothing
                // transient is going on. Not a success, though: the auth
                // window stays as it was.
                self.mode = Mode::Sending;
                self.failures = 0;
                Step::Dropped(reason)
            }
            BatchFate::Retry { at_least } => self.back_off(now, at_least, None, rng),
            BatchFate::AuthRejected { probe_after } => {
                let since = *self.auth_since.get_or_insert(now);
                let rejected_for = now.saturating_duration_since(since);
                if rejected_for >= self.timing.auth_grace {
                    let entered = !self.paused_in_run;
                    self.paused_in_run = true;
                    let interval = probe_after.unwrap_or(self.timing.probe_interval);
                    // A little jitter so paused agents do not probe in
                    // lockstep; never earlier than the interval.
                    let until = now + interval + (interval / 20).mul_f64(rng.random::<f64>());
                    self.mode = Mode::AuthPaused { until, since };
                    self.failures = self.failures.saturating_add(1);
                    Step::Paused { until, entered }
                } else {
                    let grace_left = self.timing.auth_grace - rejected_for;
                    self.back_off(now, None, Some(grace_left), rng)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timing() -> Timing {
        Timing {
            initial_backoff: S,
            max_backoff: 60 * S,
            auth_grace: 300 * S,
            probe_interval: 300 * S,
        }
    }

    #[test]
    fn status_contract() {
        assert_eq!(classify(202, None, None), BatchFate::Accept);
        assert_eq!(classify(200, None, None), BatchFate::Accept);
        assert_eq!(
            classify(400, None, None),
            BatchFate::Drop(DropReason::Rejected400)
        );
        assert_eq!(
            classify(413, None, None),
            BatchFate::Drop(DropReason::TooLarge413)
        );
        assert_eq!(
            classify(415, None, None),
            BatchFate::Drop(DropReason::Unsupported415)
        );
        for s in [401, 403] {
            assert_eq!(
                classify(s, None, Some(S)),
                BatchFate::AuthRejected {
                    probe_after: Some(S)
                }
            );
        }
        for s in [408, 429, 500, 502, 503, 504, 404, 405, 302] {
            assert_eq!(
                classify(s, Some(2 * S), None),
                BatchFate::Retry {
                    at_least: Some(2 * S)
                },
                "{s}"
            );
        }
    }

    #[test]
    fn ceiling_doubles_and_caps() {
        let (i, m) = (S, 60 * S);
        let ceilings: Vec<u64> = (0..8)
            .map(|n| backoff::ceiling(i, m, n).as_secs())
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        // No overflow, however many failures.
        assert_eq!(backoff::ceiling(i, m, 40), m);
        assert_eq!(backoff::ceiling(i, m, u32::MAX), m);
        assert_eq!(
            backoff::ceiling(Duration::from_secs(u64::MAX / 2), Duration::MAX, 5),
            Duration::MAX
        );
        assert_eq!(
            backoff::ceiling(Duration::from_millis(100), m, 3),
            Duration::from_millis(800)
        );
    }

    #[test]
    fn full_jitter_covers_the_whole_range() {
        let mut rng = StdRng::seed_from_u64(7);
        let samples: Vec<Duration> = (0..2000)
            .map(|_| retry_delay(S, 60 * S, 2, None, &mut rng))
            .collect();
        assert!(samples.iter().all(|d| *d <= 4 * S));
        let min = samples.iter().min().unwrap();
        let max = samples.iter().max().unwrap();
        assert!(*min < Duration::from_millis(100), "{min:?}");
        assert!(*max > Duration::from_millis(3_900), "{max:?}");
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        assert!(
            (Duration::from_millis(1_800)..Duration::from_millis(2_200)).contains(&mean),
            "{mean:?}"
        );
    }

    #[test]
    fn server_minimum_is_honoured_and_spread() {
        let mut rng = StdRng::seed_from_u64(1);
        let min = 3 * S;
        let delays: Vec<Duration> = (0..500)
            .map(|_| retry_delay(S, 60 * S, 0, Some(min), &mut rng))
            .collect();
        assert!(delays.iter().all(|d| *d >= min && *d <= min + min / 10));
        let spread = *delays.iter().max().unwrap() - *delays.iter().min().unwrap();
        assert!(spread > Duration::from_millis(200), "{spread:?}");
        // A large jitter ceiling wins over a small minimum.
        let d = retry_delay(S, 60 * S, 10, Some(Duration::from_millis(1)), &mut rng);
        assert!(d <= 60 * S + Duration::from_millis(1));
    }

    #[test]
    fn transient_failures_back_off_then_success_resets() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut m = Machine::new(timing());
        let t0 = Instant::now();
        for n in 0..6 {
            match m.on_answer(t0, BatchFate::Retry { at_least: None }, &mut rng) {
                Step::Retry {
                    delay,
                    at,
                    grace_left,
                } => {
                    assert!(delay <= backoff::ceiling(S, 60 * S, n));
                    assert_eq!(at, t0 + delay);
                    assert_eq!(grace_left, None);
                    assert_eq!(m.ready_at(), Some(at));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            m.on_answer(t0, BatchFate::Accept, &mut rng),
            Step::Delivered {
                resumed_after: None
            }
        );
        assert_eq!(m.mode(), Mode::Sending);
        assert_eq!(m.ready_at(), None);
        // The exponent starts over.
        match m.on_answer(t0, BatchFate::Retry { at_least: None }, &mut rng) {
            Step::Retry { delay, .. } => assert!(delay <= S),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn auth_rejections_retry_within_grace_then_pause_and_probe() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut m = Machine::new(timing());
        let t0 = Instant::now();
        let rejected = BatchFate::AuthRejected { probe_after: None };
        // Within the grace window: ordinary backoff, the data is kept.
        match m.on_answer(t0, rejected, &mut rng) {
            Step::Retry { grace_left, .. } => assert_eq!(grace_left, Some(300 * S)),
            other => panic!("{other:?}"),
        }
        match m.on_answer(t0 + 100 * S, rejected, &mut rng) {
            Step::Retry { grace_left, .. } => assert_eq!(grace_left, Some(200 * S)),
            other => panic!("{other:?}"),
        }
        // A transient answer in between does not restart the window.
        assert!(matches!(
            m.on_answer(t0 + 150 * S, BatchFate::Retry { at_least: None }, &mut rng),
            Step::Retry { .. }
        ));
        // The whole window rejected: pause until the probe.
        let t1 = t0 + 300 * S;
        match m.on_answer(t1, rejected, &mut rng) {
            Step::Paused { until, entered } => {
                assert!(entered);
                assert!(
                    until >= t1 + 300 * S && until <= t1 + 315 * S,
                    "{:?}",
                    until - t1
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(m.is_paused());
        // The probe is rejected again: still paused, the server's
        // probe_after wins over the configured interval.
        let t2 = t1 + 300 * S;
        match m.on_answer(
            t2,
            BatchFate::AuthRejected {
                probe_after: Some(10 * S),
            },
            &mut rng,
        ) {
            Step::Paused { until, entered } => {
                assert!(!entered);
                assert!(until >= t2 + 10 * S && until <= t2 + 11 * S);
            }
            other => panic!("{other:?}"),
        }
        // The probe succeeds: resumed, everything reset.
        let t3 = t2 + 10 * S;
        assert_eq!(
            m.on_answer(t3, BatchFate::Accept, &mut rng),
            Step::Delivered {
                resumed_after: Some(t3 - t0)
            }
        );
        assert_eq!(m.mode(), Mode::Sending);
        // A new rejection starts a new window.
        match m.on_answer(t3 + S, rejected, &mut rng) {
            Step::Retry { grace_left, .. } => assert_eq!(grace_left, Some(300 * S)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn drops_do_not_reset_the_auth_window() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut m = Machine::new(Timing {
            auth_grace: 10 * S,
            ..timing()
        });
        let t0 = Instant::now();
        let rejected = BatchFate::AuthRejected { probe_after: None };
        assert!(matches!(
            m.on_answer(t0, rejected, &mut rng),
            Step::Retry { .. }
        ));
        assert_eq!(
            m.on_answer(t0 + S, BatchFate::Drop(DropReason::Rejected400), &mut rng),
            Step::Dropped(DropReason::Rejected400)
        );
        assert_eq!(m.mode(), Mode::Sending);
        assert!(matches!(
            m.on_answer(t0 + 10 * S, rejected, &mut rng),
            Step::Paused { entered: true, .. }
        ));
    }

    #[test]
    fn a_transient_answer_to_a_probe_keeps_the_pause_story() {
        let mut rng = StdRng::seed_from_u64(8);
        let mut m = Machine::new(Timing {
            auth_grace: S,
            ..timing()
        });
        let t0 = Instant::now();
        let rejected = BatchFate::AuthRejected { probe_after: None };
        assert!(matches!(
            m.on_answer(t0, rejected, &mut rng),
            Step::Retry { .. }
        ));
        assert!(matches!(
            m.on_answer(t0 + S, rejected, &mut rng),
            Step::Paused { entered: true, .. }
        ));
        // The probe meets a 503: back off (the key may be fine and the
        // server busy), but the window is not reset...
        let t1 = t0 + 400 * S;
        assert!(matches!(
            m.on_answer(t1, BatchFate::Retry { at_least: Some(2 * S) }, &mut rng),
            Step::Retry { delay, .. } if delay >= 2 * S
        ));
        assert!(!m.is_paused());
        // ...so the next rejection pauses again at once, as the same pause.
        assert!(matches!(
            m.on_answer(t1 + 3 * S, rejected, &mut rng),
            Step::Paused { entered: false, .. }
        ));
        // And a success ends it, measured from the first rejection.
        assert_eq!(
            m.on_answer(t1 + 400 * S, BatchFate::Accept, &mut rng),
            Step::Delivered {
                resumed_after: Some(t1 + 400 * S - t0)
            }
        );
    }

    #[test]
    fn zero_grace_pauses_at_once() {
        let mut rng = StdRng::seed_from_u64(6);
        let mut m = Machine::new(Timing {
            auth_grace: Duration::ZERO,
            ..timing()
        });
        assert!(matches!(
            m.on_answer(
                Instant::now(),
                BatchFate::AuthRejected { probe_after: None },
                &mut rng
            ),
            Step::Paused { entered: true, .. }
        ));
    }
}

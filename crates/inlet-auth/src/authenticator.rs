//! The decision: may this key push?
//!
//! ```text
//! raw key ──parse (format, CRC, HMAC; no I/O)──▶ malformed? ─▶ 401
//!    │
//!    ▼ digest
//! decision cache (moka; concurrent misses of one digest coalesce)
//!    │ miss
//!    ▼
//! primary (Redis / file) ── Found ──────────────────────────▶ record
//!    │ Absent (populated) ─▶ source of truth confirms ───────▶ record / unknown
//!    │ NotLoaded / error  ─▶ source of truth decides ────────▶ record / unknown
//!    ▼ nothing could decide
//! stale-if-error (accepted within stale_grace) ─▶ accept
//! provisional (signature proves Inlet issued it) ─▶ accept, provisional
//! otherwise ─▶ undecidable (503), never unknown
//! ```
//!
//! Only the source of truth (or, when no source of truth is configured,
//! the only store there is) can make a key "unknown". A store error, a
//! timeout, an unloaded store or a throttled confirmation is never a
//! verdict on the key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inlet_domain::{
    ApiKey, AuthMode, Grant, KeyDigest, KeyError, KeyRecord, KeyVerifier, Provenance,
    UndecidableReason, Verdict,
};
use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::AuthMetrics;
use crate::settings::AuthSettings;
use crate::store::{Lookup, Readiness, SharedStore, StoreError};

/// Which part of the chain decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The key's own bytes (missing, malformed, forged): no I/O at all.
    Local,
    /// The in-process decision cache.
    Cache,
    /// A store, by its name (`redis`, `mongo`, `file`, …).
    Store(&'static str),
    /// Stale-if-error: a recent acceptance, while every store fails.
    Stale,
    /// Provisional acceptance on the strength of the key's signature.
    Signature,
    /// Nothing decided (undecidable).
    None,
}

impl Source {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Cache => "cache",
            Source::Store(name) => name,
            Source::Stale => "stale",
            Source::Signature => "signature",
            Source::None => "none",
        }
    }
}

/// A verdict and who reached it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// Who decided.
    pub source: Source,
    /// The digest of the key, when it parsed (for envelopes and logs).
    pub digest: Option<KeyDigest>,
}

/// Whether the authenticator can decide about keys now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthReadiness {
    /// At least one store can decide.
    pub can_decide: bool,
    /// Whether any check has completed yet (not ready before the first).
    pub checked: bool,
    /// The primary store's state, if one is configured.
    pub primary: Option<(&'static str, Readiness)>,
    /// The source of truth's state, if configured.
    pub truth: Option<(&'static str, Readiness)>,
}

impl AuthReadiness {
    fn unchecked() -> Self {
        AuthReadiness {
            can_decide: false,
            checked: false,
            primary: None,
            truth: None,
        }
    }

    /// One-line description for readiness endpoints.
    pub fn describe(&self) -> String {
        if !self.checked {
            return "not checked yet".to_owned();
        }
        let mut parts = Vec::new();
        if let Some((name, r)) = &self.primary {
            parts.push(format!("primary {name}: {}", r.describe()));
        }
        if let Some((name, r)) = &self.truth {
            parts.push(format!("source of truth {name}: {}", r.describe()));
        }
        parts.join("; ")
    }
}

/// What the cache holds for a digest: only store answers that decide.
#[derive(Debug, Clone)]
enum Answer {
    /// A record, from the named store. `lagging`: the source of truth found
    /// a key the populated primary does not hold yet — no invalidation can
    /// reach this entry until the sync has seen the key, so it lives only
    /// as long as a miss.
    Found {
        record: Arc<KeyRecord>,
        store: &'static str,
        lagging: bool,
    },
    Absent(&'static str),
}

impl Answer {
    fn found(record: KeyRecord, store: &'static str) -> Answer {
        Answer::Found {
            record: Arc::new(record),
            store,
            lagging: false,
        }
    }
}

struct TtlPolicy {
    positive: Duration,
    negative: Duration,
}

impl Expiry<KeyDigest, Answer> for TtlPolicy {
    fn expire_after_create(
        &self,
        _key: &KeyDigest,
        value: &Answer,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(match value {
            Answer::Found {
                record,
                lagging: false,
                ..
            } if record.accepts() => self.positive,
            // A rejection is cached no longer than a miss: a key re-activated
            // by a writer whose invalidation never arrived is accepted again
            // within `negative_ttl_ms`.
            Answer::Found { .. } | Answer::Absent(_) => self.negative,
        })
    }
}

/// A token bucket guarding the source of truth against floods of unknown
/// keys.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The layered, cached authenticator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: KeyVerifier,
    primary: Option<SharedStore>,
    truth: Option<SharedStore>,
    cache: Cache<KeyDigest, Answer>,
    /// Last acceptance per digest; entries live `stale_grace`.
    stale: Option<moka::sync::Cache<KeyDigest, Arc<KeyRecord>>>,
    /// Confirmations of a primary's "absent" (sync lag, unknown keys).
    confirm_absent: Mutex<TokenBucket>,
    /// Confirmations of a primary's revoked/suspended record.
    confirm_rejection: Mutex<TokenBucket>,
    settings: AuthSettings,
    metrics: AuthMetrics,
    readiness: watch::Sender<AuthReadiness>,
    /// The primary's generation at the last readiness check (0: none yet).
    /// A change means a full reload happened, whether or not its
    /// invalidation message arrived.
    primary_generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("primary", &self.inner.primary)
            .field("truth", &self.inner.truth)
            .field("cache_entries", &self.inner.cache.entry_count())
            .finish()
    }
}

/// Builds an [`Authenticator`].
#[derive(Debug)]
pub struct AuthenticatorBuilder {
    verifier: KeyVerifier,
    primary: Option<SharedStore>,
    truth: Option<SharedStore>,
    settings: AuthSettings,
    metrics: Option<AuthMetrics>,
}

impl AuthenticatorBuilder {
    /// The store asked first (Redis, a key file…).
    pub fn primary(mut self, store: SharedStore) -> Self {
        self.primary = Some(store);
        self
    }

    /// The source of truth (MongoDB): fallback and confirmer of absences.
    pub fn source_of_truth(mut self, store: SharedStore) -> Self {
        self.truth = Some(store);
        self
    }

    /// Verifies key signatures (enables provisional acceptance).
    pub fn verifier(mut self, verifier: KeyVerifier) -> Self {
        self.verifier = verifier;
        self
    }

    /// Metrics to record into (default: unregistered).
    pub fn metrics(mut self, metrics: AuthMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Builds it. Fails only if metrics cannot be created.
    pub fn build(self) -> prometheus::Result<Authenticator> {
        let metrics = match self.metrics {
            Some(m) => m,
            None => AuthMetrics::unregistered()?,
        };
        let s = self.settings;
        let evictions = metrics.cache_evictions.clone();
        let cache = Cache::builder()
            .max_capacity(s.cache_max_entries)
            .expire_after(TtlPolicy {
                positive: Duration::from_secs(s.positive_ttl_s),
                negative: Duration::from_millis(s.negative_ttl_ms.max(1)),
            })
            .eviction_listener(move |_k, _v, cause| {
                let label = match cause {
                    RemovalCause::Expired => "expired",
                    RemovalCause::Size => "size",
                    RemovalCause::Explicit => "invalidated",
                    RemovalCause::Replaced => return,
                };
                evictions.with_label_values(&[label]).inc();
            })
            .build();
        let stale = (s.stale_grace_s > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(s.cache_max_entries)
                .time_to_live(Duration::from_secs(s.stale_grace_s))
                .build()
        });
        let (readiness, _) = watch::channel(AuthReadiness::unchecked());
        Ok(Authenticator {
            inner: Arc::new(Inner {
                verifier: self.verifier,
                primary: self.primary,
                truth: self.truth,
                cache,
                stale,
                confirm_absent: Mutex::new(TokenBucket::new(s.confirm_rate_per_s, s.confirm_burst)),
                confirm_rejection: Mutex::new(TokenBucket::new(
                    s.confirm_rate_per_s,
                    s.confirm_burst,
                )),
                settings: s,
                metrics,
                readiness,
                primary_generation: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }
}

impl From<&StoreError> for UndecidableReason {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::Timeout => UndecidableReason::Timeout,
            StoreError::Unavailable(_) => UndecidableReason::StoresUnavailable,
            StoreError::Corrupt { .. } => UndecidableReason::RecordUnreadable,
        }
    }
}

impl Authenticator {
    /// Starts building an authenticator with these settings.
    pub fn builder(settings: AuthSettings) -> AuthenticatorBuilder {
        AuthenticatorBuilder {
            verifier: KeyVerifier::none(),
            primary: None,
            truth: None,
            settings,
            metrics: None,
        }
    }

    /// Decides about a raw key as sent by an agent (`None`: no key sent).
    pub async fn decide(&self, raw: Option<&str>) -> Decision {
        let decision = self.decide_inner(raw).await;
        self.inner
            .metrics
            .decisions
            .with_label_values(&[decision.verdict.code(), decision.source.as_str()])
            .inc();
        decision
    }

    async fn decide_inner(&self, raw: Option<&str>) -> Decision {
        let key = match raw.map(|r| ApiKey::parse(r.trim(), &self.inner.verifier)) {
            None => return local(KeyError::Missing),
            Some(Err(e)) => return local(e),
            Some(Ok(k)) => k,
        };
        let digest = key.digest();
        let resolved = self
            .inner
            .cache
            .entry(digest)
            .or_try_insert_with(self.resolve(digest))
            .await;
        match resolved {
            Ok(entry) => {
                let fresh = entry.is_fresh();
                self.inner
                    .metrics
                    .cache_requests
                    .with_label_values(&[if fresh { "miss" } else { "hit" }])
                    .inc();
                let (verdict, store) = match entry.into_value() {
                    Answer::Found { record, store, .. } => {
                        let verdict = record.verdict(AuthMode::Confirmed);
                        if fresh
                            && matches!(verdict, Verdict::Accepted(_))
                            && let Some(stale) = &self.inner.stale
                        {
                            stale.insert(digest, record);
                        }
                        (verdict, store)
                    }
                    Answer::Absent(store) => (Verdict::UnknownKey, store),
                };
                Decision {
                    verdict,
                    source: if fresh {
                        Source::Store(store)
                    } else {
                        Source::Cache
                    },
                    digest: Some(digest),
                }
            }
            Err(reason) => {
                self.inner
                    .metrics
                    .cache_requests
                    .with_label_values(&["miss"])
                    .inc();
                let reason = *reason;
                self.inner
                    .metrics
                    .undecidable
                    .with_label_values(&[reason.as_str()])
                    .inc();
                self.rescue(&key, digest, reason)
            }
        }
    }

    /// When no store can decide: stale-if-error, then provisional, else
    /// undecidable. Never unknown.
    fn rescue(&self, key: &ApiKey, digest: KeyDigest, reason: UndecidableReason) -> Decision {
        if matches!(
            reason,
            UndecidableReason::RecordUnreadable | UndecidableReason::RejectionUnconfirmed
        ) {
            // Not an outage to ride out blindly: the source of truth
            // answered with a record nobody can read, or a store holds a
            // rejection nobody could confirm. Accepting would hand the worker
            // data it could only dead-letter or drop; the agent keeps it and
            // comes back instead.
            return Decision {
                verdict: Verdict::Undecidable(reason),
                source: Source::None,
                digest: Some(digest),
            };
        }
        if let Some(record) = self.inner.stale.as_ref().and_then(|s| s.get(&digest)) {
            return Decision {
                verdict: record.verdict(AuthMode::Confirmed),
                source: Source::Stale,
                digest: Some(digest),
            };
        }
        if self.inner.settings.provisional
            && key.provenance() == Provenance::Verified
            && let Some(key_id) = key.key_id()
        {
            return Decision {
                verdict: Verdict::Accepted(Grant {
                    key_id,
                    account_id: None,
                    rate_limit: None,
                    app: None,
                    mode: AuthMode::Provisional,
                }),
                source: Source::Signature,
                digest: Some(digest),
            };
        }
        Decision {
            verdict: Verdict::Undecidable(reason),
            source: Source::None,
            digest: Some(digest),
        }
    }

    /// Asks the stores about a digest (on a cache miss).
    ///
    /// A primary's acceptance is final; its rejection (absent, revoked,
    /// suspended) is a hint that the source of truth confirms before it
    /// becomes a verdict: a cache may accept, only the source of truth may
    /// reject.
    async fn resolve(&self, digest: KeyDigest) -> Result<Answer, UndecidableReason> {
        let s = &self.inner.settings;
        let mut reason = UndecidableReason::StoresUnavailable;
        if let Some(primary) = &self.inner.primary {
            match self.lookup(primary, &digest, s.primary_timeout_ms).await {
                Ok(Lookup::Found(r)) if r.accepts() => {
                    return Ok(Answer::found(r, primary.name()));
                }
                Ok(Lookup::Found(r)) => {
                    self.forget_stale(&digest, Some(&r));
                    // Unconfirmed, a rejection a store holds is no verdict —
                    // nor a key to accept provisionally: come back later.
                    return self
                        .confirm(Answer::found(r, primary.name()), &digest)
                        .await
                        .map_err(|e| match e {
                            UndecidableReason::RecordUnreadable => e,
                            _ => UndecidableReason::RejectionUnconfirmed,
                        });
                }
                Ok(Lookup::Absent) => {
                    self.forget_stale(&digest, None);
                    let answer = self.confirm(Answer::Absent(primary.name()), &digest).await;
                    return answer.map(|a| match a {
                        Answer::Found { record, store, .. } => Answer::Found {
                            record,
                            store,
                            lagging: true,
                        },
                        absent => absent,
                    });
                }
                Ok(Lookup::NotLoaded) => reason = UndecidableReason::NotPopulated,
                Err(e) => reason = UndecidableReason::from(&e),
            }
        }
        match &self.inner.truth {
            Some(truth) => self.ask_truth(truth, &digest).await,
            None => Err(reason),
        }
    }

    /// Turns a primary's rejection into a verdict by asking the source of
    /// truth, within the confirmation budget.
    async fn confirm(&self, hint: Answer, digest: &KeyDigest) -> Result<Answer, UndecidableReason> {
        let s = &self.inner.settings;
        let Some(truth) = self.inner.truth.as_ref().filter(|_| s.confirm_rejections) else {
            // No source of truth to ask, or confirmation turned off by the
            // operator: the primary's word is final.
            return Ok(hint);
        };
        let (bucket, kind) = match hint {
            // Separate budgets: revoked agents that keep pushing must not
            // starve the confirmations new keys need during sync lag.
            Answer::Absent(_) => (&self.inner.confirm_absent, "absent"),
            Answer::Found { .. } => (&self.inner.confirm_rejection, "rejection"),
        };
        if !bucket.lock().unwrap_or_else(|p| p.into_inner()).try_take() {
            self.inner.metrics.confirmations_throttled.inc();
            return if s.trust_primary_when_throttled {
                Ok(hint)
            } else {
                Err(UndecidableReason::ConfirmationThrottled)
            };
        }
        self.inner
            .metrics
            .confirmations
            .with_label_values(&[kind])
            .inc();
        self.ask_truth(truth, digest).await
    }

    async fn ask_truth(
        &self,
        truth: &SharedStore,
        digest: &KeyDigest,
    ) -> Result<Answer, UndecidableReason> {
        let timeout = self.inner.settings.truth_timeout_ms;
        match self.lookup(truth, digest, timeout).await {
            Ok(Lookup::Found(r)) => {
                if !r.accepts() {
                    self.forget_stale(digest, Some(&r));
                }
                Ok(Answer::found(r, truth.name()))
            }
            Ok(Lookup::Absent) => {
                self.forget_stale(digest, None);
                Ok(Answer::Absent(truth.name()))
            }
            Ok(Lookup::NotLoaded) => Err(UndecidableReason::NotPopulated),
            Err(e) => Err(UndecidableReason::from(&e)),
        }
    }

    /// A fresh answer that does not accept the key (absent, or a rejecting
    /// record at least as new as the remembered acceptance) ends its
    /// stale-if-error grace: stale-if-error never outlives a revocation.
    fn forget_stale(&self, digest: &KeyDigest, rejecting: Option<&KeyRecord>) {
        let Some(stale) = &self.inner.stale else {
            return;
        };
        let outdated = match (stale.get(digest), rejecting) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(accepted), Some(r)) => r.revision >= accepted.revision,
        };
        if outdated {
            stale.invalidate(digest);
        }
    }

    async fn lookup(
        &self,
        store: &SharedStore,
        digest: &KeyDigest,
        timeout_ms: u64,
    ) -> Result<Lookup, StoreError> {
        let started = Instant::now();
        let result =
            match tokio::time::timeout(Duration::from_millis(timeout_ms), store.lookup(digest))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(StoreError::Timeout),
            };
        let m = &self.inner.metrics;
        m.lookup_duration
            .with_label_values(&[store.name()])
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(Lookup::Found(_)) => "found",
            Ok(Lookup::Absent) => "absent",
            Ok(Lookup::NotLoaded) => "not_loaded",
            Err(e) => e.kind(),
        };
        m.lookups.with_label_values(&[store.name(), outcome]).inc();
        if let Err(e) = &result {
            tracing::debug!(store = store.name(), error = %e, "key lookup failed");
        }
        result
    }

    /// Forgets everything known about one key (revocation, creation).
    pub async fn invalidate(&self, digest: &KeyDigest) {
        self.inner.cache.invalidate(digest).await;
        if let Some(stale) = &self.inner.stale {
            stale.invalidate(digest);
        }
        self.inner
            .metrics
            .invalidations
            .with_label_values(&["key"])
            .inc();
    }

    /// Forgets everything (e.g. invalidations may have been missed while
    /// the invalidation channel was down). Stale entries are kept: they are
    /// what keeps valid keys working while stores fail.
    pub fn invalidate_all(&self) {
        self.inner.cache.invalidate_all();
        self.inner
            .metrics
            .invalidations
            .with_label_values(&["all"])
            .inc();
    }

    /// Forgets everything after a full reload of the primary, stale
    /// entries included: the reload may carry revocations this instance
    /// never heard of, and stale-if-error must not outlive them.
    pub fn invalidate_after_reload(&self) {
        self.inner.cache.invalidate_all();
        if let Some(stale) = &self.inner.stale {
            stale.invalidate_all();
        }
        self.inner
            .metrics
            .invalidations
            .with_label_values(&["reload"])
            .inc();
    }

    /// The metrics this authenticator records into.
    pub fn metrics(&self) -> &AuthMetrics {
        &self.inner.metrics
    }

    /// The current readiness (updated by [`Self::check_readiness`]).
    pub fn readiness(&self) -> AuthReadiness {
        self.inner.readiness.borrow().clone()
    }

    /// Follows readiness changes.
    pub fn watch_readiness(&self) -> watch::Receiver<AuthReadiness> {
        self.inner.readiness.subscribe()
    }

    /// Asks every store whether it can decide, and publishes the result.
    pub async fn check_readiness(&self) -> AuthReadiness {
        let timeout = Duration::from_millis(self.inner.settings.truth_timeout_ms.max(500));
        let probe = |store: SharedStore| async move {
            let state = match tokio::time::timeout(timeout, store.readiness()).await {
                Ok(r) => r,
                Err(_) => Readiness::Unreachable(StoreError::Timeout),
            };
            (store.name(), state)
        };
        let (primary, truth) = tokio::join!(
            async {
                match &self.inner.primary {
                    Some(p) => Some(probe(p.clone()).await),
                    None => None,
                }
            },
            async {
                match &self.inner.truth {
                    Some(t) => Some(probe(t.clone()).await),
                    None => None,
                }
            }
        );
        if let Some((_, Readiness::Populated { generation, .. })) = &primary {
            let before = self
                .inner
                .primary_generation
                .swap(*generation, std::sync::atomic::Ordering::Relaxed);
            if before != 0 && before != *generation {
                self.invalidate_after_reload();
            }
        }
        let m = &self.inner.metrics;
        for (name, state) in primary.iter().chain(truth.iter()) {
            m.store_ready
                .with_label_values(&[name])
                .set(i64::from(state.is_populated()));
        }
        let can_decide = primary
            .iter()
            .chain(truth.iter())
            .any(|(_, r)| r.is_populated());
        m.can_decide.set(i64::from(can_decide));
        m.cache_entries.set(self.inner.cache.entry_count() as i64);
        let report = AuthReadiness {
            can_decide,
            checked: true,
            primary,
            truth,
        };
        self.inner.readiness.send_replace(report.clone());
        report
    }

    /// Re-checks readiness every `readiness_interval_ms` until cancelled.
    pub async fn run_readiness_probe(self, cancel: CancellationToken) {
        let period = Duration::from_millis(self.inner.settings.readiness_interval_ms);
        loop {
            let before = self.readiness();
            let now = self.check_readiness().await;
            if now.can_decide != before.can_decide || now.describe() != before.describe() {
                tracing::info!(can_decide = now.can_decide, state = %now.describe(), "auth readiness changed");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }
}

fn local(e: KeyError) -> Decision {
    Decision {
        verdict: Verdict::Malformed(e),
        source: Source::Local,
        digest: None,
    }
}

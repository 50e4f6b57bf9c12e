//! The authenticator's decision logic, with scripted stores: every path,
//! and an exhaustive check that store failures never produce a rejection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Mode, Scripted, issuer, record, verifier};
use inlet_auth::{AuthSettings, Authenticator, MemoryStore, PrimaryStore, SharedStore, Source};
use inlet_domain::{
    AccountState, ApiKey, AuthMode, KeyDigest, KeyError, KeyId, KeyState, UndecidableReason,
    Verdict,
};

struct Setup {
    auth: Authenticator,
    primary: Arc<Scripted>,
    truth: Arc<Scripted>,
    primary_data: Arc<MemoryStore>,
    truth_data: Arc<MemoryStore>,
}

fn settings() -> AuthSettings {
    AuthSettings {
        primary_timeout_ms: 50,
        truth_timeout_ms: 50,
        ..AuthSettings::default()
    }
}

fn setup_with(s: AuthSettings) -> Setup {
    let primary_data = Arc::new(MemoryStore::new([]));
    let truth_data = Arc::new(MemoryStore::new([]));
    let primary = Scripted::new("redis", primary_data.clone() as SharedStore);
    let truth = Scripted::new("mongo", truth_data.clone() as SharedStore);
    let auth = Authenticator::builder(s)
        .primary(primary.clone())
        .source_of_truth(truth.clone())
        .verifier(verifier())
        .build()
        .unwrap();
    Setup {
        auth,
        primary,
        truth,
        primary_data,
        truth_data,
    }
}

fn setup() -> Setup {
    setup_with(settings())
}

fn new_key(s: &Setup, state: KeyState, acct: AccountState, in_primary: bool) -> ApiKey {
    let key = issuer().issue();
    let r = record(key.key_id().unwrap(), "acme", state, acct);
    s.truth_data.upsert(key.digest(), r.clone());
    if in_primary {
        s.primary_data.upsert(key.digest(), r);
    }
    key
}

async fn decide(s: &Setup, key: &ApiKey) -> inlet_auth::Decision {
    s.auth.decide(Some(key.expose_secret())).await
}

#[tokio::test]
async fn primary_accept_then_cached_accept() {
    let s = setup();
    let key = new_key(&s, KeyState::Active, AccountState::Active, true);
    let d = decide(&s, &key).await;
    assert!(matches!(d.verdict, Verdict::Accepted(ref g) if g.mode == AuthMode::Confirmed));
    assert_eq!(d.source, Source::Store("redis"));
    let d = decide(&s, &key).await;
    assert!(matches!(d.verdict, Verdict::Accepted(_)));
    assert_eq!(d.source, Source::Cache);
    assert_eq!(s.primary.calls(), 1);
    assert_eq!(s.truth.calls(), 0);
}

#[tokio::test]
async fn absent_in_primary_is_confirmed_by_truth() {
    let s = setup();
    // Sync lag: the key exists in the source of truth only.
    let fresh = new_key(&s, KeyState::Active, AccountState::Active, false);
    let d = decide(&s, &fresh).await;
    assert!(matches!(d.verdict, Verdict::Accepted(_)), "{d:?}");
    assert_eq!(d.source, Source::Store("mongo"));

    // Unknown everywhere: only now "unknown", and negatively cached.
    let stranger = issuer().issue();
    let d = decide(&s, &stranger).await;
    assert_eq!(d.verdict, Verdict::UnknownKey);
    assert_eq!(d.source, Source::Store("mongo"));
    let d = decide(&s, &stranger).await;
    assert_eq!((d.verdict, d.source), (Verdict::UnknownKey, Source::Cache));
    assert_eq!(s.truth.calls(), 2);
}

#[tokio::test]
async fn revoked_and_suspended() {
    let s = setup();
    let revoked = new_key(&s, KeyState::Revoked, AccountState::Active, true);
    assert_eq!(decide(&s, &revoked).await.verdict, Verdict::RevokedKey);
    let suspended = new_key(&s, KeyState::Active, AccountState::Suspended, true);
    assert_eq!(
        decide(&s, &suspended).await.verdict,
        Verdict::SuspendedAccount
    );
}

#[tokio::test]
async fn malformed_and_missing_keys_cost_no_store_call() {
    let s = setup();
    let forged =
        inlet_domain::KeyIssuer::new(inlet_domain::SigningSecret::new(1, &[9; 32]).unwrap())
            .issue();
    let cases: Vec<(Option<&str>, KeyError)> = vec![
        (None, KeyError::Missing),
        (Some(""), KeyError::Missing),
        (Some("inlet_tooshort"), KeyError::Length),
        (Some("no key can hold a bell \u{7}"), KeyError::Alphabet),
        (Some(forged.expose_secret()), KeyError::Signature),
    ];
    for (raw, expected) in cases {
        let d = s.auth.decide(raw).await;
        assert_eq!(d.verdict, Verdict::Malformed(expected), "{raw:?}");
        assert_eq!(d.source, Source::Local);
    }
    assert_eq!(s.primary.calls() + s.truth.calls(), 0);
}

#[tokio::test]
async fn cold_primary_falls_back_to_truth_never_unknown() {
    let s = setup();
    let key = new_key(&s, KeyState::Active, AccountState::Active, false);
    s.primary.set(Mode::Cold);
    let d = decide(&s, &key).await;
    assert!(matches!(d.verdict, Verdict::Accepted(_)));
    assert_eq!(d.source, Source::Store("mongo"));
    // A truly unknown key is unknown only because the truth says so.
    let d = decide(&s, &issuer().issue()).await;
    assert_eq!(d.verdict, Verdict::UnknownKey);
    assert_eq!(d.source, Source::Store("mongo"));
}

#[tokio::test]
async fn both_down_gives_undecidable_provisional_or_stale() {
    let s = setup_with(AuthSettings {
        positive_ttl_s: 1,
        ..settings()
    });
    let legacy = ApiKey::parse_format("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap();
    let seen_before = new_key(&s, KeyState::Active, AccountState::Active, true);
    assert!(matches!(
        decide(&s, &seen_before).await.verdict,
        Verdict::Accepted(_)
    ));
    let signed_never_seen = new_key(&s, KeyState::Active, AccountState::Active, true);

    s.primary.set(Mode::Down);
    s.truth.set(Mode::Timeout);
    s.auth.invalidate_all();

    // Legacy keys cannot be vouched for by a signature.
    let d = s.auth.decide(Some(legacy.expose_secret())).await;
    assert!(matches!(d.verdict, Verdict::Undecidable(_)), "{d:?}");
    assert_eq!(d.source, Source::None);

    // A signed key is accepted provisionally, with no account yet.
    let d = decide(&s, &signed_never_seen).await;
    match d.verdict {
        Verdict::Accepted(g) => {
            assert_eq!(g.mode, AuthMode::Provisional);
            assert_eq!(g.account_id, None);
            assert_eq!(Some(g.key_id), signed_never_seen.key_id());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.source, Source::Signature);

    // A key accepted within the stale grace stays accepted, confirmed.
    let d = decide(&s, &seen_before).await;
    assert_eq!(d.source, Source::Stale);
    assert!(
        matches!(d.verdict, Verdict::Accepted(ref g) if g.mode == AuthMode::Confirmed && g.account_id.is_some())
    );
}

#[tokio::test]
async fn provisional_can_be_turned_off() {
    let s = setup_with(AuthSettings {
        provisional: false,
        ..settings()
    });
    let key = new_key(&s, KeyState::Active, AccountState::Active, true);
    s.primary.set(Mode::Down);
    s.truth.set(Mode::Down);
    assert_eq!(
        decide(&s, &key).await.verdict,
        Verdict::Undecidable(UndecidableReason::StoresUnavailable)
    );
}

#[tokio::test]
async fn hanging_stores_time_out_into_undecidable() {
    let s = setup_with(AuthSettings {
        provisional: false,
        ..settings()
    });
    let key = ApiKey::parse_format("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap();
    s.primary.set(Mode::Hang);
    s.truth.set(Mode::Hang);
    let started = std::time::Instant::now();
    let d = s.auth.decide(Some(key.expose_secret())).await;
    assert_eq!(d.verdict, Verdict::Undecidable(UndecidableReason::Timeout));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the store timeouts"
    );
}

#[tokio::test]
async fn failures_are_not_cached() {
    let s = setup();
    let key = ApiKey::parse_format("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap();
    let r = record(
        KeyId::from_u64(5),
        "acme",
        KeyState::Active,
        AccountState::Active,
    );
    s.truth_data.upsert(key.digest(), r);
    s.primary.set(Mode::Down);
    s.truth.set(Mode::Down);
    assert!(matches!(
        s.auth.decide(Some(key.expose_secret())).await.verdict,
        Verdict::Undecidable(_)
    ));
    s.truth.set(Mode::Normal);
    assert!(matches!(
        s.auth.decide(Some(key.expose_secret())).await.verdict,
        Verdict::Accepted(_)
    ));
}

#[tokio::test]
async fn confirmations_are_rate_limited_without_saying_unknown() {
    let s = setup_with(AuthSettings {
        confirm_rate_per_s: 1,
        confirm_burst: 5,
        ..settings()
    });
    let mut unknown = 0;
    let mut throttled = 0;
    for i in 0..50u64 {
        let garbage = ApiKey::parse_format(&format!("legacy-garbage-key-{i:08}")).unwrap();
        match s.auth.decide(Some(garbage.expose_secret())).await.verdict {
            Verdict::UnknownKey => unknown += 1,
            Verdict::Undecidable(UndecidableReason::ConfirmationThrottled) => throttled += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(unknown <= 6, "burst 5 (+1 refilled): {unknown}");
    assert_eq!(unknown + throttled, 50);
    assert_eq!(s.truth.calls(), unknown);
    assert_eq!(s.auth.metrics().confirmations_throttled.get(), throttled);

    // The operator may choose to trust a populated primary instead.
    let s = setup_with(AuthSettings {
        confirm_rate_per_s: 1,
        confirm_burst: 1,
        trust_primary_when_throttled: true,
        ..settings()
    });
    for i in 0..5u64 {
        let garbage = ApiKey::parse_format(&format!("legacy-garbage-key-{i:08}")).unwrap();
        assert_eq!(
            s.auth.decide(Some(garbage.expose_secret())).await.verdict,
            Verdict::UnknownKey
        );
    }
    assert_eq!(s.truth.calls(), 1);
}

#[tokio::test]
async fn concurrent_misses_of_one_digest_make_one_store_call() {
    let s = setup();
    let key = new_key(&s, KeyState::Active, AccountState::Active, true);
    // Slow enough that all 1000 requests arrive while the first is in flight.
    s.primary.set_delay(Duration::from_millis(30));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let auth = s.auth.clone();
            let raw = key.expose_secret().to_owned();
            tokio::spawn(async move { auth.decide(Some(&raw)).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap().verdict, Verdict::Accepted(_)));
    }
    assert_eq!(s.primary.calls(), 1);
    assert_eq!(s.truth.calls(), 0);
}

#[tokio::test]
async fn invalidation_forgets_a_cached_decision() {
    let s = setup();
    let key = new_key(&s, KeyState::Active, AccountState::Active, true);
    assert!(matches!(
        decide(&s, &key).await.verdict,
        Verdict::Accepted(_)
    ));
    let revoked = record(
        key.key_id().unwrap(),
        "acme",
        KeyState::Revoked,
        AccountState::Active,
    );
    s.primary_data.upsert(key.digest(), revoked.clone());
    s.truth_data.upsert(key.digest(), revoked);
    assert!(
        matches!(decide(&s, &key).await.verdict, Verdict::Accepted(_)),
        "cached"
    );
    s.auth.invalidate(&key.digest()).await;
    assert_eq!(decide(&s, &key).await.verdict, Verdict::RevokedKey);
    // Revocation also removes the stale-if-error entry.
    s.primary.set(Mode::Down);
    s.truth.set(Mode::Down);
    s.auth.invalidate(&key.digest()).await;
    let d = decide(&s, &key).await;
    assert_ne!(d.source, Source::Stale);
}

#[tokio::test]
async fn readiness_means_can_decide() {
    let s = setup();
    assert!(!s.auth.readiness().checked && !s.auth.readiness().can_decide);
    assert!(s.auth.check_readiness().await.can_decide);
    s.primary.set(Mode::Cold);
    assert!(
        s.auth.check_readiness().await.can_decide,
        "truth can decide"
    );
    s.truth.set(Mode::Down);
    let r = s.auth.check_readiness().await;
    assert!(!r.can_decide, "{}", r.describe());
    s.primary.set(Mode::Normal);
    assert!(
        s.auth.check_readiness().await.can_decide,
        "a populated primary can decide"
    );
}

#[tokio::test]
async fn without_source_of_truth_the_primary_is_final_and_cold_is_undecidable() {
    let data = Arc::new(MemoryStore::cold());
    let primary = Scripted::new("file", data.clone() as SharedStore);
    let auth = Authenticator::builder(AuthSettings {
        primary: PrimaryStore::File,
        source_of_truth: false,
        provisional: false,
        ..settings()
    })
    .primary(primary.clone())
    .verifier(verifier())
    .build()
    .unwrap();
    let key = issuer().issue();
    assert_eq!(
        auth.decide(Some(key.expose_secret())).await.verdict,
        Verdict::Undecidable(UndecidableReason::NotPopulated),
        "cold and alone: never unknown"
    );
    data.replace([]);
    assert_eq!(
        auth.decide(Some(key.expose_secret())).await.verdict,
        Verdict::UnknownKey
    );
}

/// How far the primary is behind the source of truth about a valid key.
#[derive(Debug, Clone, Copy)]
enum Lag {
    /// The primary holds the same record.
    InSync,
    /// The primary does not hold the key yet (sync lag).
    Missing,
    /// The primary still holds the key as revoked (it was re-activated).
    StaleRevoked,
    /// The primary still holds the account as suspended (it was
    /// re-activated).
    StaleSuspended,
}

/// Exhaustive: for a valid key, with stores that either answer truthfully
/// or fail (cold, down, timeout, hang), in every combination, the verdict
/// is never a rejection. A primary that lags — missing the key, or still
/// holding an older rejection — is also a failure mode, as long as a source
/// of truth exists to confirm: a cache may accept, never reject.
#[tokio::test]
async fn no_store_failure_ever_yields_a_rejection() {
    let modes = [
        Mode::Normal,
        Mode::Cold,
        Mode::Down,
        Mode::Timeout,
        Mode::Hang,
    ];
    let lags = [
        Lag::InSync,
        Lag::Missing,
        Lag::StaleRevoked,
        Lag::StaleSuspended,
    ];
    // How often each expectation below was actually exercised, and which
    // verdicts the combinations produced: a loop that stopped deciding (or
    // a branch no combination reaches) fails here, not silently.
    let mut rescued = 0;
    let mut unconfirmed = 0;
    let mut accepted = 0;
    let mut undecidable = 0;
    for primary_mode in modes {
        for lag in lags {
            for truth_mode in modes {
                for signed in [true, false] {
                    for seen_before in [true, false] {
                        for provisional in [true, false] {
                            let s = setup_with(AuthSettings {
                                provisional,
                                primary_timeout_ms: 20,
                                truth_timeout_ms: 20,
                                ..AuthSettings::default()
                            });
                            let key = if signed {
                                issuer().issue()
                            } else {
                                ApiKey::parse_format(&format!("legacy-{:016x}", rand_u64()))
                                    .unwrap()
                            };
                            let key_id = key.key_id().unwrap_or(KeyId::from_u64(1));
                            let mut r =
                                record(key_id, "acme", KeyState::Active, AccountState::Active);
                            r.revision = 2;
                            s.truth_data.upsert(key.digest(), r.clone());
                            let stale = |k, a| {
                                let mut old = record(key_id, "acme", k, a);
                                old.revision = 1;
                                old
                            };
                            match lag {
                                Lag::InSync => s.primary_data.upsert(key.digest(), r),
                                Lag::Missing => {}
                                Lag::StaleRevoked => s.primary_data.upsert(
                                    key.digest(),
                                    stale(KeyState::Revoked, AccountState::Active),
                                ),
                                Lag::StaleSuspended => s.primary_data.upsert(
                                    key.digest(),
                                    stale(KeyState::Active, AccountState::Suspended),
                                ),
                            }
                            if seen_before {
                                let _ = s.auth.decide(Some(key.expose_secret())).await;
                                s.auth.invalidate_all();
                            }
                            s.primary.set(primary_mode);
                            s.truth.set(truth_mode);
                            let d = s.auth.decide(Some(key.expose_secret())).await;
                            assert!(
                                matches!(d.verdict, Verdict::Accepted(_) | Verdict::Undecidable(_)),
                                "primary {primary_mode:?} {lag:?}, truth {truth_mode:?}, \
                                 signed={signed}, seen={seen_before}, provisional={provisional}: {d:?}"
                            );
                            // A signed key is rescued, unless a store holds
                            // a rejection of it nobody could confirm: then
                            // the agent is asked to come back (503).
                            let holds_rejection = primary_mode == Mode::Normal
                                && matches!(lag, Lag::StaleRevoked | Lag::StaleSuspended);
                            if signed && provisional && !holds_rejection {
                                assert!(
                                    matches!(d.verdict, Verdict::Accepted(_)),
                                    "signed keys are rescued: {d:?}"
                                );
                                rescued += 1;
                            }
                            if holds_rejection && truth_mode != Mode::Normal {
                                assert_eq!(
                                    d.verdict,
                                    Verdict::Undecidable(UndecidableReason::RejectionUnconfirmed),
                                    "primary {primary_mode:?} {lag:?}, truth {truth_mode:?}"
                                );
                                unconfirmed += 1;
                            }
                            match d.verdict {
                                Verdict::Accepted(_) => accepted += 1,
                                _ => undecidable += 1,
                            }
                        }
                    }
                }
            }
        }
    }
    // Signed, provisional, no stale rejection in a normal primary: every
    // primary mode × lag except (Normal, Stale*) = 5 × 4 − 2 = 18, times 5
    // truth modes, times 2 (seen before or not).
    assert_eq!(rescued, 18 * 5 * 2, "rescue combinations exercised");
    // A stale rejection in a normal primary, truth not answering: 2 lags ×
    // 4 truth modes × 2 × 2 × 2.
    assert_eq!(
        unconfirmed,
        2 * 4 * 8,
        "unconfirmed-rejection combinations exercised"
    );
    assert!(
        accepted > 0 && undecidable > 0,
        "both outcomes occur: {accepted} accepted, {undecidable} undecidable"
    );
}

#[tokio::test]
async fn a_primary_rejection_is_confirmed_by_the_source_of_truth() {
    let s = setup();
    let legacy = |n: u32| ApiKey::parse_format(&format!("legacy-confirm-key-{n:06}")).unwrap();
    let put = |key: &ApiKey, primary: (KeyState, AccountState), truth: (KeyState, AccountState)| {
        let id = KeyId::from_u64(7);
        let mut old = record(id, "acme", primary.0, primary.1);
        old.revision = 1;
        s.primary_data.upsert(key.digest(), old);
        let mut new = record(id, "acme", truth.0, truth.1);
        new.revision = 2;
        s.truth_data.upsert(key.digest(), new);
    };
    use AccountState as A;
    use KeyState as K;

    // Re-activated in the source of truth; the primary still says revoked
    // or suspended: accepted, on MongoDB's word.
    let reactivated = legacy(1);
    put(
        &reactivated,
        (K::Revoked, A::Active),
        (K::Active, A::Active),
    );
    let d = decide(&s, &reactivated).await;
    assert!(matches!(d.verdict, Verdict::Accepted(_)), "{d:?}");
    assert_eq!(d.source, Source::Store("mongo"));
    let resumed = legacy(2);
    put(&resumed, (K::Active, A::Suspended), (K::Active, A::Active));
    assert!(matches!(
        decide(&s, &resumed).await.verdict,
        Verdict::Accepted(_)
    ));

    // Both agree: rejected, by the source of truth.
    let revoked = legacy(3);
    put(&revoked, (K::Revoked, A::Active), (K::Revoked, A::Active));
    let d = decide(&s, &revoked).await;
    assert_eq!(
        (d.verdict, d.source),
        (Verdict::RevokedKey, Source::Store("mongo"))
    );
    let suspended = legacy(4);
    put(
        &suspended,
        (K::Active, A::Suspended),
        (K::Active, A::Suspended),
    );
    let d = decide(&s, &suspended).await;
    assert_eq!(
        (d.verdict, d.source),
        (Verdict::SuspendedAccount, Source::Store("mongo"))
    );

    // The source of truth unreachable: the primary's rejection is no
    // verdict.
    let unconfirmed = legacy(5);
    put(
        &unconfirmed,
        (K::Revoked, A::Active),
        (K::Revoked, A::Active),
    );
    s.truth.set(Mode::Down);
    let d = decide(&s, &unconfirmed).await;
    assert_eq!(
        d.verdict,
        Verdict::Undecidable(UndecidableReason::RejectionUnconfirmed),
        "{d:?}"
    );
    // Signed or not: a key a store holds as revoked is never accepted
    // provisionally on its signature.
    let signed = issuer().issue();
    put(&signed, (K::Revoked, A::Active), (K::Revoked, A::Active));
    let d = decide(&s, &signed).await;
    assert_eq!(
        d.verdict,
        Verdict::Undecidable(UndecidableReason::RejectionUnconfirmed),
        "{d:?}"
    );
    s.truth.set(Mode::Normal);

    // Throttled confirmations: undecidable, unless the operator trusts the
    // primary.
    let s = setup_with(AuthSettings {
        confirm_rate_per_s: 1,
        confirm_burst: 1,
        ..settings()
    });
    let mut answers = Vec::new();
    for n in 10..14 {
        let key = legacy(n);
        let r = record(KeyId::from_u64(9), "acme", K::Revoked, A::Active);
        s.primary_data.upsert(key.digest(), r.clone());
        s.truth_data.upsert(key.digest(), r);
        answers.push(decide(&s, &key).await.verdict);
    }
    assert_eq!(answers[0], Verdict::RevokedKey);
    assert!(
        answers[1..]
            .iter()
            .all(|v| *v == Verdict::Undecidable(UndecidableReason::RejectionUnconfirmed)),
        "{answers:?}"
    );
    // …and revoked keys that keep pushing do not spend the budget new keys
    // need (sync lag: absent in the primary, known to the truth).
    let fresh = legacy(20);
    s.truth_data.upsert(
        fresh.digest(),
        record(KeyId::from_u64(21), "acme", K::Active, A::Active),
    );
    assert!(matches!(
        decide(&s, &fresh).await.verdict,
        Verdict::Accepted(_)
    ));
}

#[tokio::test]
async fn a_confirmed_rejection_is_cached_only_as_long_as_a_miss() {
    let s = setup();
    let key = legacy_key("legacy-negative-cache-01");
    let id = KeyId::from_u64(11);
    let revoked = record(id, "acme", KeyState::Revoked, AccountState::Active);
    s.primary_data.upsert(key.digest(), revoked.clone());
    s.truth_data.upsert(key.digest(), revoked);
    assert_eq!(decide(&s, &key).await.verdict, Verdict::RevokedKey);
    let d = decide(&s, &key).await;
    assert_eq!((d.verdict, d.source), (Verdict::RevokedKey, Source::Cache));

    // Re-activated in the source of truth by another writer; no
    // invalidation reaches this instance, and the primary is not updated.
    let mut active = record(id, "acme", KeyState::Active, AccountState::Active);
    active.revision = 2;
    s.truth_data.upsert(key.digest(), active);
    let started = std::time::Instant::now();
    loop {
        if matches!(decide(&s, &key).await.verdict, Verdict::Accepted(_)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still rejected after 2 s: the cached rejection outlived the negative TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_fresh_rejection_removes_the_stale_entry() {
    // From the source of truth.
    let s = setup();
    let key = new_key(&s, KeyState::Active, AccountState::Active, true);
    assert!(matches!(
        decide(&s, &key).await.verdict,
        Verdict::Accepted(_)
    ));
    let mut revoked = record(
        key.key_id().unwrap(),
        "acme",
        KeyState::Revoked,
        AccountState::Active,
    );
    revoked.revision = 2;
    s.truth_data.upsert(key.digest(), revoked.clone());
    s.primary.set(Mode::Down);
    s.auth.invalidate_all();
    assert_eq!(decide(&s, &key).await.verdict, Verdict::RevokedKey);
    s.truth.set(Mode::Down);
    s.auth.invalidate_all();
    let d = decide(&s, &key).await;
    assert_ne!(d.source, Source::Stale, "{d:?}");
    assert!(
        !matches!(d.verdict, Verdict::Accepted(ref g) if g.mode == AuthMode::Confirmed),
        "{d:?}"
    );

    // From the primary, while the source of truth cannot confirm it.
    let s = setup();
    let key = new_key(&s, KeyState::Active, AccountState::Active, true);
    assert!(matches!(
        decide(&s, &key).await.verdict,
        Verdict::Accepted(_)
    ));
    s.primary_data.upsert(key.digest(), revoked);
    s.truth.set(Mode::Down);
    s.auth.invalidate_all();
    let d = decide(&s, &key).await;
    assert_eq!(
        d.verdict,
        Verdict::Undecidable(UndecidableReason::RejectionUnconfirmed),
        "neither stale nor provisional: {d:?}"
    );
}

#[tokio::test]
async fn a_full_reload_forgets_stale_entries() {
    let s = setup();
    let key = new_key(&s, KeyState::Active, AccountState::Active, true);
    assert!(matches!(
        decide(&s, &key).await.verdict,
        Verdict::Accepted(_)
    ));
    // An ordinary flush of the cache keeps the stale entry…
    s.auth.invalidate_all();
    s.primary.set(Mode::Down);
    s.truth.set(Mode::Down);
    assert_eq!(decide(&s, &key).await.source, Source::Stale);
    // …a full reload of the primary does not: it may carry a revocation
    // this instance never saw.
    s.auth.invalidate_after_reload();
    let d = decide(&s, &key).await;
    assert_ne!(d.source, Source::Stale, "{d:?}");
}

#[tokio::test]
async fn an_unreadable_record_is_undecidable_with_its_own_reason_and_never_provisional() {
    let s = setup();
    let key = new_key(&s, KeyState::Active, AccountState::Active, false);
    s.truth.set(Mode::Corrupt);
    let d = decide(&s, &key).await;
    assert_eq!(
        d.verdict,
        Verdict::Undecidable(UndecidableReason::RecordUnreadable),
        "a signed key whose record cannot be read is not accepted provisionally: {d:?}"
    );
    assert_eq!(d.verdict.code(), "key_record_unreadable");
}

fn legacy_key(text: &str) -> ApiKey {
    ApiKey::parse_format(text).unwrap()
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(42);
    h.finish()
}

#[test]
fn digest_helper_matches() {
    // The digest stores are keyed by: SHA-256 of the key text, checked
    // against a value computed outside this code base
    // (`printf %s legacy-0123456789abcdef | sha256sum`).
    let key = ApiKey::parse_format("legacy-0123456789abcdef").unwrap();
    let expected = "7e0083cad3004e01dcf9d1149d2ce74f29e86706b8b4ddec5d401cabb7bb7f91";
    assert_eq!(key.digest().to_hex(), expected);
    assert_eq!(KeyDigest::of_secret(key.expose_secret()).to_hex(), expected);
}

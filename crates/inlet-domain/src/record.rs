//! What a key store knows about a key, and the verdicts an authenticator
//! can reach.

use serde::{Deserialize, Serialize};

use crate::{AccountId, AppName, KeyError, KeyId};

/// Whether a key may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// The key authenticates pushes.
    Active,
    /// The key was revoked; pushes with it are rejected (401).
    Revoked,
}

/// Whether an account may push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    /// The account is in good standing.
    Active,
    /// The account is suspended (e.g. unpaid); its keys get 403.
    Suspended,
}

/// A per-account token-bucket rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Bucket size: how many requests may arrive at once.
    pub burst: u32,
}

/// Everything a store knows about one key (looked up by its digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key's public id.
    pub key_id: KeyId,
    /// The account that owns the key.
    pub account_id: AccountId,
    /// Active or revoked.
    pub key_state: KeyState,
    /// The owning account's state, denormalised onto the key so one lookup
    /// decides.
    pub account_state: AccountState,
    /// The account's rate limit; `None` means the server default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// When set, the key may only push data for this app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppName>,
    /// Monotonic revision of the record in the source of truth; a copy with
    /// a lower revision never overwrites a higher one.
    pub revision: u64,
    /// Last change in the source of truth, Unix milliseconds.
    pub updated_at_ms: i64,
}

impl KeyRecord {
    /// Whether this record lets the key push (active key, active account).
    pub fn accepts(&self) -> bool {
        self.key_state == KeyState::Active && self.account_state == AccountState::Active
    }

    /// The verdict this record implies. Revocation outranks suspension:
    /// a revoked key stays revoked whatever the account does.
    pub fn verdict(&self, mode: AuthMode) -> Verdict {
        match (self.key_state, self.account_state) {
            (KeyState::Revoked, _) => Verdict::RevokedKey,
            (KeyState::Active, AccountState::Suspended) => Verdict::SuspendedAccount,
            (KeyState::Active, AccountState::Active) => Verdict::Accepted(Grant {
                key_id: self.key_id,
                account_id: Some(self.account_id.clone()),
                rate_limit: self.rate_limit,
                app: self.app.clone(),
                mode,
            }),
        }
    }
}

/// How firmly a push was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// A store (or a recent store answer, within the stale grace) said yes.
    Confirmed,
    /// No store could decide, but the key's signature proves Inlet issued
    /// it. The worker re-checks the key before persisting the data.
    Provisional,
}

impl AuthMode {
    /// Label for metrics and message headers.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Confirmed => "confirmed",
            AuthMode::Provisional => "provisional",
        }
    }
}

/// What an accepted key is allowed to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The key that authenticated.
    pub key_id: KeyId,
    /// The account the data belongs to. `None` only for a provisional
    /// grant: no store could say whose key it is, so the worker resolves
    /// the account when it re-checks the key against the source of truth.
    pub account_id: Option<AccountId>,
    /// The account's rate limit, if it has its own.
    pub rate_limit: Option<RateLimit>,
    /// The only app this key may push for, if restricted.
    pub app: Option<AppName>,
    /// Confirmed or provisional.
    pub mode: AuthMode,
}

/// Why no store could decide about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UndecidableReason {
    /// Every store that could answer is unreachable or failing.
    StoresUnavailable,
    /// A store answered too slowly.
    Timeout,
    /// The only reachable store is not (yet) fully loaded, and nothing else
    /// can answer: absence there proves nothing.
    NotPopulated,
    /// The fast store does not have the key, and confirming that with the
    /// source of truth was refused by the confirmation rate limit (a flood
    /// of unknown keys). Only the source of truth may say "unknown".
    ConfirmationThrottled,
    /// The source of truth holds a record for the key that cannot be read
    /// (a document another writer left unparseable): not a verdict on the
    /// key, and not a passing outage either.
    RecordUnreadable,
    /// A store holds a rejection of the key (revoked, suspended) that the
    /// source of truth could not confirm (unreachable, or confirmations
    /// throttled). Not a verdict — and not a key to accept provisionally
    /// either: the agent is asked to come back.
    RejectionUnconfirmed,
}

impl UndecidableReason {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            UndecidableReason::StoresUnavailable => "stores_unavailable",
            UndecidableReason::Timeout => "timeout",
            UndecidableReason::NotPopulated => "not_populated",
            UndecidableReason::ConfirmationThrottled => "confirmation_throttled",
            UndecidableReason::RecordUnreadable => "record_unreadable",
            UndecidableReason::RejectionUnconfirmed => "rejection_unconfirmed",
        }
    }
}

/// The outcome of authenticating a push: exactly these six.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key may push.
    Accepted(Grant),
    /// The source of truth does not know the key.
    UnknownKey,
    /// The key exists but was revoked.
    RevokedKey,
    /// The key is valid but its account is suspended.
    SuspendedAccount,
    /// Missing or malformed, decided locally without any lookup.
    Malformed(KeyError),
    /// No store could decide. This is a symptom, never a verdict on the key:
    /// it maps to "retry later", never to "unauthorized".
    Undecidable(UndecidableReason),
}

/// What the caller of the API should be told, independent of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Go on with the push.
    Proceed,
    /// The key is not valid (HTTP 401).
    Unauthorized,
    /// The key is valid but may not push (HTTP 403).
    Forbidden,
    /// Nothing was decided; come back later (HTTP 503).
    RetryLater,
}

impl Verdict {
    /// The one mapping from verdict to disposition. `Undecidable` maps to
    /// `RetryLater` here and nowhere else maps verdicts.
    pub fn disposition(&self) -> Disposition {
        match self {
            Verdict::Accepted(_) => Disposition::Proceed,
            Verdict::UnknownKey | Verdict::RevokedKey | Verdict::Malformed(_) => {
                Disposition::Unauthorized
            }
            Verdict::SuspendedAccount => Disposition::Forbidden,
            Verdict::Undecidable(_) => Disposition::RetryLater,
        }
    }

    /// Stable machine-readable code (HTTP bodies, metrics labels).
    pub fn code(&self) -> &'static str {
        match self {
            Verdict::Accepted(g) => match g.mode {
                AuthMode::Confirmed => "accepted",
                AuthMode::Provisional => "accepted_provisional",
            },
            Verdict::UnknownKey => "unknown_key",
            Verdict::RevokedKey => "revoked_key",
            Verdict::SuspendedAccount => "account_suspended",
            Verdict::Malformed(e) => e.code(),
            Verdict::Undecidable(UndecidableReason::RecordUnreadable) => "key_record_unreadable",
            Verdict::Undecidable(_) => "auth_unavailable",
        }
    }

    /// Whether this verdict came from a store (or the key's own bytes)
    /// rather than from the failure of every store.
    pub fn is_decided(&self) -> bool {
        !matches!(self, Verdict::Undecidable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: KeyState, account: AccountState) -> KeyRecord {
        KeyRecord {
            key_id: KeyId::from_u64(1),
            account_id: AccountId::parse("acme").unwrap(),
            key_state: key,
            account_state: account,
            rate_limit: None,
            app: None,
            revision: 1,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn record_verdicts() {
        use AccountState as A;
        use KeyState as K;
        assert!(matches!(
            record(K::Active, A::Active).verdict(AuthMode::Confirmed),
            Verdict::Accepted(Grant {
                mode: AuthMode::Confirmed,
                ..
            })
        ));
        assert_eq!(
            record(K::Revoked, A::Active).verdict(AuthMode::Confirmed),
            Verdict::RevokedKey
        );
        assert_eq!(
            record(K::Revoked, A::Suspended).verdict(AuthMode::Confirmed),
            Verdict::RevokedKey
        );
        assert_eq!(
            record(K::Active, A::Suspended).verdict(AuthMode::Confirmed),
            Verdict::SuspendedAccount
        );
    }

    #[test]
    fn every_verdict_has_a_disposition_and_undecidable_is_never_unauthorized() {
        let grant =
            match record(KeyState::Active, AccountState::Active).verdict(AuthMode::Provisional) {
                Verdict::Accepted(g) => g,
                other => panic!("{other:?}"),
            };
        let cases = [
            (
                Verdict::Accepted(grant),
                Disposition::Proceed,
                "accepted_provisional",
            ),
            (
                Verdict::UnknownKey,
                Disposition::Unauthorized,
                "unknown_key",
            ),
            (
                Verdict::RevokedKey,
                Disposition::Unauthorized,
                "revoked_key",
            ),
            (
                Verdict::SuspendedAccount,
                Disposition::Forbidden,
                "account_suspended",
            ),
            (
                Verdict::Malformed(KeyError::Missing),
                Disposition::Unauthorized,
                "missing_key",
            ),
            (
                Verdict::Malformed(KeyError::Checksum),
                Disposition::Unauthorized,
                "malformed_key",
            ),
            (
                Verdict::Undecidable(UndecidableReason::StoresUnavailable),
                Disposition::RetryLater,
                "auth_unavailable",
            ),
            (
                Verdict::Undecidable(UndecidableReason::Timeout),
                Disposition::RetryLater,
                "auth_unavailable",
            ),
            (
                Verdict::Undecidable(UndecidableReason::NotPopulated),
                Disposition::RetryLater,
                "auth_unavailable",
            ),
            (
                Verdict::Undecidable(UndecidableReason::ConfirmationThrottled),
                Disposition::RetryLater,
                "auth_unavailable",
            ),
            (
                Verdict::Undecidable(UndecidableReason::RejectionUnconfirmed),
                Disposition::RetryLater,
                "auth_unavailable",
            ),
            (
                Verdict::Undecidable(UndecidableReason::RecordUnreadable),
                Disposition::RetryLater,
                "key_record_unreadable",
            ),
        ];
        for (verdict, disposition, code) in cases {
            assert_eq!(verdict.disposition(), disposition, "{verdict:?}");
            assert_eq!(verdict.code(), code);
            assert_eq!(verdict.is_decided(), disposition != Disposition::RetryLater);
        }
    }

    #[test]
    fn record_serde_round_trip() {
        let mut r = record(KeyState::Active, AccountState::Suspended);
        r.rate_limit = Some(RateLimit {
            per_second: 10,
            burst: 20,
        });
        r.app = Some(AppName::parse("shop").unwrap());
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"key_id\":\"0000000000000001\""));
        assert!(json.contains("\"account_state\":\"suspended\""));
        let back: KeyRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}

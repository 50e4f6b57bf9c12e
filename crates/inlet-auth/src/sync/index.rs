//! Key id → digest, for every key document the sync has seen.
//!
//! A deletion (change stream event, or a document gone in the poll-mode
//! sweep) names only the key's `_id`; the digest is what Redis is keyed
//! by. Ids are kept as `u64` (Inlet key ids are 16 hex digits) so a million
//! keys cost about 50 MB; documents with other ids (another writer's
//! unreadable ones) go to a small side map. The value is the digest
//! currently written to Redis for that key, `None` when the key is not in
//! Redis (unreadable, or without an account).

use std::collections::HashMap;

use inlet_domain::{KeyDigest, KeyId};

#[derive(Debug, Default)]
pub(super) struct KeyIndex {
    keys: HashMap<u64, Option<KeyDigest>>,
    other: HashMap<String, Option<KeyDigest>>,
    accounts: std::collections::HashSet<String>,
}

impl KeyIndex {
    /// Records what Redis holds for key `id`; returns what it held before.
    pub(super) fn set(&mut self, id: &str, digest: Option<KeyDigest>) -> Option<KeyDigest> {
        match KeyId::parse(id) {
            Ok(k) => self.keys.insert(k.as_u64(), digest).flatten(),
            Err(_) => self.other.insert(id.to_owned(), digest).flatten(),
        }
    }

    /// Forgets key `id` (deleted); returns the digest Redis held for it.
    pub(super) fn remove(&mut self, id: &str) -> Option<KeyDigest> {
        match KeyId::parse(id) {
            Ok(k) => self.keys.remove(&k.as_u64()).flatten(),
            Err(_) => self.other.remove(id).flatten(),
        }
    }

    /// Key documents known.
    pub(super) fn len(&self) -> usize {
        self.keys.len() + self.other.len()
    }

    /// The ids of every key document known.
    pub(super) fn ids(&self) -> Vec<String> {
        self.keys
            .keys()
            .map(|k| KeyId::from_u64(*k).to_string())
            .chain(self.other.keys().cloned())
            .collect()
    }

    pub(super) fn add_account(&mut self, id: &str) {
        self.accounts.insert(id.to_owned());
    }

    pub(super) fn remove_account(&mut self, id: &str) {
        self.accounts.remove(id);
    }

    pub(super) fn accounts(&self) -> &std::collections::HashSet<String> {
        &self.accounts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_both_id_shapes_are_indexed() {
        let mut index = KeyIndex::default();
        let d = KeyDigest::of_secret("a");
        assert_eq!(index.set("00000000000000ff", Some(d)), None);
        assert_eq!(index.set("not-a-key-id", None), None);
        assert_eq!(index.len(), 2);
        assert_eq!(index.set("00000000000000ff", None), Some(d));
        let mut ids = index.ids();
        ids.sort();
        assert_eq!(ids, ["00000000000000ff", "not-a-key-id"]);
        assert_eq!(index.remove("00000000000000ff"), None);
        assert_eq!(index.remove("not-a-key-id"), None);
        assert_eq!(index.len(), 0);
    }
}

//! The bounded buffer and batch formation.
//!
//! Items are serialized when they are recorded, so the buffer's bound is
//! exact (serialized bytes, the thing that costs memory and bandwidth) and
//! a batch body is assembled by concatenation, without serializing twice.
//! When the bound is reached the **oldest** items go first: during an
//! outage the most recent data is the most valuable.

use std::collections::VecDeque;

use inlet_domain::{
    Batch, BatchLimits, WireAgent, WireBatch, WireErrorSample, WireMetric, WireTransaction,
};

use crate::status::DropReason;

/// One telemetry item, of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A transaction (request, job).
    Transaction(WireTransaction),
    /// A metric sample.
    Metric(WireMetric),
    /// An error occurrence.
    Error(WireErrorSample),
}

impl From<WireTransaction> for Item {
    fn from(t: WireTransaction) -> Self {
        Item::Transaction(t)
    }
}

impl From<WireMetric> for Item {
    fn from(m: WireMetric) -> Self {
        Item::Metric(m)
    }
}

impl From<WireErrorSample> for Item {
    fn from(e: WireErrorSample) -> Self {
        Item::Error(e)
    }
}

/// The three arrays of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Transaction = 0,
    Metric = 1,
    Error = 2,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Transaction, Kind::Metric, Kind::Error];

    fn field(self) -> &'static str {
        match self {
            Kind::Transaction => "transactions",
            Kind::Metric => "metrics",
            Kind::Error => "errors",
        }
    }
}

/// One recorded item, serialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encoded {
    pub kind: Kind,
    pub json: Box<[u8]>,
}

impl Encoded {
    /// Checks an item against the server's rules and serializes it.
    ///
    /// A 400 drops a whole batch, so one bad item (a NaN duration, an empty
    /// action, a timestamp from 1970) would take hundreds of good ones with
    /// it. Checking each item with the same rules the server applies
    /// (`inlet_domain`'s, with `limits`) drops only the bad item.
    pub(crate) fn encode(
        item: &Item,
        limits: &BatchLimits,
        now_ms: i64,
    ) -> Result<Encoded, DropReason> {
        let mut probe = WireBatch {
            batch_id: None,
            agent: WireAgent {
                name: "a".into(),
                version: "1".into(),
                hostname: None,
            },
            app: "a".into(),
            environment: "e".into(),
            transactions: Vec::new(),
            metrics: Vec::new(),
            errors: Vec::new(),
        };
        let (kind, json) = match item {
            Item::Transaction(t) => {
                probe.transactions.push(t.clone());
                (Kind::Transaction, serde_json::to_vec(t))
            }
            Item::Metric(m) => {
                probe.metrics.push(m.clone());
                (Kind::Metric, serde_json::to_vec(m))
            }
            Item::Error(e) => {
                probe.errors.push(e.clone());
                (Kind::Error, serde_json::to_vec(e))
            }
        };
        if Batch::from_wire(probe, limits, now_ms).is_err() {
            return Err(DropReason::InvalidItem);
        }
        let json = json.map_err(|_| DropReason::InvalidItem)?;
        Ok(Encoded {
            kind,
            json: json.into_boxed_slice(),
        })
    }

    /// Bytes this item adds to a batch body (its JSON and a comma).
    pub(crate) fn cost(&self) -> usize {
        self.json.len() + 1
    }
}

/// How big a batch may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Most items in one batch.
    pub max_items: usize,
    /// Largest uncompressed body, bytes (header included).
    pub max_bytes: usize,
    /// The server's per-array limits (transactions, metrics, errors).
    pub per_kind: [usize; 3],
}

impl Shape {
    pub(crate) fn new(max_items: usize, max_bytes: usize, limits: &BatchLimits) -> Shape {
        Shape {
            max_items,
            max_bytes,
            per_kind: [
                limits.max_transactions.max(1),
                limits.max_metrics.max(1),
                limits.max_errors.max(1),
            ],
        }
    }
}

/// A batch's fixed parts (agent, app, environment), serialized once: the
/// header every body of this client starts with. (Not the queue message,
/// `inlet_domain::Envelope`.)
#[derive(Debug, Clone)]
pub(crate) struct BatchHeader {
    agent: String,
    app: String,
    environment: String,
}

/// Length of the batch ids this crate generates (hyphenated UUIDs).
pub(crate) const BATCH_ID_LEN: usize = 36;

impl BatchHeader {
    pub(crate) fn new(agent: &WireAgent, app: &str, environment: &str) -> BatchHeader {
        BatchHeader {
            // Serializing a `WireAgent` cannot fail.
            agent: serde_json::to_string(agent).unwrap_or_else(|_| "null".to_owned()),
            app: serde_json::Value::from(app).to_string(),
            environment: serde_json::Value::from(environment).to_string(),
        }
    }

    /// Bytes of a body with no items (and a [`BATCH_ID_LEN`] id), all three
    /// arrays present: an upper bound of the header's share.
    pub(crate) fn overhead(&self) -> usize {
        self.assemble("0".repeat(BATCH_ID_LEN).as_str(), &[]).len()
            + Kind::ALL.iter().map(|k| k.field().len() + 6).sum::<usize>()
    }

    /// Assembles a body: the header, then each kind's items in the order
    /// they were recorded. Only non-empty arrays are written.
    pub(crate) fn assemble(&self, batch_id: &str, items: &[Encoded]) -> Vec<u8> {
        let size = 64
            + batch_id.len()
            + self.agent.len()
            + self.app.len()
            + self.environment.len()
            + items.iter().map(Encoded::cost).sum::<usize>()
            + 48;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(b"{\"batch_id\":");
        out.extend_from_slice(serde_json::Value::from(batch_id).to_string().as_bytes());
        out.extend_from_slice(b",\"agent\":");
        out.extend_from_slice(self.agent.as_bytes());
        out.extend_from_slice(b",\"app\":");
        out.extend_from_slice(self.app.as_bytes());
        out.extend_from_slice(b",\"environment\":");
        out.extend_from_slice(self.environment.as_bytes());
        for kind in Kind::ALL {
            let mut first = true;
            for item in items.iter().filter(|i| i.kind == kind) {
                if first {
                    out.extend_from_slice(b",\"");
                    out.extend_from_slice(kind.field().as_bytes());
                    out.extend_from_slice(b"\":[");
                    first = false;
                } else {
                    out.push(b',');
                }
                out.extend_from_slice(&item.json);
            }
            if !first {
                out.push(b']');
            }
        }
        out.push(b'}');
        out
    }
}

/// The FIFO of recorded items, bounded by serialized bytes.
#[derive(Debug)]
pub(crate) struct Buffer {
    queue: VecDeque<Encoded>,
    /// Sum of `Encoded::cost` over the queue.
    bytes: usize,
    /// Items per kind in the queue.
    kinds: [usize; 3],
    max_bytes: usize,
}

impl Buffer {
    pub(crate) fn new(max_bytes: usize) -> Buffer {
        Buffer {
            queue: VecDeque::new(),
            bytes: 0,
            kinds: [0; 3],
            max_bytes,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends an item, first dropping the oldest items while it would not
    /// fit. Returns how many were dropped. An item larger than the whole
    /// bound is refused by the caller before it gets here.
    pub(crate) fn push(&mut self, item: Encoded) -> usize {
        let mut dropped = 0;
        while self.bytes + item.cost() > self.max_bytes {
            if self.pop_front().is_none() {
                break;
            }
            dropped += 1;
        }
        self.bytes += item.cost();
        self.kinds[item.kind as usize] += 1;
        self.queue.push_back(item);
        dropped
    }

    fn pop_front(&mut self) -> Option<Encoded> {
        let item = self.queue.pop_front()?;
        self.bytes -= item.cost();
        self.kinds[item.kind as usize] -= 1;
        Some(item)
    }

    /// Whether a full batch is waiting (so it should go now rather than at
    /// the next interval).
    pub(crate) fn has_full_batch(&self, shape: &Shape, overhead: usize) -> bool {
        self.queue.len() >= shape.max_items
            || self.bytes + overhead >= shape.max_bytes
            || self
                .kinds
                .iter()
                .zip(shape.per_kind)
                .any(|(n, max)| *n >= max)
    }

    /// Takes the next batch's items, oldest first, stopping before the
    /// first item that would break a limit of `shape`.
    pub(crate) fn take(&mut self, shape: &Shape, overhead: usize) -> Vec<Encoded> {
        let budget = shape.max_bytes.saturating_sub(overhead);
        let mut taken = Vec::new();
        let mut bytes = 0;
        let mut kinds = [0usize; 3];
        while let Some(next) = self.queue.front() {
            let k = next.kind as usize;
            let fits = taken.len() < shape.max_items
                && kinds[k] < shape.per_kind[k]
                && (bytes + next.cost() <= budget || taken.is_empty());
            if !fits {
                break;
            }
            let Some(item) = self.pop_front() else { break };
            bytes += item.cost();
            kinds[k] += 1;
            taken.push(item);
        }
        taken
    }

    /// Empties the buffer; returns how many items it held.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        self.bytes = 0;
        self.kinds = [0; 3];
        n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use inlet_domain::{MetricKind, now_ms};

    use super::*;

    fn tx(action: &str) -> Item {
        Item::Transaction(WireTransaction {
            action: action.into(),
            namespace: None,
            start_ms: now_ms(),
            duration_ms: 1.5,
            status: Some(200),
            error: None,
        })
    }

    fn err(class: &str) -> Item {
        Item::Error(WireErrorSample {
            class: class.into(),
            message: "boom".into(),
            backtrace: vec![],
            action: None,
            timestamp_ms: now_ms(),
        })
    }

    fn enc(item: &Item) -> Encoded {
        Encoded::encode(item, &BatchLimits::default(), now_ms()).unwrap()
    }

    fn test_header() -> BatchHeader {
        BatchHeader::new(
            &WireAgent {
                name: "inlet-rust".into(),
                version: "0.1.0".into(),
                hostname: Some("web-1".into()),
            },
            "shop",
            "production",
        )
    }

    #[test]
    fn invalid_items_are_refused_alone() {
        let limits = BatchLimits::default();
        let now = now_ms();
        let mut bad = WireTransaction {
            action: "A#b".into(),
            namespace: None,
            start_ms: now,
            duration_ms: f64::NAN,
            status: None,
            error: None,
        };
        let check =
            |t: &WireTransaction| Encoded::encode(&Item::Transaction(t.clone()), &limits, now);
        assert_eq!(check(&bad), Err(DropReason::InvalidItem));
        bad.duration_ms = 1.0;
        assert!(check(&bad).is_ok());
        bad.action = String::new();
        assert_eq!(check(&bad), Err(DropReason::InvalidItem));
        bad.action = "A#b".into();
        bad.start_ms = 0;
        assert_eq!(check(&bad), Err(DropReason::InvalidItem));
        let m = Item::Metric(WireMetric {
            kind: MetricKind::Counter,
            name: "jobs".into(),
            value: -1.0,
            tags: Default::default(),
            timestamp_ms: now,
            start_ms: None,
            histogram: None,
        });
        assert_eq!(
            Encoded::encode(&m, &limits, now),
            Err(DropReason::InvalidItem)
        );
    }

    #[test]
    fn assembled_body_is_a_valid_batch_in_record_order() {
        let header = test_header();
        let items: Vec<Encoded> = [tx("A#1"), err("E1"), tx("A#2"), err("E2")]
            .iter()
            .map(enc)
            .collect();
        let id = uuid::Uuid::now_v7().to_string();
        assert_eq!(id.len(), BATCH_ID_LEN);
        let body = header.assemble(&id, &items);
        let batch = Batch::decode(&body, &BatchLimits::default(), now_ms()).unwrap();
        assert_eq!(batch.batch_id().unwrap().as_str(), id);
        assert_eq!(batch.app().as_str(), "shop");
        assert_eq!(batch.agent().hostname.as_deref(), Some("web-1"));
        let actions: Vec<_> = batch
            .transactions()
            .iter()
            .map(|t| t.action.as_str())
            .collect();
        assert_eq!(actions, ["A#1", "A#2"]);
        let classes: Vec<_> = batch.errors().iter().map(|e| e.class.as_str()).collect();
        assert_eq!(classes, ["E1", "E2"]);
        assert!(batch.metrics().is_empty());
        // The overhead bound holds: an empty body plus the items is never
        // larger than the estimate.
        let estimate = header.overhead() + items.iter().map(Encoded::cost).sum::<usize>();
        assert!(body.len() <= estimate, "{} > {estimate}", body.len());
    }

    #[test]
    fn batches_are_cut_by_item_count() {
        let header = test_header();
        let shape = Shape::new(10, 512 * 1024, &BatchLimits::default());
        let mut buf = Buffer::new(1 << 20);
        for i in 0..35 {
            buf.push(enc(&tx(&format!("A#{i}"))));
        }
        let mut sizes = vec![];
        let mut order = vec![];
        while buf.len() > 0 {
            let full = buf.has_full_batch(&shape, header.overhead());
            let b = buf.take(&shape, header.overhead());
            assert_eq!(full, b.len() == 10);
            sizes.push(b.len());
            order.extend(
                b.into_iter()
                    .map(|e| String::from_utf8(e.json.to_vec()).unwrap()),
            );
        }
        assert_eq!(sizes, [10, 10, 10, 5]);
        for (i, json) in order.iter().enumerate() {
            assert!(json.contains(&format!("\"A#{i}\"")), "FIFO order");
        }
        assert_eq!(buf.bytes(), 0);
    }

    #[test]
    fn batches_are_cut_by_bytes() {
        let header = test_header();
        let one = enc(&tx("A#0000")).cost();
        // Room for exactly 4 items after the header.
        let max_bytes = header.overhead() + 4 * one + one / 2;
        let shape = Shape::new(1000, max_bytes, &BatchLimits::default());
        let mut buf = Buffer::new(1 << 20);
        for i in 0..10 {
            buf.push(enc(&tx(&format!("A#{i:04}"))));
        }
        assert!(buf.has_full_batch(&shape, header.overhead()));
        let mut sizes = vec![];
        while buf.len() > 0 {
            let b = buf.take(&shape, header.overhead());
            let body = header.assemble(&"x".repeat(BATCH_ID_LEN), &b);
            assert!(body.len() <= max_bytes, "{} > {max_bytes}", body.len());
            sizes.push(b.len());
        }
        assert_eq!(sizes, [4, 4, 2]);
    }

    #[test]
    fn batches_respect_the_servers_per_kind_limits() {
        let header = test_header();
        let limits = BatchLimits {
            max_errors: 3,
            ..BatchLimits::default()
        };
        let shape = Shape::new(1000, 1 << 20, &limits);
        let mut buf = Buffer::new(1 << 20);
        for i in 0..5 {
            buf.push(enc(&err(&format!("E{i}"))));
            buf.push(enc(&tx(&format!("A#{i}"))));
        }
        assert!(buf.has_full_batch(&shape, header.overhead()));
        let first = buf.take(&shape, header.overhead());
        // E0 A0 E1 A1 E2 A2, then E3 would be the fourth error.
        assert_eq!(first.len(), 6);
        assert_eq!(first.iter().filter(|e| e.kind == Kind::Error).count(), 3);
        assert_eq!(buf.take(&shape, header.overhead()).len(), 4);
    }

    #[test]
    fn a_full_buffer_drops_oldest_first() {
        let one = enc(&tx("A#0000")).cost();
        let mut buf = Buffer::new(10 * one);
        let mut dropped = 0;
        for i in 0..25 {
            dropped += buf.push(enc(&tx(&format!("A#{i:04}"))));
            assert!(buf.bytes() <= 10 * one);
        }
        assert_eq!(dropped, 15);
        assert_eq!(buf.len(), 10);
        let shape = Shape::new(1000, 1 << 20, &BatchLimits::default());
        let kept: Vec<String> = buf
            .take(&shape, 0)
            .into_iter()
            .map(|e| String::from_utf8(e.json.to_vec()).unwrap())
            .collect();
        for (json, i) in kept.iter().zip(15..) {
            assert!(
                json.contains(&format!("A#{i:04}")),
                "{json} should be item {i}"
            );
        }
        assert_eq!(buf.clear(), 0);
    }
}

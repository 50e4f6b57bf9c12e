//! The vocabulary of the crate (a leaf): the signals, the body formats,
//! what an export request becomes, and why one does not decode.

use inlet_domain::WireBatch;

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// `POST /v1/traces`.
    Traces,
    /// `POST /v1/metrics`.
    Metrics,
    /// `POST /v1/logs`.
    Logs,
}

impl Signal {
    /// Every signal.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// The route of the signal.
    pub fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    /// The items the signal counts (`rejected_<items>` in OTLP), also a
    /// metrics label.
    pub fn items(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "data_points",
            Signal::Logs => "log_records",
        }
    }

    pub(crate) fn letter(self) -> char {
        match self {
            Signal::Traces => 't',
            Signal::Metrics => 'm',
            Signal::Logs => 'l',
        }
    }
}

/// The body format of a request (and of its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (the OTLP JSON mapping).
    Json,
}

impl Format {
    /// The format a `Content-Type` names, if OTLP defines it. Parameters
    /// (`; charset=utf-8`) are ignored.
    pub fn from_content_type(value: &str) -> Option<Format> {
        let essence = value.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/x-protobuf")
            || essence.eq_ignore_ascii_case("application/protobuf")
        {
            Some(Format::Protobuf)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Some(Format::Json)
        } else {
            None
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// An export request that could not be decoded (HTTP 400, never retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable OTLP {format} request: {message}")]
pub struct DecodeError {
    /// `protobuf` or `JSON`.
    pub format: &'static str,
    /// What the decoder said.
    pub message: String,
}

/// What one export request becomes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Export {
    /// The batches to publish, each with its derived batch id
    /// (`otlp-<signal><digest>-<n>`). Empty when nothing in the request
    /// maps to a sample (e.g. only child spans without exceptions).
    pub batches: Vec<WireBatch>,
    /// Spans, data points or log records in the request.
    pub received: u64,
    /// Of those, how many were left out because they break a rule.
    pub rejected: u64,
    /// Why the first of them was left out.
    pub message: Option<String>,
}

impl Export {
    /// Leaves one item out, keeping the first reason.
    pub(crate) fn reject(&mut self, why: impl FnOnce() -> String) {
        self.rejected += 1;
        if self.message.is_none() {
            self.message = Some(why());
        }
    }
}

//! The resilience suite: Inlet's promise, proven against the real binaries.
//!
//! Every scenario runs `inlet api`, `inlet worker` and `inlet sync` as child
//! processes against real Redis, RabbitMQ and a MongoDB-wire server
//! (SecantusDB), drives them with agents built on `inlet-client` (and, in
//! the incident replays, OTLP exporters), injects a fault, and reconciles
//! three independent counts: what the agents recorded and were told was
//! accepted (the client's own counters), what the API says it accepted
//! (`/metrics`), and what the worker stored (MongoDB, through the driver). A recording load balancer in front of the API sees
//! every response on the wire (status, `code`, `Retry-After`).
//!
//! Scenarios that stop, kill, flush or restart a service use private
//! instances (`RedisServer`, `SecantusServer`, `RabbitNode`); the others
//! use the shared services, isolated by database name, Redis prefix and
//! queue prefix. Scenarios run one at a time (nextest test group
//! `resilience`; within one process, a lock).
//!
//! `INLET_RESILIENCE_SCALE` (default 0.1) scales loads, durations and
//! counts; `scripts/resilience` runs the suite at 1.0 and writes
//! `docs/resilience.md` from the one-line figures every scenario appends to
//! `INLET_RESILIENCE_REPORT`.
//!
//! # Layout
//!
//! - `scale`: the scale factor and scaled counts/durations; the lock that
//!   serializes scenarios.
//! - `stack`: the processes under test and their services: environment,
//!   provisioning through the CLI, spawning and stopping, readiness
//!   polling, reconciliation queries, cleanup.
//! - `agents`: a fleet of `inlet_client::Client` agents recording
//!   continuously, with every event counted.
//! - `exporters`: OTLP agents, exporting traces to `/v1/traces` as an
//!   OpenTelemetry SDK's OTLP/HTTP exporter does (retry only on
//!   429/502/503/504 and no answer, drop on anything else).
//! - `metrics`: a small Prometheus text parser.
//! - `report`: the per-scenario figure and its checks.
//! - `scenarios/`: one module per scenario.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The suite's output is its one-line figures.
#![allow(clippy::print_stdout)]

mod agents;
mod exporters;
mod metrics;
mod report;
mod scale;
mod scenarios;
mod stack;

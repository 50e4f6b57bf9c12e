//! Test support for Inlet's integration tests (unpublished).
//!
//! Integration tests talk to real Redis, RabbitMQ and a MongoDB-wire
//! server. This crate finds them (or starts private instances), and gives
//! each test its own corner of every shared service so tests can run in
//! parallel and never see each other's data:
//!
//! # Layout
//!
//! - [`services`]: where the shared services are (`INLET_TEST_REDIS_URL`,
//!   `INLET_TEST_AMQP_URL`, `INLET_TEST_MONGO_URL`, with local defaults),
//!   and per-test isolation: [`TestRedis`] (a random key prefix),
//!   [`TestAmqp`] (random exchange/queue names), [`TestMongo`] (a random
//!   database).
//! - [`wait`]: [`wait_until`] / [`wait_for`], polling with a deadline
//!   instead of fixed sleeps.
//! - [`proxy`]: [`FaultProxy`], a TCP proxy a test can cut, restore or
//!   black-hole to simulate an unreachable or hanging service.
//! - [`procs`]: private service processes for tests that stop, kill or
//!   restart a server ([`RedisServer`], [`SecantusServer`]).
//! - [`rabbit`]: a private RabbitMQ node ([`RabbitNode`]) for tests that
//!   stop, kill or restart the broker, and a cluster of them
//!   ([`RabbitCluster`]) for tests that lose a node.
//! - [`balancer`]: [`LoadBalancer`], a health-checking TCP load balancer
//!   (or a plain recording proxy) that records every HTTP response it
//!   forwards: status, `code`, `Retry-After` on 5xx.
//! - [`inlet_env`]: [`InletEnv`], the environment every `inlet` child
//!   process of a test gets (configuration, this test's services, logs),
//!   and [`on_a_terminal`], a command run on a pseudo-terminal.
//! - [`docs`]: examples of `docs/*.md` compared with what the code sends
//!   ([`docs::shape_differences`], [`docs::text_matches`]).
//! - [`tls`]: [`TestCa`], a private CA and server certificates it signs.
//! - [`free_port`] and [`unique_id`].

#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod balancer;
pub mod docs;
pub mod inlet_env;
pub mod procs;
pub mod proxy;
pub mod rabbit;
pub mod services;
pub mod tls;
pub mod wait;

pub use balancer::{BalancerOptions, LoadBalancer, ResponseStats};
pub use inlet_env::{InletEnv, on_a_terminal};
pub use procs::{RedisServer, SecantusServer, SecantusStorage};
pub use proxy::FaultProxy;
pub use rabbit::{RabbitCluster, RabbitNode};
pub use services::{TestAmqp, TestMongo, TestRedis};
pub use tls::{TestCa, TestCert};
pub use wait::{wait_for, wait_until};

/// A short random id (12 hex digits) naming one test's resources.
pub fn unique_id() -> String {
    let n: u64 = rand::random();
    format!("{:012x}", n & 0xffff_ffff_ffff)
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

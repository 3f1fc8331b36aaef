//! `ca-loadtest`: a black-box load generator for the CA. It talks only to the public interfaces
//! (gRPC `ca.v1.CertificateAuthority`, HTTP OCSP, ACME) and reports throughput, latency percentiles
//! from an HDR histogram and errors by kind; `calibrate` measures this machine's raw signing limit.
//!
//! Layout: [`driver`] is the scenario-independent engine (worker tasks, open/closed loop,
//! histograms, progress); each scenario ([`grpc::GrpcSign`], [`ocsp::Ocsp`]) implements
//! [`driver::Scenario`] and is prepared (connections, pre-encoded requests) before the clock
//! starts; [`run`] wires CLI options to a scenario and produces a [`report::Report`].

pub mod acme;
pub mod calibrate;
pub mod cli;
pub mod csrs;
pub mod driver;
pub mod grpc;
pub mod h2c;
pub mod handshake;
pub mod ocsp;
pub mod report;
pub mod run;
pub mod tls;

/// Name and version, as printed in reports.
pub const TOOL: &str = concat!("ca-loadtest ", env!("CARGO_PKG_VERSION"));

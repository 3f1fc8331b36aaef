//! The CA service. `main.rs` is a thin shell over this library so tests can reuse it.

pub mod acme;
pub mod app;
pub mod authz;
pub mod ca_admin;
pub mod cli;
pub mod client;
pub mod config;
pub mod credential;
pub mod error;
pub mod grpc;
pub mod http;
pub mod issuance;
pub mod issuer_keys;
pub mod issuer_life;
pub mod keyfiles;
pub mod metrics;
pub mod offline;
pub mod pkcs11;
pub mod render;
pub mod revocation;
pub mod revoke;
pub mod rotation;
pub mod server;
pub mod signing;
pub mod tls;
pub mod tls_revocation;

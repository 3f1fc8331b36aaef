//! The pure domain of the certificate authority.
//!
//! Everything here is deterministic given its inputs (a clock and randomness are passed
//! in or come from `ring`), performs no I/O and needs no async runtime, so the same code
//! runs in the server, in offline tools (`audit verify`, `events`) and in future read
//! replicas that rebuild projections from `WatchEvents`.

pub mod acme;
pub mod ca;
pub mod chain;
pub mod crl;
pub mod csr;
pub mod error;
pub mod event;
pub mod issue;
pub mod keys;
pub mod ocsp;
pub mod policy;
pub mod profile;
pub mod projection;
pub mod rotation;
pub mod serial;
pub mod signer;

pub use error::Error;
pub use event::Event;
pub use serial::Serial;

/// Unix seconds; the log stores times at second precision like X.509 does.
pub type UnixSeconds = i64;

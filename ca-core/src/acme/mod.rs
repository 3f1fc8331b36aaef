//! ACME (RFC 8555): the events it records, the index keys its projection keeps, and the
//! pure state of accounts, orders and authorizations folded from those events.

pub mod event;
pub mod index;
pub mod model;
pub mod problem;

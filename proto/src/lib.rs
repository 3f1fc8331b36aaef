//! Generated protobuf/gRPC code for `ca.v1`, the one place that converts between it and
//! ca-core's domain types ([`convert`]), and the socket adapter the gRPC server and
//! ca-loadtest's client both put under HTTP/2 ([`io`]).

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("ca.v1");
}

pub mod convert;
pub mod io;

/// The encoded `FileDescriptorSet`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ca_descriptor.bin"));

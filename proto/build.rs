//! Compiles `ca/v1/*.proto` with `protox` (pure Rust, no system `protoc`) and feeds the
//! descriptor set to tonic-prost-build. The descriptor set is also kept for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["ca/v1/events.proto", "ca/v1/ca.proto", "ca/v1/acme_admin.proto", "ca/v1/ca_admin.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("ca_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}

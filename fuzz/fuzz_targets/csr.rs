//! AFL++ target: see `ca_fuzz::csr`.
fn main() {
    afl::fuzz!(|data: &[u8]| ca_fuzz::csr::run(data));
}

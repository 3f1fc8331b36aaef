//! AFL++ target: see `ca_fuzz::ocsp_request`.
fn main() {
    afl::fuzz!(|data: &[u8]| ca_fuzz::ocsp_request::run(data));
}

//! AFL++ target: see `ca_fuzz::acme_json`.
fn main() {
    afl::fuzz!(|data: &[u8]| ca_fuzz::acme_json::run(data));
}

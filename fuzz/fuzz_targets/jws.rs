//! AFL++ target: see `ca_fuzz::jws`.
fn main() {
    afl::fuzz!(|data: &[u8]| ca_fuzz::jws::run(data));
}

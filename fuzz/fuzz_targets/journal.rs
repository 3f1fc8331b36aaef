//! AFL++ target: see `ca_fuzz::journal`.
fn main() {
    afl::fuzz!(|data: &[u8]| ca_fuzz::journal::run(data));
}

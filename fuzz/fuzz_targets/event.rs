//! AFL++ target: see `ca_fuzz::event`.
fn main() {
    afl::fuzz!(|data: &[u8]| ca_fuzz::event::run(data));
}

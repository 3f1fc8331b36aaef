//! The bodies of the fuzz targets, one module per target. The binaries in `fuzz_targets/`
//! only wrap `run` in `afl::fuzz!`, so the same code replays the corpora and the crashes
//! under plain `cargo test` (see `tests` below).
//!
//! Every `run` must return normally on any input: a panic (an `assert!` of an invariant
//! here, or a panic in the code under test) is a finding.

pub mod acme_json;
pub mod csr;
pub mod event;
pub mod journal;
pub mod jws;
pub mod ocsp_request;

/// A target's body: returns on any input, panics on a finding.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: [(&str, Target); 6] = [
    ("csr", csr::run),
    ("jws", jws::run),
    ("ocsp_request", ocsp_request::run),
    ("event", event::run),
    ("journal", journal::run),
    ("acme_json", acme_json::run),
];

#[cfg(test)]
mod tests {
    /// Each seed of `corpus/<target>/` (and `regressions/<target>/`, the saved crashes) runs
    /// through its target without a panic.
    #[test]
    fn corpora_replay_without_panics() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (name, run) in super::TARGETS {
            let mut seen = 0;
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else { continue };
                for e in entries {
                    let path = e.unwrap().path();
                    run(&std::fs::read(&path).unwrap());
                    seen += 1;
                }
            }
            assert!(seen > 0, "no seeds for {name}");
        }
    }
}

//! End of life of the current issuing CA: two gauges at `/metrics`, and a WARN line at start
//! and hourly while less than `[ca] rotation_warning_fraction` of its lifetime is left, so
//! an operator rotates (`ca-server ca rotate`) before certificates stop being issuable.

use std::fmt::Write;
use std::sync::Arc;

use crate::app::{App, now_unix};

/// How often the warning is repeated while it applies.
const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// `ca_issuing_ca_not_after_seconds` and `ca_issuing_ca_remaining_life_ratio` for the
/// current issuer (with its generation as a label).
pub fn render(app: &App, out: &mut String) {
    let ca = app.authority.ca();
    let g = ca.generation;
    let _ = writeln!(
        out,
        "# HELP ca_issuing_ca_not_after_seconds notAfter of the issuing CA that signs new certificates (unix seconds)\n\
         # TYPE ca_issuing_ca_not_after_seconds gauge\n\
         ca_issuing_ca_not_after_seconds{{generation=\"{g}\"}} {}\n\
         # HELP ca_issuing_ca_remaining_life_ratio Fraction of the current issuing CA's lifetime left (rotate before 0)\n\
         # TYPE ca_issuing_ca_remaining_life_ratio gauge\n\
         ca_issuing_ca_remaining_life_ratio{{generation=\"{g}\"}} {:.6}",
        ca.not_after,
        ca.remaining_life_ratio(now_unix())
    );
}

/// Warn now if the current issuer is near its end of life, then check hourly until shutdown.
pub fn start(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            check(&app);
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    });
}

fn check(app: &App) {
    let ca = app.authority.ca();
    let ratio = ca.remaining_life_ratio(now_unix());
    let threshold = app.config.ca.rotation_warning_fraction;
    if ratio < threshold {
        tracing::warn!(
            generation = ca.generation,
            subject = %ca.subject,
            not_after = ca.not_after,
            remaining_life_ratio = format!("{ratio:.4}"),
            rotation_warning_fraction = threshold,
            "the issuing CA is near the end of its life; run `ca-server ca rotate`"
        );
    }
}

//! Running validations off the request path: a challenge POST records `ChallengeStarted`
//! and starts a task here; the task asks the validation authority (`va`) and records the
//! outcome. A validation that a restart interrupted resumes the next time its
//! authorization, challenge or order is read (`resume_validation`).

use std::sync::Arc;

use ca_core::Event;
use ca_core::acme::Jwk;
use ca_core::acme::event::Identifier;
use ca_core::acme::model::{Authz, ChallengeType};
use ca_core::acme::problem::Problem;
use ca_core::event::{AuthorizationInvalidated, AuthorizationValidated};

use crate::acme::Acme;
use crate::acme::va::{self, VaError};
use crate::app::now_unix;

impl Acme {
    /// Start the validation of `a` if it is processing and none runs for it here.
    pub fn resume_validation(self: &Arc<Self>, a: &Authz) {
        let Some(challenge) = a.processing() else { return };
        {
            let mut running = self.validating.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !running.insert(a.id.clone()) {
                return;
            }
        }
        let acme = Arc::clone(self);
        let authz = a.clone();
        let challenge = challenge.to_string();
        tokio::spawn(async move {
            let outcome = acme.validate(&authz, &challenge).await;
            if let Err(e) = acme.record(vec![outcome]).await {
                tracing::error!(authz = %authz.id, error = %e, "could not record a validation outcome");
            }
            acme.validating.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&authz.id);
        });
    }

    /// Ask the validation authority; the event that records the outcome. The span is
    /// attached with `instrument`, never entered across an await (an entered guard held
    /// over `.await` leaks the span into whatever else that thread polls).
    async fn validate(&self, a: &Authz, challenge: &str) -> Event {
        use tracing::Instrument as _;
        let span = tracing::info_span!(
            "acme_validation",
            authz = %a.id,
            account = %a.account,
            %challenge,
            identifier = %a.identifier
        );
        self.validate_in_span(a, challenge).instrument(span).await
    }

    async fn validate_in_span(&self, a: &Authz, challenge: &str) -> Event {
        let result = match self.key_authorization(a) {
            Ok(ka) => {
                let kind = match ChallengeType::parse(challenge) {
                    Some(ChallengeType::Http01) => va::ChallengeKind::Http01,
                    Some(ChallengeType::Dns01) => va::ChallengeKind::Dns01,
                    Some(ChallengeType::TlsAlpn01) => va::ChallengeKind::TlsAlpn01,
                    None => {
                        return self.invalid(
                            a,
                            challenge,
                            Problem::Malformed,
                            "unknown challenge type".into(),
                        );
                    }
                };
                let ident = match &a.identifier {
                    Identifier::Dns(d) => va::Identifier::Dns(d.clone()),
                    Identifier::Ip(ip) => va::Identifier::Ip(*ip),
                };
                self.va.validate(kind, &ident, &a.token, &ka).await
            }
            Err(detail) => Err(VaError::Unauthorized(detail)),
        };
        let now = now_unix();
        match result {
            Ok(v) => {
                self.metrics.validation(challenge, "valid");
                tracing::debug!(address = ?v.address, "ACME validation succeeded");
                Event::AuthorizationValidated(AuthorizationValidated {
                    authz_id: a.id.clone(),
                    challenge_type: challenge.to_string(),
                    address: v.address.map(|s| s.to_string()),
                    validated_at: now,
                    expires: self.authz_valid_until(now),
                })
            }
            Err(e) => {
                self.metrics.validation(challenge, "invalid");
                let (problem, detail) = match e {
                    VaError::Connection(d) => (Problem::Connection, d),
                    VaError::Dns(d) => (Problem::Dns, d),
                    VaError::Tls(d) => (Problem::Tls, d),
                    VaError::IncorrectResponse(d) => (Problem::IncorrectResponse, d),
                    VaError::Unauthorized(d) => (Problem::Unauthorized, d),
                    VaError::Malformed(d) => (Problem::Malformed, d),
                };
                tracing::info!(problem = problem.name(), %detail, "ACME validation failed");
                self.limits.record_failed_validation(
                    &a.account,
                    &ca_core::acme::index::identifier_key(&a.identifier, a.wildcard),
                );
                self.invalid(a, challenge, problem, detail)
            }
        }
    }

    fn invalid(&self, a: &Authz, challenge: &str, problem: Problem, detail: String) -> Event {
        Event::AuthorizationInvalidated(AuthorizationInvalidated {
            authz_id: a.id.clone(),
            challenge_type: challenge.to_string(),
            error_type: problem.urn(),
            detail,
            at: now_unix(),
        })
    }

    /// token.thumbprint of the account's current key.
    fn key_authorization(&self, a: &Authz) -> Result<String, String> {
        let acct = self.account(&a.account).map_err(|e| e.to_string())?.ok_or("the account is gone")?;
        let v: serde_json::Value = serde_json::from_slice(&acct.jwk_json).map_err(|e| e.to_string())?;
        let key = Jwk::from_json(&v).map_err(|e| e.to_string())?;
        Ok(key.key_authorization(&a.token))
    }

    /// True while a finalize of order `id` is issuing (the order shows `processing`).
    pub fn finalizing(&self, id: &str) -> bool {
        self.finalizing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(id)
    }
}

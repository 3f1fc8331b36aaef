//! The `ca.v1.AcmeAdmin` gRPC service: EAB keys and ARI renewal windows, for operators
//! (`ca-server acme ...`) while the server runs.

use std::sync::Arc;

use ca_core::Event;
use ca_core::acme::b64u;
use ca_core::event::RenewalWindowSet;
use ca_proto::v1::acme_admin_server::AcmeAdmin;
use ca_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::acme::Acme;
use crate::acme::eab::NewEabKey;
use crate::error::AppError;

pub struct AcmeAdminService {
    /// `None` when `[acme] enabled = false`.
    pub acme: Option<Arc<Acme>>,
    /// For the caller's authorization (every method here needs `admin`).
    pub app: Arc<crate::app::App>,
}

impl AcmeAdminService {
    /// The caller's rule grants `admin`: checked first, so a refused caller learns nothing.
    fn admin<T>(&self, method: &'static str, req: &Request<T>) -> Result<(), Status> {
        let (g, _) = crate::grpc::grant(&self.app, req);
        Ok(self.app.authz.check_admin(method, &g)?)
    }

    fn acme(&self) -> Result<&Arc<Acme>, Status> {
        self.acme
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("the ACME frontend is disabled on this server"))
    }
}

#[tonic::async_trait]
impl AcmeAdmin for AcmeAdminService {
    async fn create_eab_key(
        &self,
        request: Request<CreateEabKeyRequest>,
    ) -> Result<Response<CreateEabKeyResponse>, Status> {
        self.admin("CreateEabKey", &request)?;
        let r = request.into_inner();
        let (kid, secret) = self
            .acme()?
            .create_eab_key(NewEabKey {
                name: r.name,
                allowed_dns: r.allowed_dns,
                allowed_ips: r.allowed_ips,
                profiles: r.profiles,
            })
            .await?;
        Ok(Response::new(CreateEabKeyResponse { kid, hmac_key: b64u(secret) }))
    }

    async fn list_eab_keys(
        &self,
        request: Request<ListEabKeysRequest>,
    ) -> Result<Response<ListEabKeysResponse>, Status> {
        self.admin("ListEabKeys", &request)?;
        let keys = self
            .acme()?
            .eab_keys()?
            .into_iter()
            .map(|k| EabKeyInfo {
                kid: k.kid,
                name: k.name,
                allowed_dns: k.allowed_dns,
                allowed_ips: k.allowed_ips,
                profiles: k.profiles,
                created_at_unix: k.created_at,
                revoked: k.revoked,
            })
            .collect();
        Ok(Response::new(ListEabKeysResponse { keys }))
    }

    async fn revoke_eab_key(
        &self,
        request: Request<RevokeEabKeyRequest>,
    ) -> Result<Response<RevokeEabKeyResponse>, Status> {
        self.admin("RevokeEabKey", &request)?;
        self.acme()?.revoke_eab_key(&request.into_inner().kid).await?;
        Ok(Response::new(RevokeEabKeyResponse {}))
    }

    async fn set_renewal_window(
        &self,
        request: Request<SetRenewalWindowRequest>,
    ) -> Result<Response<SetRenewalWindowResponse>, Status> {
        self.admin("SetRenewalWindow", &request)?;
        let acme = self.acme()?;
        let peer = crate::grpc::requester(&request);
        let r = request.into_inner();
        let serial = ca_core::Serial::from_hex(&r.serial).map_err(AppError::from)?;
        if r.end_unix <= r.start_unix {
            return Err(Status::invalid_argument("the window's end must be after its start"));
        }
        if acme.app.store.cert(&serial).map_err(AppError::from)?.is_none() {
            return Err(Status::not_found(format!("no certificate with serial {serial}")));
        }
        acme.record(vec![Event::RenewalWindowSet(RenewalWindowSet {
            serial,
            start: r.start_unix,
            end: r.end_unix,
            requester: peer,
        })])
        .await?;
        Ok(Response::new(SetRenewalWindowResponse {}))
    }
}

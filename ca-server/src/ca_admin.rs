//! The `ca.v1.CaAdmin` gRPC service: issuing-CA rotation and the list of issuers, for
//! operators (`ca-server ca ...`) while the server runs. Every method is an administer
//! action (`authz.rs`): the admin credential by default.

use std::sync::Arc;

use ca_proto::convert::issuer_info;
use ca_proto::v1::ca_admin_server::CaAdmin;
use ca_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::error::AppError;

pub struct CaAdminService {
    pub app: Arc<App>,
}

impl CaAdminService {
    /// Checked first, so a refused caller learns nothing. Returns the caller, as logged.
    fn admin<T>(&self, method: &'static str, req: &Request<T>) -> Result<String, Status> {
        let (g, requester) = crate::grpc::grant(&self.app, req);
        self.app.authz.check_admin(method, &g)?;
        Ok(requester)
    }
}

#[tonic::async_trait]
impl CaAdmin for CaAdminService {
    async fn rotate_issuer(
        &self,
        request: Request<RotateIssuerRequest>,
    ) -> Result<Response<RotateIssuerResponse>, Status> {
        self.admin("RotateIssuer", &request)?;
        let ca = self.app.rotate_issuer().await?;
        Ok(Response::new(RotateIssuerResponse { issuer: Some(issuer_info(&ca, true)) }))
    }

    async fn create_issuer_csr(
        &self,
        request: Request<CreateIssuerCsrRequest>,
    ) -> Result<Response<CreateIssuerCsrResponse>, Status> {
        self.admin("CreateIssuerCsr", &request)?;
        let (csr_pem, generation) = self.app.create_issuer_csr().await?;
        Ok(Response::new(CreateIssuerCsrResponse { csr_pem, generation }))
    }

    async fn import_issuer(
        &self,
        request: Request<ImportIssuerRequest>,
    ) -> Result<Response<ImportIssuerResponse>, Status> {
        self.admin("ImportIssuer", &request)?;
        let ca = self.app.import_issuer(&request.into_inner().certificate).await?;
        Ok(Response::new(ImportIssuerResponse { issuer: Some(issuer_info(&ca, true)) }))
    }

    async fn list_issuers(
        &self,
        request: Request<ListIssuersRequest>,
    ) -> Result<Response<ListIssuersResponse>, Status> {
        self.admin("ListIssuers", &request)?;
        let current = self.app.authority.ca().generation;
        let issuers =
            self.app.authority.issuers().iter().map(|ca| issuer_info(ca, ca.generation == current)).collect();
        Ok(Response::new(ListIssuersResponse { issuers }))
    }

    async fn issue_ocsp_signer(
        &self,
        request: Request<IssueOcspSignerRequest>,
    ) -> Result<Response<IssueOcspSignerResponse>, Status> {
        let requester = self.admin("IssueOcspSigner", &request)?;
        let req = request.into_inner();
        let csr = ca_core::csr::check_key(&req.csr, self.app.authority.policy()).map_err(AppError::from)?;
        let issuer = self.app.revocation.issuer(req.issuer_generation)?;
        let certificate_der = issuer.issue_signer_for(&csr, &requester).await?;
        Ok(Response::new(IssueOcspSignerResponse { certificate_der }))
    }
}

//! The `ca.v1.CaAdmin` gRPC service: issuing-CA rotation and the list of issuers, for
//! operators (`ca-server ca ...`) while the server runs. Every method is an administer
//! action (`authz.rs`): the admin credential by default.

use std::sync::Arc;

use ca_proto::convert::issuer_info;
use ca_proto::v1::ca_admin_server::CaAdmin;
use ca_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::app::App;

pub struct CaAdminService {
    pub app: Arc<App>,
}

impl CaAdminService {
    /// Checked first, so a refused caller learns nothing.
    fn admin<T>(&self, method: &'static str, req: &Request<T>) -> Result<(), Status> {
        let (g, _) = crate::grpc::grant(&self.app, req);
        Ok(self.app.authz.check_admin(method, &g)?)
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
}

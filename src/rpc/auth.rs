//! Internal gRPC credentials: every call carries the cluster's RPC token
//! ([`RPC_TOKEN_HEADER`]); ingesters refuse calls without a token the keyring accepts with
//! UNAUTHENTICATED. Without a keyring (`insecure_cluster`) nothing is sent or checked.

use std::sync::Arc;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::cluster_keys::{ClusterKeys, RPC_TOKEN_HEADER};

/// Adds this node's token to every outgoing call.
#[derive(Clone, Default)]
pub struct Credential(Option<AsciiMetadataValue>);

impl Credential {
    pub fn new(keys: Option<&ClusterKeys>) -> Self {
        Self(keys.and_then(|k| AsciiMetadataValue::try_from(k.rpc_token()).ok()))
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert(RPC_TOKEN_HEADER, token.clone());
        }
        Ok(request)
    }
}

/// Checks every incoming call's token.
#[derive(Clone)]
pub struct RequireCredential(pub Option<Arc<ClusterKeys>>);

impl Interceptor for RequireCredential {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(keys) = &self.0 else {
            return Ok(request);
        };
        match request.metadata().get(RPC_TOKEN_HEADER) {
            Some(token) if keys.accepts_rpc_token(token.as_bytes()) => Ok(request),
            found => {
                let why = if found.is_some() { "wrong" } else { "missing" };
                metrics::counter!("ringtail_rpc_refused_total", "reason" => why).increment(1);
                Err(Status::unauthenticated(format!(
                    "{why} cluster token: internal calls need the cluster_secret"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> Arc<ClusterKeys> {
        Arc::new(ClusterKeys::new(&[secret.to_owned()], "").expect("keys"))
    }

    #[test]
    fn a_call_with_the_clusters_token_passes_and_others_are_unauthenticated() {
        let ours = keys("our-secret-0123456789");
        let mut check = RequireCredential(Some(ours.clone()));
        let signed = Credential::new(Some(&ours))
            .call(Request::new(()))
            .expect("signed");
        assert!(check.call(signed).is_ok());
        let theirs = Credential::new(Some(&keys("their-secret-0123456789")))
            .call(Request::new(()))
            .expect("signed");
        let refused = check.call(theirs).expect_err("wrong token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let refused = check.call(Request::new(())).expect_err("no token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(refused.message().contains("missing"));
        assert!(RequireCredential(None).call(Request::new(())).is_ok());
    }
}

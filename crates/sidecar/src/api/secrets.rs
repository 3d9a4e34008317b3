//! The Secrets API, shared by the HTTP and gRPC front ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;

use super::ApiError;
use crate::runtime::Runtime;
use crate::secrets::{Secret, SecretStore};

impl Runtime {
    fn secret_store(&self, name: &str) -> Result<&Arc<dyn SecretStore>, ApiError> {
        if self.components.secrets.is_empty() {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::FailedPrecondition,
                "ERR_SECRET_STORES_NOT_CONFIGURED",
                "secret store is not configured",
            ));
        }
        // daprd answers an unknown secret store with 401, not 404.
        self.components.secrets.get(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                tonic::Code::InvalidArgument,
                "ERR_SECRET_STORE_NOT_FOUND",
                format!("failed finding secret store with key {name}"),
            )
        })
    }

    fn secret_allowed(&self, store: &str, key: &str) -> bool {
        self.configuration
            .secret_scope(store)
            .is_none_or(|scope| scope.allows(key))
    }

    /// Reads one secret, if the Configuration's secret scopes allow it.
    pub(crate) fn get_secret(&self, store_name: &str, key: &str) -> Result<Secret, ApiError> {
        let store = self.secret_store(store_name)?;
        if !self.secret_allowed(store_name, key) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                tonic::Code::PermissionDenied,
                "ERR_PERMISSION_DENIED",
                format!("access denied by policy to get {key:?} from {store_name:?}"),
            ));
        }
        let started = Instant::now();
        let result = store.get(key);
        self.metrics
            .component_operation(store_name, "get", result.is_ok(), started.elapsed());
        result.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "ERR_SECRET_GET",
                format!("failed getting secret with key {key} from secret store {store_name}: {e}"),
            )
        })
    }

    /// Reads every secret the scopes allow; denied ones are left out, as daprd does.
    pub(crate) fn bulk_get_secret(
        &self,
        store_name: &str,
    ) -> Result<BTreeMap<String, Secret>, ApiError> {
        let store = self.secret_store(store_name)?;
        let started = Instant::now();
        let result = store.bulk_get();
        self.metrics
            .component_operation(store_name, "bulk_get", result.is_ok(), started.elapsed());
        let mut secrets = result.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "ERR_SECRET_GET",
                format!("failed getting secrets from secret store {store_name}: {e}"),
            )
        })?;
        secrets.retain(|key, _| self.secret_allowed(store_name, key));
        Ok(secrets)
    }
}

//! The State API, shared by the HTTP and gRPC front ends (daprd's "universal" API).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;

use super::ApiError;
use crate::components::StateComponent;
use crate::runtime::Runtime;
use crate::state::{Concurrency, DeleteRequest, Operation, SetRequest, StateError, StateItem};

/// One item of a save request.
#[derive(Debug, Clone, Default)]
pub(crate) struct SaveItem {
    pub(crate) key: String,
    pub(crate) value: Bytes,
    pub(crate) etag: Option<String>,
    pub(crate) metadata: HashMap<String, String>,
    pub(crate) concurrency: Option<String>,
    pub(crate) consistency: Option<String>,
}

/// A delete request.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteItem {
    pub(crate) key: String,
    pub(crate) etag: Option<String>,
    pub(crate) concurrency: Option<String>,
    pub(crate) consistency: Option<String>,
}

/// One result of a bulk get.
#[derive(Debug)]
pub(crate) struct BulkItem {
    /// The key as the app sent it.
    pub(crate) key: String,
    /// The item, `None` when missing.
    pub(crate) item: Option<StateItem>,
}

/// An operation of a transaction.
#[derive(Debug, Clone)]
pub(crate) enum TransactionItem {
    Upsert(SaveItem),
    Delete(DeleteItem),
}

/// The metadata key daprd reports an item's expiry under.
pub(crate) const TTL_EXPIRE_TIME: &str = "ttlExpireTime";

/// Metadata a read reports: `ttlExpireTime` (RFC 3339) when the item expires.
pub(crate) fn item_metadata(item: &StateItem) -> HashMap<String, String> {
    item.expire_time
        .map(|t| {
            HashMap::from([(
                TTL_EXPIRE_TIME.to_owned(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )])
        })
        .unwrap_or_default()
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn parse_concurrency(value: Option<&str>) -> Result<Concurrency, ApiError> {
    match value.unwrap_or("") {
        "" | "last-write" => Ok(Concurrency::LastWrite),
        "first-write" => Ok(Concurrency::FirstWrite),
        other => Err(ApiError::malformed(format!(
            "unrecognized concurrency model '{other}'"
        ))),
    }
}

fn check_consistency(value: Option<&str>) -> Result<(), ApiError> {
    match value.unwrap_or("") {
        "" | "strong" | "eventual" => Ok(()),
        other => Err(ApiError::malformed(format!(
            "unrecognized consistency model '{other}'"
        ))),
    }
}

/// `ttlInSeconds`: -1 (or 0) keeps the item forever, as components-contrib's `ParseTTL`.
fn parse_ttl(metadata: &HashMap<String, String>) -> Result<Option<Duration>, ApiError> {
    let Some(text) = metadata.get("ttlInSeconds") else {
        return Ok(None);
    };
    let seconds: i64 = text.trim().parse().map_err(|_| {
        ApiError::malformed(format!("metadata ttlInSeconds: {text:?} is not an integer"))
    })?;
    match seconds {
        -1..=0 => Ok(None),
        1..=0x7fff_ffff => Ok(Some(Duration::from_secs(seconds.unsigned_abs()))),
        _ => Err(ApiError::malformed(format!(
            "metadata ttlInSeconds: {seconds} is out of range (-1 to {})",
            i32::MAX
        ))),
    }
}

impl Runtime {
    /// Looks a state store up, with daprd's errors for none and unknown.
    pub(crate) fn state_store(&self, name: &str) -> Result<&StateComponent, ApiError> {
        if self.components.state.is_empty() {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::FailedPrecondition,
                "ERR_STATE_STORE_NOT_CONFIGURED",
                format!("state store {name} is not configured"),
            )
            .with_reason("DAPR_STATE_NOT_CONFIGURED", &self.app_id));
        }
        self.components.state.get(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                "ERR_STATE_STORE_NOT_FOUND",
                format!("state store {name} is not found"),
            )
            .with_reason("DAPR_STATE_NOT_FOUND", &self.app_id)
        })
    }

    fn storage_key(&self, store: &StateComponent, key: &str) -> Result<String, ApiError> {
        store.storage_key(key).map_err(|e| {
            ApiError::malformed(e.to_string()).with_reason("DAPR_STATE_ILLEGAL_KEY", &self.app_id)
        })
    }

    fn record(&self, store: &str, operation: &str, started: Instant, ok: bool) {
        self.metrics
            .component_operation(store, operation, ok, started.elapsed());
    }

    fn set_request(&self, store: &StateComponent, item: SaveItem) -> Result<SetRequest, ApiError> {
        check_consistency(item.consistency.as_deref())?;
        Ok(SetRequest {
            key: self.storage_key(store, &item.key)?,
            ttl: parse_ttl(&item.metadata)?,
            concurrency: parse_concurrency(item.concurrency.as_deref())?,
            etag: non_empty(item.etag),
            value: item.value,
        })
    }

    fn delete_request(
        &self,
        store: &StateComponent,
        item: DeleteItem,
    ) -> Result<DeleteRequest, ApiError> {
        check_consistency(item.consistency.as_deref())?;
        Ok(DeleteRequest {
            key: self.storage_key(store, &item.key)?,
            concurrency: parse_concurrency(item.concurrency.as_deref())?,
            etag: non_empty(item.etag),
        })
    }

    /// Reads one key.
    pub(crate) async fn get_state(
        &self,
        store_name: &str,
        key: &str,
    ) -> Result<Option<StateItem>, ApiError> {
        let store = self.state_store(store_name)?;
        let storage_key = self.storage_key(store, key)?;
        let started = Instant::now();
        let result = store.store.get(&storage_key).await;
        self.record(store_name, "get", started, result.is_ok());
        result.map_err(|e| {
            store_failure(
                "ERR_STATE_GET",
                format!("fail to get {key} from state store {store_name}: {e}"),
                &e,
            )
        })
    }

    /// Saves items; several items are written one by one, as daprd's bulk set (not atomic).
    pub(crate) async fn save_state(
        &self,
        store_name: &str,
        items: Vec<SaveItem>,
    ) -> Result<(), ApiError> {
        let store = self.state_store(store_name)?;
        let requests = items
            .into_iter()
            .map(|item| {
                if item.key.is_empty() {
                    return Err(ApiError::malformed("\"key\" is a required field"));
                }
                self.set_request(store, item)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut first_error: Option<StateError> = None;
        let mut all_etag_errors = true;
        for request in &requests {
            let started = Instant::now();
            let result = store.store.set(request).await;
            self.record(store_name, "set", started, result.is_ok());
            if let Err(error) = result {
                all_etag_errors &= matches!(
                    error,
                    StateError::EtagMismatch(_) | StateError::InvalidEtag(_)
                );
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            None => Ok(()),
            Some(error) => {
                let message = format!("failed saving state in state store {store_name}: {error}");
                if all_etag_errors {
                    Err(store_failure("ERR_STATE_SAVE", message, &error))
                } else {
                    Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        tonic::Code::Internal,
                        "ERR_STATE_SAVE",
                        message,
                    ))
                }
            }
        }
    }

    /// Deletes one key.
    pub(crate) async fn delete_state(
        &self,
        store_name: &str,
        item: DeleteItem,
    ) -> Result<(), ApiError> {
        let store = self.state_store(store_name)?;
        let key = item.key.clone();
        let request = self.delete_request(store, item)?;
        let started = Instant::now();
        let result = store.store.delete(&request).await;
        self.record(store_name, "delete", started, result.is_ok());
        result.map_err(|e| {
            store_failure(
                "ERR_STATE_DELETE",
                format!("failed deleting state with key {key}: {e}"),
                &e,
            )
        })
    }

    /// Reads several keys; missing keys come back without data.
    pub(crate) async fn bulk_get_state(
        &self,
        store_name: &str,
        keys: Vec<String>,
    ) -> Result<Vec<BulkItem>, ApiError> {
        let store = self.state_store(store_name)?;
        let storage_keys = keys
            .iter()
            .map(|key| self.storage_key(store, key))
            .collect::<Result<Vec<_>, _>>()?;
        let started = Instant::now();
        let result = store.store.bulk_get(&storage_keys).await;
        self.record(store_name, "bulk_get", started, result.is_ok());
        let items = result.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "ERR_STATE_BULK_GET",
                e.to_string(),
            )
        })?;
        Ok(keys
            .into_iter()
            .zip(items)
            .map(|(key, item)| BulkItem { key, item })
            .collect())
    }

    /// Applies a transaction: every operation or none.
    pub(crate) async fn transact_state(
        &self,
        store_name: &str,
        items: Vec<TransactionItem>,
    ) -> Result<(), ApiError> {
        let store = self.state_store(store_name)?;
        if !store.store.features().transactional {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Unimplemented,
                "ERR_STATE_STORE_NOT_SUPPORTED",
                format!("state store {store_name} doesn't support transactions"),
            ));
        }
        if items.is_empty() {
            return Ok(());
        }
        let operations = items
            .into_iter()
            .map(|item| match item {
                TransactionItem::Upsert(save) => self.set_request(store, save).map(Operation::Set),
                TransactionItem::Delete(delete) => {
                    self.delete_request(store, delete).map(Operation::Delete)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let started = Instant::now();
        let result = store.store.transact(&operations).await;
        self.record(store_name, "transaction", started, result.is_ok());
        // As daprd: any failure of a transaction, an ETag mismatch included, is a 500.
        result.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "ERR_STATE_TRANSACTION",
                format!("error while executing state transaction: {e}"),
            )
        })
    }
}

/// daprd's mapping of store errors: ETag mismatch 409 / Aborted, invalid ETag 400 /
/// InvalidArgument, anything else 500 / Internal.
fn store_failure(code: &'static str, message: String, error: &StateError) -> ApiError {
    let (status, grpc) = match error {
        StateError::EtagMismatch(_) => (StatusCode::CONFLICT, tonic::Code::Aborted),
        StateError::InvalidEtag(_) | StateError::BadRequest(_) => {
            (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument)
        }
        StateError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal),
    };
    ApiError::new(status, grpc, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_follows_components_contrib() {
        let ttl = |v: &str| parse_ttl(&HashMap::from([("ttlInSeconds".to_owned(), v.to_owned())]));
        assert_eq!(ttl("60"), Ok(Some(Duration::from_secs(60))));
        assert_eq!(ttl("-1"), Ok(None));
        assert_eq!(ttl("0"), Ok(None));
        assert!(ttl("-2").is_err());
        assert!(ttl("soon").is_err());
    }

    #[test]
    fn unknown_concurrency_and_consistency_are_rejected() {
        assert_eq!(
            parse_concurrency(Some("first-write")),
            Ok(Concurrency::FirstWrite)
        );
        assert_eq!(parse_concurrency(None), Ok(Concurrency::LastWrite));
        assert!(parse_concurrency(Some("whoever")).is_err());
        assert!(check_consistency(Some("eventual")).is_ok());
        assert!(check_consistency(Some("maybe")).is_err());
    }
}

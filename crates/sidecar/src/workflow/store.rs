//! How workflow instances are kept in the actor state store: one protobuf document per instance
//! (metadata, history, inbox, pending activities and timers), written by a group-commit writer
//! that folds every write queued while the previous transaction ran into one transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dapr_durabletask_proto::{HistoryEvent, ParentInstanceInfo, TaskFailureDetails, TraceContext};
use prost::Message as _;
use prost_types::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::state::{Concurrency, DeleteRequest, Operation, SetRequest, StateStore};

/// A workflow instance as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StoredInstance {
    #[prost(string, tag = "1")]
    pub(crate) instance_id: String,
    #[prost(string, tag = "2")]
    pub(crate) name: String,
    /// An `OrchestrationStatus`.
    #[prost(int32, tag = "3")]
    pub(crate) status: i32,
    #[prost(message, optional, tag = "4")]
    pub(crate) created: Option<Timestamp>,
    #[prost(message, optional, tag = "5")]
    pub(crate) last_updated: Option<Timestamp>,
    #[prost(message, optional, tag = "6")]
    pub(crate) completed: Option<Timestamp>,
    #[prost(string, optional, tag = "7")]
    pub(crate) input: Option<String>,
    #[prost(string, optional, tag = "8")]
    pub(crate) output: Option<String>,
    #[prost(string, optional, tag = "9")]
    pub(crate) custom_status: Option<String>,
    #[prost(message, optional, tag = "10")]
    pub(crate) failure: Option<TaskFailureDetails>,
    #[prost(string, tag = "11")]
    pub(crate) execution_id: String,
    #[prost(message, optional, tag = "12")]
    pub(crate) parent: Option<ParentInstanceInfo>,
    /// Events the workflow has seen (committed turns).
    #[prost(message, repeated, tag = "13")]
    pub(crate) history: Vec<HistoryEvent>,
    /// Events waiting for the next turn.
    #[prost(message, repeated, tag = "14")]
    pub(crate) inbox: Vec<HistoryEvent>,
    /// Activities scheduled and not completed yet (redispatched after a restart).
    #[prost(message, repeated, tag = "15")]
    pub(crate) activities: Vec<StoredActivity>,
    /// Timers created and not fired yet (rearmed after a restart).
    #[prost(message, repeated, tag = "16")]
    pub(crate) timers: Vec<StoredTimer>,
    /// Whether a turn has processed `ExecutionStarted` (before that the status is PENDING).
    #[prost(bool, tag = "17")]
    pub(crate) started: bool,
    #[prost(map = "string, string", tag = "18")]
    pub(crate) tags: HashMap<String, String>,
}

/// An activity waiting for a worker's result.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StoredActivity {
    #[prost(int32, tag = "1")]
    pub(crate) task_id: i32,
    #[prost(string, tag = "2")]
    pub(crate) name: String,
    #[prost(string, optional, tag = "3")]
    pub(crate) input: Option<String>,
    #[prost(string, tag = "4")]
    pub(crate) task_execution_id: String,
    #[prost(message, optional, tag = "5")]
    pub(crate) trace_context: Option<TraceContext>,
    #[prost(string, optional, tag = "6")]
    pub(crate) version: Option<String>,
}

/// A durable timer.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StoredTimer {
    #[prost(int32, tag = "1")]
    pub(crate) timer_id: i32,
    #[prost(message, optional, tag = "2")]
    pub(crate) fire_at: Option<Timestamp>,
}

/// The key space of one app's workflows in the actor state store.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `<appId>||dapr.internal.workflow||`, so apps sharing a store stay apart.
    pub(crate) fn new(app_id: &str) -> Self {
        Self {
            prefix: format!("{app_id}||dapr.internal.workflow||"),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn instance(&self, instance_id: &str) -> String {
        format!("{}{instance_id}", self.prefix)
    }
}

/// The write of one instance document.
pub(crate) fn set(key: String, instance: &StoredInstance) -> Operation {
    Operation::Set(SetRequest {
        key,
        value: Bytes::from(instance.encode_to_vec()),
        etag: None,
        concurrency: Concurrency::LastWrite,
        ttl: None,
    })
}

/// The delete of one instance document.
pub(crate) fn delete(key: String) -> Operation {
    Operation::Delete(DeleteRequest {
        key,
        etag: None,
        concurrency: Concurrency::LastWrite,
    })
}

/// Decodes a stored instance.
pub(crate) fn decode(bytes: &[u8]) -> Result<StoredInstance, prost::DecodeError> {
    StoredInstance::decode(bytes)
}

struct Write {
    operations: Vec<Operation>,
    done: Option<oneshot::Sender<()>>,
}

/// The handle through which the engine queues writes. Writes are applied in the order queued.
#[derive(Clone)]
pub(crate) struct Writer {
    sender: mpsc::UnboundedSender<Write>,
}

/// Resolves once the write it belongs to is committed.
pub(crate) struct Committed(Option<oneshot::Receiver<()>>);

impl Committed {
    /// Waits for the commit; `false` when the writer stopped first.
    pub(crate) async fn wait(self) -> bool {
        match self.0 {
            Some(receiver) => receiver.await.is_ok(),
            None => true,
        }
    }
}

/// The largest number of operations folded into one transaction.
const MAX_BATCH: usize = 512;

impl Writer {
    /// Starts the writer task for `store`.
    pub(crate) fn spawn(store: Arc<dyn StateStore>) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(store, receiver));
        Self { sender }
    }

    /// Queues operations to commit together (with whatever else is queued at the time).
    pub(crate) fn write(&self, operations: Vec<Operation>) -> Committed {
        if operations.is_empty() {
            return Committed(None);
        }
        let (done, receiver) = oneshot::channel();
        let write = Write {
            operations,
            done: Some(done),
        };
        match self.sender.send(write) {
            Ok(()) => Committed(Some(receiver)),
            Err(_) => {
                let (_, closed) = oneshot::channel();
                Committed(Some(closed))
            }
        }
    }
}

async fn run(store: Arc<dyn StateStore>, mut receiver: mpsc::UnboundedReceiver<Write>) {
    let mut batch: Vec<Write> = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut count = first.operations.len();
        batch.push(first);
        while count < MAX_BATCH {
            match receiver.try_recv() {
                Ok(write) => {
                    count += write.operations.len();
                    batch.push(write);
                }
                Err(_) => break,
            }
        }
        let operations = fold(&mut batch);
        let mut backoff = Duration::from_millis(50);
        // The engine's memory is already ahead of the store: retry until the store takes the
        // write, so that what workers were told is never lost while the sidecar runs.
        while let Err(error) = store.transact(&operations).await {
            tracing::warn!(%error, operations = operations.len(), "workflow state write failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        for write in batch.drain(..) {
            if let Some(done) = write.done {
                let _ = done.send(());
            }
        }
    }
}

/// One operation per key, the last queued winning (the documents are whole instances).
fn fold(batch: &mut [Write]) -> Vec<Operation> {
    let mut positions: HashMap<String, usize> = HashMap::new();
    let mut operations: Vec<Operation> = Vec::new();
    for write in batch.iter_mut() {
        for operation in write.operations.drain(..) {
            match positions.get(operation.key()) {
                Some(&position) => operations[position] = operation,
                None => {
                    positions.insert(operation.key().to_owned(), operations.len());
                    operations.push(operation);
                }
            }
        }
    }
    operations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_writes_of_a_key_replace_earlier_ones_in_a_batch() {
        let instance = |name: &str| StoredInstance {
            name: name.to_owned(),
            ..StoredInstance::default()
        };
        let mut batch = vec![
            Write {
                operations: vec![
                    set("a".into(), &instance("1")),
                    set("b".into(), &instance("2")),
                ],
                done: None,
            },
            Write {
                operations: vec![set("a".into(), &instance("3")), delete("b".into())],
                done: None,
            },
        ];
        let folded = fold(&mut batch);
        assert_eq!(folded.len(), 2);
        match &folded[0] {
            Operation::Set(set) => {
                assert_eq!(set.key, "a");
                assert_eq!(
                    decode(&set.value).map(|i| i.name).ok().as_deref(),
                    Some("3")
                );
            }
            other => panic!("expected a set, got {other:?}"),
        }
        assert!(matches!(&folded[1], Operation::Delete(d) if d.key == "b"));
    }
}

//! `state.redis`: each key is a hash with fields `data` (the value) and `version` (the ETag, a
//! counter), the layout daprd's Redis store uses, so either runtime reads the other's data.
//!
//! Every write is one Lua script, so checks and writes are atomic on the server. Unlike daprd,
//! whose transactions are a MULTI/EXEC that can apply partially, a transaction here checks every
//! ETag first and applies nothing when one fails.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use redis::aio::ConnectionManager;
use redis::{Script, Value};

use super::{
    Concurrency, DeleteRequest, Features, Operation, SetRequest, StateError, StateItem, StateStore,
};
use crate::resources::{ComponentMetadata, ResourceError};

/// The Redis state store.
pub struct RedisStore {
    connection: ConnectionManager,
    default_ttl: Option<Duration>,
    get: Script,
    transact: Script,
}

/// Reads `data`, `version` and the remaining time to live in one round trip.
const GET_SCRIPT: &str = r#"
local fields = redis.call("HMGET", KEYS[1], "data", "version")
if not fields[2] then return false end
return {fields[1], fields[2], redis.call("PTTL", KEYS[1])}
"#;

/// Applies a list of operations atomically. For operation i (1-based) on KEYS[i], ARGV holds five
/// values: kind ("set" or "del"), expected ETag ("" for none), data, first-write ("1" or "0"),
/// and TTL seconds ("0" for none). Every check runs before any write.
const TRANSACT_SCRIPT: &str = r#"
local versions = {}
local function current(key)
  if versions[key] == nil then
    local v = redis.call("HGET", key, "version")
    if v then versions[key] = tonumber(v) else versions[key] = false end
  end
  return versions[key]
end
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 5
  local kind, etag, first_write = ARGV[base + 1], ARGV[base + 2], ARGV[base + 4]
  local version = current(key)
  if etag ~= "" then
    if version == false or tostring(version) ~= etag then
      return redis.error_reply("ETAG_MISMATCH " .. key)
    end
  elseif kind == "set" and first_write == "1" and version ~= false then
    return redis.error_reply("ETAG_MISMATCH " .. key)
  end
  if kind == "set" then versions[key] = (version or 0) + 1 else versions[key] = false end
end
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 5
  if ARGV[base + 1] == "set" then
    redis.call("HSET", key, "data", ARGV[base + 3])
    redis.call("HINCRBY", key, "version", 1)
    local ttl = tonumber(ARGV[base + 5])
    if ttl > 0 then redis.call("EXPIRE", key, ttl) else redis.call("PERSIST", key) end
  else
    redis.call("DEL", key)
  end
end
return #KEYS
"#;

/// A Redis client from components-contrib's connection metadata (`redisHost`, `redisPort`,
/// `redisUsername`, `redisPassword`, `redisDB`), shared by the state store and pub/sub.
pub(crate) fn client(metadata: &ComponentMetadata) -> Result<redis::Client, ResourceError> {
    if metadata.bool("enableTLS", false)? {
        return Err(metadata.error(
            "enableTLS",
            "TLS to Redis is not supported by the local sidecar",
        ));
    }
    if let Some(kind) = metadata
        .get("redisType")
        .filter(|t| !t.eq_ignore_ascii_case("node"))
    {
        return Err(metadata.error(
            "redisType",
            format!("{kind:?} is not supported by the local sidecar (only `node`)"),
        ));
    }
    let host = metadata.get("redisHost").unwrap_or("localhost:6379");
    let host = match metadata.get("redisPort") {
        Some(port) if !host.contains(':') => format!("{host}:{port}"),
        Some(_) => {
            return Err(metadata.error("redisPort", "is set, but `redisHost` already has a port"));
        }
        None if host.contains(':') => host.to_owned(),
        None => format!("{host}:6379"),
    };
    let (hostname, port) = host
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_owned(), p)))
        .ok_or_else(|| metadata.error("redisHost", format!("expected host:port, got {host:?}")))?;
    let db = metadata.parse::<i64>("redisDB")?.unwrap_or(0);
    let mut settings = redis::RedisConnectionInfo::default().set_db(db);
    if let Some(username) = metadata.get("redisUsername") {
        settings = settings.set_username(username);
    }
    if let Some(password) = metadata.get("redisPassword") {
        settings = settings.set_password(password);
    }
    let info =
        redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(hostname, port))
            .map_err(|e| metadata.error("redisHost", format!("invalid Redis address: {e}")))?
            .set_redis_settings(settings);
    redis::Client::open(info)
        .map_err(|e| metadata.error("redisHost", format!("invalid Redis address: {e}")))
}

impl RedisStore {
    /// Connects to `redisHost` and checks the server answers.
    pub async fn connect(metadata: &ComponentMetadata) -> Result<Self, ResourceError> {
        let client = client(metadata)?;
        let host = metadata
            .get("redisHost")
            .unwrap_or("localhost:6379")
            .to_owned();
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(20)))
            .set_number_of_retries(3);
        let connection = tokio::time::timeout(
            Duration::from_secs(10),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| {
            metadata.error(
                "redisHost",
                format!("timed out connecting to Redis at {host}"),
            )
        })?
        .map_err(|e| {
            metadata.error(
                "redisHost",
                format!("cannot connect to Redis at {host}: {e}"),
            )
        })?;
        let default_ttl = metadata
            .parse::<i64>("ttlInSeconds")?
            .filter(|ttl| *ttl > 0)
            .map(|ttl| Duration::from_secs(ttl.unsigned_abs()));
        Ok(Self {
            connection,
            default_ttl,
            get: Script::new(GET_SCRIPT),
            transact: Script::new(TRANSACT_SCRIPT),
        })
    }

    fn error(error: redis::RedisError) -> StateError {
        let text = error.to_string();
        if text.contains("ETAG_MISMATCH") {
            StateError::EtagMismatch(text)
        } else {
            StateError::Store(error.into())
        }
    }
}

/// Redis ETags are version counters; anything else can never match.
fn check_etag(etag: &str) -> Result<(), StateError> {
    etag.parse::<u64>()
        .map(|_| ())
        .map_err(|_| StateError::InvalidEtag(format!("{etag:?} is not a version number")))
}

#[async_trait]
impl StateStore for RedisStore {
    fn features(&self) -> Features {
        Features {
            etag: true,
            transactional: true,
            ttl: true,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<StateItem>, StateError> {
        let mut connection = self.connection.clone();
        let reply: Value = self
            .get
            .key(key)
            .invoke_async(&mut connection)
            .await
            .map_err(Self::error)?;
        let fields = match reply {
            Value::Nil => return Ok(None),
            Value::Array(fields) if fields.len() == 3 => fields,
            other => {
                return Err(StateError::Store(anyhow::anyhow!(
                    "unexpected reply from Redis for {key}: {other:?}"
                )));
            }
        };
        let bytes = |value: &Value| match value {
            Value::BulkString(b) => Some(b.clone()),
            _ => None,
        };
        let data = bytes(&fields[0]).ok_or_else(|| {
            StateError::Store(anyhow::anyhow!(
                "required hash field 'data' was not found for {key}"
            ))
        })?;
        let version = bytes(&fields[1])
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| {
                StateError::Store(anyhow::anyhow!(
                    "required hash field 'version' was not found for {key}"
                ))
            })?;
        let expire_time = match fields[2] {
            Value::Int(ms) if ms > 0 => Some(Utc::now() + chrono::Duration::milliseconds(ms)),
            _ => None,
        };
        Ok(Some(StateItem {
            value: Bytes::from(data),
            etag: version,
            expire_time,
        }))
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StateError> {
        let mut connection = self.connection.clone();
        // SCAN's MATCH is a glob: escape its special characters in the prefix.
        let mut pattern = String::with_capacity(prefix.len() + 1);
        for c in prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await
                .map_err(Self::error)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        let mut items = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut pipeline = redis::pipe();
            for key in chunk {
                pipeline.cmd("HGET").arg(key).arg("data");
            }
            let values: Vec<Option<Vec<u8>>> = pipeline
                .query_async(&mut connection)
                .await
                .map_err(Self::error)?;
            for (key, value) in chunk.iter().zip(values) {
                if let Some(value) = value {
                    items.push((key.clone(), Bytes::from(value)));
                }
            }
        }
        Ok(items)
    }

    async fn set(&self, request: &SetRequest) -> Result<(), StateError> {
        self.transact(std::slice::from_ref(&Operation::Set(request.clone())))
            .await
    }

    async fn delete(&self, request: &DeleteRequest) -> Result<(), StateError> {
        self.transact(std::slice::from_ref(&Operation::Delete(request.clone())))
            .await
    }

    async fn transact(&self, operations: &[Operation]) -> Result<(), StateError> {
        if operations.is_empty() {
            return Ok(());
        }
        let mut invocation = self.transact.prepare_invoke();
        for operation in operations {
            invocation.key(operation.key());
            match operation {
                Operation::Set(set) => {
                    if let Some(etag) = &set.etag {
                        check_etag(etag)?;
                    }
                    let ttl = set
                        .ttl
                        .or(self.default_ttl)
                        .map_or(0, |t| t.as_secs().max(1));
                    invocation
                        .arg("set")
                        .arg(set.etag.as_deref().unwrap_or(""))
                        .arg(set.value.as_ref())
                        .arg(if set.concurrency == Concurrency::FirstWrite {
                            "1"
                        } else {
                            "0"
                        })
                        .arg(ttl);
                }
                Operation::Delete(delete) => {
                    if let Some(etag) = &delete.etag {
                        check_etag(etag)?;
                    }
                    invocation
                        .arg("del")
                        .arg(delete.etag.as_deref().unwrap_or(""))
                        .arg("")
                        .arg("0")
                        .arg(0);
                }
            }
        }
        let mut connection = self.connection.clone();
        let _: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(Self::error)?;
        Ok(())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(())
    }
}

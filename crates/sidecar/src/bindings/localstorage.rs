//! `bindings.localstorage`: files under `rootPath` (`create`, `get`, `list`, `delete`).
//!
//! As components-contrib: `fileName` defaults to a new UUID on create; payloads that are a JSON
//! string are unquoted, and payloads that decode as standard base64 are written decoded; paths
//! never leave the root (`..` is resolved as if the root were `/`).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;

use super::{BindingError, BindingRequest, BindingResponse, OutputBinding, request_value, unquote};
use crate::components::ComponentContext;
use crate::resources::{ComponentMetadata, ResourceError};

pub(super) struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub(super) fn new(
        metadata: &ComponentMetadata,
        context: &ComponentContext,
    ) -> Result<Self, ResourceError> {
        let root = context.working_dir.join(metadata.required("rootPath")?);
        let root = clean(&root);
        for forbidden in ["/proc", "/sys", "/boot", "/var/run/secrets"] {
            if root.starts_with(forbidden) {
                return Err(metadata.error("rootPath", "points to a disallowed location"));
            }
        }
        if root.is_file() {
            return Err(metadata.error("rootPath", "represents a file and not a directory"));
        }
        std::fs::create_dir_all(&root).map_err(|e| {
            metadata.error("rootPath", format!("cannot create {}: {e}", root.display()))
        })?;
        Ok(Self { root })
    }

    /// `fileName` under the root, with `..` unable to climb out of it.
    fn path(&self, file_name: &str) -> PathBuf {
        let mut relative = PathBuf::new();
        for part in Path::new(file_name).components() {
            match part {
                Component::Normal(name) => relative.push(name),
                Component::ParentDir => {
                    relative.pop();
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        self.root.join(relative)
    }
}

/// Lexically normalises a path (no filesystem access).
fn clean(path: &Path) -> PathBuf {
    let mut cleaned = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                cleaned.pop();
            }
            Component::CurDir => {}
            other => cleaned.push(other),
        }
    }
    cleaned
}

fn list_files(dir: &Path, files: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            list_files(&path, files)?;
        } else {
            files.push(path.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

#[async_trait]
impl OutputBinding for LocalStorage {
    fn operations(&self) -> &'static [&'static str] {
        &["create", "get", "list", "delete"]
    }

    async fn invoke(
        &self,
        request: BindingRequest,
    ) -> Result<Option<BindingResponse>, BindingError> {
        let file_name = request_value(&request.metadata, "fileName").map(str::to_owned);
        match request.operation.as_str() {
            "create" => {
                let file_name = file_name.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let path = self.path(&file_name);
                let text = unquote(&request.data);
                let bytes = match base64::engine::general_purpose::STANDARD.decode(&text) {
                    Ok(decoded) => Bytes::from(decoded),
                    Err(_) => text,
                };
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await.map_err(|e| {
                        BindingError::new(format!(
                            "error creating directory {}: {e}",
                            parent.display()
                        ))
                    })?;
                }
                tokio::fs::write(&path, &bytes).await.map_err(|e| {
                    BindingError::new(format!("error creating file {}: {e}", path.display()))
                })?;
                let relative = path
                    .strip_prefix(&self.root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                let body = serde_json::json!({ "fileName": relative });
                Ok(Some(BindingResponse {
                    data: Bytes::from(body.to_string()),
                    metadata: BTreeMap::new(),
                }))
            }
            "get" => {
                let path = self.path(file_name.as_deref().unwrap_or(""));
                match tokio::fs::read(&path).await {
                    Ok(bytes) => Ok(Some(BindingResponse {
                        data: Bytes::from(bytes),
                        metadata: BTreeMap::new(),
                    })),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BindingError::new(
                        format!("file not found: {}", path.display()),
                    )),
                    Err(e) => Err(BindingError::new(format!(
                        "error reading file {}: {e}",
                        path.display()
                    ))),
                }
            }
            "list" => {
                let path = self.path(file_name.as_deref().unwrap_or(""));
                if !path.is_dir() {
                    return Err(BindingError::new(format!(
                        "unable to list files as the file specified is not a directory: {}",
                        path.display()
                    )));
                }
                let mut files = Vec::new();
                list_files(&path, &mut files).map_err(|e| {
                    BindingError::new(format!(
                        "error getting stats for path {}: {e}",
                        path.display()
                    ))
                })?;
                // daprd answers `null` for an empty directory.
                let body = if files.is_empty() {
                    "null".to_owned()
                } else {
                    serde_json::to_string(&files).unwrap_or_default()
                };
                Ok(Some(BindingResponse {
                    data: Bytes::from(body),
                    metadata: BTreeMap::new(),
                }))
            }
            "delete" => {
                let path = self.path(file_name.as_deref().unwrap_or(""));
                let removed = if path.is_dir() {
                    tokio::fs::remove_dir(&path).await
                } else {
                    tokio::fs::remove_file(&path).await
                };
                removed.map(|()| None).map_err(|e| {
                    BindingError::new(format!("error deleting file {}: {e}", path.display()))
                })
            }
            other => Err(BindingError::new(format!("unsupported operation {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(root: &Path) -> LocalStorage {
        let root = root.to_string_lossy().into_owned();
        let metadata = ComponentMetadata::from_pairs("files", [("rootPath", root.as_str())]);
        LocalStorage::new(&metadata, &ComponentContext::for_tests("app")).expect("valid")
    }

    fn request(operation: &str, data: &str, file: Option<&str>) -> BindingRequest {
        BindingRequest {
            data: Bytes::from(data.to_owned()),
            metadata: file
                .map(|f| BTreeMap::from([("fileName".to_owned(), f.to_owned())]))
                .unwrap_or_default(),
            operation: operation.into(),
        }
    }

    #[tokio::test]
    async fn files_are_created_read_listed_and_deleted_under_the_root() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = storage(dir.path());
        let created = store
            .invoke(request(
                "create",
                "\"<p>Hello there</p>\"",
                Some("mail/1.html"),
            ))
            .await
            .expect("create")
            .expect("a response");
        assert_eq!(
            created.data,
            Bytes::from_static(br#"{"fileName":"mail/1.html"}"#)
        );
        let read = store
            .invoke(request("get", "", Some("mail/1.html")))
            .await
            .expect("get")
            .expect("a response");
        assert_eq!(read.data, Bytes::from_static(b"<p>Hello there</p>"));
        let listed = store
            .invoke(request("list", "", None))
            .await
            .expect("list")
            .expect("a response");
        let files: Vec<String> = serde_json::from_slice(&listed.data).expect("a JSON list");
        assert_eq!(
            files,
            vec![
                dir.path()
                    .join("mail/1.html")
                    .to_string_lossy()
                    .into_owned()
            ]
        );
        assert_eq!(
            store
                .invoke(request("delete", "", Some("mail/1.html")))
                .await
                .expect("delete"),
            None
        );
        assert!(
            store
                .invoke(request("get", "", Some("mail/1.html")))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn paths_cannot_leave_the_root() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = storage(&dir.path().join("root"));
        store
            .invoke(request("create", "x y", Some("../../escape.txt")))
            .await
            .expect("create");
        assert!(dir.path().join("root/escape.txt").exists());
        assert!(!dir.path().join("escape.txt").exists());
    }
}

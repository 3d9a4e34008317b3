//! The shop's public OpenAPI document, merged from the apps' own: paths rewritten to their
//! `/api/...` form (paths the gateway does not route are left out), components renamed
//! `<app>.<Name>` so that apps cannot clash, and every `$ref` rewritten to match.

use serde_json::{Map, Value, json};

use super::routes::{AppId, RouteTable};

/// HTTP methods that name operations in a path item.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One app's OpenAPI document.
#[derive(Debug, Clone, PartialEq)]
pub struct AppDocument {
    /// The app.
    pub app_id: AppId,
    /// Its document, as it serves it at `/openapi.json`.
    pub document: Value,
}

/// Merges the documents of the apps that answered; `missing` are those that did not.
pub fn merge(table: &RouteTable, documents: &[AppDocument], missing: &[AppId]) -> Value {
    let mut paths = Map::new();
    let mut components = Map::new();
    let mut tags: Vec<Value> = Vec::new();
    for AppDocument { app_id, document } in documents {
        let app = app_id.as_str();
        let info = &document["info"];
        let about = info["description"]
            .as_str()
            .or_else(|| info["title"].as_str())
            .unwrap_or(app);
        tags.push(json!({ "name": app, "description": about }));
        if let Some(kinds) = document["components"].as_object() {
            for (kind, entries) in kinds {
                let Some(entries) = entries.as_object() else {
                    continue;
                };
                let merged = components
                    .entry(kind.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(merged) = merged.as_object_mut() {
                    for (name, entry) in entries {
                        merged.insert(format!("{app}.{name}"), rewrite_refs(entry, app));
                    }
                }
            }
        }
        let Some(app_paths) = document["paths"].as_object() else {
            continue;
        };
        for (path, item) in app_paths {
            let Some(public) = table.public_path(app_id, path) else {
                continue;
            };
            let mut item = rewrite_refs(item, app);
            if let Some(operations) = item.as_object_mut() {
                for method in METHODS {
                    if let Some(operation) =
                        operations.get_mut(*method).and_then(Value::as_object_mut)
                    {
                        label_operation(operation, app);
                    }
                }
            }
            paths.insert(public, item);
        }
    }
    let schemes = components
        .entry("securitySchemes")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(schemes) = schemes.as_object_mut() {
        schemes.insert(
            "bearer".into(),
            json!({
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "The `access_token` of `POST /api/auth/login`. Optional on every route; when sent, it must be valid.",
            }),
        );
    }
    let mut description = String::from(
        "The shop's public API, served by the gateway. Send `Authorization: Bearer <token>` \
         with the token from `POST /api/auth/login` to act as a user; writes to products need \
         an admin.",
    );
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(AppId::as_str).collect();
        description.push_str(&format!(
            "\n\nNot included because they did not answer: {}.",
            names.join(", ")
        ));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Shop API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": description,
        },
        "tags": tags,
        "paths": paths,
        "components": components,
        "x-shop-unavailable": missing.iter().map(AppId::as_str).collect::<Vec<_>>(),
    })
}

/// Tags the operation with its app when it has no tags, and renames its security schemes.
fn label_operation(operation: &mut Map<String, Value>, app: &str) {
    let untagged = operation
        .get("tags")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if untagged {
        operation.insert("tags".into(), json!([app]));
    }
    operation.insert("x-shop-app".into(), json!(app));
    if let Some(requirements) = operation.get_mut("security").and_then(Value::as_array_mut) {
        for requirement in requirements.iter_mut() {
            if let Some(schemes) = requirement.as_object_mut() {
                *schemes = std::mem::take(schemes)
                    .into_iter()
                    .map(|(name, scopes)| (format!("{app}.{name}"), scopes))
                    .collect();
            }
        }
    }
}

/// A copy of `value` whose local component references point at the renamed components.
fn rewrite_refs(value: &Value, app: &str) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(key, inner)| {
                    let inner = match (key.as_str(), inner) {
                        ("$ref", Value::String(reference)) => {
                            Value::String(rename_reference(reference, app))
                        }
                        // discriminator.mapping values are references too.
                        ("mapping", Value::Object(mapping)) => Value::Object(
                            mapping
                                .iter()
                                .map(|(name, target)| {
                                    let target = match target {
                                        Value::String(reference) => {
                                            Value::String(rename_reference(reference, app))
                                        }
                                        other => rewrite_refs(other, app),
                                    };
                                    (name.clone(), target)
                                })
                                .collect(),
                        ),
                        _ => rewrite_refs(inner, app),
                    };
                    (key.clone(), inner)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| rewrite_refs(item, app)).collect())
        }
        other => other.clone(),
    }
}

/// `#/components/schemas/Name...` → `#/components/schemas/<app>.Name...`; other references
/// (external documents) are left alone.
fn rename_reference(reference: &str, app: &str) -> String {
    reference
        .strip_prefix("#/components/")
        .and_then(|rest| rest.split_once('/'))
        .map_or_else(
            || reference.to_owned(),
            |(kind, name)| format!("#/components/{kind}/{app}.{name}"),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{default_internal_paths, default_routes};

    fn app(name: &str) -> AppId {
        AppId::parse(name).expect("valid")
    }

    fn auth_document() -> Value {
        json!({
            "openapi": "3.1.0",
            "info": { "title": "Auth", "description": "Registration and login." },
            "paths": {
                "/login": { "post": {
                    "summary": "Logs in",
                    "requestBody": { "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/LoginRequest" } } } },
                    "responses": { "200": { "description": "A token", "content": {
                        "application/json": { "schema": { "$ref": "#/components/schemas/Token" } } } } },
                    "security": [ { "jwt": [] } ],
                } },
            },
            "components": { "schemas": {
                "LoginRequest": { "type": "object", "properties": { "email": { "type": "string" } } },
                "Token": { "type": "object", "properties": {
                    "owner": { "$ref": "#/components/schemas/LoginRequest" } } },
                "Error": { "type": "object" },
            } },
        })
    }

    fn inventory_document() -> Value {
        json!({
            "openapi": "3.1.0",
            "info": { "title": "Inventory" },
            "paths": {
                "/products/{id}": { "get": { "tags": ["products"], "responses": { "404": {
                    "description": "Unknown", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Error" } } } } } } },
                "/internal/reserve": { "post": { "responses": {} } },
            },
            "components": { "schemas": {
                "Error": { "type": "object", "required": ["title"] },
                "Shape": { "oneOf": [ { "$ref": "other.json#/Thing" } ],
                           "discriminator": { "propertyName": "kind",
                                              "mapping": { "error": "#/components/schemas/Error" } } },
            } },
        })
    }

    fn merged(missing: &[AppId]) -> Value {
        let table = RouteTable::parse(&default_routes(), &default_internal_paths()).expect("valid");
        merge(
            &table,
            &[
                AppDocument {
                    app_id: app("auth"),
                    document: auth_document(),
                },
                AppDocument {
                    app_id: app("inventory"),
                    document: inventory_document(),
                },
            ],
            missing,
        )
    }

    #[test]
    fn paths_take_their_public_form_and_unrouted_ones_are_left_out() {
        let document = merged(&[]);
        let paths = document["paths"].as_object().expect("paths");
        let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["/api/auth/login", "/api/products/{id}"]);
        assert_eq!(
            document["paths"]["/api/auth/login"]["post"]["tags"],
            json!(["auth"])
        );
        assert_eq!(
            document["paths"]["/api/products/{id}"]["get"]["tags"],
            json!(["products"]),
            "an app's own tags are kept"
        );
        assert_eq!(
            document["paths"]["/api/products/{id}"]["get"]["x-shop-app"],
            "inventory"
        );
    }

    #[test]
    fn components_are_prefixed_with_their_app_and_refs_follow() {
        let document = merged(&[]);
        let schemas = &document["components"]["schemas"];
        assert!(schemas["auth.Error"].is_object());
        assert_eq!(schemas["inventory.Error"]["required"], json!(["title"]));
        assert_eq!(
            schemas["auth.Token"]["properties"]["owner"]["$ref"],
            "#/components/schemas/auth.LoginRequest"
        );
        let login = &document["paths"]["/api/auth/login"]["post"];
        assert_eq!(
            login["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/auth.LoginRequest"
        );
        assert_eq!(login["security"], json!([{ "auth.jwt": [] }]));
        assert_eq!(
            schemas["inventory.Shape"]["discriminator"]["mapping"]["error"],
            "#/components/schemas/inventory.Error"
        );
        assert_eq!(
            schemas["inventory.Shape"]["oneOf"][0]["$ref"], "other.json#/Thing",
            "external references are left alone"
        );
    }

    #[test]
    fn apps_that_did_not_answer_are_named_in_the_description() {
        let document = merged(&[app("orders"), app("payments")]);
        let description = document["info"]["description"]
            .as_str()
            .expect("description");
        assert!(
            description.contains("did not answer: orders, payments."),
            "{description}"
        );
        assert_eq!(
            document["x-shop-unavailable"],
            json!(["orders", "payments"])
        );
        let complete = merged(&[]);
        let description = complete["info"]["description"]
            .as_str()
            .expect("description");
        assert!(!description.contains("did not answer"), "{description}");
        assert_eq!(complete["openapi"], "3.1.0");
    }
}

//! The aggregated OpenAPI document and the docs page.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::support::{FakeAuth, SigningKey, echo_app, shop};

fn inventory_openapi() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Inventory", "version": "0.1.0" },
        "paths": {
            "/products": {
                "get": { "summary": "Lists products.", "responses": { "200": {
                    "description": "A page", "content": { "application/json": { "schema": {
                        "type": "array", "items": { "$ref": "#/components/schemas/Product" } } } } } } },
                "post": { "summary": "Adds a product.", "requestBody": { "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/NewProduct" } } } },
                    "responses": { "201": { "description": "Added" },
                                   "403": { "description": "Not an admin", "content": { "application/problem+json": {
                                       "schema": { "$ref": "#/components/schemas/Error" } } } } } }
            },
            "/products/{id}": { "get": {
                "parameters": [ { "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } } ],
                "responses": { "200": { "description": "The product", "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Product" } } } } } } },
            "/reservations": { "post": { "summary": "Internal: called by orders.", "responses": { "204": { "description": "Reserved" } } } }
        },
        "components": { "schemas": {
            "Product": { "type": "object", "properties": { "id": { "type": "string" }, "price": { "$ref": "#/components/schemas/Money" } } },
            "NewProduct": { "type": "object", "properties": { "name": { "type": "string" } } },
            "Money": { "type": "object", "properties": { "cents": { "type": "integer" } } },
            "Error": { "type": "object", "properties": { "title": { "type": "string" } } }
        } }
    })
}

/// An inventory app that serves its document and counts how often it was asked.
fn inventory(calls: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/openapi.json",
            get(|State(calls): State<Arc<AtomicUsize>>| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                axum::Json(inventory_openapi())
            }),
        )
        .with_state(calls)
        .fallback_service(echo_app("inventory"))
}

#[tokio::test]
async fn the_openapi_document_merges_the_apps_under_their_public_paths() {
    let auth = FakeAuth::publishing(&[&SigningKey::a()]);
    let calls = Arc::new(AtomicUsize::new(0));
    let shop = shop()
        .auth(&auth)
        .app("inventory", inventory(calls.clone()))
        .app("orders", echo_app("orders"))
        .start()
        .await;
    let response = shop.get("/api/openapi.json").await;
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.expect("json");
    assert_eq!(document["openapi"], "3.1.0");
    let mut paths: Vec<&str> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/api/auth/.well-known/jwks.json",
            "/api/auth/login",
            "/api/products",
            "/api/products/{id}",
        ],
        "internal paths the gateway does not route are left out"
    );
    let schemas = &document["components"]["schemas"];
    assert!(schemas["auth.Error"].is_object() && schemas["inventory.Error"].is_object());
    assert_eq!(
        schemas["inventory.Product"]["properties"]["price"]["$ref"],
        "#/components/schemas/inventory.Money"
    );
    assert_eq!(
        document["paths"]["/api/auth/login"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/auth.LoginRequest"
    );
    // Orders answers /openapi.json with something that is not a document; payments and
    // notifications do not run: all three are named.
    let description = document["info"]["description"]
        .as_str()
        .expect("description");
    assert!(
        description.contains("did not answer: orders, payments, notifications."),
        "{description}"
    );
    assert_eq!(
        document["x-shop-unavailable"],
        json!(["orders", "payments", "notifications"])
    );

    let again: Value = shop
        .get("/api/openapi.json")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again, document);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the document is cached");
}

#[tokio::test]
async fn the_docs_page_is_self_contained_and_loads_the_document() {
    let shop = shop().start().await;
    let response = shop.get("/api/docs").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let page = response.text().await.expect("html");
    assert!(page.contains(r#"fetch("/api/openapi.json""#));
    for external in ["src=\"http", "href=\"http", "src='http", "@import", "//cdn"] {
        assert!(
            !page.contains(external),
            "the page loads nothing from elsewhere: {external}"
        );
    }
    for rendered in [
        "requestBody",
        "parameters",
        "responses",
        "summary",
        "description",
    ] {
        assert!(page.contains(rendered), "the page renders {rendered}");
    }
    let document = shop.get("/api/openapi.json").await;
    assert_eq!(document.status(), 200, "even with no app answering");
}

//! `kit::extract`: JSON bodies whose errors name the field, and the gateway-vouched identity.

use axum::Router;
use axum::routing::{get, post};
use kit::extract::{AdminUser, AuthUser, Json};
use kit::testing::{Stack, Store};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::{TestApp, read, request};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Order {
    customer: String,
    items: Vec<Line>,
    payment_method: PaymentMethod,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    product_id: String,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentMethod {
    method: String,
}

fn orders() -> Router {
    Router::new().route(
        "/orders",
        post(|Json(order): Json<Order>| async move { axum::Json(order) }),
    )
}

fn valid_order() -> Value {
    json!({
        "customer": "ada",
        "items": [
            {"product_id": "pencil", "quantity": 2},
            {"product_id": "paper", "quantity": 1},
        ],
        "payment_method": {"method": "card"},
    })
}

/// Posts `body` as JSON and returns the status and problem (or echo).
async fn post_order(body: &str) -> (u16, String, Value) {
    let response = orders()
        .oneshot(request(
            "POST",
            "/orders",
            &[("content-type", "application/json")],
            body,
        ))
        .await
        .expect("a response");
    read(response).await
}

/// `valid_order` changed by `change`, posted.
async fn post_changed(change: impl FnOnce(&mut Value)) -> (u16, String, Value) {
    let mut order = valid_order();
    change(&mut order);
    post_order(&order.to_string()).await
}

fn named_field(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_body_is_parsed() {
    let (status, _, body) = post_order(&valid_order().to_string()).await;

    assert_eq!(status, 200);
    assert_eq!(body, valid_order());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_a_400_problem() {
    for body in [
        r#"{"customer": "ada", "items": ["#,
        "",
        "not json",
        // A valid document followed by more is not JSON either.
        &format!("{} {{}}", valid_order()),
    ] {
        let (status, content_type, problem) = post_order(body).await;

        assert_eq!(status, 400, "{body:?}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(problem["type"], "https://shop.example/problems/bad-request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_field_is_a_422_naming_it() {
    let (status, content_type, problem) = post_changed(|order| {
        order.as_object_mut().map(|o| o.remove("customer"));
    })
    .await;

    assert_eq!(status, 422);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["type"], "https://shop.example/problems/validation");
    assert_eq!(named_field(&problem), "customer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_of_the_wrong_type_is_a_422_naming_its_path() {
    let (status, _, problem) =
        post_changed(|order| order["items"][1]["quantity"] = json!("two")).await;

    assert_eq!(status, 422);
    assert_eq!(named_field(&problem), "items[1].quantity");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid type") && !m.contains("line")),
        "{problem}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_field_is_a_422_naming_its_path() {
    let (status, _, problem) =
        post_changed(|order| order["items"][1]["colour"] = json!("red")).await;

    assert_eq!(status, 422);
    assert_eq!(named_field(&problem), "items[1].colour");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_nested_field_is_named_by_its_full_path() {
    let (_, _, in_a_list) = post_changed(|order| {
        order["items"][1]
            .as_object_mut()
            .map(|o| o.remove("quantity"));
    })
    .await;
    // The object's own key ends with the field's name: still named in full.
    let (status, _, in_an_object) = post_changed(|order| order["payment_method"] = json!({})).await;

    assert_eq!(named_field(&in_a_list), "items[1].quantity");
    assert_eq!(status, 422);
    assert_eq!(named_field(&in_an_object), "payment_method.method");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_is_a_415_problem() {
    let response = orders()
        .oneshot(request(
            "POST",
            "/orders",
            &[("content-type", "text/plain")],
            &valid_order().to_string(),
        ))
        .await
        .expect("a response");

    let (status, content_type, _) = read(response).await;
    assert_eq!(status, 415);
    assert_eq!(content_type, "application/problem+json");
}

const USER_ID: &str = "0b7f3b4e-2f4c-4a4e-9c51-7a0d2f7c1e11";

fn whoami() -> Router {
    Router::new()
        .route(
            "/me",
            get(|user: AuthUser| async move {
                axum::Json(json!({
                    "id": user.id,
                    "email": user.email,
                    "role": user.role.as_str(),
                }))
            }),
        )
        .route(
            "/admin",
            get(|AdminUser(user): AdminUser| async move { user.email }),
        )
}

/// The headers the gateway sets for a signed-in user with `role`, sent by `caller`.
fn identity<'a>(caller: Option<&'a str>, role: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("x-shop-user-id", USER_ID),
        ("x-shop-user-email", "ada@shop.test"),
        ("x-shop-user-role", role),
    ];
    if let Some(caller) = caller {
        headers.push(("dapr-caller-app-id", caller));
    }
    headers
}

async fn get_as(path: &str, headers: &[(&str, &str)]) -> (u16, String, Value) {
    read(
        whoami()
            .oneshot(request("GET", path, headers, ""))
            .await
            .expect("a response"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_vouches_for_the_user() {
    let (status, _, body) = get_as("/me", &identity(Some("gateway"), "customer")).await;

    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"id": USER_ID, "email": "ada@shop.test", "role": "customer"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_from_any_other_caller_are_not_trusted() {
    for caller in [None, Some("orders"), Some("Gateway")] {
        let (status, content_type, problem) = get_as("/me", &identity(caller, "customer")).await;

        assert_eq!(status, 401, "{caller:?}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(
            problem["type"],
            "https://shop.example/problems/unauthorized"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_or_invalid_identity_headers_are_a_401() {
    let complete = identity(Some("gateway"), "customer");
    for (name, bad) in [
        ("x-shop-user-id", Some("not-a-uuid")),
        ("x-shop-user-id", None),
        ("x-shop-user-email", None),
        ("x-shop-user-role", Some("superuser")),
        ("x-shop-user-role", None),
    ] {
        let headers: Vec<(&str, &str)> = complete
            .iter()
            .filter_map(|&(n, v)| match (n == name, bad) {
                (false, _) => Some((n, v)),
                (true, Some(bad)) => Some((n, bad)),
                (true, None) => None,
            })
            .collect();

        let (status, _, _) = get_as("/me", &headers).await;

        assert_eq!(status, 401, "{name} = {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_pass_the_admin_extractor() {
    let (customer, _, problem) = get_as("/admin", &identity(Some("gateway"), "customer")).await;
    let (admin, _, _) = get_as("/admin", &identity(Some("gateway"), "admin")).await;
    let (unvouched, _, _) = get_as("/admin", &identity(Some("orders"), "admin")).await;

    assert_eq!(customer, 403);
    assert_eq!(problem["type"], "https://shop.example/problems/forbidden");
    assert_eq!(admin, 200);
    assert_eq!(unvouched, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_sidecars_only_the_gateway_app_can_assert_a_user() {
    let mut stack = Stack::new(Store::Memory, &[]).await.expect("a stack");
    let (bound, dapr) = stack.bind("accounts").await.expect("a sidecar");
    stack
        .run(bound, Box::new(TestApp::new(whoami(), &dapr).await))
        .await
        .expect("the app runs");
    let gateway = stack.caller("gateway").await.expect("a caller");
    let orders = stack.caller("orders").await.expect("a caller");
    let call = |caller: &kit::testing::Caller, spoof: bool| {
        let mut request = caller.invoke(Method::GET, "accounts", "/admin");
        for (name, value) in identity(None, "admin") {
            request = request.header(name, value);
        }
        if spoof {
            request = request.header("dapr-caller-app-id", "gateway");
        }
        request.send()
    };

    let from_gateway = call(&gateway, false).await.expect("a response");
    // The sidecar sets `dapr-caller-app-id` itself: another app cannot pretend.
    let from_orders = call(&orders, true).await.expect("a response");

    assert_eq!(from_gateway.status(), 200);
    assert_eq!(from_orders.status(), 401);
    stack.shutdown().await.expect("clean shutdown");
}

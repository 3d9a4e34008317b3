//! `kit::problem`: RFC 9457 documents.

use axum::response::IntoResponse as _;
use kit::Problem;
use serde_json::json;

use crate::support::read;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_problem_names_the_fields_at_fault() {
    let problem = Problem::validation("items[1].quantity", "must be at least 1")
        .field("email", "is not an email address");

    let (status, content_type, body) = read(problem.into_response()).await;

    assert_eq!(status, 422);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(
        body,
        json!({
            "type": "https://shop.example/problems/validation",
            "title": "The request is not valid",
            "status": 422,
            "errors": [
                {"field": "items[1].quantity", "message": "must be at least 1"},
                {"field": "email", "message": "is not an email address"},
            ],
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_problem_carries_its_detail_and_leaves_out_empty_errors() {
    let (status, content_type, body) =
        read(Problem::not_found("no product 42").into_response()).await;

    assert_eq!(status, 404);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(
        body,
        json!({
            "type": "https://shop.example/problems/not-found",
            "title": "Not found",
            "status": 404,
            "detail": "no product 42",
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_problem_has_its_status_and_type() {
    for (problem, status, slug) in [
        (Problem::bad_request("x"), 400, "bad-request"),
        (Problem::unauthorized("x"), 401, "unauthorized"),
        (Problem::forbidden("x"), 403, "forbidden"),
        (Problem::not_found("x"), 404, "not-found"),
        (Problem::conflict("x"), 409, "conflict"),
        (Problem::validation("f", "x"), 422, "validation"),
        (Problem::too_many_requests("x"), 429, "too-many-requests"),
        (Problem::internal(), 500, "internal"),
        (Problem::unavailable("x"), 503, "unavailable"),
    ] {
        let (actual, content_type, body) = read(problem.into_response()).await;

        assert_eq!(actual, status, "{slug}");
        assert_eq!(content_type, "application/problem+json", "{slug}");
        assert_eq!(body["status"], status, "{slug}");
        assert_eq!(
            body["type"],
            format!("https://shop.example/problems/{slug}"),
            "{slug}"
        );
        assert!(
            body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{slug}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_problem_says_nothing_about_its_cause() {
    let (_, _, body) = read(Problem::internal().into_response()).await;

    let mut keys: Vec<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(keys, ["status", "title", "type"]);
}

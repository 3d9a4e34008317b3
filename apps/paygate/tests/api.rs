//! The simulator over the wire on port 0, as the payments app calls it.

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop_paygate::settings::PaygateSettings;
use shop_paygate::{App, Settings};

const KEY: &str = "pg_test_0123456789abcdef";

struct Paygate {
    base: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Settings for a quick, reliable provider unless `change` says otherwise.
async fn start_with(change: impl FnOnce(&mut PaygateSettings)) -> Paygate {
    let mut settings = Settings::default();
    settings.app.port = 0;
    settings.paygate.api_key = Some(KEY.into());
    settings.paygate.latency_ms = 0;
    settings.paygate.jitter_ms = 0;
    change(&mut settings.paygate);
    let app = App::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    Paygate {
        base,
        http: reqwest::Client::new(),
        _stop: stop,
    }
}

async fn start() -> Paygate {
    start_with(|_| {}).await
}

fn card(number: &str) -> Value {
    json!({"number": number, "exp_month": 12, "exp_year": 2099, "cvc": "123"})
}

fn charge_body(number: &str, amount: i64) -> Value {
    json!({
        "amount_cents": amount,
        "currency": "EUR",
        "card": card(number),
        "description": "Order 42",
        "metadata": {"order_id": "42"},
    })
}

fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An answer: status, whether it was a replay, JSON body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    replayed: bool,
    body: Value,
}

impl Answer {
    fn field(&self) -> &str {
        self.body["errors"][0]["field"].as_str().unwrap_or_default()
    }
}

impl Paygate {
    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let problem = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/problem+json");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            assert!(problem, "errors are problem+json: {status} {body}");
        }
        Answer {
            status,
            replayed,
            body,
        }
    }

    async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Answer {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        self.send(request).await
    }

    async fn charge(&self, number: &str, amount: i64) -> Answer {
        self.post(
            "/v1/charges",
            Some(&new_key()),
            &charge_body(number, amount),
        )
        .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(KEY),
        )
        .await
    }
}

#[tokio::test]
async fn a_good_card_is_charged_and_the_charge_can_be_read_back() {
    let paygate = start().await;
    let charge = paygate.charge("4242424242424242", 1250).await;
    assert_eq!(charge.status, StatusCode::CREATED, "{charge:?}");
    let body = &charge.body;
    assert!(body["id"].as_str().unwrap().starts_with("ch_"), "{body}");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["amount_cents"], 1250);
    assert_eq!(body["currency"], "EUR");
    assert_eq!(body["card_last4"], "4242");
    assert_eq!(body["metadata"]["order_id"], "42");
    assert!(body.get("failure_code").is_none(), "{body}");
    assert!(
        !body.to_string().contains("4242424242424242"),
        "the full number is never echoed: {body}"
    );
    let read = paygate
        .get(&format!("/v1/charges/{}", body["id"].as_str().unwrap()))
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, charge.body);
    let unknown = paygate.get("/v1/charges/ch_000000000000000000000000").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.field(), "id");
    let malformed = paygate.get("/v1/charges/nope").await;
    assert_eq!(malformed.status, StatusCode::NOT_FOUND);
    assert_eq!(malformed.field(), "id");
}

#[tokio::test]
async fn each_test_card_fails_with_its_own_code() {
    let paygate = start().await;
    for (number, code) in [
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000069", "expired_card"),
        ("4000000000000119", "processing_error"),
    ] {
        let charge = paygate.charge(number, 500).await;
        assert_eq!(charge.status, StatusCode::CREATED, "{number}: {charge:?}");
        assert_eq!(charge.body["status"], "failed", "{number}");
        assert_eq!(charge.body["failure_code"], code, "{number}");
        assert!(
            charge.body["failure_message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{number}"
        );
        assert_eq!(charge.body["card_last4"], number[12..], "{number}");
    }
}

#[tokio::test]
async fn a_card_past_its_expiry_date_is_declined_as_expired() {
    let paygate = start().await;
    let mut body = charge_body("4242424242424242", 500);
    body["card"]["exp_year"] = json!(2020);
    let charge = paygate.post("/v1/charges", Some(&new_key()), &body).await;
    assert_eq!(charge.status, StatusCode::CREATED);
    assert_eq!(charge.body["status"], "failed");
    assert_eq!(charge.body["failure_code"], "expired_card");
}

#[tokio::test]
async fn the_same_key_and_request_get_the_same_charge_and_another_request_is_refused() {
    let paygate = start().await;
    let key = new_key();
    let body = charge_body("4242424242424242", 700);
    let first = paygate.post("/v1/charges", Some(&key), &body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed);
    let again = paygate.post("/v1/charges", Some(&key), &body).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(again.replayed, "a replay says so");
    assert_eq!(again.body, first.body, "the same charge, not a second one");

    let mut other = body.clone();
    other["amount_cents"] = json!(701);
    let reused = paygate.post("/v1/charges", Some(&key), &other).await;
    assert_eq!(
        reused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{reused:?}"
    );
    assert_eq!(reused.field(), "Idempotency-Key");
    let refund = paygate
        .post(
            "/v1/refunds",
            Some(&key),
            &json!({"charge_id": first.body["id"]}),
        )
        .await;
    assert_eq!(
        refund.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a key belongs to one request, whatever the endpoint"
    );

    let missing = paygate.post("/v1/charges", None, &body).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.field(), "Idempotency-Key");
    let too_long = paygate
        .post("/v1/charges", Some(&"k".repeat(256)), &body)
        .await;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_long.field(), "Idempotency-Key");
}

#[tokio::test]
async fn concurrent_requests_with_one_key_charge_once() {
    let paygate = start_with(|p| p.latency_ms = 300).await;
    let key = new_key();
    let body = charge_body("4242424242424242", 900);
    let (a, b) = tokio::join!(
        paygate.post("/v1/charges", Some(&key), &body),
        paygate.post("/v1/charges", Some(&key), &body),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT]);
    let in_use = if a.status == StatusCode::CONFLICT {
        &a
    } else {
        &b
    };
    assert_eq!(in_use.field(), "Idempotency-Key");
    let later = paygate.post("/v1/charges", Some(&key), &body).await;
    let created = if a.status == StatusCode::CREATED {
        &a
    } else {
        &b
    };
    assert_eq!(later.body["id"], created.body["id"]);
}

#[tokio::test]
async fn without_the_api_key_nothing_is_charged() {
    let paygate = start().await;
    for authorization in [None, Some("Bearer wrong-key-0123456789"), Some(KEY)] {
        let mut request = paygate
            .http
            .post(format!("{}/v1/charges", paygate.base))
            .header("idempotency-key", new_key())
            .json(&charge_body("4242424242424242", 100));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{authorization:?}"
        );
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    let response = paygate
        .http
        .get(format!(
            "{}/v1/charges/ch_000000000000000000000000",
            paygate.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_charges_name_the_field() {
    let paygate = start().await;
    let cases = [
        ("amount_cents", json!(0)),
        ("amount_cents", json!(-5)),
        ("amount_cents", json!("ten")),
        ("currency", json!("euro")),
        ("card.number", json!("4242424242424241")),
        ("card.number", json!("4242")),
        ("card.exp_month", json!(13)),
        ("card.exp_year", json!(99)),
        ("card.cvc", json!("12")),
        ("description", json!("x".repeat(501))),
    ];
    for (field, value) in cases {
        let mut body = charge_body("4242424242424242", 100);
        match field.split_once('.') {
            Some((outer, inner)) => body[outer][inner] = value.clone(),
            None => body[field] = value.clone(),
        }
        let answer = paygate.post("/v1/charges", Some(&new_key()), &body).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={value}: {answer:?}"
        );
        assert_eq!(answer.field(), field, "{answer:?}");
    }
    let mut body = charge_body("4242424242424242", 100);
    body["card"].as_object_mut().unwrap().remove("cvc");
    let answer = paygate.post("/v1/charges", Some(&new_key()), &body).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.field(), "card.cvc");
    let malformed = paygate
        .send(
            paygate
                .http
                .post(format!("{}/v1/charges", paygate.base))
                .bearer_auth(KEY)
                .header("idempotency-key", new_key())
                .header("content-type", "application/json")
                .body("{\"amount_cents\": "),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn refunds_take_back_at_most_what_was_charged() {
    let paygate = start().await;
    let charge = paygate.charge("4242424242424242", 1000).await;
    let id = charge.body["id"].as_str().unwrap().to_owned();
    let key = new_key();
    let partial = json!({"charge_id": id, "amount_cents": 300});
    let refund = paygate.post("/v1/refunds", Some(&key), &partial).await;
    assert_eq!(refund.status, StatusCode::CREATED, "{refund:?}");
    assert!(refund.body["id"].as_str().unwrap().starts_with("re_"));
    assert_eq!(refund.body["amount_cents"], 300);
    assert_eq!(refund.body["charge_id"], id.as_str());
    let again = paygate.post("/v1/refunds", Some(&key), &partial).await;
    assert!(again.replayed);
    assert_eq!(again.body["id"], refund.body["id"], "refunded once");

    let too_much = paygate
        .post(
            "/v1/refunds",
            Some(&new_key()),
            &json!({"charge_id": id, "amount_cents": 701}),
        )
        .await;
    assert_eq!(too_much.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(too_much.field(), "amount_cents");
    let rest = paygate
        .post("/v1/refunds", Some(&new_key()), &json!({"charge_id": id}))
        .await;
    assert_eq!(rest.status, StatusCode::CREATED);
    assert_eq!(rest.body["amount_cents"], 700);
    let read = paygate.get(&format!("/v1/charges/{id}")).await;
    assert_eq!(read.body["amount_refunded_cents"], 1000);
    assert_eq!(read.body["refunded"], true);

    let declined = paygate.charge("4000000000000002", 1000).await;
    let nothing = paygate
        .post(
            "/v1/refunds",
            Some(&new_key()),
            &json!({"charge_id": declined.body["id"]}),
        )
        .await;
    assert_eq!(nothing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(nothing.field(), "charge_id");
    let unknown = paygate
        .post(
            "/v1/refunds",
            Some(&new_key()),
            &json!({"charge_id": "ch_000000000000000000000000"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.field(), "charge_id");
    let malformed = paygate
        .post(
            "/v1/refunds",
            Some(&new_key()),
            &json!({"charge_id": "nope"}),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(malformed.field(), "charge_id");
}

#[tokio::test]
async fn calls_take_the_configured_latency() {
    let paygate = start_with(|p| {
        p.latency_ms = 200;
        p.jitter_ms = 100;
    })
    .await;
    let started = Instant::now();
    let charge = paygate.charge("4242424242424242", 100).await;
    let elapsed = started.elapsed();
    assert_eq!(charge.status, StatusCode::CREATED);
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test]
async fn a_simulated_outage_is_a_500_and_retrying_with_the_same_key_is_safe() {
    let paygate = start_with(|p| p.failure_rate = 1.0).await;
    let key = new_key();
    let body = charge_body("4242424242424242", 100);
    for _ in 0..3 {
        let failed = paygate.post("/v1/charges", Some(&key), &body).await;
        assert_eq!(
            failed.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{failed:?}"
        );
        assert!(
            failed.body["type"]
                .as_str()
                .unwrap()
                .ends_with("/processing-error")
        );
        assert!(!failed.replayed, "an outage is not stored under the key");
    }
}

#[tokio::test]
async fn about_the_configured_share_of_requests_fails() {
    let paygate = start_with(|p| p.failure_rate = 0.5).await;
    let mut failed = 0;
    for _ in 0..200 {
        if paygate.charge("4242424242424242", 100).await.status == StatusCode::INTERNAL_SERVER_ERROR
        {
            failed += 1;
        }
    }
    // Binomial(200, 0.5): outside 60..=140 happens with a probability below 1e-8.
    assert!((60..=140).contains(&failed), "{failed} of 200 failed");
}

#[tokio::test]
async fn health_readiness_and_metrics_need_no_key() {
    let paygate = start().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = paygate
            .http
            .get(format!("{}{path}", paygate.base))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
    }
}

#[tokio::test]
async fn concurrent_refunds_never_take_back_more_than_was_charged() {
    let paygate = start_with(|p| p.jitter_ms = 20).await;
    let charge = paygate.charge("4242424242424242", 1000).await;
    let id = charge.body["id"].as_str().unwrap().to_owned();
    let body = json!({"charge_id": id, "amount_cents": 300});
    let keys: Vec<String> = (0..10).map(|_| new_key()).collect();
    let refunds = futures::future::join_all(
        keys.iter()
            .map(|key| paygate.post("/v1/refunds", Some(key), &body)),
    )
    .await;
    let granted = refunds
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(
        granted, 3,
        "300 three times fits in 1000, a fourth does not"
    );
    assert!(
        refunds
            .iter()
            .filter(|r| r.status != StatusCode::CREATED)
            .all(|r| r.status == StatusCode::UNPROCESSABLE_ENTITY && r.field() == "amount_cents")
    );
    let read = paygate.get(&format!("/v1/charges/{id}")).await;
    assert_eq!(read.body["amount_refunded_cents"], 900);
}

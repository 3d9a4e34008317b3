//! `kit::telemetry` exports spans over OTLP/gRPC when an endpoint is configured. The tracer is
//! process-wide, so this test has a binary of its own; a stand-in collector receives the spans.

use std::sync::{Arc, Mutex, PoisonError};

use kit::settings::TelemetrySettings;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

/// Keeps every export request.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_the_configured_collector_in_the_callers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let port = listener.local_addr().expect("an address").port();
    let router =
        tonic::service::Routes::new(TraceServiceServer::new(collector.clone())).into_axum_router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let settings = TelemetrySettings {
        json: true,
        level: "info".into(),
        otlp_endpoint: Some(format!("http://127.0.0.1:{port}")),
    };
    let guard = kit::telemetry::init_with_writer("kit-export-test", &settings, std::io::sink)
        .expect("telemetry starts");
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = "b7ad6b7169203331";
    let span = tracing::info_span!("reserve_stock", trace_id = tracing::field::Empty);
    kit::telemetry::continue_traceparent(
        &span,
        Some(&format!("00-{trace_id}-{caller_span}-01")),
        None,
    );

    span.in_scope(|| tracing::info!("reserving"));
    drop(span);
    // Dropping the guard flushes the batch; it blocks until the export is done.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .expect("flushed");

    let received = collector
        .received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let resource_spans: Vec<_> = received.iter().flat_map(|r| &r.resource_spans).collect();
    let service_names: Vec<String> = resource_spans
        .iter()
        .filter_map(|r| r.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .filter(|a| a.key == "service.name")
        .filter_map(|a| match a.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(AnyValue::StringValue(name)) => Some(name.clone()),
            _ => None,
        })
        .collect();
    let spans: Vec<_> = resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    assert!(
        service_names.iter().any(|n| n == "kit-export-test"),
        "{service_names:?}"
    );
    let exported = spans
        .iter()
        .find(|s| s.name == "reserve_stock")
        .unwrap_or_else(|| panic!("the span is exported: {spans:?}"));
    assert_eq!(hex(&exported.trace_id), trace_id);
    assert_eq!(hex(&exported.parent_span_id), caller_span);
}

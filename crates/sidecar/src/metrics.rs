//! The sidecar's Prometheus metrics, named and labelled as daprd's so dashboards built for Dapr
//! read them unchanged (`dapr_http_server_request_count`, `dapr_component_state_latencies`, ...).

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Latency buckets in milliseconds, as daprd's distribution views.
const LATENCY_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0, 50.0, 65.0, 80.0,
    100.0, 130.0, 160.0, 200.0, 250.0, 300.0, 400.0, 500.0, 650.0, 800.0, 1000.0, 2000.0, 5000.0,
    10000.0, 20000.0, 50000.0, 100000.0,
];

/// Every metric one sidecar records, in its own registry (several sidecars can share a process).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    app_id: String,
    http_requests: IntCounterVec,
    http_latency: HistogramVec,
    grpc_completed: IntCounterVec,
    grpc_latency: HistogramVec,
    component_count: IntCounterVec,
    component_latency: HistogramVec,
    invocation_sent: IntCounterVec,
    invocation_received: IntCounterVec,
    invocation_response_latency: HistogramVec,
    health_probes: IntCounterVec,
    workflow_executions: IntCounterVec,
    workflow_latency: HistogramVec,
    activity_executions: IntCounterVec,
    activity_latency: HistogramVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name} is well formed: {e}"));
    registry
        .register(Box::new(counter.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} is registered once: {e}"));
    counter
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let histogram = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_MS.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| unreachable!("metric {name} is well formed: {e}"));
    registry
        .register(Box::new(histogram.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} is registered once: {e}"));
    histogram
}

fn millis(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

impl Metrics {
    /// A fresh registry for the sidecar of `app_id`.
    pub fn new(app_id: &str) -> Self {
        let registry = Registry::new();
        let http = ["app_id", "method", "path", "status"];
        let grpc = ["app_id", "grpc_server_method", "grpc_server_status"];
        let component = ["app_id", "component", "namespace", "operation", "success"];
        Self {
            http_requests: counter(
                &registry,
                "dapr_http_server_request_count",
                "Number of HTTP requests started in server.",
                &http,
            ),
            http_latency: histogram(
                &registry,
                "dapr_http_server_latency",
                "HTTP request end-to-end latency in server (ms).",
                &http,
            ),
            grpc_completed: counter(
                &registry,
                "dapr_grpc_io_server_completed_rpcs",
                "Count of RPCs by method and status.",
                &grpc,
            ),
            grpc_latency: histogram(
                &registry,
                "dapr_grpc_io_server_server_latency",
                "Distribution of server latency in milliseconds.",
                &grpc,
            ),
            component_count: counter(
                &registry,
                "dapr_component_state_count",
                "The number of operations performed on the state component.",
                &component,
            ),
            component_latency: histogram(
                &registry,
                "dapr_component_state_latencies",
                "The latency of the operation performed on the state component (ms).",
                &component,
            ),
            invocation_sent: counter(
                &registry,
                "dapr_runtime_service_invocation_req_sent_total",
                "The number of requests sent via service invocation.",
                &["app_id", "dst_app_id", "type"],
            ),
            invocation_received: counter(
                &registry,
                "dapr_runtime_service_invocation_req_recv_total",
                "The number of requests received via service invocation.",
                &["app_id", "src_app_id"],
            ),
            invocation_response_latency: histogram(
                &registry,
                "dapr_runtime_service_invocation_res_recv_latency_ms",
                "The latency of service invocation responses (ms).",
                &["app_id", "src_app_id", "status"],
            ),
            health_probes: counter(
                &registry,
                "dapr_http_healthprobes_completed_count",
                "Count of completed app health probes.",
                &["app_id", "status"],
            ),
            workflow_executions: counter(
                &registry,
                "dapr_runtime_workflow_execution_count",
                "The number of successful or failed workflow executions.",
                &["app_id", "workflow_name", "status"],
            ),
            workflow_latency: histogram(
                &registry,
                "dapr_runtime_workflow_execution_latency",
                "The total time taken to run a workflow to completion (ms).",
                &["app_id", "workflow_name", "status"],
            ),
            activity_executions: counter(
                &registry,
                "dapr_runtime_workflow_activity_execution_count",
                "The number of successful or failed activity executions.",
                &["app_id", "activity_name", "status"],
            ),
            activity_latency: histogram(
                &registry,
                "dapr_runtime_workflow_activity_execution_latency",
                "The total time taken to run an activity to completion (ms).",
                &["app_id", "activity_name", "status"],
            ),
            registry,
            app_id: app_id.to_owned(),
        }
    }

    /// Records one HTTP API request.
    pub fn http_request(&self, method: &str, path: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        let labels = [self.app_id.as_str(), method, path, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_latency
            .with_label_values(&labels)
            .observe(millis(elapsed));
    }

    /// Records a workflow that finished (`success` or `failed`, as daprd's `status` label).
    pub fn workflow_execution(&self, workflow: &str, succeeded: bool, elapsed: Duration) {
        let status = if succeeded { "success" } else { "failed" };
        let labels = [self.app_id.as_str(), workflow, status];
        self.workflow_executions.with_label_values(&labels).inc();
        self.workflow_latency
            .with_label_values(&labels)
            .observe(millis(elapsed));
    }

    /// Records an activity result, timed from its dispatch to a worker.
    pub fn workflow_activity(&self, activity: &str, succeeded: bool, elapsed: Duration) {
        let status = if succeeded { "success" } else { "failed" };
        let labels = [self.app_id.as_str(), activity, status];
        self.activity_executions.with_label_values(&labels).inc();
        self.activity_latency
            .with_label_values(&labels)
            .observe(millis(elapsed));
    }

    /// Records one gRPC API call.
    pub fn grpc_request(&self, method: &str, status: &str, elapsed: Duration) {
        let labels = [self.app_id.as_str(), method, status];
        self.grpc_completed.with_label_values(&labels).inc();
        self.grpc_latency
            .with_label_values(&labels)
            .observe(millis(elapsed));
    }

    /// Records one component operation (`get`, `set`, `delete`, `bulk_get`, `transaction`, ...).
    pub fn component_operation(
        &self,
        component: &str,
        operation: &str,
        success: bool,
        elapsed: Duration,
    ) {
        let success = if success { "true" } else { "false" };
        let labels = [self.app_id.as_str(), component, "", operation, success];
        self.component_count.with_label_values(&labels).inc();
        self.component_latency
            .with_label_values(&labels)
            .observe(millis(elapsed));
    }

    /// Records an outgoing service invocation.
    pub fn invocation_sent(&self, target: &str, streaming: bool) {
        let kind = if streaming { "streaming" } else { "unary" };
        self.invocation_sent
            .with_label_values(&[self.app_id.as_str(), target, kind])
            .inc();
    }

    /// Records the response to an outgoing invocation.
    pub fn invocation_response(&self, target: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.invocation_response_latency
            .with_label_values(&[self.app_id.as_str(), target, status.as_str()])
            .observe(millis(elapsed));
    }

    /// Records an incoming service invocation.
    pub fn invocation_received(&self, caller: &str) {
        self.invocation_received
            .with_label_values(&[self.app_id.as_str(), caller])
            .inc();
    }

    /// Records an app health probe.
    pub fn health_probe(&self, healthy: bool) {
        let status = if healthy { "success" } else { "failure" };
        self.health_probes
            .with_label_values(&[self.app_id.as_str(), status])
            .inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# metrics could not be encoded: {e}\n"))
    }
}

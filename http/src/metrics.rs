//! Prometheus helpers shared by every node: the text endpoint and per-request counting.

use chorus_core::error::Chain;
use http::{Response, StatusCode};
use prometheus::{Encoder as _, IntCounterVec, Opts, Registry, TextEncoder};

use crate::{Protocol, ResponseBody, full, json_error};

/// The `/metrics` response for `registry`, in the Prometheus text format.
#[must_use]
pub fn response(registry: &Registry) -> Response<ResponseBody> {
    let mut buf = Vec::with_capacity(16 * 1024);
    match TextEncoder::new().encode(&registry.gather(), &mut buf) {
        Ok(()) => full(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", buf),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}")),
    }
}

/// Registers `collector` in `registry`. Registration only fails for a duplicate name, a
/// programming error that tests catch; it is logged rather than crashing a node.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, collector: &C) {
    if let Err(e) = registry.register(Box::new(collector.clone())) {
        tracing::error!(error = %Chain(&e), "registering a metric failed");
    }
}

/// `{prefix}_requests_total{protocol,route,status}`: requests answered, by HTTP version, route
/// name (a fixed set, never the raw path) and status code.
#[derive(Clone)]
pub struct RequestCounter(IntCounterVec);

impl RequestCounter {
    /// Creates and registers the counter; `node` is `origin` or `edge`.
    ///
    /// # Panics
    /// Never: the options are constant and valid.
    #[must_use]
    #[allow(clippy::missing_panics_doc)]
    pub fn new(registry: &Registry, node: &str) -> Self {
        #[allow(clippy::expect_used)]
        let c = IntCounterVec::new(
            Opts::new(
                format!("chorus_{node}_requests_total"),
                format!("HTTP requests answered by this {node}, by HTTP version (protocol), route and status code."),
            ),
            &["protocol", "route", "status"],
        )
        .expect("constant metric options are valid");
        register(registry, &c);
        Self(c)
    }

    /// Counts one request.
    pub fn inc(&self, protocol: Protocol, route: &str, status: StatusCode) {
        self.0.with_label_values(&[protocol.as_str(), route, status.as_str()]).inc();
    }
}

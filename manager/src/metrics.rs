//! The manager's Prometheus metrics (`GET /metrics` of the HTTP server):
//! what the scheduler and the commit thread count, in the text format.
//!
//! (Placeholder: the metrics themselves come with issue 11's metrics part;
//! the HTTP server already serves `render()`.)

/// A handle on the manager's metrics, cheap to clone into every server.
#[derive(Clone, Default)]
pub struct Metrics {}

impl Metrics {
    /// The metrics in the Prometheus text exposition format.
    pub async fn render(&self) -> String {
        "# EOF\n".to_string()
    }
}

//! Prometheus metrics (off by default, like CRI-O's): per-RPC latency
//! histograms and error counts, image pull bytes and durations, and pods and
//! containers by state, served as text on `metrics.address`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codegen::http;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative histogram.
#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, n) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Everything counted since the daemon started.
#[derive(Debug, Default)]
pub struct Metrics {
    rpc_latency: Mutex<BTreeMap<String, Histogram>>,
    rpc_errors: Mutex<BTreeMap<(String, i32), u64>>,
    pull: Mutex<(Histogram, u64)>,
}

/// The daemon's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// One finished RPC: its gRPC method path, duration and status code.
    pub fn rpc(&self, method: &str, took: Duration, code: i32) {
        lock(&self.rpc_latency)
            .entry(method.to_owned())
            .or_default()
            .observe(took.as_secs_f64());
        if code != 0 {
            *lock(&self.rpc_errors)
                .entry((method.to_owned(), code))
                .or_default() += 1;
        }
    }

    /// One successful image pull.
    pub fn pulled(&self, bytes: u64, took: Duration) {
        let mut pull = lock(&self.pull);
        pull.0.observe(took.as_secs_f64());
        pull.1 += bytes;
    }

    /// The text exposition, with `gauges` (name, help, labelled values) appended.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        out.push_str("# HELP ucri_rpc_duration_seconds Latency of CRI RPCs.\n");
        out.push_str("# TYPE ucri_rpc_duration_seconds histogram\n");
        for (method, h) in lock(&self.rpc_latency).iter() {
            h.render(
                &mut out,
                "ucri_rpc_duration_seconds",
                &format!("method=\"{}\"", escape(method)),
            );
        }
        out.push_str("# HELP ucri_rpc_errors_total CRI RPCs that failed, by gRPC code.\n");
        out.push_str("# TYPE ucri_rpc_errors_total counter\n");
        for ((method, code), n) in lock(&self.rpc_errors).iter() {
            let _ = writeln!(
                out,
                "ucri_rpc_errors_total{{method=\"{}\",code=\"{code}\"}} {n}",
                escape(method)
            );
        }
        let pull = lock(&self.pull).clone();
        out.push_str(
            "# HELP ucri_image_pull_duration_seconds Duration of successful image pulls.\n",
        );
        out.push_str("# TYPE ucri_image_pull_duration_seconds histogram\n");
        pull.0
            .render(&mut out, "ucri_image_pull_duration_seconds", "");
        out.push_str("# HELP ucri_image_pull_bytes_total Bytes of images pulled.\n");
        out.push_str("# TYPE ucri_image_pull_bytes_total counter\n");
        let _ = writeln!(out, "ucri_image_pull_bytes_total {}", pull.1);
        for g in gauges {
            let _ = writeln!(out, "# HELP {} {}", g.name, g.help);
            let _ = writeln!(out, "# TYPE {} gauge", g.name);
            for (label, value) in &g.values {
                let _ = writeln!(out, "{}{{state=\"{}\"}} {value}", g.name, escape(label));
            }
        }
        out
    }
}

/// A gauge with one `state` label.
#[derive(Debug, Clone)]
pub struct Gauge {
    /// Metric name.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// (state, value) pairs.
    pub values: Vec<(String, u64)>,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Scrapes served at once: a scraper needs one, and any local user can
/// reach the port, so more wait in the listener's backlog instead of
/// spending the daemon's descriptors.
pub const METRICS_CONNECTIONS_MAX: usize = 8;

/// How long a client may take to send its request before it is dropped
/// (and its slot freed).
pub const METRICS_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves `GET /metrics` on `listener` until the task is dropped, at most
/// [`METRICS_CONNECTIONS_MAX`] connections at once; a failed accept (out of
/// descriptors) backs off instead of spinning.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gauges: Arc<dyn Fn() -> Vec<Gauge> + Send + Sync>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS_MAX));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return; // never closed
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(%e, "accepting a metrics connection failed; retrying");
                tokio::time::sleep(crate::descriptors::ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let gauges = gauges.clone();
        tokio::spawn(async move {
            let _slot = slot;
            answer(stream, gauges).await;
        });
    }
}

/// Reads one request from `stream` and answers it.
async fn answer(
    mut stream: tokio::net::TcpStream,
    gauges: Arc<dyn Fn() -> Vec<Gauge> + Send + Sync>,
) {
    let mut request = vec![0u8; 4096];
    let read = tokio::time::timeout(METRICS_REQUEST_TIMEOUT, stream.read(&mut request)).await;
    let Ok(Ok(n)) = read else {
        return; // timed out or failed: nothing to answer
    };
    let line = String::from_utf8_lossy(&request[..n]);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if path == "/metrics" {
        let values = tokio::task::spawn_blocking(move || gauges())
            .await
            .unwrap_or_default();
        ("200 OK", global().render(&values))
    } else {
        ("404 Not Found", "not found: try /metrics\n".to_owned())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
}

/// A tower layer that times every RPC and reads its gRPC status.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

/// The service [`RpcMetricsLayer`] wraps around the CRI services.
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let start = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            // Errors from handlers travel as trailers-only responses, so the
            // code is in the headers; success puts it in the trailers (0).
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let elapsed = start.elapsed();
            tracing::debug!(%method, code, elapsed_us = elapsed.as_micros() as u64, "RPC answered");
            global().rpc(&method, elapsed, code);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_cumulative_buckets_and_escaped_labels() {
        let m = Metrics::default();
        m.rpc(
            "/runtime.v1.RuntimeService/Version",
            Duration::from_millis(3),
            0,
        );
        m.rpc(
            "/runtime.v1.RuntimeService/Version",
            Duration::from_millis(30),
            5,
        );
        m.pulled(1000, Duration::from_millis(200));
        let text = m.render(&[Gauge {
            name: "ucri_pods",
            help: "Pods by state.",
            values: vec![("ready \"x\"".into(), 2)],
        }]);
        assert!(text.contains(
            "ucri_rpc_duration_seconds_bucket{method=\"/runtime.v1.RuntimeService/Version\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "ucri_rpc_duration_seconds_bucket{method=\"/runtime.v1.RuntimeService/Version\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains(
            "ucri_rpc_errors_total{method=\"/runtime.v1.RuntimeService/Version\",code=\"5\"} 1"
        ));
        assert!(text.contains("ucri_image_pull_bytes_total 1000"));
        assert!(text.contains("ucri_image_pull_duration_seconds_count 1"));
        assert!(text.contains("ucri_pods{state=\"ready \\\"x\\\"\"} 2"));
    }
}

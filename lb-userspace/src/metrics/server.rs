//! The `/metrics` endpoint: one hyper HTTP/1.1 service, one request per connection.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::exporter::{Exporter, Format};

/// Longest request head accepted (hyper's smallest read buffer; a larger head is refused).
const MAX_HEAD: usize = 8 * 1024;
/// A client has this long to send its request head, then its connection is closed.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections (so scrapes) served at once: each may walk the flow table.
const MAX_SCRAPES: usize = 8;

/// The `/metrics` endpoint, bound.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    exporter: Arc<Exporter>,
}

/// Binds `addr` and serves until the task is dropped.
pub async fn serve(addr: SocketAddr, exporter: Exporter) -> io::Result<()> {
    MetricsServer::bind(addr, exporter).await?.run().await
}

impl MetricsServer {
    pub async fn bind(addr: SocketAddr, exporter: Exporter) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("metrics endpoint: bind {addr}: {e}")))?;
        Ok(Self {
            listener,
            exporter: Arc::new(exporter),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts scrapes until the task is dropped.
    pub async fn run(self) -> io::Result<()> {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(MAX_HEAD)
            // A scraper comes back every interval; an idle kept-alive connection would hold
            // one of the few slots in between.
            .keep_alive(false)
            .title_case_headers(true);
        let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
        loop {
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let exporter = self.exporter.clone();
            let service = service_fn(move |request| answer(request, exporter.clone()));
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "metrics connection ended with an error");
                }
                drop(permit);
            });
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Routes one request. Any path but `/metrics` is 404 whatever the method; hyper leaves the
/// body out of every answer to `HEAD`.
async fn answer(
    request: Request<Incoming>,
    exporter: Arc<Exporter>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        ));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    // Reading the maps is syscalls (and may walk the flow table): off the async workers.
    let body = match tokio::task::spawn_blocking(move || exporter.encode(format)).await {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "metrics encoding task failed");
            return Ok(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed\n",
            ));
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::metrics::exporter::tests::fixture;
    use crate::metrics::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};

    /// One raw request: what goes over the wire, not what an HTTP client library makes of it.
    async fn http(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn http_endpoint_serves_metrics_and_404s_the_rest() {
        let (store, agent) = fixture();
        let server =
            MetricsServer::bind("127.0.0.1:0".parse().unwrap(), Exporter::new(store, agent))
                .await
                .unwrap();
        let addr = server.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let task = tokio::spawn(server.run());

        let r = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains(&format!("Content-Type: {PROMETHEUS_CONTENT_TYPE}\r\n")));
        assert!(r.contains("\r\n\r\n# HELP "), "{r}");
        assert!(r.contains("\nxlb_vip_packets_total{vip=\"tcp/203.0.113.10:80\"} 100\n"));
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(head.contains("Connection: close\r\n"), "{head}");

        let r = http(
            addr,
            "GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        )
        .await;
        assert!(r.contains(&format!("Content-Type: {OPENMETRICS_CONTENT_TYPE}\r\n")));
        assert!(r.ends_with("# EOF\n"), "{r}");

        let r = http(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );

        for path in ["/", "/metricsx", "/favicon.ico"] {
            let r = http(addr, &format!("GET {path} HTTP/1.1\r\n\r\n")).await;
            assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{path}: {r}");
        }
        let r = http(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        assert!(r.contains("Allow: GET, HEAD\r\n"), "{r}");
        task.abort();
    }
}

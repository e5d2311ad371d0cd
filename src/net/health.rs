//! The HTTP health endpoint, for HAProxy `option httpchk` and keepalived:
//! 200 on the serving leader, 503 elsewhere, with the node's status; and
//! `GET /metrics` for Prometheus (always 200).

use std::rc::Rc;
use std::time::Duration;

use crate::net::rt::TcpListener;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::LocalExecutor;

use super::Server;
use crate::store::RaftLog;

/// Largest HTTP request head the health endpoint reads.
const HEALTH_REQUEST_BYTES_MAX: usize = 4096;

/// Whether a request head asks for `/metrics` (with or without a query).
fn wants_metrics(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    method == b"GET" && path == b"/metrics"
}

/// `GET /metrics`: the Prometheus text format. Any other request (`GET
/// /health`, any path): 200 with a JSON status on the serving leader, 503
/// with the same JSON elsewhere.
pub async fn health<L: RaftLog + 'static>(server: Rc<Server<L>>, ex: Rc<LocalExecutor<'static>>, l: TcpListener) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            crate::net::rt::Timer::after(Duration::from_millis(100)).await;
            continue;
        };
        let server = server.clone();
        ex.spawn(async move {
            let mut buf = vec![0u8; HEALTH_REQUEST_BYTES_MAX];
            let mut n = 0;
            let read = async {
                while n < buf.len() {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || buf[..n].windows(2).any(|w| w == b"\n\n") {
                        break;
                    }
                }
            };
            futures_lite::future::or(read, async {
                crate::net::rt::Timer::after(Duration::from_secs(2)).await;
            })
            .await;
            let resp = if wants_metrics(&buf[..n]) {
                let body = server.metrics_text();
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                let (ok, body) = server.status_json();
                let status = if ok { "200 OK" } else { "503 Service Unavailable" };
                format!(
                    "HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
                    body.len() + 1
                )
            };
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.flush().await;
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::wants_metrics;

    #[test]
    fn only_get_metrics_is_the_metrics_page() {
        assert!(wants_metrics(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(wants_metrics(b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n"));
        assert!(!wants_metrics(b"GET /health HTTP/1.0\r\n\r\n"));
        assert!(!wants_metrics(b"GET /metricsx HTTP/1.0\r\n\r\n"));
        assert!(!wants_metrics(b"POST /metrics HTTP/1.0\r\n\r\n"));
        assert!(!wants_metrics(b""));
    }
}

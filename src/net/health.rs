//! The HTTP health endpoint, for HAProxy `option httpchk` and keepalived:
//! 200 on the serving leader, 503 elsewhere, with the node's status.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpListener;
use smol::LocalExecutor;

use super::Server;
use crate::store::RaftLog;

/// Largest HTTP request head the health endpoint reads.
const HEALTH_REQUEST_BYTES_MAX: usize = 4096;

/// `GET /health` (any path): 200 with a JSON status on the serving leader,
/// 503 with the same JSON elsewhere.
pub async fn health<L: RaftLog + 'static>(server: Rc<Server<L>>, ex: Rc<LocalExecutor<'static>>, l: TcpListener) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            smol::Timer::after(Duration::from_millis(100)).await;
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
                smol::Timer::after(Duration::from_secs(2)).await;
            })
            .await;
            let (ok, body) = server.status_json();
            let status = if ok { "200 OK" } else { "503 Service Unavailable" };
            let resp = format!(
                "HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
                body.len() + 1
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.flush().await;
        })
        .detach();
    }
}

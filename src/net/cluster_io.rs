//! Client steering for followers (the TCP proxy to the leader) and the HTTP
//! health endpoint for HAProxy `option httpchk` and keepalived.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use log::debug;
use smol::net::{TcpListener, TcpStream};
use smol::LocalExecutor;

use super::Server;
use crate::store::RaftLog;

/// Largest HTTP request head the health endpoint reads.
const HEALTH_REQUEST_BYTES_MAX: usize = 4096;

/// Forward a client's byte stream to the leader and back until either side
/// closes. A PROXY header goes first: the leader logs the client's own
/// address and never forwards the connection again. The copies use fixed
/// buffers, so a proxied client costs a bounded amount of memory.
pub async fn proxy(client: TcpStream, peer: SocketAddr, leader: String) {
    let mut up = match TcpStream::connect(leader.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            // Normal during an election (the old leader is gone); the
            // client retries. Debug level keeps SD-card logs small.
            debug!("Cannot proxy {peer} to the leader at {leader}: {e}.");
            return;
        }
    };
    let _ = up.set_nodelay(true);
    let header = super::proxy_header::encode(peer, up.peer_addr().unwrap_or(peer));
    if let Err(e) = up.write_all(&header).await {
        debug!("Cannot proxy {peer} to the leader at {leader}: {e}.");
        return;
    }
    let (mut cr, mut cw) = (client.clone(), client.clone());
    let (mut ur, mut uw) = (up.clone(), up.clone());
    futures_lite::future::or(
        async {
            let _ = futures_lite::io::copy(&mut cr, &mut uw).await;
        },
        async {
            let _ = futures_lite::io::copy(&mut ur, &mut cw).await;
        },
    )
    .await;
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = up.shutdown(std::net::Shutdown::Both);
    debug!("Proxied connection from {peer} ended.");
}

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

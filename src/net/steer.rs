//! Client steering for followers: the TCP proxy that forwards a client to
//! the leader.

use std::net::SocketAddr;

use crate::net::rt::TcpStream;
use futures_lite::AsyncWriteExt;
use log::debug;

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

//! MQTT over WebSockets (`protocol websockets` on a listener; MQTT 5.0 §6,
//! MQTT 3.1.1 §6): the HTTP upgrade and the framing are async-tungstenite's;
//! the MQTT stream is the concatenation of the binary messages' payloads.
//!
//! Bad input: a request that is not a WebSocket upgrade, or one without the
//! `mqtt` subprotocol, gets an HTTP 400 naming what is wrong and is closed
//! (the request head is read and checked here first, at most
//! `HEAD_BYTES_MAX`, then handed to tungstenite with the stream); a text message
//! closes the connection [MQTT-6.0.0-1]; a message larger than the
//! listener's packet bound is refused by tungstenite (connection closed).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use crate::net::rt::TcpStream;
use async_tungstenite::bytes::{ByteReader, ByteWriter};
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures_lite::{AsyncRead, AsyncWrite, StreamExt};
use log::info;

use super::io::{SmolIo, Tcp};
use super::{Server, TLS_HANDSHAKE_TIMEOUT};
use crate::broker::ConnOptions;
use crate::config::tls::CertIdentity;
use crate::store::RaftLog;

/// The longest HTTP request head taken.
const HEAD_BYTES_MAX: usize = 8 * 1024;

/// Reads the request head (up to the blank line) into `head`; checks that
/// it asks for a WebSocket upgrade to the MQTT subprotocol. Err: the reason
/// (for the 400 answer and the log).
async fn read_head<S: AsyncRead + Unpin>(s: &mut S, head: &mut Vec<u8>) -> Result<(), String> {
    use futures_lite::AsyncReadExt;
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= HEAD_BYTES_MAX {
            return Err(format!("request head over {HEAD_BYTES_MAX} bytes"));
        }
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the end of the request head".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let mut lines = text.split("\r\n");
    if !lines.next().is_some_and(|l| l.starts_with("get ") && l.ends_with(" http/1.1")) {
        return Err("not a GET HTTP/1.1 request".into());
    }
    let headers: Vec<(&str, &str)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim(), v.trim())).collect();
    let has =
        |name: &str, token: &str| headers.iter().any(|(k, v)| *k == name && v.split(',').any(|t| t.trim() == token));
    if !has("upgrade", "websocket") || !has("connection", "upgrade") {
        return Err("not a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)".into());
    }
    if !headers.iter().any(|(k, _)| *k == "sec-websocket-key") {
        return Err("no Sec-WebSocket-Key".into());
    }
    if !has("sec-websocket-version", "13") {
        return Err("Sec-WebSocket-Version is not 13".into());
    }
    if !SUBPROTOCOLS.iter().any(|p| has("sec-websocket-protocol", p)) {
        return Err("no mqtt subprotocol (Sec-WebSocket-Protocol: mqtt)".into());
    }
    Ok(())
}

/// A stream whose first bytes were already read (the request head): they
/// are read again first.
struct Prefixed<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.pos);
            buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.head.len() {
                self.head = Vec::new();
                self.pos = 0;
            }
            return std::task::Poll::Ready(Ok(n));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The subprotocols a client may ask for: `mqtt` (MQTT 3.1.1 and 5.0) and
/// `mqttv3.1` (MQTT 3.1 clients).
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Checks the upgrade request and selects the subprotocol.
#[allow(clippy::result_large_err)] // the callback signature is tungstenite's
fn select_subprotocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let asked = req.headers().get_all("sec-websocket-protocol");
    let chosen = asked
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| SUBPROTOCOLS.contains(p));
    match chosen {
        Some(p) => {
            resp.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(if p == "mqtt" { "mqtt" } else { "mqttv3.1" }),
            );
            Ok(resp)
        }
        None => {
            let mut e = ErrorResponse::new(Some("MQTT over WebSockets needs Sec-WebSocket-Protocol: mqtt\n".into()));
            *e.status_mut() = StatusCode::BAD_REQUEST;
            Err(e)
        }
    }
}

/// Binary messages carry MQTT; pings and pongs are tungstenite's; a text
/// message is a protocol error.
fn binary_only(m: Result<Message, WsError>) -> Option<Result<Message, WsError>> {
    match m {
        Ok(Message::Binary(_)) => Some(m),
        Ok(Message::Text(_)) => Some(Err(WsError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a text message (MQTT needs binary messages)",
        )))),
        Ok(Message::Close(_)) => None,
        Ok(_) => None, // ping, pong, raw frame
        Err(e) => Some(Err(e)),
    }
}

impl<L: RaftLog + 'static> Server<L> {
    /// A client on a WebSockets listener: TLS first when the listener has
    /// it, then the upgrade (both within the handshake time), then the
    /// same MQTT connection over the binary messages.
    pub(super) async fn serve_ws(
        self: Rc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<(Arc<rustls::ServerConfig>, CertIdentity)>,
        options: ConnOptions,
    ) {
        self.handshakes.set(self.handshakes.get() + 1);
        let tcp = Tcp::from(stream);
        let done = futures_lite::future::or(
            async {
                match tls {
                    None => Some(self.clone().ws_upgrade(tcp.clone(), peer, options, None).await),
                    Some((cfg, identity)) => match futures_rustls::TlsAcceptor::from(cfg).accept(tcp.clone()).await {
                        Ok(t) => {
                            // use_identity_as_username / use_subject_as_username,
                            // as on a plain TLS listener.
                            let name = super::listen::certificate_name(identity, t.get_ref().1.peer_certificates());
                            Some(self.clone().ws_upgrade(t, peer, options, name).await)
                        }
                        Err(e) => {
                            info!("Client <unknown> from {peer} disconnected: TLS handshake failed: {e}.");
                            Some(None)
                        }
                    },
                }
            },
            async {
                crate::net::rt::Timer::after(TLS_HANDSHAKE_TIMEOUT).await;
                None
            },
        )
        .await;
        self.handshakes.set(self.handshakes.get() - 1);
        match done {
            Some(Some(run)) => run.await,
            Some(None) => {}
            None => info!(
                "Client <unknown> from {peer} disconnected: no WebSocket handshake within {} s.",
                TLS_HANDSHAKE_TIMEOUT.as_secs()
            ),
        }
        tcp.shutdown();
    }

    /// The upgrade on `s`; on success, the connection to run.
    async fn ws_upgrade<S: AsyncRead + AsyncWrite + Unpin + 'static>(
        self: Rc<Self>,
        mut s: S,
        peer: SocketAddr,
        options: ConnOptions,
        certificate_name: Option<Result<String, String>>,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> {
        use futures_lite::AsyncWriteExt;
        let mut head = Vec::new();
        if let Err(why) = read_head(&mut s, &mut head).await {
            info!("Client <unknown> from {peer} disconnected: bad WebSocket upgrade request: {why}.");
            let body = format!("MQTT over WebSockets: {why}\n");
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.flush().await;
            let _ = s.close().await;
            return None;
        }
        let s = Prefixed { head, pos: 0, inner: s };
        // A message may hold a whole packet (and a little framing) at most.
        let max = (self.packet_bytes_max as usize).clamp(64 * 1024, 16 << 20) + 64;
        let cfg = WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max));
        match async_tungstenite::accept_hdr_async_with_config(s, select_subprotocol, Some(cfg)).await {
            Ok(ws) => Some(Box::pin(async move {
                let (tx, rx) = ws.split();
                let reader = ByteReader::new(rx.filter_map(binary_only));
                let writer = ByteWriter::new(tx);
                let (id, io) = self.open_conn(peer, false, false);
                if let Some(name) = certificate_name {
                    self.with_broker(|b, _| b.set_certificate_name(id, name));
                }
                self.listener_options(id, options);
                let r = self.read_loop(id, SmolIo(reader));
                let w = self.write_loop(id, io.clone(), SmolIo(writer));
                futures_lite::future::or(r, w).await;
                self.close_conn(id);
            })),
            Err(e) => {
                info!("Client <unknown> from {peer} disconnected: WebSocket handshake failed: {e}.");
                None
            }
        }
    }
}

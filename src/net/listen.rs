//! Accepting clients: the MQTT listeners (a follower steers each client
//! per `cluster_follower_mode`), the admin listener, TLS handshakes, and
//! the PROXY header of connections that a follower forwarded.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::rt::{Async, TcpListener, TcpStream};
use log::{debug, info, warn};
use smol::LocalExecutor;

use super::conn::TcpConn;
use super::io::{SmolIo, Tcp};
use super::{proxy_header, steer, Server, FIRST_BYTES_TIMEOUT, TLS_HANDSHAKE_TIMEOUT};
use crate::broker::{ConnId, ConnOptions};
use crate::config::tls::CertIdentity;
use crate::config::{FollowerMode, Listener};
use crate::store::RaftLog;

impl<L: RaftLog + 'static> Server<L> {
    /// Accept MQTT clients on one listener. A follower steers them per
    /// `cluster_follower_mode`: proxy to the leader, serve (the broker then
    /// redirects or refuses), or, in closed mode, does not listen at all.
    pub async fn listen(self: Rc<Self>, ex: Rc<LocalExecutor<'static>>, index: usize, l: Listener, first: TcpListener) {
        let l = Rc::new(l);
        // This listener's connections, for its own max_connections.
        let count = Rc::new(Cell::new(0u32));
        let mut sock = Some(first);
        let closed_mode = self.clustered && self.mode == FollowerMode::Closed;
        // A single node accepts clients once it serves (a few ms after
        // start), so the first CONNECT is never refused; or at once when
        // its disk is full (then its clients learn why: 0x97).
        if !self.clustered {
            while !self.driver.borrow().broker().serving() && !self.driver.borrow().store_full() {
                crate::net::rt::Timer::after(Duration::from_millis(5)).await;
            }
        }
        if let Some(first) = sock.as_ref().and_then(|s| s.local_addr().ok()) {
            let family = if first.is_ipv6() { "ipv6" } else { "ipv4" };
            let tls = if l.tls.is_some() { " (TLS)" } else { "" };
            info!("Opening {family} listen socket on port {}{tls}.", first.port());
        }
        loop {
            if closed_mode {
                if !self.is_leader() {
                    if let Some(old) = sock.take() {
                        info!(
                            "Closing client listener on port {}: not the leader (cluster_follower_mode closed).",
                            l.port
                        );
                        drop(old);
                    }
                    crate::net::rt::Timer::after(Duration::from_millis(20)).await;
                    continue;
                }
                if sock.is_none() {
                    match bind(&l).await {
                        Ok(x) => {
                            info!("Opening client listener on port {}: this node leads.", l.port);
                            sock = Some(x);
                        }
                        Err(e) => {
                            warn!("Cannot reopen client listener on port {}: {e}.", l.port);
                            crate::net::rt::Timer::after(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                }
            }
            let Some(listener) = sock.as_ref() else { continue };
            let accepted = if closed_mode {
                futures_lite::future::or(async { Some(listener.accept().await) }, async {
                    crate::net::rt::Timer::after(Duration::from_millis(100)).await;
                    None
                })
                .await
            } else {
                Some(listener.accept().await)
            };
            let Some(accepted) = accepted else { continue };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    warn!("Accept on port {} failed: {}.", l.port, e);
                    crate::net::rt::Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            if self.conns.borrow().len() + self.handshakes.get() >= self.connections_max {
                warn!("Refusing connection from {}: max_connections ({}) reached.", peer, self.connections_max);
                continue;
            }
            let slot = match l.connections_max {
                // Mosquitto closes the socket at once, before any byte.
                Some(max) if count.get() >= max => {
                    if self.connection_messages {
                        info!("Client connection from {peer} denied: max_connections exceeded (port {}).", l.port);
                    }
                    continue;
                }
                Some(_) => Some(ListenerSlot::take(&count)),
                None => None,
            };
            let _ = stream.set_nodelay(self.nodelay);
            if self.clustered {
                let (server, ex2, l2) = (self.clone(), ex.clone(), l.clone());
                ex.spawn(async move { server.steer(ex2, index, l2, stream, peer, slot).await }).detach();
                continue;
            }
            self.clone().serve(&ex, index, &l, stream, peer, None, slot);
        }
    }

    /// A new client connection in a cluster. A connection that a follower
    /// forwarded starts with a PROXY header naming the client: it is
    /// served here whatever this node's role (a leader that has just lost
    /// its lead refuses it with a reason code), never forwarded again. A
    /// client's own connection to a follower in proxy mode goes on to the
    /// leader's listener of the same kind (plain or TLS; TLS ends at the
    /// leader).
    async fn steer(
        self: Rc<Self>,
        ex: Rc<LocalExecutor<'static>>,
        index: usize,
        l: Rc<Listener>,
        mut stream: TcpStream,
        peer: SocketAddr,
        slot: Option<ListenerSlot>,
    ) {
        self.handshakes.set(self.handshakes.get() + 1);
        let first = futures_lite::future::or(read_proxy_header(&mut stream), async {
            crate::net::rt::Timer::after(FIRST_BYTES_TIMEOUT).await;
            Err(FirstBytes::Bad(format!("nothing received within {} s", FIRST_BYTES_TIMEOUT.as_secs())))
        })
        .await;
        self.handshakes.set(self.handshakes.get() - 1);
        match first {
            Ok(Some(client)) => return self.serve(&ex, index, &l, stream, client, Some(peer), slot),
            Ok(None) => {}
            // A TCP health check (connect, close) lands here every few
            // seconds: not worth an SD card's log line.
            Err(FirstBytes::Closed) => {
                return debug!("Connection from {peer} on port {} closed before sending anything.", l.port)
            }
            Err(FirstBytes::Bad(e)) => return info!("Closing connection from {peer} on port {}: {e}.", l.port),
        }
        if self.mode == FollowerMode::Proxy && !self.is_leader() {
            let (leader, target) = {
                let d = self.driver.borrow();
                let leader = d.node().leader_id();
                (leader, d.advertised(leader).and_then(|a| a.listener_for(index, l.tls.is_some())).map(String::from))
            };
            match target {
                Some(addr) if leader != 0 => {
                    debug!("Proxying connection from {peer} to the leader (node {leader}) at {addr}.");
                    return ex
                        .spawn(async move {
                            steer::proxy(stream, peer, addr).await;
                            drop(slot);
                        })
                        .detach();
                }
                _ => {
                    // Served here, so that the client gets a reason code
                    // (Server unavailable) instead of a closed socket.
                    let tls = if l.tls.is_some() { "TLS" } else { "plain" };
                    match leader {
                        0 => info!("No cluster leader known: connection from {peer} on port {} is refused.", l.port),
                        _ => info!(
                            "No {tls} client listener of the leader (node {leader}) is known: connection from {peer} on port {} is refused.",
                            l.port
                        ),
                    }
                }
            }
        }
        self.serve(&ex, index, &l, stream, peer, None, slot)
    }

    /// Serve a client here (plain or TLS). `via`: the follower that
    /// forwarded the connection of `peer`. `index`: the listener's place
    /// in the configuration, whose security options apply with
    /// `per_listener_settings true`.
    #[allow(clippy::too_many_arguments)] // one accepted connection and where it came in
    fn serve(
        self: Rc<Self>,
        ex: &LocalExecutor<'static>,
        index: usize,
        l: &Listener,
        stream: TcpStream,
        peer: SocketAddr,
        via: Option<SocketAddr>,
        slot: Option<ListenerSlot>,
    ) {
        if self.connection_messages {
            match via {
                None => info!("New connection from {} on port {}.", peer, l.port),
                Some(v) => info!("New connection from {} (forwarded by {}) on port {}.", peer, v, l.port),
            }
        }
        let server = self.clone();
        if l.websockets {
            let tls = l.tls.as_ref().map(|t| (t.server(), t.identity));
            let options = listener_conn_options(l, index);
            ex.spawn(async move {
                server.serve_ws(stream, peer, tls, options).await;
                drop(slot);
            })
            .detach();
            return;
        }
        match &l.tls {
            None => {
                if let Some(id) = self.clone().spawn_tcp(ex, stream, peer, false) {
                    if let Some(slot) = slot {
                        self.slots.borrow_mut().insert(id, slot);
                    }
                    self.listener_options(id, listener_conn_options(l, index));
                }
            }
            Some(t) => {
                let (cfg, identity) = (t.server(), t.identity);
                let options = listener_conn_options(l, index);
                ex.spawn(async move {
                    server.serve_tls(stream, peer, cfg, false, identity, options).await;
                    drop(slot);
                })
                .detach()
            }
        }
    }

    /// Tells the broker what the connection's listener sets for its
    /// clients (nothing when it sets nothing of its own).
    pub(super) fn listener_options(&self, id: ConnId, o: ConnOptions) {
        if o != ConnOptions::default() {
            self.with_broker(|b, _| b.set_conn_options(id, o));
        }
    }

    /// Accept management clients on the admin listener (every node),
    /// over TLS when it has TLS options.
    pub async fn listen_admin(self: Rc<Self>, ex: Rc<LocalExecutor<'static>>, l: Listener, listener: TcpListener) {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                crate::net::rt::Timer::after(Duration::from_millis(100)).await;
                continue;
            };
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            info!("New admin connection from {}{}.", peer, if l.tls.is_some() { " (TLS)" } else { "" });
            match &l.tls {
                None => {
                    self.clone().spawn_tcp(&ex, stream, peer, true);
                }
                Some(t) => {
                    let (server, cfg, identity) = (self.clone(), t.server(), t.identity);
                    ex.spawn(async move {
                        server.serve_tls(stream, peer, cfg, true, identity, ConnOptions::default()).await
                    })
                    .detach()
                }
            }
        }
    }

    /// Serve a client of a plain TCP listener (or of the admin listener)
    /// in a task of its own. Its id, unless it was closed at once.
    fn spawn_tcp(
        self: Rc<Self>,
        ex: &LocalExecutor<'static>,
        stream: TcpStream,
        peer: SocketAddr,
        admin: bool,
    ) -> Option<ConnId> {
        // A freshly accepted stream has no other handle: own the socket
        // outright (no reference count, no cached readiness futures).
        let Ok(sock) = std::rc::Rc::try_unwrap(std::rc::Rc::<Async<std::net::TcpStream>>::from(stream)) else {
            warn!("Closing connection from {peer}: its socket is shared.");
            return None;
        };
        // Opened before the task starts, so that the task holds only what
        // the connection needs while it runs.
        let (id, io) = self.open_conn(peer, admin, true);
        ex.spawn(TcpConn::new(self, id, io, sock, false)).detach();
        Some(id)
    }

    /// A client on a TLS listener: handshake (bounded in time), then the
    /// same MQTT connection over the TLS stream.
    async fn serve_tls(
        self: Rc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        cfg: Arc<rustls::ServerConfig>,
        admin: bool,
        identity: CertIdentity,
        options: ConnOptions,
    ) {
        self.handshakes.set(self.handshakes.get() + 1);
        let tcp = Tcp::from(stream);
        let accept = futures_rustls::TlsAcceptor::from(cfg).accept(tcp.clone());
        let done = futures_lite::future::or(async { Some(accept.await) }, async {
            crate::net::rt::Timer::after(TLS_HANDSHAKE_TIMEOUT).await;
            None
        })
        .await;
        self.handshakes.set(self.handshakes.get() - 1);
        match done {
            Some(Ok(tls)) => {
                let name = certificate_name(identity, tls.get_ref().1.peer_certificates());
                // rustls holds records in its own buffers: a readable socket
                // is not a readable stream, so TLS keeps a reader and a
                // writer future, each with its buffer.
                let (r, w) = futures_lite::io::split(tls);
                let (id, io) = self.open_conn(peer, admin, false);
                if let Some(name) = name {
                    self.with_broker(|b, _| b.set_certificate_name(id, name));
                }
                self.listener_options(id, options);
                let reader = self.read_loop(id, SmolIo(r));
                let writer = self.write_loop(id, io.clone(), SmolIo(w));
                futures_lite::future::or(reader, writer).await;
                self.close_conn(id);
            }
            Some(Err(e)) => info!("Client <unknown> from {peer} disconnected: TLS handshake failed: {e}."),
            None => info!(
                "Client <unknown> from {peer} disconnected: no TLS handshake within {} s.",
                TLS_HANDSHAKE_TIMEOUT.as_secs()
            ),
        }
        tcp.shutdown();
    }
}

/// The login name a listener takes from its clients' certificates (None:
/// it takes the CONNECT's), or why the certificate gives none.
pub(super) fn certificate_name(
    identity: CertIdentity,
    certs: Option<&[rustls::pki_types::CertificateDer<'_>]>,
) -> Option<Result<String, String>> {
    use crate::auth::cert_name::{common_name, subject_rfc2253};
    let leaf = certs.and_then(|c| c.first());
    match (identity, leaf) {
        (CertIdentity::Connect, _) => None,
        (_, None) => Some(Err("no client certificate".into())),
        (CertIdentity::CommonName, Some(c)) => Some(common_name(c)),
        (CertIdentity::Subject, Some(c)) => Some(subject_rfc2253(c)),
    }
}

/// What a listener sets for its clients, for the broker.
pub(super) fn listener_conn_options(l: &Listener, index: usize) -> ConnOptions {
    ConnOptions {
        mount_point: l.mount_point.as_deref().map(Rc::from),
        use_username_as_clientid: l.use_username_as_clientid,
        max_qos: l.max_qos,
        topic_alias_max: l.max_topic_alias,
        listener: l.auth.is_some().then_some(index),
    }
}

/// One connection of a listener with its own `max_connections`: counted
/// from its accept until it ends (dropped).
pub(super) struct ListenerSlot(Rc<Cell<u32>>);

impl ListenerSlot {
    fn take(count: &Rc<Cell<u32>>) -> ListenerSlot {
        count.set(count.get() + 1);
        ListenerSlot(count.clone())
    }
}

impl Drop for ListenerSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// The PROXY header a forwarding follower sends first, if the connection
/// starts with one: the client's address. Reads nothing else.
async fn read_proxy_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, FirstBytes> {
    use futures_lite::AsyncReadExt;
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) => return Err(FirstBytes::Closed),
        Ok(_) if !proxy_header::starts_header(first[0]) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(FirstBytes::Bad(e.to_string())),
    }
    let bad = |e: std::io::Error| FirstBytes::Bad(e.to_string());
    let mut fixed = [0u8; proxy_header::FIXED_BYTES];
    stream.read_exact(&mut fixed).await.map_err(bad)?;
    let len = proxy_header::parse_fixed(&fixed).map_err(|e| FirstBytes::Bad(e.into()))?;
    let mut block = [0u8; proxy_header::ADDRESS_BYTES_MAX];
    stream.read_exact(&mut block[..len]).await.map_err(bad)?;
    match proxy_header::parse_source(&fixed, &block[..len]).map_err(|e| FirstBytes::Bad(e.into()))? {
        Some(client) => Ok(Some(client)),
        None => Err(FirstBytes::Bad("PROXY header without a TCP source address".into())),
    }
}

/// Why a clustered connection's first bytes were not taken.
enum FirstBytes {
    /// Closed without sending anything (a TCP health check).
    Closed,
    Bad(String),
}

/// Bind a configured listener; an error names the address.
pub async fn bind(l: &Listener) -> std::io::Result<TcpListener> {
    match &l.address {
        Some(a) => {
            let host = if a.contains(':') && !a.starts_with('[') { format!("[{a}]") } else { a.clone() };
            TcpListener::bind(format!("{}:{}", host, l.port)).await
        }
        // Dual stack where IPv6 exists, IPv4 otherwise.
        None => match TcpListener::bind(("::", l.port)).await {
            Ok(x) => Ok(x),
            Err(_) => TcpListener::bind(("0.0.0.0", l.port)).await,
        },
    }
}

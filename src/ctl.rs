//! `midge ctl`: the management client. It speaks MQTT 3.1.1 to a node's
//! `admin_listener`, publishes one request to `$CONTROL/midge/cluster/v1`
//! and prints the JSON response.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use serde_json::{json, Value};

use crate::broker::admin::{ADMIN_RESPONSE_TOPIC, ADMIN_TOPIC};
use crate::mqtt::codec::{decode, encode};
use crate::mqtt::{Connect, Packet, Properties, Publish, QoS, SubOptions, Subscribe, Version};

pub const USAGE: &str = "\
Usage: midge ctl [-h HOST] [-p PORT] -u USER -P PASSWORD [--cafile CA [--cert CERT --key KEY]] COMMAND

-h defaults to 127.0.0.1, -p to 1880 (the port the README's admin_listener uses).
--cafile: the admin listener speaks TLS; check its certificate (which must
name HOST) against this CA (PEM). --cert/--key: a client certificate, for
an admin listener with require_certificate true.

Talks to a node's admin_listener (any node, leader or not).

Commands:
  status                         this node's view: role, term, leader, indexes, peer lag
  transfer-leader ID             hand leadership to node ID now
  add-node ID HOST:PORT [--force]  add a voter with its raft address
  remove-node ID [--force]         remove a voter

transfer-leader, add-node and remove-node are carried out by the leader:
sent to a follower, ctl sends them on to the leader's admin listener.
--force allows a membership with fewer than three voters.";

const RESPONSE_BYTES_MAX: u32 = 1024 * 1024;

pub fn run(args: &[String]) -> Result<i32, String> {
    let mut host = "127.0.0.1".to_string();
    let mut port: u16 = 1880;
    let mut user = None;
    let mut pass = None;
    let mut rest = Vec::new();
    let (mut cafile, mut cert, mut key) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--host" => host = it.next().ok_or("-h needs a host")?.clone(),
            "-p" | "--port" => {
                let p = it.next().ok_or("-p needs a port")?;
                port = p.parse().map_err(|_| format!("-p: \"{p}\" is not a port number"))?;
            }
            "-u" | "--username" => user = Some(it.next().ok_or("-u needs a user name")?.clone()),
            "-P" | "--pw" => pass = Some(it.next().ok_or("-P needs a password")?.clone()),
            "--cafile" => cafile = Some(it.next().ok_or("--cafile needs a file")?.clone()),
            "--cert" => cert = Some(it.next().ok_or("--cert needs a file")?.clone()),
            "--key" => key = Some(it.next().ok_or("--key needs a file")?.clone()),
            "--help" => {
                println!("{USAGE}");
                return Ok(0);
            }
            _ => rest.push(a.clone()),
        }
    }
    let force = rest.iter().any(|a| a == "--force");
    rest.retain(|a| a != "--force");
    let num = |s: Option<&String>, what: &str| -> Result<u64, String> {
        s.ok_or(format!("{what} needs a node id"))?
            .parse::<u64>()
            .map_err(|_| format!("{what}: node id must be a number"))
    };
    let cmd = match rest.first().map(String::as_str) {
        Some("status") => json!({"command": "getClusterStatus"}),
        Some("transfer-leader") => {
            json!({"command": "transferLeadership", "node": num(rest.get(1), "transfer-leader")?})
        }
        Some("add-node") => json!({
            "command": "addNode",
            "node": num(rest.get(1), "add-node")?,
            "address": rest.get(2).ok_or("add-node needs the node's raft address HOST:PORT")?,
            "force": force
        }),
        Some("remove-node") => {
            json!({"command": "removeNode", "node": num(rest.get(1), "remove-node")?, "force": force})
        }
        Some(other) => return Err(format!("unknown command \"{other}\"\n\n{USAGE}")),
        None => return Err(USAGE.to_string()),
    };
    let user = user.ok_or("the admin listener needs -u USER -P PASSWORD (from the password_file)")?;
    let request = json!({ "commands": [cmd] }).to_string();
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
    let pass = pass.as_deref().unwrap_or("");
    let tls = match (cafile, cert, key) {
        (None, None, None) => None,
        (Some(ca), cert, key) => Some(client_tls(&ca, cert.as_deref(), key.as_deref())?),
        (None, _, _) => return Err("--cert and --key need --cafile (the admin listener's CA)".into()),
    };
    let ask = |addr: &str| ask(addr, tls.as_ref(), &user, pass, request.as_bytes());
    let mut addr = format!("{host}:{port}");
    let mut v = ask(&addr)?;
    // A follower names the leader's admin listener: send it there (once).
    if let Some(leader_admin) = v["responses"][0]["leader_admin"].as_str().map(String::from) {
        if leader_admin != addr {
            eprintln!(
                "midge ctl: {} answered that node {} leads; sending the command to its admin listener at {leader_admin}.",
                addr, v["responses"][0]["leader"]
            );
            addr = leader_admin;
            v = ask(&addr)?;
        }
    }
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    let failed = v["responses"].as_array().is_some_and(|r| r.iter().any(|x| x.get("error").is_some()));
    Ok(if failed { 1 } else { 0 })
}

/// The rustls client for `--cafile` (and `--cert`/`--key`).
fn client_tls(cafile: &str, cert: Option<&str>, key: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    let ca: Vec<CertificateDer> = CertificateDer::pem_file_iter(cafile)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("--cafile {cafile}: {e:?}"))?;
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c).map_err(|e| format!("--cafile {cafile}: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (cert, key) {
        (None, None) => b.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| format!("--cert {cert}: {e:?}"))?;
            let k = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--key {key}: {e:?}"))?;
            b.with_client_auth_cert(chain, k).map_err(|e| format!("--key {key} does not fit --cert {cert}: {e}"))?
        }
        _ => return Err("--cert and --key go together".into()),
    };
    Ok(Arc::new(config))
}

/// One request to the admin listener at `addr`, its JSON answer.
fn ask(addr: &str, tls: Option<&Arc<ClientConfig>>, user: &str, pass: &str, request: &[u8]) -> Result<Value, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    let response = match tls {
        None => exchange(tcp, addr, user, pass, request)?,
        Some(cfg) => {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
            let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
            let conn = ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
            exchange(StreamOwned::new(conn, tcp), addr, user, pass, request)?
        }
    };
    serde_json::from_slice(&response).map_err(|e| format!("response from {addr} is not JSON: {e}"))
}

fn exchange(mut s: impl Read + Write, addr: &str, user: &str, pass: &str, request: &[u8]) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    let connect = Connect {
        version: Version::V311,
        client_id: format!("midge-ctl-{}", std::process::id()),
        clean_start: true,
        keep_alive: 30,
        username: Some(user.into()),
        password: Some(pass.as_bytes().to_vec()),
        will: None,
        properties: Properties::default(),
    };
    encode(&Packet::Connect(Box::new(connect)), Version::V311, &mut out);
    let sub = Subscribe {
        packet_id: 1,
        filters: vec![(ADMIN_RESPONSE_TOPIC.into(), SubOptions { qos: QoS::AtMostOnce, ..Default::default() })],
        properties: Properties::default(),
    };
    encode(&Packet::Subscribe(sub), Version::V311, &mut out);
    s.write_all(&out).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut sent_request = false;
    loop {
        if Instant::now() > deadline {
            return Err(format!("no answer from {addr} within 5 s"));
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("{addr} closed the connection")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(format!("{addr}: {e}")),
        }
        loop {
            let (p, used) = match decode(&buf, Some(Version::V311), RESPONSE_BYTES_MAX) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => return Err(format!("bad reply from {addr}: {e:?}")),
            };
            buf.drain(..used);
            match p {
                Packet::ConnAck(a) if a.code != 0 => {
                    return Err(format!(
                    "{addr} refused the connection (CONNACK {}): check -u/-P and that this is the admin_listener port",
                    a.code
                ))
                }
                Packet::SubAck(_) if !sent_request => {
                    let mut o = Vec::new();
                    let p = Publish {
                        dup: false,
                        qos: QoS::AtMostOnce,
                        retain: false,
                        topic: Rc::from(ADMIN_TOPIC),
                        packet_id: None,
                        payload: Rc::from(request),
                        properties: Properties::default(),
                    };
                    encode(&Packet::Publish(p), Version::V311, &mut o);
                    s.write_all(&o).map_err(|e| e.to_string())?;
                    sent_request = true;
                }
                Packet::Publish(p) if &*p.topic == ADMIN_RESPONSE_TOPIC => {
                    let mut o = Vec::new();
                    encode(
                        &Packet::Disconnect(crate::mqtt::Disconnect { code: 0, properties: Properties::default() }),
                        Version::V311,
                        &mut o,
                    );
                    let _ = s.write_all(&o);
                    return Ok(p.payload.to_vec());
                }
                _ => {}
            }
        }
    }
}

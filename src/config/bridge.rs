//! The bridge keys of a configuration file (Mosquitto's syntax): a
//! `connection NAME` line starts a bridge, and the bridge keys after it
//! are that bridge's until the next `connection` line. Other keys stay
//! global wherever they are, as in Mosquitto.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::values::{is_hostname, parse_u64};
use super::ConfigError;
use crate::bridge::{BridgeConfig, BridgeTls, Direction, TopicLine};
use crate::mqtt::{topic, QoS, Version};

/// What the parser keeps of a bridge beyond its `BridgeConfig`: the lines
/// of its keys, for errors found once the block is read.
#[derive(Debug, Default, Clone)]
pub(super) struct BridgeLines {
    pub connection: u32,
    pub cafile: Option<(PathBuf, u32)>,
    pub certfile: Option<(PathBuf, u32)>,
    pub keyfile: Option<(PathBuf, u32)>,
    pub insecure: Option<(bool, u32)>,
    pub queued_messages_max: Option<u32>,
}

/// Whether `key` is one of a bridge's keys (other than `connection`).
pub(super) fn is_bridge_key(key: &str) -> bool {
    matches!(
        key,
        "address"
            | "addresses"
            | "topic"
            | "bridge_protocol_version"
            | "cleansession"
            | "remote_clientid"
            | "remote_username"
            | "remote_password"
            | "clientid"
            | "username"
            | "password"
            | "bridge_cafile"
            | "bridge_certfile"
            | "bridge_keyfile"
            | "bridge_insecure"
            | "try_private"
            | "notifications"
            | "notification_topic"
            | "keepalive_interval"
            | "restart_timeout"
            | "round_robin"
            | "start_type"
            | "bridge_max_queued_messages"
    )
}

fn bool_value(key: &str, rest: &str) -> Result<bool, String> {
    match rest.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        v => Err(format!("{key}: \"{v}\" is not true or false")),
    }
}

fn one<'a>(key: &str, rest: &'a str) -> Result<&'a str, String> {
    let mut t = rest.split_whitespace();
    let v = t.next().ok_or_else(|| format!("{key}: missing value"))?;
    match t.next() {
        Some(x) => Err(format!("{key}: unexpected extra value \"{x}\"")),
        None => Ok(v),
    }
}

fn num(key: &str, v: &str, min: u64, max: u64) -> Result<u64, String> {
    parse_u64(v)
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{key}: \"{v}\" is not a number between {min} and {max}"))
}

/// `HOST[:PORT]`, port 1883 by default (8883 is not assumed for TLS:
/// Mosquitto does not either).
fn address(a: &str) -> Result<(String, u16), String> {
    let bad = || format!("address: \"{a}\" is not HOST:PORT");
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
            (h, num("address", p, 1, 65535).map_err(|_| bad())? as u16)
        }
        _ => (a, 1883),
    };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.parse::<std::net::IpAddr>().is_err() && !is_hostname(host) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// `topic PATTERN [[[out|in|both] QOS] LOCAL_PREFIX REMOTE_PREFIX]`.
fn topic_line(rest: &str) -> Result<TopicLine, String> {
    let t: Vec<&str> = rest.split_whitespace().collect();
    let Some(pattern) = t.first() else { return Err("topic: missing pattern".into()) };
    if t.len() > 5 {
        return Err(format!("topic: unexpected extra value \"{}\"", t[5]));
    }
    let direction = match t.get(1) {
        None => Direction::Out,
        Some(d) => Direction::from_name(d).ok_or_else(|| format!("topic: direction \"{d}\" is not out, in or both"))?,
    };
    let qos = match t.get(2) {
        None => QoS::AtMostOnce,
        Some(q) => {
            QoS::from_u8(num("topic", q, 0, 2).map_err(|_| format!("topic: QoS \"{q}\" is not 0, 1 or 2"))? as u8)
                .unwrap_or_default()
        }
    };
    if t.len() == 4 {
        return Err("topic: a local prefix needs a remote prefix after it (\"\" for none)".into());
    }
    TopicLine::new(pattern, direction, qos, t.get(3).copied(), t.get(4).copied()).map_err(|e| format!("topic: {e}"))
}

/// One bridge key of the bridge `b`.
pub(super) fn bridge_key(
    b: &mut BridgeConfig,
    lines: &mut BridgeLines,
    key: &str,
    rest: &str,
    line: u32,
) -> Result<(), String> {
    match key {
        "address" | "addresses" => {
            let mut all = Vec::new();
            for a in rest.split_whitespace() {
                all.push(address(a)?);
            }
            if all.is_empty() {
                return Err(format!("{key}: missing HOST:PORT"));
            }
            b.addresses = all;
        }
        "topic" => b.topics.push(topic_line(rest)?),
        "bridge_protocol_version" => {
            b.version = match one(key, rest)? {
                "mqttv311" => Version::V311,
                "mqttv50" => Version::V5,
                v => return Err(format!("bridge_protocol_version: \"{v}\" is not supported (mqttv311 or mqttv50)")),
            }
        }
        "cleansession" => b.clean_session = bool_value(key, rest)?,
        "remote_clientid" | "clientid" => {
            let v = one(key, rest)?;
            if v.len() > 65535 {
                return Err("remote_clientid: longer than 65535 bytes".into());
            }
            b.remote_clientid = v.to_string();
        }
        "remote_username" | "username" => b.remote_username = Some(one(key, rest)?.to_string()),
        "remote_password" | "password" => b.remote_password = Some(one(key, rest)?.to_string()),
        "bridge_cafile" => lines.cafile = Some((path(key, rest)?, line)),
        "bridge_certfile" => lines.certfile = Some((path(key, rest)?, line)),
        "bridge_keyfile" => lines.keyfile = Some((path(key, rest)?, line)),
        "bridge_insecure" => lines.insecure = Some((bool_value(key, rest)?, line)),
        "try_private" => b.try_private = bool_value(key, rest)?,
        "notifications" => b.notifications = bool_value(key, rest)?,
        "notification_topic" => {
            let v = one(key, rest)?;
            if !topic::valid_topic_name(v) {
                return Err(format!("notification_topic: \"{v}\" is not a valid topic name"));
            }
            b.notification_topic = Some(v.to_string());
        }
        "keepalive_interval" => b.keepalive_secs = num(key, one(key, rest)?, 5, 65535)? as u16,
        "restart_timeout" => {
            let t: Vec<&str> = rest.split_whitespace().collect();
            match t.as_slice() {
                [base] => {
                    b.restart_base_secs = num(key, base, 1, 86_400)? as u32;
                    b.restart_cap_secs = None;
                }
                [base, cap] => {
                    b.restart_base_secs = num(key, base, 1, 86_400)? as u32;
                    let cap = num(key, cap, 1, 86_400)? as u32;
                    if cap < b.restart_base_secs {
                        return Err(format!("restart_timeout: the cap {cap} is below the base {}", b.restart_base_secs));
                    }
                    b.restart_cap_secs = Some(cap);
                }
                [] => return Err("restart_timeout: missing value".into()),
                [_, _, x, ..] => return Err(format!("restart_timeout: unexpected extra value \"{x}\"")),
            }
        }
        "round_robin" => b.round_robin = bool_value(key, rest)?,
        "start_type" => match one(key, rest)? {
            "automatic" => {}
            v @ ("lazy" | "once") => {
                return Err(format!(
                    "start_type {v} is not supported by midge: a bridge starts automatically on the leader (start_type automatic)"
                ))
            }
            v => return Err(format!("start_type: \"{v}\" is not automatic, lazy or once")),
        },
        "bridge_max_queued_messages" => {
            lines.queued_messages_max = Some(num(key, one(key, rest)?, 1, u32::MAX as u64)? as u32)
        }
        _ => return Err(format!("{key}: not a bridge key")),
    }
    Ok(())
}

fn path(key: &str, rest: &str) -> Result<PathBuf, String> {
    if rest.is_empty() {
        return Err(format!("{key}: missing value"));
    }
    Ok(PathBuf::from(rest))
}

/// The checks of a whole `connection` block and its TLS configuration.
/// Errors carry parser positions (file "").
pub(super) fn finish_bridge(b: &mut BridgeConfig, l: &BridgeLines, queued_default: u32) -> Vec<ConfigError> {
    let err = |line: u32, m: String| ConfigError::new("", line, m);
    let mut errors = Vec::new();
    let name = &b.name;
    b.queued_messages_max = l.queued_messages_max.unwrap_or(queued_default);
    if b.addresses.is_empty() {
        errors.push(err(l.connection, format!("connection {name}: no address line (address HOST:PORT)")));
    }
    if b.topics.is_empty() {
        errors.push(err(l.connection, format!("connection {name}: no topic line (topic PATTERN [out|in|both] [QOS])")));
    }
    if b.remote_password.is_some() && b.remote_username.is_none() && b.version == Version::V311 {
        errors.push(err(
            l.connection,
            format!("connection {name}: remote_password needs remote_username with MQTT 3.1.1"),
        ));
    }
    let tls_lines = [&l.certfile, &l.keyfile].into_iter().flatten().map(|x| x.1);
    match &l.cafile {
        None => {
            if let Some(line) = tls_lines.chain(l.insecure.iter().map(|x| x.1)).min() {
                errors.push(err(line, format!("connection {name}: bridge TLS needs bridge_cafile (the CA that signed the upstream's certificate)")));
            }
        }
        Some((cafile, ca_line)) => {
            match build_tls(cafile, l.certfile.as_ref(), l.keyfile.as_ref(), l.insecure.is_some_and(|x| x.0)) {
                Ok(client) => {
                    b.tls = Some(BridgeTls {
                        cafile: cafile.clone(),
                        certfile: l.certfile.as_ref().map(|x| x.0.clone()),
                        keyfile: l.keyfile.as_ref().map(|x| x.0.clone()),
                        insecure: l.insecure.is_some_and(|x| x.0),
                        client,
                    })
                }
                Err((which, m)) => {
                    let line = match which {
                        1 => l.certfile.as_ref().map_or(*ca_line, |x| x.1),
                        2 => l.keyfile.as_ref().map_or(*ca_line, |x| x.1),
                        _ => *ca_line,
                    };
                    errors.push(err(line, m));
                }
            }
        }
    }
    errors
}

fn read_certs(key: &str, p: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(p)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key} {}: {e}", p.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {}: no PEM certificate in the file", p.display()));
    }
    Ok(certs)
}

/// The rustls client configuration of a bridge. The error names the key
/// at fault: 0 the CA file, 1 the certificate, 2 the key.
fn build_tls(
    cafile: &Path,
    certfile: Option<&(PathBuf, u32)>,
    keyfile: Option<&(PathBuf, u32)>,
    insecure: bool,
) -> Result<Arc<ClientConfig>, (u8, String)> {
    let mut roots = RootCertStore::empty();
    for c in read_certs("bridge_cafile", cafile).map_err(|m| (0, m))? {
        roots.add(c).map_err(|e| (0, format!("bridge_cafile {}: certificate rejected: {e}", cafile.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| (0, format!("bridge TLS setup failed: {e}")))?;
    let roots = Arc::new(roots);
    let builder = if insecure {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| (0, format!("bridge_cafile {}: {e}", cafile.display())))?;
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyName(inner)))
    } else {
        builder.with_root_certificates(roots)
    };
    let config = match (certfile, keyfile) {
        (None, None) => builder.with_no_client_auth(),
        (Some((cert, _)), Some((key, _))) => {
            let chain = read_certs("bridge_certfile", cert).map_err(|m| (1, m))?;
            let k = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| (2, format!("bridge_keyfile {}: no usable private key ({e})", key.display())))?;
            builder.with_client_auth_cert(chain, k).map_err(|e| {
                (2, format!("bridge_keyfile {} does not fit bridge_certfile {}: {e}", key.display(), cert.display()))
            })?
        }
        (Some(_), None) => return Err((1, "bridge_certfile needs bridge_keyfile".into())),
        (None, Some(_)) => return Err((2, "bridge_keyfile needs bridge_certfile".into())),
    };
    Ok(Arc::new(config))
}

/// `bridge_insecure true`: the chain is checked against bridge_cafile as
/// usual, but a certificate that does not name the host dialled passes.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

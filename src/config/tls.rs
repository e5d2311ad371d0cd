//! TLS on client listeners, with Mosquitto's per-listener keys: `certfile`,
//! `keyfile`, `cafile`, `require_certificate`, `tls_version`,
//! `use_identity_as_username`, `use_subject_as_username`. They apply to
//! the `listener` line above them (or to the default listener when no
//! `listener` line came first, as in Mosquitto).
//!
//! Certificates and keys are read and checked while the config file is
//! read, so a missing file, a file without a PEM certificate, or a key that
//! does not belong to the certificate is a config error naming the file and
//! the line, not a failure at the first client's handshake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{ConfigError, ConfigErrors};

/// `tls_version`: the lowest TLS version the listener accepts (Mosquitto
/// 2 semantics). rustls speaks TLS 1.2 and 1.3 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V12,
    V13,
}

impl TlsVersion {
    pub fn from_name(s: &str) -> Option<TlsVersion> {
        match s {
            "tlsv1.2" => Some(TlsVersion::V12),
            "tlsv1.3" => Some(TlsVersion::V13),
            _ => None,
        }
    }
}

/// One listener's TLS options as written, each with its config line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub certfile: Option<(PathBuf, u32)>,
    pub keyfile: Option<(PathBuf, u32)>,
    pub cafile: Option<(PathBuf, u32)>,
    pub require_certificate: Option<(bool, u32)>,
    pub tls_version: Option<(TlsVersion, u32)>,
    pub use_identity_as_username: Option<(bool, u32)>,
    pub use_subject_as_username: Option<(bool, u32)>,
}

/// Whose name a client of the listener logs in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertIdentity {
    /// The CONNECT's username and password, checked as on any listener.
    #[default]
    Connect,
    /// `use_identity_as_username`: the client certificate's subject
    /// common name (CN); the CONNECT's username and password are ignored.
    CommonName,
    /// `use_subject_as_username`: the whole subject, written as RFC 2253
    /// (OpenSSL's and so Mosquitto's form: `CN=a,O=b,C=DE`).
    Subject,
}

impl TlsOptions {
    pub fn is_empty(&self) -> bool {
        *self == TlsOptions::default()
    }

    /// The line of the first TLS option given.
    pub(super) fn first_line(&self) -> u32 {
        [
            self.certfile.as_ref().map(|x| x.1),
            self.keyfile.as_ref().map(|x| x.1),
            self.cafile.as_ref().map(|x| x.1),
            self.require_certificate.map(|x| x.1),
            self.tls_version.map(|x| x.1),
            self.use_identity_as_username.map(|x| x.1),
            self.use_subject_as_username.map(|x| x.1),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(0)
    }
}

/// A TLS listener: its options and the rustls configuration built from
/// them. Clones share the configuration, so that [`ListenerTls::reload`]
/// (SIGHUP) reaches the listener that serves with it.
#[derive(Clone)]
pub struct ListenerTls {
    pub options: TlsOptions,
    current: Arc<Mutex<Arc<ServerConfig>>>,
    pub identity: CertIdentity,
}

impl ListenerTls {
    /// The configuration a new connection is served with.
    pub fn server(&self) -> Arc<ServerConfig> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Read the certificate, key and CA files again; on any error the
    /// configuration in force stays, and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = build(&self.options, "").map_err(|es| reload_error(&es))?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = fresh.server();
        Ok(())
    }
}

/// Errors of a reload, without the config line numbers (they name files).
fn reload_error(es: &ConfigErrors) -> String {
    es.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; ")
}

impl PartialEq for ListenerTls {
    fn eq(&self, other: &Self) -> bool {
        self.options == other.options
    }
}
impl Eq for ListenerTls {}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls").field("options", &self.options).finish_non_exhaustive()
    }
}

/// Reads the files and builds the rustls configuration; every error names
/// `file` and the line of the option it concerns. A problem with one file
/// does not hide a problem with another.
pub fn build(o: &TlsOptions, file: &str) -> Result<ListenerTls, ConfigErrors> {
    let err = |line: u32, msg: String| ConfigError::new(file, line, msg);
    let Some((certfile, cert_line)) = &o.certfile else {
        return Err(err(o.first_line(), "a TLS listener needs certfile and keyfile (PEM files)".into()).into());
    };
    let Some((keyfile, key_line)) = &o.keyfile else {
        return Err(err(*cert_line, "certfile needs keyfile (the certificate's private key, PEM) too".into()).into());
    };
    let mut errors = Vec::new();
    let chain = read_certs("certfile", certfile).map_err(|m| errors.push(err(*cert_line, m))).ok();
    let key = PrivateKeyDer::from_pem_file(keyfile)
        .map_err(|e| {
            let m = format!("keyfile {}: no usable private key ({})", keyfile.display(), pem_error(&e));
            errors.push(err(*key_line, m));
        })
        .ok();
    let required = o.require_certificate.is_some_and(|(r, _)| r);
    // Read even when not required, so that turning require_certificate on
    // later does not reveal a broken file.
    let ca = match (&o.cafile, required) {
        (Some((cafile, ca_line)), _) => {
            read_certs("cafile", cafile).map_err(|m| errors.push(err(*ca_line, m))).ok().map(|c| (c, cafile, *ca_line))
        }
        (None, true) => {
            let line = o.require_certificate.map_or(0, |x| x.1);
            let m = "require_certificate true needs cafile (the CA that signs client certificates)";
            errors.push(err(line, m.into()));
            None
        }
        (None, false) => None,
    };
    // As in Mosquitto, use_identity_as_username wins when both are on.
    let identity = match (o.use_identity_as_username, o.use_subject_as_username) {
        (Some((true, line)), _) | (_, Some((true, line))) if !required => {
            let key = if o.use_identity_as_username.is_some_and(|(on, _)| on) {
                "use_identity_as_username"
            } else {
                "use_subject_as_username"
            };
            let m = format!("{key} true needs require_certificate true (and cafile): midge asks clients for a certificate only then");
            errors.push(err(line, m));
            CertIdentity::Connect
        }
        (Some((true, _)), _) => CertIdentity::CommonName,
        (_, Some((true, _))) => CertIdentity::Subject,
        _ => CertIdentity::Connect,
    };
    let (Some(chain), Some(key), true) = (chain, key, errors.is_empty()) else {
        return Err(ConfigErrors(errors));
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match o.tls_version {
        Some((TlsVersion::V13, _)) => &[&rustls::version::TLS13],
        Some((TlsVersion::V12, _)) | None => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| err(o.first_line(), format!("TLS setup failed: {e}")))?;
    let builder = match ca {
        Some((certs, cafile, ca_line)) if required => {
            let mut roots = RootCertStore::empty();
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| err(ca_line, format!("cafile {}: certificate rejected: {e}", cafile.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| err(ca_line, format!("cafile {}: {e}", cafile.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let server = builder.with_single_cert(chain, key).map_err(|e| {
        err(*key_line, format!("keyfile {} does not fit certfile {}: {e}", keyfile.display(), certfile.display()))
    })?;
    Ok(ListenerTls { options: o.clone(), current: Arc::new(Mutex::new(Arc::new(server))), identity })
}

fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{key} {}: {}", path.display(), pem_error(&e)))?;
    let certs =
        iter.collect::<Result<Vec<_>, _>>().map_err(|e| format!("{key} {}: {}", path.display(), pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!("{key} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file", path.display()));
    }
    Ok(certs)
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM section of the expected kind in the file".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// The peer link's TLS: `cluster_cafile`, `cluster_certfile` and
/// `cluster_keyfile`, each with its config line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTlsFiles {
    pub cafile: Option<(PathBuf, u32)>,
    pub certfile: Option<(PathBuf, u32)>,
    pub keyfile: Option<(PathBuf, u32)>,
}

impl ClusterTlsFiles {
    pub fn is_empty(&self) -> bool {
        *self == ClusterTlsFiles::default()
    }
}

/// Mutual TLS between nodes: both ends show a certificate that
/// `cluster_cafile` signed; the dialing end also checks that the accepting
/// node's certificate names the host of its `cluster_peer` line. Clones
/// share the configurations, so that a reload (SIGHUP) reaches the links
/// opened after it.
#[derive(Clone)]
pub struct ClusterTls {
    pub files: ClusterTlsFiles,
    current: Arc<Mutex<(Arc<ServerConfig>, Arc<ClientConfig>)>>,
}

impl PartialEq for ClusterTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}
impl Eq for ClusterTls {}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// What an incoming peer link is accepted with.
    pub fn server(&self) -> Arc<ServerConfig> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// What an outgoing peer link is opened with.
    pub fn client(&self) -> Arc<ClientConfig> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// Read the three files again; on any error the configuration in force
    /// stays, and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = build_cluster(&self.files, "").map_err(|es| reload_error(&es))?;
        let pair = (fresh.server(), fresh.client());
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = pair;
        Ok(())
    }
}

/// Reads the three files and builds both ends' rustls configurations (TLS
/// 1.3 only: every node runs the same midge). Every error names `file` and
/// the line of the key it concerns.
pub fn build_cluster(f: &ClusterTlsFiles, file: &str) -> Result<ClusterTls, ConfigErrors> {
    let err = |line: u32, msg: String| ConfigError::new(file, line, msg);
    let (Some((cafile, ca_line)), Some((certfile, cert_line)), Some((keyfile, key_line))) =
        (&f.cafile, &f.certfile, &f.keyfile)
    else {
        let first = [&f.cafile, &f.certfile, &f.keyfile].into_iter().flatten().map(|x| x.1).min().unwrap_or(0);
        let m = "cluster TLS needs all of cluster_cafile, cluster_certfile and cluster_keyfile (PEM files)";
        return Err(err(first, m.into()).into());
    };
    let mut errors = Vec::new();
    let chain = read_certs("cluster_certfile", certfile).map_err(|m| errors.push(err(*cert_line, m))).ok();
    let key = PrivateKeyDer::from_pem_file(keyfile)
        .map_err(|e| {
            let m = format!("cluster_keyfile {}: no usable private key ({})", keyfile.display(), pem_error(&e));
            errors.push(err(*key_line, m));
        })
        .ok();
    let ca = read_certs("cluster_cafile", cafile).map_err(|m| errors.push(err(*ca_line, m))).ok();
    let (Some(chain), Some(key), Some(ca), true) = (chain, key, ca, errors.is_empty()) else {
        return Err(ConfigErrors(errors));
    };
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots
            .add(c)
            .map_err(|e| err(*ca_line, format!("cluster_cafile {}: certificate rejected: {e}", cafile.display())))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let setup = |e: rustls::Error| err(*ca_line, format!("cluster TLS setup failed: {e}"));
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| err(*ca_line, format!("cluster_cafile {}: {e}", cafile.display())))?;
    let misfit = |e: rustls::Error| {
        err(
            *key_line,
            format!("cluster_keyfile {} does not fit cluster_certfile {}: {e}", keyfile.display(), certfile.display()),
        )
    };
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(tls13)
        .map_err(setup)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(misfit)?;
    // Links are long-lived and never resumed: no session tickets.
    server.send_tls13_tickets = 0;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(tls13)
        .map_err(setup)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(misfit)?;
    Ok(ClusterTls { files: f.clone(), current: Arc::new(Mutex::new((Arc::new(server), Arc::new(client)))) })
}

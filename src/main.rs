//! `midge`: the broker. `midge -c FILE`, `midge -p PORT`, `-v`, `--help`,
//! `--version`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

use log::{error, info, warn, LevelFilter};
use smol::LocalExecutor;

use midge::auth::acl::AclFile;
use midge::auth::password::PasswordFile;
use midge::broker::dynsec::DynsecRole;
use midge::broker::{Broker, ListenerReload};
use midge::cluster::driver::{CommitMode, Driver};
use midge::cluster::transport::{self, Advertised, ClientListener, Peers};
use midge::cluster::{raft_logger, Node, NodeConfig};
use midge::config::{ClusterMode, Config, ConfigErrors, Listener, LogDest};
use midge::logging;
use midge::net::Server;
use midge::store::{MemLog, RaftLog, RedbLog, StoreIdentity};

const USAGE: &str = "\
midge - a small, highly available MQTT broker

Usage: midge [-c FILE] [-p PORT] [-v]
       midge ctl [-h HOST] [-p PORT] -u USER -P PASSWORD status|transfer-leader ID|add-node ID HOST:PORT|remove-node ID
       midge --help | --version

  -c, --config-file FILE  read the configuration from FILE (Mosquitto syntax)
  -p, --port PORT         listen on PORT instead of the configured listeners
  -v, --verbose           log everything (log_type all)
  -h, --help              show this help
      --version           show the version

Without -c, midge runs with built-in defaults: one listener on port 1883.
See docs/CONFIG.md for every configuration option.";

struct Cli {
    config: Option<PathBuf>,
    port: Option<u16>,
    verbose: bool,
}

fn parse_args() -> Result<Option<Cli>, String> {
    let mut cli = Cli { config: None, port: None, verbose: false };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-c" | "--config-file" => {
                cli.config = Some(args.next().ok_or("-c needs a file name")?.into());
            }
            "-p" | "--port" => {
                let p = args.next().ok_or("-p needs a port number")?;
                cli.port = Some(p.parse().map_err(|_| format!("-p: \"{p}\" is not a port number (1-65535)"))?);
            }
            "-v" | "--verbose" => cli.verbose = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--version" => {
                println!("midge {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            other => return Err(format!("unknown argument \"{other}\" (see midge --help)")),
        }
    }
    Ok(Some(cli))
}

fn main() -> ExitCode {
    // A panic is a bug. Stop the whole process in every build (release
    // builds abort anyway): a debug build must not let an executor task
    // swallow it and run on with half-updated state.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!("midge: internal error (a bug; please report it with the log above). Aborting.");
        std::process::abort();
    }));
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("ctl") {
        return match midge::ctl::run(&args[2..]) {
            Ok(code) => ExitCode::from(code as u8),
            Err(e) => {
                eprintln!("midge ctl: {e}");
                ExitCode::from(2)
            }
        };
    }
    let cli = match parse_args() {
        Ok(Some(c)) => c,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("midge: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut config, passwords, acl, dynsec, listener_files) = match &cli.config {
        Some(p) => match Config::load(p) {
            Ok(l) => (l.config, l.passwords, l.acl, l.dynsec, l.listener_files),
            Err(errors) => {
                for e in errors.iter() {
                    eprintln!("midge: config error: {e}");
                }
                return ExitCode::from(3);
            }
        },
        None => (Config::default(), None, None, None, Vec::new()),
    };
    if let Some(p) = cli.port {
        config.override_port(p);
    }
    let level = match config.log_dest {
        LogDest::None if !config.log_topic => LevelFilter::Off,
        _ if cli.verbose => LevelFilter::Debug,
        _ => config.log_level(),
    };
    // The logger writes to stderr: log_dest stdout and file redirect it.
    match &config.log_dest {
        LogDest::Stdout => {
            if let Err(e) = logging::redirect_to_stdout() {
                eprintln!("midge: log_dest stdout: cannot redirect the log ({e}).");
            }
        }
        LogDest::File(path, origin) => {
            if let Err(e) = logging::redirect_to_file(path) {
                let e = origin.error(format!("log_dest file {}: cannot open for writing: {e}", path.display()));
                eprintln!("midge: config error: {e}");
                return ExitCode::from(3);
            }
        }
        LogDest::Stderr | LogDest::None | LogDest::Syslog => {}
    }
    if config.log_dest == LogDest::Syslog {
        logging::init_syslog(level, config.log_facility, config.log_topic);
    } else if config.log_dest == LogDest::None {
        // `log_dest none` then `log_dest topic`: the topic only.
        logging::init_topic_only(level, config.log_topic);
    } else {
        logging::init(level, config.log_topic);
    }
    for w in &config.warnings {
        log::warn!("{w}");
    }

    let mut settings = config.broker_settings(passwords, acl);
    settings.listener_rules = config.listener_rules(listener_files);
    let settings = Rc::new(settings);
    info!("midge version {} starting", env!("CARGO_PKG_VERSION"));
    if let Some(src) = &config.source {
        info!("Config loaded from {}.", src.display());
        for f in &config.included_files {
            info!("Config file {} included.", f.display());
        }
    } else {
        info!("Using default config.");
    }
    let node_id = config.cluster_node_id.unwrap_or(1);
    let dynsec_sync = config.cluster_mode == ClusterMode::DynsecSync;
    if let Some(d) = &dynsec {
        for why in &d.skipped {
            log::warn!("Dynamic security file: {why}");
        }
        info!(
            "Dynamic security on ({} clients, {} groups, {} roles in the file).",
            d.state.clients.len(),
            d.state.groups.len(),
            d.state.roles.len()
        );
    }
    let seed = dynsec.map(|d| d.state);
    let make_broker = |role: DynsecRole| {
        let mut broker = Broker::new(settings.clone(), midge::net::wall_ms());
        broker.set_dynsec_role(role, node_id);
        broker.set_client_id_source(Box::new(|| {
            let mut bytes = [0u8; 16];
            getrandom::getrandom(&mut bytes).map(|()| bytes).map_err(|e| e.to_string())
        }));
        if let Some(state) = &seed {
            broker.set_dynsec_file(state.clone());
            broker.set_salt_source(Box::new(|| {
                let mut salt = [0u8; midge::dynsec::SALT_BYTES];
                if let Err(e) = getrandom::getrandom(&mut salt) {
                    // No entropy source at all: stop rather than hash with a
                    // predictable salt.
                    error!("Cannot draw a random salt for a new password: {e}.");
                    std::process::exit(70);
                }
                salt
            }));
        }
        broker
    };
    // dynsec_sync: this node's own single-voter group serves its clients;
    // the cluster group carries dynamic security and membership.
    let (main_cfg, group_cfg) = if dynsec_sync {
        let mut own = node_config(&config, node_id);
        own.voters = vec![node_id];
        own.join = false;
        info!("Cluster mode dynsec_sync: this node serves its own clients; dynamic security is replicated.");
        (own, Some(node_config(&config, node_id)))
    } else {
        (node_config(&config, node_id), None)
    };
    let cluster_id_source = || -> Box<dyn FnMut() -> u128> {
        Box::new(|| {
            let mut b = [0u8; 16];
            if let Err(e) = getrandom::getrandom(&mut b) {
                error!("Cannot draw a random cluster id: {e}.");
                std::process::exit(70);
            }
            // 0 means "none yet".
            u128::from_le_bytes(b).max(1)
        })
    };
    let mut main_broker = make_broker(if dynsec_sync { DynsecRole::Client } else { DynsecRole::Own });
    let group = group_cfg.map(|c| {
        let mut b = make_broker(DynsecRole::Group);
        b.set_cluster_id_source(cluster_id_source());
        (c, b)
    });
    if !dynsec_sync {
        main_broker.set_cluster_id_source(cluster_id_source());
    }
    main_broker.set_disk_written_source(midge::metrics::process_disk_written_bytes);
    if config.persistence {
        let dir = config.persistence_location.clone().unwrap_or_else(|| PathBuf::from("."));
        let identity = StoreIdentity { cluster_id: 0, node_id };
        let open = |d: &std::path::Path| match RedbLog::open(d, identity, config.persistence_fsync) {
            Ok(l) => {
                info!(
                    "Persistence: {} (fsync {}).",
                    d.join("midge.redb").display(),
                    if config.persistence_fsync { "on" } else { "off" }
                );
                Some(l)
            }
            Err(e) => {
                error!("{e}");
                eprintln!("midge: {e}");
                None
            }
        };
        let modes =
            [(dir.join("midge.redb"), ClusterMode::FullSync), (dir.join(DYNSEC_SYNC_DIR), ClusterMode::DynsecSync)];
        for (path, mode) in &modes {
            if *mode != config.cluster_mode && path.exists() {
                let e = format!(
                    "{} holds the data of cluster_mode {}, and this config says cluster_mode {}: a cluster's mode cannot change in place. Start with a new persistence_location (after moving the old data away), see docs/HA.md.",
                    path.display(),
                    mode.name(),
                    config.cluster_mode.name()
                );
                error!("{e}");
                eprintln!("midge: {e}");
                return ExitCode::from(4);
            }
        }
        if dynsec_sync {
            let base = dir.join(DYNSEC_SYNC_DIR);
            let Some(own) = open(&base.join("local")) else { return ExitCode::from(4) };
            let Some(cluster) = open(&base.join("cluster")) else { return ExitCode::from(4) };
            run(&config, main_cfg, own, main_broker, group.map(|(c, b)| (c, cluster, b)))
        } else {
            let Some(log) = open(&dir) else { return ExitCode::from(4) };
            run(&config, main_cfg, log, main_broker, None)
        }
    } else {
        info!("Persistence is off: state lives in memory only and is lost at exit.");
        run(&config, main_cfg, MemLog::volatile(), main_broker, group.map(|(c, b)| (c, MemLog::volatile(), b)))
    }
}

/// Under `persistence_location`, the stores of `cluster_mode dynsec_sync`:
/// `local/` (this node's sessions and messages) and `cluster/` (dynamic
/// security and membership).
const DYNSEC_SYNC_DIR: &str = "dynsec_sync";

fn node_config(config: &Config, id: u64) -> NodeConfig {
    let mut n = NodeConfig::single(id);
    if !config.cluster_peers.is_empty() {
        n.voters = config.cluster_peers.iter().map(|(id, _)| *id).collect();
    }
    n.election_ticks = config.cluster.election_ticks as usize;
    n.election_ticks_max = 2 * n.election_ticks;
    n.heartbeat_ticks = config.cluster.heartbeat_ticks as usize;
    n.snapshot_entries = config.cluster.snapshot_entries;
    if !config.persistence {
        // The log is in RAM: compact it sooner (on disk, fewer snapshots
        // spare the SD card).
        n.snapshot_log_bytes = MEMORY_LOG_SNAPSHOT_BYTES;
    }
    n.join = config.cluster_join;
    n
}

/// With `persistence false`, a snapshot is taken after this much log.
const MEMORY_LOG_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024;

/// Where peers reach this node's listeners (proxy, redirect, `midge
/// ctl`): a listener bound to one address is reached there; one bound to
/// all interfaces at the host of this node's own `cluster_peer` line.
/// `ports` are the bound ports (a configured port 0 is known only then).
fn advertised(config: &Config, node_id: u64, ports: &[u16], admin_port: Option<u16>) -> Advertised {
    let peer_host = config
        .cluster_peers
        .iter()
        .find(|(id, _)| *id == node_id)
        .and_then(|(_, a)| a.rsplit_once(':').map(|(h, _)| h.to_string()))
        .unwrap_or_else(|| "127.0.0.1".into());
    let addr = |l: &Listener, port: u16| {
        let host = match l.address.as_deref() {
            Some(a) if !a.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) => {
                if a.contains(':') && !a.starts_with('[') {
                    format!("[{a}]")
                } else {
                    a.to_string()
                }
            }
            _ => peer_host.clone(),
        };
        format!("{host}:{port}")
    };
    Advertised {
        listeners: config
            .listeners
            .iter()
            .zip(ports)
            .map(|(l, p)| ClientListener { addr: addr(l, *p), tls: l.tls.is_some() })
            .collect(),
        admin: config.admin_listener.as_ref().zip(admin_port).map(|(l, p)| addr(l, p)),
        mode: config.cluster_mode,
    }
}

fn run<L: RaftLog + 'static>(
    config: &Config,
    ncfg: NodeConfig,
    log: L,
    broker: Broker,
    group: Option<(NodeConfig, L, Broker)>,
) -> ExitCode {
    let node_id = ncfg.id;
    let start = |ncfg: NodeConfig, log: L, broker: Broker| match Node::new(ncfg, log, broker, &raft_logger()) {
        Ok(n) => Some(n),
        Err(e) => {
            error!("{e}");
            eprintln!("midge: {e}");
            None
        }
    };
    let Some(node) = start(ncfg, log, broker) else { return ExitCode::from(4) };
    // How commands commit, chosen here once: see `CommitMode`.
    let has_peers = group.is_none() && !config.cluster_peers.is_empty();
    let mode = CommitMode::choose(node.log_on_disk(), has_peers);
    let mut driver = Driver::new(
        node,
        mode,
        config.cluster_follower_mode,
        config.cluster_preferred_leader,
        config.cluster.tick_ms,
        0,
    );
    driver.set_batch_window_us(config.persistence_batch_window_ms * 1000);
    let group = match group {
        None => None,
        Some((gcfg, glog, gbroker)) => {
            let Some(mut gnode) = start(gcfg, glog, gbroker) else { return ExitCode::from(4) };
            gnode.set_forward_proposals(true);
            let gmode = CommitMode::choose(gnode.log_on_disk(), true);
            driver.set_admin_elsewhere(true);
            Some(Driver::new(
                gnode,
                gmode,
                config.cluster_follower_mode,
                config.cluster_preferred_leader,
                config.cluster.tick_ms,
                0,
            ))
        }
    };
    let message_bytes_max = config.limits.memory_bytes_max.min(1 << 31) as usize + (16 << 20);
    let mut sockets = Vec::new();
    for l in &config.listeners {
        match midge::net::rt::block_on(midge::net::bind(l)) {
            Ok(s) => sockets.push(s),
            Err(e) => {
                error!(
                    "Cannot listen on port {}{}: {e}.",
                    l.port,
                    l.address.as_deref().map(|a| format!(" address {a}")).unwrap_or_default()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let mut admin_listener = None;
    if let Some(l) = &config.admin_listener {
        match midge::net::rt::block_on(midge::net::bind(l)) {
            Ok(s) => {
                info!(
                    "Admin listener on port {}{} (password users only).",
                    l.port,
                    if l.tls.is_some() { ", TLS" } else { "" }
                );
                admin_listener = Some(s);
            }
            Err(e) => {
                error!("Cannot open admin_listener on port {}: {e}.", l.port);
                return ExitCode::FAILURE;
            }
        }
    }
    let port_of = |s: &midge::net::rt::TcpListener| s.local_addr().map(|a| a.port()).unwrap_or(0);
    let ports: Vec<u16> = sockets.iter().map(port_of).collect();
    let peers = Peers::new(
        node_id,
        advertised(config, node_id, &ports, admin_listener.as_ref().map(port_of)),
        config.cluster_tls.clone(),
    );
    let server = Server::new(
        driver,
        group,
        peers.clone(),
        config.set_tcp_nodelay,
        config.cluster_follower_mode,
        std::time::Duration::from_micros(config.busy_poll_us.into()),
    );
    if let (true, Some(f)) = (config.dynsec_plugin, &config.dynsec_file) {
        server.set_dynsec_file(f.clone());
    }
    if config.persistence && config.persistence_min_free > 0 {
        let dir = config.persistence_location.clone().unwrap_or_else(|| PathBuf::from("."));
        server.set_min_free(&dir, config.persistence_min_free);
    }
    if config.busy_poll_us > 0 {
        info!("Busy polling for {} us after each client packet (busy_poll_us).", config.busy_poll_us);
    }
    let mut health_listener = None;
    if let Some(l) = &config.health_listener {
        match midge::net::rt::block_on(midge::net::bind(l)) {
            Ok(s) => health_listener = Some(s),
            Err(e) => {
                error!("Cannot open health_listener on port {}: {e}.", l.port);
                return ExitCode::FAILURE;
            }
        }
    }
    let mut peer_listener = None;
    if let Some((_, addr)) = config.cluster_peers.iter().find(|(id, _)| *id == node_id) {
        match midge::net::rt::block_on(midge::net::rt::TcpListener::bind(addr.as_str())) {
            Ok(l) => {
                match &config.cluster_tls {
                    Some(t) => info!(
                        "Listening for cluster peers on {addr} (mutual TLS, CA {}).",
                        t.files.cafile.as_ref().map(|f| f.0.display().to_string()).unwrap_or_default()
                    ),
                    None => warn!(
                        "Listening for cluster peers on {addr} without TLS: the cluster's traffic (every message and session) is readable on the network and peers are not authenticated. Set cluster_cafile, cluster_certfile and cluster_keyfile (docs/HA.md, \"Securing the cluster\")."
                    ),
                }
                peer_listener = Some(l);
            }
            Err(e) => {
                error!("Cannot listen for cluster peers on {addr}: {e}.");
                return ExitCode::FAILURE;
            }
        }
    }
    // Every listener is open: the pid file says midge is up.
    let pid_file = match &config.pid_file {
        None => None,
        Some((path, origin)) => match std::fs::write(path, format!("{}\n", std::process::id())) {
            Ok(()) => Some(path.clone()),
            Err(e) => {
                let e = origin.error(format!("pid_file {}: cannot write: {e}", path.display()));
                error!("{e}");
                eprintln!("midge: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let ex = Rc::new(LocalExecutor::new());
    let code = midge::net::rt::run(
        &ex,
        server.clone().busy_polling(async {
            for (i, (l, s)) in config.listeners.iter().zip(sockets).enumerate() {
                ex.spawn(server.clone().listen(ex.clone(), i, l.clone(), s)).detach();
            }
            if let Some(h) = health_listener {
                info!("Health endpoint on port {}.", h.local_addr().map(|a| a.port()).unwrap_or(0));
                ex.spawn(midge::net::health(server.clone(), ex.clone(), h)).detach();
            }
            server.start_peers(&ex, &config.cluster_peers);
            if config.log_topic {
                ex.spawn(server.clone().publish_log()).detach();
            }
            if let (Some(a), Some(l)) = (admin_listener, &config.admin_listener) {
                ex.spawn(server.clone().listen_admin(ex.clone(), l.clone(), a)).detach();
            }
            if let Some(l) = peer_listener {
                let s2 = server.clone();
                let s3 = server.clone();
                let s4 = server.clone();
                let s5 = server.clone();
                let inbox = transport::Inbox {
                    known: Rc::new(move |id| s4.is_known_peer(id)),
                    hello: Rc::new(move |id, a| s3.set_advertised(id, a)),
                    deliver: Rc::new(move |m| s2.deliver_peer_message(m)),
                    lost: Rc::new(move |id| s5.peer_link_lost(id)),
                    message_bytes_max,
                };
                ex.spawn(transport::accept_loop(ex.clone(), l, peers.clone(), inbox)).detach();
            }
            server.start_bridges(&ex, &config.bridges);
            ex.spawn(server.clone().ticker()).detach();
            ex.spawn(server.clone().parker(ex.clone())).detach();
            ex.spawn(server.clone().driver()).detach();
            ex.spawn(server.clone().group_driver()).detach();
            let signals = match async_signal::Signals::new([
                async_signal::Signal::Term,
                async_signal::Signal::Int,
                async_signal::Signal::Hup,
            ]) {
                Ok(s) => s,
                Err(e) => {
                    error!("cannot install signal handlers: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // The signals are awaited in a task of their own: as the executor's
            // main future they would be polled, a read of their pipe, on every
            // turn of the event loop.
            let (tx, rx) = smol::channel::bounded(1);
            let auth_files = AuthFiles::of(config);
            let server = server.clone();
            let certs = Certificates::of(config);
            ex.spawn(async move {
                use futures_lite::StreamExt;
                let mut signals = signals;
                loop {
                    match signals.next().await.and_then(|r| r.ok()) {
                        Some(async_signal::Signal::Hup) => {
                            reload(&server, &auth_files);
                            certs.reload();
                        }
                        s => {
                            let _ = tx.send(s).await;
                            return;
                        }
                    }
                }
            })
            .detach();
            let s = rx.recv().await.ok().flatten();
            let name = match s {
                Some(async_signal::Signal::Term) => "SIGTERM",
                Some(async_signal::Signal::Int) => "SIGINT",
                _ => "a signal",
            };
            info!("midge received {name}, shutting down.");
            ExitCode::SUCCESS
        }),
    );
    if let Some(path) = pid_file {
        if let Err(e) = std::fs::remove_file(&path) {
            error!("Cannot remove the pid file {}: {e}.", path.display());
        }
    }
    code
}

/// The password and ACL files SIGHUP reads again: the broker-wide ones and
/// each listener's own (`per_listener_settings true`), by listener index.
struct AuthFiles {
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    listeners: Vec<(usize, Option<PathBuf>, Option<PathBuf>)>,
}

impl AuthFiles {
    fn of(config: &Config) -> AuthFiles {
        let listeners = config
            .listeners
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let a = l.auth.as_ref()?;
                Some((i, a.password_file.as_ref().map(|p| p.0.clone()), a.acl_file.as_ref().map(|p| p.0.clone())))
            })
            .collect();
        AuthFiles { password_file: config.password_file.clone(), acl_file: config.acl_file.clone(), listeners }
    }
}

/// SIGHUP, as Mosquitto: reopen the log file (logrotate), reread the
/// password and ACL files. A file that no longer reads keeps the rules in
/// force, and the log says why.
fn reload<L: RaftLog + 'static>(server: &Server<L>, files: &AuthFiles) {
    if let Err(e) = logging::reopen() {
        error!("Cannot reopen the log file {e}; still writing to the file open before.");
    }
    info!("midge received SIGHUP: reloading the password and ACL files and the TLS certificates.");
    let passwords = files.password_file.as_deref().and_then(|p| reread("password_file", p, PasswordFile::load));
    let acl = files.acl_file.as_deref().and_then(|p| reread("acl_file", p, AclFile::load));
    let listeners = files
        .listeners
        .iter()
        .map(|(index, pw, acl)| ListenerReload {
            index: *index,
            passwords: pw.as_deref().and_then(|p| reread("password_file", p, PasswordFile::load)),
            acl: acl.as_deref().and_then(|p| reread("acl_file", p, AclFile::load)),
        })
        .collect();
    let kicked = server.reload_auth(passwords, acl, listeners);
    if kicked > 0 {
        info!("Reload: {kicked} client(s) disconnected.");
    }
}

/// The certificates and keys SIGHUP reads again: each TLS listener's
/// (client and admin) and the peer link's.
struct Certificates {
    listeners: Vec<(String, midge::config::tls::ListenerTls)>,
    cluster: Option<midge::config::tls::ClusterTls>,
}

impl Certificates {
    fn of(config: &Config) -> Certificates {
        let mut listeners: Vec<(String, _)> = config
            .listeners
            .iter()
            .filter_map(|l| l.tls.clone().map(|t| (format!("listener {}", l.port), t)))
            .collect();
        if let Some(t) = config.admin_listener.as_ref().and_then(|l| l.tls.clone().map(|t| (l.port, t))) {
            listeners.push((format!("admin_listener {}", t.0), t.1));
        }
        Certificates { listeners, cluster: config.cluster_tls.clone() }
    }

    /// New connections use what was read; one that does not read keeps
    /// what was in force, and the log says why.
    fn reload(&self) {
        for (what, t) in &self.listeners {
            match t.reload() {
                Ok(()) => info!("Reload: the certificate and key of {what} read again."),
                Err(e) => error!("Reload of the TLS files of {what}: {e}. The ones read before stay in force."),
            }
        }
        if let Some(t) = &self.cluster {
            match t.reload() {
                Ok(()) => info!("Reload: the cluster's CA, certificate and key read again (new peer links use them)."),
                Err(e) => error!("Reload of the cluster TLS files: {e}. The ones read before stay in force."),
            }
        }
    }
}

fn reread<T>(key: &str, path: &Path, load: fn(&Path) -> Result<T, ConfigErrors>) -> Option<T> {
    match load(path) {
        Ok(t) => Some(t),
        Err(errors) => {
            for e in errors.iter() {
                error!("Reload of {key} {}: {e}", path.display());
            }
            error!("The {key} read before stays in force.");
            None
        }
    }
}

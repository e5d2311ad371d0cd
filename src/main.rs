//! `midge`: the broker. `midge -c FILE`, `midge -p PORT`, `-v`, `--help`,
//! `--version`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

use log::{error, info, LevelFilter};
use smol::LocalExecutor;

use midge::auth::acl::AclFile;
use midge::auth::password::PasswordFile;
use midge::broker::{Broker, Settings};
use midge::config::Config;
use midge::net::Server;

const USAGE: &str = "\
midge - a small, highly available MQTT broker

Usage: midge [-c FILE] [-p PORT] [-v]
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
    let cli = match parse_args() {
        Ok(Some(c)) => c,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("midge: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = match &cli.config {
        Some(p) => match Config::from_file(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("midge: config error: {e}");
                return ExitCode::from(3);
            }
        },
        None => Config::default(),
    };
    if let Some(p) = cli.port {
        config.override_port(p);
    }
    let level = if cli.verbose { LevelFilter::Debug } else { config.log_level() };
    let _ = simple_logger::SimpleLogger::new().with_level(level).init();
    for w in &config.warnings {
        log::warn!("{w}");
    }

    let passwords = match &config.password_file {
        Some(p) => match PasswordFile::load(p) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("midge: password_file error: {e}");
                return ExitCode::from(3);
            }
        },
        None => None,
    };
    let acl = match &config.acl_file {
        Some(p) => match AclFile::load(p) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("midge: acl_file error: {e}");
                return ExitCode::from(3);
            }
        },
        None => None,
    };
    let settings = Rc::new(Settings::from_config(&config, passwords, acl));
    info!("midge version {} starting", env!("CARGO_PKG_VERSION"));
    if let Some(src) = &config.source {
        info!("Config loaded from {}.", src.display());
    } else {
        info!("Using default config.");
    }
    let ex = Rc::new(LocalExecutor::new());
    let server = Server::new(Broker::new(settings, midge::net::wall_ms()), config.set_tcp_nodelay);
    let mut sockets = Vec::new();
    for l in &config.listeners {
        match smol::block_on(midge::net::bind(l)) {
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
    smol::block_on(ex.run(async {
        for s in sockets {
            ex.spawn(server.clone().listen(ex.clone(), s)).detach();
        }
        ex.spawn(server.clone().ticker()).detach();
        let signals = match async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int]) {
            Ok(s) => s,
            Err(e) => {
                error!("cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let stop = async {
            use futures_lite::StreamExt;
            let mut signals = signals;
            let s = signals.next().await;
            info!("midge received {:?}, shutting down.", s.and_then(|r| r.ok()));
            ExitCode::SUCCESS
        };
        stop.await
    }))
}

//! The log: the process-wide `log` logger, writing each record to every
//! `log_dest` (standard output, standard error, a file, syslog). It owns
//! the open log file and reopens it on request (SIGHUP, for logrotate).
//! It never decides what is logged: `log_type` sets the level.
//!
//! `log` needs a logger that is `Sync`; the destinations sit behind one
//! mutex, taken only for the writes of one line (midge runs on one thread,
//! so it is never contended).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::{ConfigError, LogDest, Origin};

/// The local syslog socket.
const SYSLOG_SOCKET: &str = "/dev/log";
/// syslog facility `daemon` (RFC 5424 §6.2.1), shifted into place.
const FACILITY_DAEMON: u8 = 3 << 3;

pub struct Logger {
    level: LevelFilter,
    sinks: Mutex<Sinks>,
}

struct Sinks {
    stdout: bool,
    stderr: bool,
    file: Option<LogFile>,
    /// `log_dest syslog`; `None` inside while the socket is unreachable.
    syslog: Option<Option<UnixDatagram>>,
}

struct LogFile {
    path: PathBuf,
    origin: Origin,
    file: File,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn connect_syslog() -> std::io::Result<UnixDatagram> {
    let s = UnixDatagram::unbound()?;
    s.connect(SYSLOG_SOCKET)?;
    Ok(s)
}

impl Logger {
    /// Opens the destinations. A log file that cannot be opened is an
    /// error at its config line; an unreachable syslog socket is only
    /// reported on stderr (it is retried at each [`Logger::reopen`]).
    pub fn open(dests: &[LogDest], level: LevelFilter) -> Result<Logger, ConfigError> {
        let mut sinks = Sinks { stdout: false, stderr: false, file: None, syslog: None };
        for d in dests {
            match d {
                LogDest::Stdout => sinks.stdout = true,
                LogDest::Stderr => sinks.stderr = true,
                LogDest::File(path, origin) => {
                    let file = open_append(path).map_err(|e| {
                        origin.error(format!("log_dest file {}: cannot open for writing: {e}", path.display()))
                    })?;
                    sinks.file = Some(LogFile { path: path.clone(), origin: origin.clone(), file });
                }
                LogDest::Syslog => {
                    let s = connect_syslog()
                        .map_err(|e| eprintln!("midge: log_dest syslog: cannot reach {SYSLOG_SOCKET}: {e}"))
                        .ok();
                    sinks.syslog = Some(s);
                }
            }
        }
        let level = if dests.is_empty() { LevelFilter::Off } else { level };
        Ok(Logger { level, sinks: Mutex::new(sinks) })
    }

    /// Makes this the process's logger; returns it for [`Logger::reopen`].
    pub fn install(self) -> &'static Logger {
        let logger: &'static Logger = Box::leak(Box::new(self));
        if log::set_logger(logger).is_ok() {
            log::set_max_level(logger.level);
        }
        logger
    }

    /// Reopens the log file (after logrotate renamed it) and reconnects
    /// to syslog. On failure the old file stays in use; the error is
    /// returned for the log.
    pub fn reopen(&self) -> Result<(), String> {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s @ None) = &mut sinks.syslog {
            *s = connect_syslog().ok();
        }
        let Some(f) = &mut sinks.file else { return Ok(()) };
        match open_append(&f.path) {
            Ok(file) => {
                f.file = file;
                Ok(())
            }
            Err(e) => Err(format!(
                "cannot reopen the log file {} (log_dest file at {}:{}): {e}; still writing to the file open before",
                f.path.display(),
                f.origin.file,
                f.origin.line
            )),
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target =
            if record.target().is_empty() { record.module_path().unwrap_or_default() } else { record.target() };
        let line = format!("{} {:<5} [{target}] {}\n", utc_timestamp(SystemTime::now()), record.level(), record.args());
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        // A write that fails (a full disk, a closed pipe) loses that line
        // only: the log must never stop the broker.
        if sinks.stderr {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        if sinks.stdout {
            let _ = std::io::stdout().write_all(line.as_bytes());
        }
        if let Some(f) = &mut sinks.file {
            let _ = f.file.write_all(line.as_bytes());
        }
        if let Some(Some(s)) = &sinks.syslog {
            let msg = format!(
                "<{}>midge[{}]: {}",
                FACILITY_DAEMON | severity(record.level()),
                std::process::id(),
                record.args()
            );
            let _ = s.send(msg.as_bytes());
        }
    }

    fn flush(&self) {
        let _ = std::io::stdout().flush();
    }
}

/// syslog severity (RFC 5424 §6.2.1) of a `log` level.
fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// `2026-01-31T23:59:59.123Z`: UTC, milliseconds (the format midge has
/// always logged).
fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_millis())
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's days-to-civil algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_dates() {
        let at = |s: u64, ms: u64| utc_timestamp(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_767_225_599, 999), "2025-12-31T23:59:59.999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn an_unwritable_log_file_is_an_error_at_its_line() {
        let origin = Origin { file: "midge.conf".into(), line: 4 };
        let dests = [LogDest::File("/nonexistent/dir/midge.log".into(), origin)];
        let e = Logger::open(&dests, LevelFilter::Info).err().unwrap().to_string();
        assert_eq!(
            e,
            "midge.conf:4: log_dest file /nonexistent/dir/midge.log: cannot open for writing: \
             No such file or directory (os error 2)"
        );
    }

    #[test]
    fn reopen_follows_a_renamed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.log");
        let dests = [LogDest::File(path.clone(), Origin::default())];
        let logger = Logger::open(&dests, LevelFilter::Info).unwrap();
        let rec = |msg: &str| {
            logger.log(&Record::builder().level(Level::Info).target("t").args(format_args!("{msg}")).build())
        };
        rec("one");
        std::fs::rename(&path, dir.path().join("m.log.1")).unwrap();
        rec("two");
        logger.reopen().unwrap();
        rec("three");
        let old = std::fs::read_to_string(dir.path().join("m.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(old.contains("INFO  [t] one\n") && old.contains("[t] two\n"), "{old}");
        assert!(new.ends_with("INFO  [t] three\n") && !new.contains("two"), "{new}");
    }
}

//! The log: `simple_logger`, which writes each record to standard error.
//! `log_dest` only chooses what standard error is: standard output
//! (`dup2(1, 2)`) or a file (`dup2(file, 2)`, redone on SIGHUP so that
//! logrotate's renamed file is left behind). `log_dest syslog` instead
//! hands each record to libc's syslog(3), as Mosquitto does. `log_dest
//! topic`, besides either, keeps each line (but debug ones) in a bounded
//! queue that the runtime publishes on `$SYS/broker/log/...`.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use log::LevelFilter;

/// The log file, for [`reopen`].
static LOG_FILE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Installs the logger (on standard error) at `level`; with `topic`, its
/// lines are also kept for `$SYS/broker/log/...` (see [`take_topic_lines`]).
pub fn init(level: LevelFilter, topic: bool) {
    let logger = simple_logger::SimpleLogger::new().with_level(level);
    if !topic {
        let _ = logger.init();
        return;
    }
    install(Box::new(logger), level, true);
}

/// `log_dest none`: no destination but, with `topic`, `$SYS/broker/log/...`.
pub fn init_topic_only(level: LevelFilter, topic: bool) {
    if topic {
        install(Box::new(Nowhere(level)), level, true);
    }
}

/// The logger of no destination (`log_dest none` with `log_dest topic`).
struct Nowhere(LevelFilter);

impl log::Log for Nowhere {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.0
    }

    fn log(&self, _: &log::Record) {}

    fn flush(&self) {}
}

fn install(inner: Box<dyn log::Log>, level: LevelFilter, topic: bool) {
    TOPIC_ON.store(topic, Ordering::Relaxed);
    if log::set_boxed_logger(Box::new(Tee { inner })).is_ok() {
        log::set_max_level(level);
    }
}

/// `log_dest topic`: lines waiting for the runtime to publish them, oldest
/// first, at most [`TOPIC_LINES_MAX`] (the oldest are dropped, counted in
/// [`TOPIC_LINES_DROPPED`]).
static TOPIC_LINES: Mutex<VecDeque<(log::Level, String)>> = Mutex::new(VecDeque::new());
static TOPIC_ON: AtomicBool = AtomicBool::new(false);
static TOPIC_LINES_DROPPED: AtomicU64 = AtomicU64::new(0);
const TOPIC_LINES_MAX: usize = 1000;

/// Lines `log_dest topic` dropped because [`TOPIC_LINES_MAX`] were waiting.
pub fn topic_lines_dropped() -> u64 {
    TOPIC_LINES_DROPPED.load(Ordering::Relaxed)
}

/// The log lines kept for `$SYS/broker/log/...` since the last call.
pub fn take_topic_lines() -> Vec<(log::Level, String)> {
    TOPIC_LINES.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect()
}

/// Writes through to the logger of the destination and, with `log_dest
/// topic`, keeps the line for `$SYS/broker/log/...` (not debug lines, as
/// Mosquitto).
struct Tee {
    inner: Box<dyn log::Log>,
}

impl log::Log for Tee {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        self.inner.log(record);
        if TOPIC_ON.load(Ordering::Relaxed) && record.level() <= log::Level::Info && self.enabled(record.metadata()) {
            let mut q = TOPIC_LINES.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= TOPIC_LINES_MAX {
                q.pop_front();
                TOPIC_LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back((record.level(), record.args().to_string()));
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// `log_dest syslog`: every record goes to syslog(3) with the priority
/// of its level, as Mosquitto's (error, warning, info, debug), under the
/// name `midge` with its pid, in `facility` (LOG_DAEMON, or LOG_LOCALn
/// from `log_facility n`).
pub fn init_syslog(level: LevelFilter, local: Option<u8>, topic: bool) {
    const LOCAL: [libc::c_int; 8] = [
        libc::LOG_LOCAL0,
        libc::LOG_LOCAL1,
        libc::LOG_LOCAL2,
        libc::LOG_LOCAL3,
        libc::LOG_LOCAL4,
        libc::LOG_LOCAL5,
        libc::LOG_LOCAL6,
        libc::LOG_LOCAL7,
    ];
    let facility = local.and_then(|n| LOCAL.get(n as usize).copied()).unwrap_or(libc::LOG_DAEMON);
    // SAFETY: openlog keeps the ident pointer: a 'static C string.
    unsafe { libc::openlog(c"midge".as_ptr(), libc::LOG_PID | libc::LOG_NDELAY, facility) };
    install(Box::new(Syslog), level, topic);
}

struct Syslog;

impl log::Log for Syslog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let priority = match record.level() {
            log::Level::Error => libc::LOG_ERR,
            log::Level::Warn => libc::LOG_WARNING,
            log::Level::Info => libc::LOG_INFO,
            log::Level::Debug | log::Level::Trace => libc::LOG_DEBUG,
        };
        // A NUL inside the message would end the C string early.
        let text = record.args().to_string().replace('\0', " ");
        let Ok(text) = std::ffi::CString::new(text) else { return };
        // SAFETY: a "%s" format with one NUL-terminated string.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), text.as_ptr()) };
    }

    fn flush(&self) {}
}

/// Points standard error at standard output.
pub fn redirect_to_stdout() -> io::Result<()> {
    // SAFETY: dup2 on this process's own standard descriptors.
    if unsafe { libc::dup2(1, 2) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Points standard error at `path`, appended to (created 0644 if absent),
/// and remembers it for [`reopen`]. On error standard error is unchanged.
pub fn redirect_to_file(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).mode(0o644).open(path)?;
    // SAFETY: both descriptors are open; the file's is closed when `file`
    // drops, fd 2 keeps its own reference to the open file.
    if unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
        return Err(io::Error::last_os_error());
    }
    *LOG_FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_path_buf());
    Ok(())
}

/// SIGHUP: opens the log file again, by its name (logrotate renamed the
/// old one). No log file, nothing to do; on error the old file stays in use.
pub fn reopen() -> io::Result<()> {
    let path = LOG_FILE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match path {
        Some(p) => redirect_to_file(&p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unopenable_log_file_leaves_stderr_alone() {
        let e = redirect_to_file(Path::new("/nonexistent/dir/midge.log")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(LOG_FILE.lock().unwrap().is_none());
        // No log file: reopen has nothing to do.
        reopen().unwrap();
    }
}

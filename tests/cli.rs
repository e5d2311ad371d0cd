//! Command line and process behaviour of the real binary: `log_dest`,
//! config errors, log and pid files that cannot be written.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, midge_bin, tempdir, write_file, MAX_WAIT};

/// Runs midge with `extra` config until its log shows the listener (or
/// MAX_WAIT passes), then stops it by PID; returns (stdout, stderr).
fn run_until_listening(extra: &str) -> (String, String) {
    let dir = tempdir();
    let port = free_port();
    let conf = write_file(
        dir.path(),
        "midge.conf",
        &format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}\n"),
    );
    let out = dir.path().join("out");
    let err = dir.path().join("err");
    let mut child = Command::new(midge_bin())
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start midge");
    let deadline = Instant::now() + MAX_WAIT;
    let read = |p: &std::path::Path| {
        let mut s = String::new();
        let _ = std::fs::File::open(p).and_then(|mut f| f.read_to_string(&mut s));
        s
    };
    while Instant::now() < deadline {
        let both = read(&out) + &read(&err);
        if both.contains(&format!("listen socket on port {port}")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    (read(&out), read(&err))
}

#[test]
fn log_dest_stdout_and_stderr() {
    if common::is_mosquitto() {
        return; // midge's own process behaviour
    }
    let (out, err) = run_until_listening("log_dest stdout");
    assert!(out.contains("listen socket on port"), "log not on stdout:\nstdout:\n{out}\nstderr:\n{err}");
    assert!(!err.contains("listen socket on port"), "log on stderr too:\n{err}");
    let (out, err) = run_until_listening("");
    assert!(err.contains("listen socket on port"), "default log not on stderr:\nstdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains("listen socket on port"), "default log on stdout:\n{out}");
}

/// Every config error is printed, one per line, and midge exits with 3
/// without starting.
#[test]
fn config_errors_are_all_printed() {
    if common::is_mosquitto() {
        return; // midge's own messages
    }
    let dir = tempdir();
    let conf = write_file(
        dir.path(),
        "midge.conf",
        &format!("max_qos 5\nlistener 99999\npassword_file {}/passwd\n", dir.path().display()),
    );
    let out = Command::new(midge_bin()).arg("-c").arg(&conf).stdin(Stdio::null()).output().expect("run midge");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    let c = conf.display();
    let d = dir.path().display();
    let expected = format!(
        "midge: config error: {c}:1: max_qos: \"5\" is not a number between 0 and 2\n\
         midge: config error: {c}:2: listener: \"99999\" is not a number between 1 and 65535\n\
         midge: config error: {c}:3: password_file {d}/passwd: cannot read: No such file or directory (os error 2)\n"
    );
    assert_eq!(err, expected);
}

/// A log file or pid file that cannot be written stops midge at start,
/// naming the file and its config line.
#[test]
fn unwritable_log_and_pid_files_are_start_errors() {
    if common::is_mosquitto() {
        return; // midge's own messages
    }
    let dir = tempdir();
    let port = free_port();
    let run = |extra: &str| {
        let conf =
            write_file(dir.path(), "midge.conf", &format!("listener {port} 127.0.0.1\npersistence false\n{extra}\n"));
        let out = Command::new(midge_bin()).arg("-c").arg(&conf).stdin(Stdio::null()).output().expect("run midge");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string(), conf.display().to_string())
    };
    let (code, err, c) = run("log_dest file /nonexistent/midge/midge.log");
    assert_eq!(code, Some(3));
    assert_eq!(
        err,
        format!(
            "midge: config error: {c}:3: log_dest file /nonexistent/midge/midge.log: cannot open for writing: \
             No such file or directory (os error 2)\n"
        )
    );
    let (code, err, c) = run("\npid_file /nonexistent/midge/midge.pid");
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "midge: {c}:4: pid_file /nonexistent/midge/midge.pid: cannot write: No such file or directory (os error 2)"
        )),
        "{err}"
    );
}

/// `log_dest dlt` and a second destination are refused at their line:
/// midge logs to one destination.
#[test]
fn dlt_and_a_second_log_destination_are_config_errors() {
    if common::is_mosquitto() {
        return; // Mosquitto takes several destinations (and dlt where built with it)
    }
    let dir = tempdir();
    let run = |text: &str| {
        let conf = write_file(dir.path(), "midge.conf", text);
        let out = Command::new(midge_bin()).arg("-c").arg(&conf).stdin(Stdio::null()).output().expect("run midge");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string(), conf.display().to_string())
    };
    let (code, err, c) = run("persistence false\nlog_dest dlt\n");
    assert_eq!(code, Some(3));
    assert_eq!(
        err,
        format!(
            "midge: config error: {c}:2: log_dest dlt is not supported by midge: use log_dest syslog, file or \
             topic, or run under systemd, whose journal takes stderr\n"
        )
    );
    let (code, err, c) = run("persistence false\nlog_dest syslog\nlog_dest stdout\n");
    assert_eq!(code, Some(3));
    assert_eq!(
        err,
        format!(
            "midge: config error: {c}:3: log_dest stdout: midge logs to one destination; \
             log_dest syslog is already set on line 2\n"
        )
    );
    let log = dir.path().join("midge.log");
    let (code, err, c) = run(&format!("log_dest file {}\nlog_dest stderr\n", log.display()));
    assert_eq!(code, Some(3));
    assert_eq!(
        err,
        format!(
            "midge: config error: {c}:2: log_dest stderr: midge logs to one destination; \
             log_dest file {} is already set on line 1\n",
            log.display()
        )
    );
    assert!(!log.exists(), "log file created by a config that did not load");
}

/// `log_dest syslog` with `log_facility 3`: records reach /dev/log as
/// syslog(3) writes them, in LOG_LOCAL3 with their level's priority, named
/// by the program and its pid. The broker runs in a mount namespace of its
/// own (unshare, as root) whose /dev/log is this test's socket, so the
/// machine's own /dev/log (if any) is left alone.
#[test]
fn log_dest_syslog_writes_to_dev_log_in_its_facility() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempdir();
    let sock_path = dir.path().join("log");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the test's syslog socket");
    // Mosquitto drops to its own user unless `user root`; midge stays root.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let port = free_port();
    let mosquitto = common::is_mosquitto();
    let conf = write_file(
        dir.path(),
        "broker.conf",
        &format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest syslog\nlog_facility 3\n\
             retry_interval 20\n{}",
            if mosquitto { "user root\n" } else { "" }
        ),
    );
    let (bin, ident) = if mosquitto { ("mosquitto".into(), "mosquitto") } else { (midge_bin(), "midge") };
    let script = format!(
        "mount -t tmpfs none /dev && touch /dev/log && mount --bind '{}' /dev/log && exec '{}' -c '{}'",
        sock_path.display(),
        bin.display(),
        conf.display()
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run unshare");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let mut stderr = child.stderr.take().unwrap();
    let _child = Kill(child);
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + MAX_WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let started = |got: &Vec<String>| got.iter().any(|l| l.contains("version") && l.contains("starting"));
    while Instant::now() < deadline && !started(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    drop(_child);
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    let start = got
        .iter()
        .find(|l| l.contains("version") && l.contains("starting"))
        .unwrap_or_else(|| panic!("no start-up record on /dev/log; got {got:?}; stderr {err:?}"));
    // LOG_LOCAL3 is 19 << 3 = 152; both log their start at info (+6).
    // syslog(3) writes the pid of the process, which `exec` kept.
    // (Mosquitto puts its own timestamp before the text as well.)
    assert!(start.starts_with("<158>"), "{start:?}");
    assert!(start.contains(&format!(" {ident}[{pid}]: ")), "{start:?}");
    if !mosquitto {
        // A config warning, logged before the start: warning is +4.
        let warning = got.iter().find(|l| l.contains("retry_interval")).expect("the retry_interval warning");
        assert!(warning.starts_with("<156>"), "{warning:?}");
    }
}

/// Issue 23: a data file that exists but is empty or too short to be a
/// store is refused at start (exit code 4), naming the file and how to
/// start fresh; it is left as it was. A missing file still gives a fresh
/// store. (Before, a 0-byte file started an empty store, logged only at
/// INFO, and short files were refused without saying how to start fresh.)
#[test]
fn an_empty_or_short_data_file_is_refused_at_start() {
    if common::is_mosquitto() {
        return; // midge's own data file
    }
    for (len, says) in [(0usize, "the file is empty (0 bytes)"), (1, "too short to be a store (1 bytes)")]
        .into_iter()
        .chain([(100, "too short"), (4096, "too short to be a store (4096 bytes)")])
    {
        let dir = tempdir();
        let data = dir.path().join("midge.redb");
        std::fs::write(&data, vec![0x5a; len]).unwrap();
        let conf = write_file(
            dir.path(),
            "midge.conf",
            &format!("listener {} 127.0.0.1\npersistence_location {}\n", free_port(), dir.path().display()),
        );
        let (code, _out, err) = common::run_with_timeout(Command::new(midge_bin()).arg("-c").arg(&conf), MAX_WAIT);
        assert_eq!(code, Some(4), "{len} bytes: exit code {code:?}\n{err}");
        let line = err.lines().find(|l| l.starts_with("midge: ")).unwrap_or_else(|| panic!("no error line:\n{err}"));
        assert!(line.contains(&data.display().to_string()), "{len} bytes: the file is not named: {line}");
        assert!(line.contains(says), "{len} bytes: {line}");
        assert!(line.contains("(or delete them)"), "{len} bytes: no way to start fresh: {line}");
        assert_eq!(std::fs::metadata(&data).unwrap().len(), len as u64, "the file was changed");
    }
    // A missing file is a fresh store.
    let dir = tempdir();
    let (_out, err) = run_until_listening(&format!("persistence true\npersistence_location {}", dir.path().display()));
    assert!(err.contains("created raft store"), "{err}");
    assert!(dir.path().join("midge.redb").exists());
}

/// `log_dest topic` (besides the log on stderr): log lines go to the
/// subscribers of `$SYS/broker/log/...`; a client's connection is a line on
/// `$SYS/broker/log/N` (a notice in Mosquitto, whose line starts with a
/// timestamp).
#[test]
fn log_dest_topic_publishes_log_lines_on_sys() {
    use common::mosquitto_sub::{publish_ok, Sub};
    let b = common::Broker::start("log_dest stderr\nlog_dest topic\n");
    let sub = Sub::start(b.port, "mqttv311", &["-t", "$SYS/broker/log/#", "-v", "-C", "50", "-W", "3"]);
    publish_ok(b.port, "mqttv311", &["-t", "a", "-m", "x"]);
    // (midge hands the lines over every 100 ms: lines from just before the
    // subscription may come first.)
    let out = sub.finish();
    let connected =
        |l: &&String| l.contains("New connection from 127.0.0.1") || l.contains("New client connected from");
    let line = out.messages.iter().find(connected).unwrap_or_else(|| panic!("no connection line: {out:?}"));
    assert!(line.starts_with("$SYS/broker/log/N "), "{line:?}");
    // The log on stderr goes on as before.
    assert!(b.log().contains("New connection from 127.0.0.1"), "{}", b.log());
}

use super::keys::{suggest, IGNORED_KEYS, SUPPORTED_KEYS};
use super::*;

fn parse(text: &str) -> Config {
    Config::parse_str(text, "midge.conf").unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    Config::parse_str(text, "midge.conf").expect_err("should fail").to_string()
}

#[test]
fn empty_file_gives_the_defaults() {
    let d = Config::default();
    assert_eq!(parse(""), d);
    assert_eq!(parse("# only a comment\n\n   \n\t\n"), d);
    assert_eq!(d.listeners, vec![Listener::any(1883)]);
    assert!(d.allow_anonymous);
    assert!(d.retain_available && d.connection_messages && d.persistence);
    assert!(!d.queue_qos0_messages && !d.set_tcp_nodelay && !d.upgrade_outgoing_qos);
    assert_eq!(d.busy_poll_us, 0);
    assert_eq!(d.sys_interval_secs, 10);
    assert_eq!(d.max_qos, 2);
    assert_eq!(d.log_types, LogType::DEFAULT.to_vec());
    assert_eq!(d.log_dest, LogDest::Stderr);
    assert_eq!(d.pid_file, None);
    assert_eq!(d.cluster_follower_mode, FollowerMode::Proxy);
    assert_eq!(d.source, None);
    let l = d.limits;
    assert_eq!(l.packet_bytes_max, 1_048_576);
    assert_eq!(l.message_bytes_max, 268_435_455);
    assert_eq!(l.inflight_messages_max, 20);
    assert_eq!(l.queued_messages_max, 1000);
    assert_eq!(l.queued_bytes_max, 16 * 1024 * 1024);
    assert_eq!(l.memory_bytes_max, 256 * 1024 * 1024);
    assert_eq!(l.keepalive_secs_max, 65535);
    assert_eq!(l.connections_max, 100_000);
    assert_eq!(l.out_buffer_bytes_max, 256 * 1024);
    assert_eq!(l.topic_levels_max, 64);
    assert_eq!(l.subscriptions_per_client_max, 1000);
    assert_eq!(l.retained_messages_max, 100_000);
    assert_eq!(l.topic_alias_max, 10);
}

#[test]
fn full_config() {
    let c = parse(
        "\u{feff}# midge\r\n\
         max_connections 50\n\
         max_qos 1\n\
         max_topic_alias 0\n\
         listener 1883\r\n\
         listener 8883 127.0.0.1\n\
         listener 1884 ::1\n\
         listener 1885 [fe80::1]\n\
         listener 1886 gateway.local\n\
         \tallow_anonymous   true\n\
         password_file /etc/midge/pass words\n\
         acl_file /etc/midge/acl\n\
         persistent_client_expiration 2w\n\
         retain_available false\n\
         sys_interval 0\n\
         queue_qos0_messages true\n\
         set_tcp_nodelay true\n\
         busy_poll_us 50\n\
         log_type error\n\
         log_type warning subscribe\n\
         log_dest stdout\n\
         connection_messages false\n\
         upgrade_outgoing_qos true\n\
         persistence false\n\
         persistence_location /var/lib/midge/\n\
         max_packet_size 2048\n\
         message_size_limit 1000\n\
         max_inflight_messages 5\n\
         max_queued_messages 7\n\
         max_queued_bytes 4096\n\
         memory_limit 1048576\n\
         max_keepalive 120\n\
         client_out_buffer_bytes 65536\n\
         max_topic_levels 8\n\
         max_subscriptions_per_client 9\n\
         max_retained_messages 11\n\
         protocol mqtt\n\
         cluster_node_id 2\n\
         cluster_peer 1 10.0.0.1:7000\n\
         cluster_peer 2 node-b.local:7000\n\
         cluster_peer 3 [fd00::3]:7000\n\
         cluster_follower_mode redirect\n\
         cluster_preferred_leader 3\n",
    );
    assert_eq!(
        c.listeners,
        vec![
            Listener::any(1883),
            Listener::at(8883, "127.0.0.1"),
            Listener::at(1884, "::1"),
            Listener::at(1885, "fe80::1"),
            Listener::at(1886, "gateway.local"),
        ]
    );
    assert!(c.allow_anonymous);
    assert_eq!(c.password_file, Some("/etc/midge/pass words".into()));
    assert_eq!(c.acl_file, Some("/etc/midge/acl".into()));
    assert_eq!(c.persistent_client_expiration_secs, Some(14 * 86400));
    assert!(!c.retain_available && !c.connection_messages && !c.persistence);
    assert!(c.queue_qos0_messages && c.set_tcp_nodelay && c.upgrade_outgoing_qos);
    assert_eq!(c.busy_poll_us, 50);
    assert_eq!(c.sys_interval_secs, 0);
    assert_eq!(c.log_types, vec![LogType::Error, LogType::Warning, LogType::Subscribe]);
    assert_eq!(c.log_dest, LogDest::Stdout);
    assert_eq!(c.max_qos, 1);
    assert_eq!(c.persistence_location, Some("/var/lib/midge/".into()));
    let l = &c.limits;
    assert_eq!(l.packet_bytes_max, 2048);
    assert_eq!(l.message_bytes_max, 1000);
    assert_eq!(l.inflight_messages_max, 5);
    assert_eq!(l.queued_messages_max, 7);
    assert_eq!(l.queued_bytes_max, 4096);
    assert_eq!(l.memory_bytes_max, 1_048_576);
    assert_eq!(l.keepalive_secs_max, 120);
    assert_eq!(l.connections_max, 50);
    assert_eq!(l.out_buffer_bytes_max, 65536);
    assert_eq!(l.topic_levels_max, 8);
    assert_eq!(l.subscriptions_per_client_max, 9);
    assert_eq!(l.retained_messages_max, 11);
    assert_eq!(l.topic_alias_max, 0);
    assert_eq!(c.cluster_node_id, Some(2));
    assert_eq!(
        c.cluster_peers,
        vec![(1, "10.0.0.1:7000".to_string()), (2, "node-b.local:7000".to_string()), (3, "[fd00::3]:7000".to_string()),]
    );
    assert_eq!(c.cluster_follower_mode, FollowerMode::Redirect);
    assert_eq!(c.cluster_preferred_leader, Some(3));
}

#[test]
fn brief_error_examples() {
    assert_eq!(
        err("# a\n\n\n\n\n\n\n\n\n\n\nmax_inflight 5\n"),
        "midge.conf:12: unknown option \"max_inflight\" (did you mean max_inflight_messages?)"
    );
    assert_eq!(
        err("\n\nmax_keepalive abc\n"),
        "midge.conf:3: max_keepalive: \"abc\" is not a number between 0 and 65535"
    );
}

#[test]
fn number_errors() {
    for v in ["-1", "+5", "1.5", "65536", "0x10", "99999999999999999999999"] {
        assert_eq!(
            err(&format!("max_keepalive {v}")),
            format!("midge.conf:1: max_keepalive: \"{v}\" is not a number between 0 and 65535")
        );
    }
    assert_eq!(err("max_keepalive"), "midge.conf:1: max_keepalive: missing value");
    assert_eq!(err("max_qos 3"), "midge.conf:1: max_qos: \"3\" is not a number between 0 and 2");
    assert_eq!(err("busy_poll_us 1001"), "midge.conf:1: busy_poll_us: \"1001\" is not a number between 0 and 1000");
    assert_eq!(
        err("max_keepalive 60 # one minute"),
        "midge.conf:1: max_keepalive: unexpected extra value \"#\" (comments must be on a line of their own)"
    );
    assert_eq!(err("max_qos 1 2"), "midge.conf:1: max_qos: unexpected extra value \"2\"");
    assert_eq!(err("allow_anonymous yes"), "midge.conf:1: allow_anonymous: \"yes\" is not true or false");
    assert_eq!(err("max_topic_levels 0"), "midge.conf:1: max_topic_levels: \"0\" is not a number between 1 and 65535");
}

#[test]
fn zero_and_unlimited_mappings() {
    let l = parse(
        "max_packet_size 0\nmessage_size_limit 0\nmax_inflight_messages 0\n\
         max_queued_bytes 0\nmemory_limit 0\nmax_connections 0\n",
    )
    .limits;
    assert_eq!(l.packet_bytes_max, PROTOCOL_MAX_BYTES);
    assert_eq!(l.message_bytes_max, PROTOCOL_MAX_BYTES);
    assert_eq!(l.inflight_messages_max, 65535);
    assert_eq!(l.queued_bytes_max, u64::MAX);
    assert_eq!(l.memory_bytes_max, u64::MAX);
    assert_eq!(l.connections_max, DEFAULT_CONNECTIONS_MAX);
    assert_eq!(parse("max_connections -1").limits.connections_max, 100_000);
    assert_eq!(parse("max_packet_size 20").limits.packet_bytes_max, 20);
    assert_eq!(parse("max_packet_size 268435455").limits.packet_bytes_max, PROTOCOL_MAX_BYTES);
    assert_eq!(
        err("max_packet_size 19"),
        "midge.conf:1: max_packet_size: 19 is below the minimum of 20 bytes (0 means the protocol maximum)"
    );
    assert!(err("max_packet_size 268435456").contains("is not a number between 0 and 268435455"));
    assert!(err("message_size_limit 268435456").contains("between 0 and 268435455"));
    assert_eq!(
        err("max_queued_messages 0"),
        "midge.conf:1: max_queued_messages: must be at least 1 (midge has no unlimited queues)"
    );
    assert!(err("max_retained_messages 0").contains("retain_available false"));
    assert_eq!(
        err("max_connections -2"),
        "midge.conf:1: max_connections: \"-2\" is not -1 or a number between 0 and 4294967295"
    );
    assert!(err("max_inflight_messages 65536").contains("between 0 and 65535"));
    assert!(err("client_out_buffer_bytes 0").contains("between 1 and"));
}

#[test]
fn repeated_keys_last_one_wins() {
    let c = parse("max_qos 0\nmax_qos 1\nacl_file /a\nacl_file /b\n");
    assert_eq!(c.max_qos, 1);
    assert_eq!(c.acl_file, Some("/b".into()));
    let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "midge.conf:2: max_qos overrides the value set on line 1",
            "midge.conf:4: acl_file overrides the value set on line 3"
        ]
    );
    assert!(parse("listener 1\nlistener 2\nlog_type error\nlog_type debug\n").warnings.is_empty());
}

#[test]
fn listeners() {
    assert_eq!(parse("listener 1884").listeners, vec![Listener::any(1884)]);
    // Deprecated port / bind_address configure the default listener.
    assert_eq!(parse("port 1999").listeners, vec![Listener::any(1999)]);
    assert_eq!(parse("bind_address 127.0.0.1").listeners, vec![Listener::at(1883, "127.0.0.1")]);
    assert_eq!(
        parse("listener 1884\nport 1999\nbind_address localhost\n").listeners,
        vec![Listener::any(1884), Listener::at(1999, "localhost")]
    );
    // Different addresses on one port are fine.
    assert_eq!(parse("listener 1883 127.0.0.1\nlistener 1883 ::1").listeners.len(), 2);
    assert_eq!(
        err("listener 1883\n# x\nlistener 1883\n"),
        "midge.conf:3: duplicate listener on port 1883 on all interfaces (already defined on line 1)"
    );
    assert_eq!(
        err("listener 1883 ::1\nlistener 1883 0:0:0:0:0:0:0:1\n"),
        "midge.conf:2: duplicate listener on 0:0:0:0:0:0:0:1 port 1883 (already defined on line 1)"
    );
    assert_eq!(
        err("listener 1883 Gateway\nlistener 1883 gateway\n"),
        "midge.conf:2: duplicate listener on gateway port 1883 (already defined on line 1)"
    );
    assert_eq!(
        err("listener 1883\nport 1883\n"),
        "midge.conf:2: duplicate listener on port 1883 on all interfaces (already defined on line 1)"
    );
    assert!(err("listener 0 /tmp/sock").contains("Unix socket"));
    assert!(err("listener").contains("missing port"));
    assert!(err("listener 1883 a b").contains("unexpected extra value \"b\""));
    // Port 0 is a Unix socket in Mosquitto; docs/CONFIG.md says 1-65535.
    assert_eq!(err("listener 70000"), "midge.conf:1: listener: \"70000\" is not a number between 1 and 65535");
    assert_eq!(err("listener 99999"), "midge.conf:1: listener: \"99999\" is not a number between 1 and 65535");
    assert!(err("port 0").contains("between 1 and 65535"));
    for bad in ["foo..bar", "-x", "1.2.3.999", "a/b", "[1.2.3.4]", "[::1"] {
        assert_eq!(
            err(&format!("listener 1883 {bad}")),
            format!("midge.conf:1: listener: \"{bad}\" is not an IP address or host name")
        );
    }
}

#[test]
fn override_port_replaces_all_listeners() {
    let mut c = parse("listener 1884\nlistener 1885 127.0.0.1\n");
    c.override_port(2000);
    assert_eq!(c.listeners, vec![Listener::any(2000)]);
}

#[test]
fn allow_anonymous_default_depends_on_password_file() {
    assert!(parse("").allow_anonymous);
    assert!(parse("listener 1884").allow_anonymous);
    assert!(parse("acl_file /x").allow_anonymous);
    assert!(!parse("password_file /x").allow_anonymous);
    assert!(parse("password_file /x\nallow_anonymous true").allow_anonymous);
    assert!(!parse("allow_anonymous false").allow_anonymous);
}

#[test]
fn durations() {
    let secs = |v: &str| parse(&format!("persistent_client_expiration {v}")).persistent_client_expiration_secs.unwrap();
    assert_eq!(secs("30s"), 30);
    assert_eq!(secs("1h"), 3600);
    assert_eq!(secs("1d"), 86_400);
    assert_eq!(secs("2w"), 14 * 86_400);
    assert_eq!(secs("2m"), 60 * 86_400);
    assert_eq!(secs("1y"), 365 * 86_400);
    for bad in ["1", "d", "0d", "-1d", "1x", "1.5d", "1D", "99999999999999999999y", "é"] {
        assert_eq!(
            err(&format!("persistent_client_expiration {bad}")),
            format!(
                "midge.conf:1: persistent_client_expiration: \"{bad}\" is not a duration \
                 (a number followed by s, h, d, w, m or y, e.g. 14d)"
            )
        );
    }
}

#[test]
fn log_types_and_dest() {
    assert_eq!(parse("log_type none").log_types, vec![]);
    assert_eq!(parse("log_type all").log_types, LogType::ALL.to_vec());
    assert_eq!(parse("log_type all\nlog_type none\nlog_type debug\nlog_type debug").log_types, vec![LogType::Debug]);
    assert!(err("log_type verbose").contains("\"verbose\" is not one of error, warning"));
    assert_eq!(err("log_type"), "midge.conf:1: log_type: missing value");
    assert_eq!(parse("log_dest stderr").log_dest, LogDest::Stderr);
    let at = |line| Origin { file: "midge.conf".into(), line };
    assert_eq!(
        parse("log_dest file /var/log/mosquitto/my log.log\nlog_dest file /var/log/mosquitto/my log.log").log_dest,
        LogDest::File("/var/log/mosquitto/my log.log".into(), at(1))
    );
    assert_eq!(parse("log_dest stdout\nlog_dest stdout").log_dest, LogDest::Stdout);
    // none turns the log off and forgets the lines before it.
    assert_eq!(parse("log_dest none").log_dest, LogDest::None);
    assert_eq!(parse("log_dest stdout\nlog_dest none").log_dest, LogDest::None);
    assert_eq!(parse("log_dest none\nlog_dest stdout").log_dest, LogDest::Stdout);
    // One destination.
    assert_eq!(
        err("log_dest file /a.log\n\nlog_dest stdout"),
        "midge.conf:3: log_dest stdout: midge logs to one destination; log_dest file /a.log is already set on line 1"
    );
    assert_eq!(
        err("log_dest stdout\nlog_dest file /b.log"),
        "midge.conf:2: log_dest file: midge logs to one destination; log_dest stdout is already set on line 1"
    );
    assert_eq!(
        err("log_dest file /a.log\nlog_dest file /b.log"),
        "midge.conf:2: log_dest file: midge logs to one destination; log_dest file /a.log is already set on line 1"
    );
    assert_eq!(err("log_dest file"), "midge.conf:1: log_dest file: missing file name");
    assert_eq!(err("log_dest"), "midge.conf:1: log_dest: missing value");
    assert_eq!(
        err("log_dest stderr\nlog_dest syslog"),
        "midge.conf:2: log_dest syslog: midge logs to one destination; log_dest stderr is already set on line 1"
    );
    assert_eq!(
        err("log_dest syslog\nlog_dest stdout"),
        "midge.conf:2: log_dest stdout: midge logs to one destination; log_dest syslog is already set on line 1"
    );
    let c = parse("log_dest syslog\nlog_facility 5\n");
    assert_eq!((c.log_dest, c.log_facility), (LogDest::Syslog, Some(5)));
    assert_eq!(parse("log_dest syslog").log_facility, None, "LOG_DAEMON, as Mosquitto");
    assert_eq!(err("log_facility 8"), "midge.conf:1: log_facility: \"8\" is not a number between 0 and 7");
    assert!(err("log_dest dlt").starts_with("midge.conf:1: log_dest dlt is not supported by midge"));
    // topic goes besides the one destination; none forgets it.
    let c = parse("log_dest file /a.log\nlog_dest topic\n");
    assert!(c.log_topic && matches!(c.log_dest, LogDest::File(..)));
    assert!(parse("log_dest topic\nlog_dest syslog").log_topic);
    assert!(!parse("log_dest topic\nlog_dest none").log_topic);
    let c = parse("log_dest none\nlog_dest topic");
    assert!(c.log_topic && c.log_dest == LogDest::None);
    assert!(err("log_dest kafka").contains("\"kafka\" is not one of stdout, stderr, file, syslog, topic, none"));
    assert!(err("log_dest stdout stderr").contains("unexpected extra value"));

    let level = |t: &str| parse(t).log_level();
    assert_eq!(level(""), log::LevelFilter::Info);
    assert_eq!(level("log_type none"), log::LevelFilter::Off);
    assert_eq!(level("log_type error"), log::LevelFilter::Error);
    assert_eq!(level("log_type warning\nlog_type error"), log::LevelFilter::Warn);
    assert_eq!(level("log_type all"), log::LevelFilter::Debug);
    assert!(parse("log_type subscribe").logs(LogType::Subscribe));
    assert!(!parse("log_type subscribe").logs(LogType::Unsubscribe));
}

#[test]
fn ignored_mosquitto_keys_are_accepted() {
    let text = "autosave_interval 1800\nautosave_on_changes false\nretry_interval 20\n\
                user mosquitto\nper_listener_settings false\nlog_timestamp true\n\
                log_timestamp_format %Y-%m-%dT%H:%M:%S\npersistence_file mosquitto.db\n";
    let c = parse(text);
    assert_eq!(Config { warnings: vec![], ..c.clone() }, Config::default());
    assert_eq!(c.warnings.len(), 8);
    assert_eq!(
        c.warnings[0].to_string(),
        "midge.conf:1: autosave_interval is ignored: midge writes every change to disk as it happens"
    );
    assert_eq!(c.warnings[3].line, 4);
    assert!(c.warnings[3].message.starts_with("user is ignored"));
    // Debian's stock mosquitto.conf may still carry these 1.x options.
    let c = parse(
        "retry_interval 20
store_clean_interval 10
",
    );
    assert_eq!(Config { warnings: vec![], ..c.clone() }, Config::default());
    assert_eq!(
        c.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
        [
            "midge.conf:1: retry_interval is ignored: The retry_interval option is no longer available.",
            "midge.conf:2: store_clean_interval is ignored: store_clean_interval is no longer needed."
        ]
    );
    assert!(err("retry_interval often").contains("is not a number"));
    // Their values are still checked.
    assert!(err("autosave_interval soon").contains("is not a number"));
    assert!(err("autosave_on_changes 1").contains("is not true or false"));
    assert!(err("pid_file").contains("missing value"));
    assert_eq!(
        parse("\npid_file /run/mosquitto/mosquitto.pid").pid_file,
        Some(("/run/mosquitto/mosquitto.pid".into(), Origin { file: "midge.conf".into(), line: 2 }))
    );
}

#[test]
fn per_listener_settings_gives_each_listener_its_security_options() {
    let c = parse(
        "per_listener_settings true\nallow_anonymous false\npassword_file /etc/p0\n\
         listener 1883 127.0.0.1\n\
         listener 1884\npassword_file /etc/p1\nacl_file /etc/a1\n\
         listener 1885\nallow_anonymous true\npassword_file /etc/p2\n",
    );
    assert!(c.per_listener_settings);
    // Before the first listener line: the broker-wide options.
    assert!(!c.allow_anonymous);
    assert_eq!(c.password_file, Some("/etc/p0".into()));
    let at = |line| Origin { file: "midge.conf".into(), line };
    let auth: Vec<_> = c.listeners.iter().map(|l| l.auth.clone()).collect();
    assert_eq!(
        auth,
        vec![
            // A listener without lines of its own: open, as midge's
            // broker-wide default without a password_file.
            Some(ListenerAuth { allow_anonymous: true, password_file: None, acl_file: None }),
            Some(ListenerAuth {
                allow_anonymous: false,
                password_file: Some(("/etc/p1".into(), at(6))),
                acl_file: Some(("/etc/a1".into(), at(7))),
            }),
            Some(ListenerAuth {
                allow_anonymous: true,
                password_file: Some(("/etc/p2".into(), at(10))),
                acl_file: None,
            }),
        ]
    );
    // A default listener (port) keeps the broker-wide options.
    let c = parse("per_listener_settings true\nport 1883\nlistener 1884\nallow_anonymous false\n");
    assert_eq!(c.listeners[0].auth, None);
    assert_eq!(c.listeners[1].auth.as_ref().map(|a| a.allow_anonymous), Some(false));
    // Without it, the same lines are broker-wide, as before.
    let c = parse("listener 1884\npassword_file /etc/p1\n");
    assert_eq!((c.listeners[0].auth.clone(), c.password_file), (None, Some("/etc/p1".into())));
    // Set twice for one listener: a warning naming the line.
    let c = parse("per_listener_settings true\nlistener 1884\nacl_file /a\nacl_file /b\n");
    assert_eq!(c.listeners[0].auth.as_ref().unwrap().acl_file.as_ref().unwrap().0, PathBuf::from("/b"));
    assert_eq!(
        c.warnings[0].to_string(),
        "midge.conf:4: acl_file overrides the value set before for the same listener"
    );
}

#[test]
fn per_listener_settings_refusals_name_file_and_line() {
    // Mosquitto's rule: it comes before every security option.
    assert_eq!(
        err("listener 1883\nallow_anonymous true\nper_listener_settings true\n"),
        "midge.conf:3: per_listener_settings must be set before any other security option \
         (allow_anonymous on line 2)"
    );
    assert_eq!(
        err("per_listener_settings true\nper_listener_settings false\n"),
        "midge.conf:2: per_listener_settings false after per_listener_settings true on line 1: set it once"
    );
    let e = err("per_listener_settings true\nlistener 1883\nplugin /usr/lib/mosquitto_dynamic_security.so\n");
    assert!(
        e.starts_with("midge.conf:3: plugin: dynamic security with per_listener_settings true is not supported"),
        "{e}"
    );
    let e = err("per_listener_settings true\nlistener 1883\nauto_id_prefix x-\n");
    assert!(e.starts_with("midge.conf:3: auto_id_prefix after a listener line with per_listener_settings true"), "{e}");
    let e = err("per_listener_settings true\npassword_file /p\nadmin_listener 1900\nacl_file /a\n");
    assert!(e.starts_with("midge.conf:4: acl_file after admin_listener"), "{e}");
    let e = err("per_listener_settings true\ncluster_node_id 1\ncluster_peer 1 127.0.0.1:7001\n\
         cluster_peer 2 127.0.0.1:7002\ncluster_peer 3 127.0.0.1:7003\n");
    assert!(e.starts_with("midge.conf:1: per_listener_settings true in a cluster is not supported"), "{e}");
    // Values are still checked after a listener line.
    assert_eq!(
        err("per_listener_settings true\nlistener 1883\nallow_anonymous maybe\n"),
        "midge.conf:3: allow_anonymous: \"maybe\" is not true or false"
    );
}

#[test]
fn per_listener_files_are_read_and_their_errors_name_the_listener_line() {
    let errors = load_errors(
        "per_listener_settings true\nlistener 1883\nlistener 1884\npassword_file {dir}/passwd\nacl_file {dir}/acl\n",
        &[("passwd", b"alice\n"), ("acl", b"topics read a\n")],
    );
    assert_eq!(
        errors,
        vec![
            "DIR/passwd:1: expected username:hash (create entries with mosquitto_passwd) \
             (password_file at DIR/midge.conf:4)",
            "DIR/acl:1: unknown keyword \"topics\" (expected user, topic or pattern) (acl_file at DIR/midge.conf:5)",
        ]
    );
}

#[test]
fn tls_options_belong_to_a_listener_and_are_checked() {
    // A TLS key before any listener line and without port: no listener to
    // apply to.
    assert_eq!(
        err("certfile /nonexistent/cert.pem"),
        "midge.conf:1: TLS options must follow a listener line (or a port line) they apply to"
    );
    assert_eq!(
        err("listener 8883\nrequire_certificate maybe"),
        "midge.conf:2: require_certificate: \"maybe\" is not true or false"
    );
    assert_eq!(
        err("listener 8883\ntls_version tlsv1.1"),
        "midge.conf:2: tls_version: \"tlsv1.1\" is not supported (tlsv1.2 or tlsv1.3: the lowest version accepted)"
    );
    assert_eq!(
        err("listener 8883\ncafile /x/ca.pem"),
        "midge.conf:2: a TLS listener needs certfile and keyfile (PEM files)"
    );
    assert!(err("listener 8883\ncertfile /nonexistent/c.pem\nkeyfile /nonexistent/k.pem")
        .starts_with("midge.conf:2: certfile /nonexistent/c.pem: "));
    // Options apply to the listener above them only.
    assert_eq!(
        err("listener 8883\nkeyfile /k.pem\nlistener 1883\ncertfile /c.pem"),
        "midge.conf:2: a TLS listener needs certfile and keyfile (PEM files)\n\
         midge.conf:4: certfile needs keyfile (the certificate's private key, PEM) too"
    );
    assert_eq!(
        err("listener 8883\nlistener 1883\ncertfile /c.pem"),
        "midge.conf:3: certfile needs keyfile (the certificate's private key, PEM) too"
    );
}

#[test]
fn unsupported_mosquitto_keys_are_errors() {
    assert_eq!(
        err("listener 8883\ncapath /etc/ssl/certs"),
        "midge.conf:2: \"capath\" is a Mosquitto option that midge does not support \
         (midge's TLS (rustls) takes certfile, keyfile, cafile, require_certificate, tls_version, \
         use_identity_as_username and use_subject_as_username)"
    );
    assert!(err("auth_opt_db_host x").contains("plugins are not supported"));
    assert_eq!(
        err("connection b\naddress 127.0.0.1:1883\ntopic # out\nlocal_clientid x"),
        "midge.conf:4: \"local_clientid\" is a Mosquitto option that midge does not support \
         (a bridge takes the keys listed in docs/CONFIG.md, \"Bridges\")"
    );
    assert!(
        err("connection b\naddress h:1\ntopic #\nbridge_alpn mqtt").contains("\"bridge_alpn\" is a Mosquitto option")
    );
    assert_eq!(
        err("clientid_prefixes x/"),
        "midge.conf:1: \"clientid_prefixes\" is a Mosquitto option that midge does not support"
    );
}

#[test]
fn unknown_keys_and_suggestions() {
    assert_eq!(err("bogus_option 1"), "midge.conf:1: unknown option \"bogus_option\"");
    assert_eq!(err("max_keepalve 10"), "midge.conf:1: unknown option \"max_keepalve\" (did you mean max_keepalive?)");
    assert_eq!(suggest("Allow_Anonymous"), Some("allow_anonymous"));
    assert_eq!(suggest("listen"), Some("listener"));
    assert_eq!(suggest("persistance"), Some("persistence"));
    assert_eq!(suggest("cluster_peers"), Some("cluster_peer"));
    assert_eq!(suggest("max_queued"), Some("max_queued_bytes"));
    assert_eq!(suggest("autosave"), Some("autosave_interval"));
    assert_eq!(suggest("zzz"), None);
    assert_eq!(suggest("xyzzy_plugh"), None);
}

#[test]
fn cluster_validation() {
    let three = "cluster_node_id 1\ncluster_peer 1 a:1\ncluster_peer 2 b:1\ncluster_peer 3 c:1\n";
    assert_eq!(parse(three).cluster_peers.len(), 3);
    // A single node needs no peer list.
    assert_eq!(parse("cluster_node_id 7").cluster_node_id, Some(7));
    assert_eq!(parse("cluster_node_id 7\ncluster_preferred_leader 7").cluster_preferred_leader, Some(7));
    assert_eq!(
        err("cluster_node_id 4\ncluster_peer 1 a:1\ncluster_peer 2 b:1\ncluster_peer 3 c:1\n"),
        "midge.conf:1: cluster_node_id 4 is not one of the cluster_peer ids (1, 2, 3); \
         list this node as a cluster_peer too"
    );
    assert_eq!(
        err("cluster_peer 1 a:1\ncluster_peer 2 b:1\ncluster_peer 3 c:1\n"),
        "midge.conf:1: cluster_peer requires cluster_node_id (this node's own id)"
    );
    assert_eq!(
        err("cluster_node_id 1\ncluster_peer 1 a:1\ncluster_peer 1 b:1\n"),
        "midge.conf:3: cluster_peer: id 1 is already used on line 2"
    );
    assert_eq!(
        err("cluster_node_id 1\ncluster_peer 1 10.0.0.1:7000\ncluster_peer 2 b:1\ncluster_peer 3 10.0.0.1:7000\n"),
        "midge.conf:4: cluster_peer: address 10.0.0.1:7000 is already used by peer 1 on line 2"
    );
    assert!(err("cluster_node_id 1\ncluster_peer 1 [::1]:7\ncluster_peer 2 [0::1]:7\n")
        .starts_with("midge.conf:3: cluster_peer: address [0::1]:7 is already used by peer 1"));
    let two = "cluster_node_id 1\ncluster_peer 1 a:1\ncluster_peer 2 b:1\n";
    assert_eq!(
        err(two),
        "midge.conf:3: a two-node cluster has no fault tolerance: a majority of 2 is 2, so losing \
         either node stops it; add a third peer or set cluster_allow_two_nodes true"
    );
    let ok = parse(&format!("{two}cluster_allow_two_nodes true\n"));
    assert!(ok.cluster_allow_two_nodes);
    assert_eq!(
        err(&format!("{three}cluster_preferred_leader 9\n")),
        "midge.conf:5: cluster_preferred_leader 9 is not a cluster member (members: 1, 2, 3)"
    );
    assert_eq!(
        err("cluster_preferred_leader 9\n"),
        "midge.conf:1: cluster_preferred_leader 9 is not a cluster member \
         (no cluster_node_id or cluster_peer is set)"
    );
    for bad in ["a", "a:", "a:0", "a:70000", "::1:7000", "[::1]7000", "[x]:1", "a b:1", ":1"] {
        let e = err(&format!("cluster_node_id 1\ncluster_peer 1 {bad}"));
        assert!(e.contains("is not HOST:PORT") || e.contains("unexpected extra"), "{bad}: {e}");
    }
    assert!(err("cluster_peer 0 a:1").contains("between 1 and"));
    assert!(err("cluster_peer 1").contains("expected cluster_peer ID HOST:PORT"));
    assert!(err("cluster_node_id 0").contains("between 1 and"));
    assert_eq!(
        err("cluster_follower_mode leader"),
        "midge.conf:1: cluster_follower_mode: \"leader\" is not one of proxy, redirect, closed"
    );
    assert_eq!(parse("cluster_follower_mode closed").cluster_follower_mode, FollowerMode::Closed);
}

#[test]
fn from_file_records_source_and_names_file_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("midge.conf");
    std::fs::write(&path, "listener 1999\n").unwrap();
    let c = Config::from_file(&path).unwrap();
    assert_eq!(c.listeners, vec![Listener::any(1999)]);
    assert_eq!(c.source.as_deref(), Some(path.as_path()));

    std::fs::write(&path, "listener 1999\nmax_qos 5\n").unwrap();
    let e = Config::from_file(&path).unwrap_err().0.remove(0);
    assert_eq!(e.file, path.display().to_string());
    assert_eq!(e.line, 2);
    assert_eq!(e.to_string(), format!("{}:2: max_qos: \"5\" is not a number between 0 and 2", path.display()));

    std::fs::write(&path, b"listener 1999\n\xff\n").unwrap();
    assert_eq!(
        Config::from_file(&path).unwrap_err().to_string(),
        format!("{}:2: not valid UTF-8 text", path.display())
    );
    let missing = dir.path().join("nope.conf");
    let e = Config::from_file(&missing).unwrap_err().0.remove(0);
    assert_eq!(e.line, 0);
    assert!(e.to_string().starts_with(&format!("{}: cannot read:", missing.display())));
}

/// Every error of the file, each with its line, in one run; the lines
/// around a bad line still count.
#[test]
fn every_error_of_a_file_is_reported() {
    let text = "listener 1883\n\
                max_qos 5\n\
                # a comment\n\
                max_inflight 10\n\
                listener 99999\n\
                max_keepalive abc\n\
                listener 1883\n";
    assert_eq!(
        err(text),
        "midge.conf:2: max_qos: \"5\" is not a number between 0 and 2\n\
         midge.conf:4: unknown option \"max_inflight\" (did you mean max_inflight_messages?)\n\
         midge.conf:5: listener: \"99999\" is not a number between 1 and 65535\n\
         midge.conf:6: max_keepalive: \"abc\" is not a number between 0 and 65535\n\
         midge.conf:7: duplicate listener on port 1883 on all interfaces (already defined on line 1)"
    );
    let errors = Config::parse_str(text, "midge.conf").unwrap_err();
    assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![2, 4, 5, 6, 7]);
}

#[test]
fn checks_across_lines_still_run_after_a_bad_line() {
    let three = "cluster_peer 1 a:1\ncluster_peer 2 b:1\ncluster_peer 3 c:1\n";
    assert_eq!(
        err(&format!("max_qos 7\ncluster_node_id 9\n{three}")),
        "midge.conf:1: max_qos: \"7\" is not a number between 0 and 2\n\
         midge.conf:2: cluster_node_id 9 is not one of the cluster_peer ids (1, 2, 3); \
         list this node as a cluster_peer too"
    );
    // A check that involves a key whose line was an error is skipped: the
    // file's intent is unknown, and it would only report a consequence.
    assert_eq!(
        err("cluster_node_id 1\ncluster_peer 1 a:1\ncluster_peer 2 b:1\ncluster_peer 2 c:1\n"),
        "midge.conf:4: cluster_peer: id 2 is already used on line 3"
    );
    assert_eq!(
        err("cluster_node_id x\ncluster_peer 1 a:1\n"),
        "midge.conf:1: cluster_node_id: \"x\" is not a number between 1 and 18446744073709551615"
    );
    assert_eq!(err("admin_listener 1884\npassword_file\n"), "midge.conf:2: password_file: missing value");
    // TLS lines after a bad listener line are checked but build nothing.
    assert_eq!(
        err("listener 1883 a b\ncertfile /c.pem\ntls_version tlsv1.0\n"),
        "midge.conf:1: listener: unexpected extra value \"b\"\n\
         midge.conf:3: tls_version: \"tlsv1.0\" is not supported (tlsv1.2 or tlsv1.3: the lowest version accepted)"
    );
    // A bad TLS line does not also report the listener as incomplete.
    assert_eq!(err("listener 8883\ncertfile\nkeyfile /k.pem\n"), "midge.conf:2: certfile: missing value");
}

#[test]
fn errors_about_several_lines_name_the_line_of_the_key() {
    assert_eq!(
        err("listener 1883\n\nadmin_listener 1884 127.0.0.1\n"),
        "midge.conf:3: admin_listener needs a password_file or dynamic security: the admin listener is never open to anonymous clients"
    );
    assert_eq!(
        err("cluster_election_ticks 4\ncluster_heartbeat_ticks 4\n"),
        "midge.conf:2: cluster_heartbeat_ticks (4) must be less than cluster_election_ticks (4)"
    );
}

fn tls_fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Errors of TLS files are at the configuration line of their key, and one
/// broken file does not hide another.
#[test]
fn tls_file_errors_name_the_file_and_the_config_line() {
    let text = format!(
        "listener 8883\ncertfile /nonexistent/c.pem\nkeyfile {}\ncafile /nonexistent/ca.pem\n\
         listener 8884\ncertfile {}\nkeyfile /nonexistent/k.pem\n",
        tls_fixture("server.key"),
        tls_fixture("server.pem")
    );
    let errors = Config::parse_str(&text, "midge.conf").unwrap_err();
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(lines.len(), 3, "{errors}");
    assert!(lines[0].starts_with("midge.conf:2: certfile /nonexistent/c.pem: No such file"), "{errors}");
    assert!(lines[1].starts_with("midge.conf:4: cafile /nonexistent/ca.pem: No such file"), "{errors}");
    assert!(lines[2].starts_with("midge.conf:7: keyfile /nonexistent/k.pem: no usable private key"), "{errors}");
}

/// The peer link's TLS: the three keys together, each file checked at its
/// line; TLS lines after `admin_listener` are the admin listener's.
#[test]
fn cluster_and_admin_tls_files_are_checked_at_their_lines() {
    let (ca, cert, key) = (tls_fixture("ca.pem"), tls_fixture("server.pem"), tls_fixture("server.key"));
    let c = Config::parse_str(
        &format!("cluster_cafile {ca}\ncluster_certfile {cert}\ncluster_keyfile {key}\n"),
        "midge.conf",
    )
    .unwrap();
    let t = c.cluster_tls.expect("cluster TLS");
    assert_eq!(t.files.cafile.as_ref().map(|f| f.1), Some(1));
    assert!(t.reload().is_ok(), "the same files read again");
    assert_eq!(
        err(&format!("cluster_cafile {ca}\ncluster_certfile {cert}\n")),
        "midge.conf:1: cluster TLS needs all of cluster_cafile, cluster_certfile and cluster_keyfile (PEM files)"
    );
    let errors = Config::parse_str(
        &format!("cluster_cafile /nonexistent/ca.pem\ncluster_certfile {cert}\ncluster_keyfile {ca}\n"),
        "midge.conf",
    )
    .unwrap_err();
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(lines.len(), 2, "{errors}");
    assert!(lines[0].starts_with("midge.conf:1: cluster_cafile /nonexistent/ca.pem: No such file"), "{errors}");
    assert!(lines[1].starts_with("midge.conf:3: cluster_keyfile "), "{errors}");
    assert!(lines[1].contains("no usable private key"), "{errors}");
    // A key that is not the certificate's.
    let other = tls_fixture("other-client.key");
    let e = err(&format!("cluster_cafile {ca}\ncluster_certfile {cert}\ncluster_keyfile {other}\n"));
    assert!(e.starts_with("midge.conf:3: cluster_keyfile ") && e.contains("does not fit cluster_certfile"), "{e}");

    // Admin listener TLS, and a listener line after it takes the next ones.
    let c = Config::parse_str(
        &format!(
            "password_file {pw}\nlistener 1883\nadmin_listener 8880\ncertfile {cert}\nkeyfile {key}\nlistener 8883\ncertfile {cert}\nkeyfile {key}\n",
            pw = tls_fixture("ca.pem")
        ),
        "midge.conf",
    );
    // (the password file is not read while parsing)
    let c = c.unwrap();
    assert!(c.admin_listener.as_ref().is_some_and(|l| l.tls.is_some()), "admin listener has TLS");
    assert!(c.listeners[0].tls.is_none(), "listener 1883 stays plain");
    assert!(c.listeners[1].tls.is_some(), "listener 8883 has TLS");
    assert_eq!(
        err("password_file /p\nadmin_listener 8880\ncafile /x/ca.pem"),
        "midge.conf:3: a TLS listener needs certfile and keyfile (PEM files)"
    );
}

/// `protocol websockets` belongs to the listener above it, or to the
/// default listener; other values and misplaced lines are errors.
#[test]
fn protocol_websockets_belongs_to_its_listener() {
    let c =
        Config::parse_str("listener 1883\nlistener 8080\nprotocol websockets\nlistener 8081\n", "midge.conf").unwrap();
    let ws: Vec<bool> = c.listeners.iter().map(|l| l.websockets).collect();
    assert_eq!(ws, [false, true, false]);
    let c = Config::parse_str("port 9001\nprotocol websockets\n", "midge.conf").unwrap();
    assert!(c.listeners[0].websockets && c.listeners[0].port == 9001);
    assert_eq!(err("listener 1883\nprotocol http"), "midge.conf:2: protocol: \"http\" is not one of mqtt, websockets");
    assert_eq!(
        err("protocol websockets\n"),
        "midge.conf:1: protocol websockets must follow a listener line (or a port line) it applies to"
    );
    assert_eq!(
        err("password_file /p\nadmin_listener 1880\nprotocol websockets\n"),
        "midge.conf:3: protocol: the admin_listener speaks MQTT only"
    );
}

/// `use_identity_as_username` / `use_subject_as_username` belong to their
/// TLS listener and need `require_certificate true` (midge asks for no
/// certificate otherwise).
#[test]
fn certificate_names_as_usernames_belong_to_a_listener_that_asks_for_certificates() {
    use super::tls::CertIdentity;
    let tls = format!(
        "certfile {}\nkeyfile {}\ncafile {}\n",
        tls_fixture("server.pem"),
        tls_fixture("server.key"),
        tls_fixture("ca.pem")
    );
    let identity = |text: &str| -> Vec<CertIdentity> {
        parse(text).listeners.iter().map(|l| l.tls.as_ref().map_or(CertIdentity::Connect, |t| t.identity)).collect()
    };
    let text = format!(
        "listener 1883\nlistener 8883\n{tls}require_certificate true\nuse_identity_as_username true\n\
         listener 8884\n{tls}require_certificate true\nuse_subject_as_username true\n\
         listener 8885\n{tls}require_certificate true\nuse_subject_as_username true\nuse_identity_as_username true\n\
         listener 8886\n{tls}require_certificate true\nuse_identity_as_username false\n"
    );
    assert_eq!(
        identity(&text),
        [
            CertIdentity::Connect,
            CertIdentity::CommonName,
            CertIdentity::Subject,
            CertIdentity::CommonName, // both: the identity wins, as in Mosquitto
            CertIdentity::Connect,
        ]
    );
    assert_eq!(
        err(&format!("listener 8883\n{tls}use_identity_as_username true\n")),
        "midge.conf:5: use_identity_as_username true needs require_certificate true (and cafile): \
         midge asks clients for a certificate only then"
    );
    assert!(err(&format!("listener 8883\n{tls}require_certificate false\nuse_subject_as_username true\n"))
        .starts_with("midge.conf:6: use_subject_as_username true needs require_certificate true"));
    assert_eq!(
        err("use_identity_as_username true"),
        "midge.conf:1: TLS options must follow a listener line (or a port line) they apply to"
    );
    assert_eq!(
        err("listener 8883\nuse_subject_as_username 1"),
        "midge.conf:2: use_subject_as_username: \"1\" is not true or false"
    );
}

/// Writes `midge.conf` (with `{dir}` replaced) and `files` into a new
/// directory; returns it and the loader's errors, one string per error,
/// with the directory shown as `DIR`.
fn load_errors(conf: &str, files: &[(&str, &[u8])]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let path = dir.path().join("midge.conf");
    std::fs::write(&path, conf.replace("{dir}", &d)).unwrap();
    match Config::load(&path) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string().replace(&d, "DIR")).collect(),
    }
}

#[test]
fn load_reads_password_and_acl_files() {
    let pw = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/passwd")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), &pw).unwrap();
    std::fs::write(dir.path().join("acl"), "user alice\ntopic read a/#\n").unwrap();
    let path = dir.path().join("midge.conf");
    let d = dir.path().display();
    std::fs::write(&path, format!("password_file {d}/passwd\nacl_file {d}/acl\n")).unwrap();
    let loaded = Config::load(&path).unwrap();
    assert!(!loaded.passwords.unwrap().is_empty());
    assert_eq!(loaded.acl.unwrap().rule_count(), 1);
    assert_eq!(loaded.config.source.as_deref(), Some(path.as_path()));
}

#[test]
fn a_missing_password_or_acl_file_is_an_error_at_its_config_line() {
    assert_eq!(
        load_errors("listener 1883\npassword_file {dir}/passwd\nacl_file {dir}/acl\n", &[]),
        vec![
            "DIR/midge.conf:2: password_file DIR/passwd: cannot read: No such file or directory (os error 2)",
            "DIR/midge.conf:3: acl_file DIR/acl: cannot read: No such file or directory (os error 2)",
        ]
    );
}

#[test]
fn errors_in_password_and_acl_files_name_their_line_and_the_config_line() {
    let errors = load_errors(
        "max_qos 3\npassword_file {dir}/passwd\n\nacl_file {dir}/acl\n",
        &[("passwd", b"alice\n# comment\n:$6$x$y\n"), ("acl", b"user alice\ntopics read a\ntopic read a/#/b\n")],
    );
    assert_eq!(
        errors,
        vec![
            "DIR/midge.conf:1: max_qos: \"3\" is not a number between 0 and 2",
            "DIR/passwd:1: expected username:hash (create entries with mosquitto_passwd) \
             (password_file at DIR/midge.conf:2)",
            "DIR/passwd:3: empty username (password_file at DIR/midge.conf:2)",
            "DIR/acl:2: unknown keyword \"topics\" (expected user, topic or pattern) (acl_file at DIR/midge.conf:4)",
            "DIR/acl:3: topic: \"a/#/b\" is not a valid topic filter (acl_file at DIR/midge.conf:4)",
        ]
    );
    // A file that is not text has a line too.
    assert_eq!(
        load_errors("password_file {dir}/passwd\n", &[("passwd", b"\n\xff\n")]),
        vec!["DIR/passwd:2: not valid UTF-8 text (password_file at DIR/midge.conf:1)"]
    );
}

#[test]
fn error_display() {
    assert_eq!(ConfigError::new("f", 0, "m").to_string(), "f: m");
    assert_eq!(ConfigError::new("f", 3, "m").to_string(), "f:3: m");
    let boxed: Box<dyn std::error::Error> = Box::new(ConfigError::new("f", 1, "m"));
    assert_eq!(boxed.to_string(), "f:1: m");
}

/// docs/CONFIG.md documents every key, and every ```conf example in it parses.
#[test]
fn docs_cover_every_key_and_examples_parse() {
    let doc = include_str!("../../docs/CONFIG.md");
    for key in SUPPORTED_KEYS.iter().chain(IGNORED_KEYS) {
        assert!(doc.contains(&format!("### `{key}`")), "docs/CONFIG.md has no section for {key}");
    }
    let mut blocks = 0;
    let mut rest = doc;
    while let Some(start) = rest.find("```conf\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed block");
        // TLS examples name /etc/midge/tls/{server.pem,server.key,ca.pem}:
        // read the test fixtures of those names instead.
        let block = body[..end].replace("/etc/midge/tls/", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/"));
        let block = block.as_str();
        // A block may need a cluster or other context: examples are written
        // to be complete on their own.
        if let Err(e) = Config::parse_str(block, "CONFIG.md example") {
            panic!("example does not parse: {e}\n{block}");
        }
        blocks += 1;
        rest = &body[end..];
    }
    assert!(blocks >= SUPPORTED_KEYS.len(), "only {blocks} examples");
}

#[test]
fn dynamic_security_lines_and_their_file() {
    let init = include_bytes!("../../tests/fixtures/dynsec/init.json");
    let plugin = "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n";
    // Read with the config; any directory for the plugin.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ds.json"), init).unwrap();
    let path = dir.path().join("midge.conf");
    let d = dir.path().display();
    std::fs::write(&path, format!("plugin /opt/x/mosquitto_dynamic_security.so\nplugin_opt_config_file {d}/ds.json\n"))
        .unwrap();
    let loaded = Config::load(&path).unwrap();
    assert!(loaded.config.dynsec_plugin);
    assert!(!loaded.config.allow_anonymous, "anonymous off by default with dynamic security");
    assert!(loaded.dynsec.unwrap().state.clients.contains_key("admin"));
    // Missing, not JSON, no file line, another plugin.
    assert_eq!(
        load_errors(&format!("{plugin}plugin_opt_config_file {{dir}}/ds.json\n"), &[]),
        vec![
            "DIR/midge.conf:2: plugin_opt_config_file DIR/ds.json: cannot read: No such file or directory (os error 2)"
        ]
    );
    assert_eq!(
        load_errors(&format!("{plugin}plugin_opt_config_file {{dir}}/ds.json\n"), &[("ds.json", b"{\n  \"clients\": [\n")]),
        vec!["DIR/midge.conf:2: plugin_opt_config_file DIR/ds.json: not valid JSON: EOF while parsing a list at line 3 column 0"]
    );
    assert_eq!(
        load_errors(plugin, &[]),
        vec!["DIR/midge.conf:1: plugin mosquitto_dynamic_security.so needs plugin_opt_config_file FILE (create FILE with mosquitto_ctrl dynsec init FILE admin-user)"]
    );
    let e = load_errors("plugin /usr/lib/mosquitto_other.so\n", &[]);
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("DIR/midge.conf:1: plugin: \"/usr/lib/mosquitto_other.so\" is not supported"), "{e:?}");
    assert_eq!(
        load_errors("plugin_opt_config_file /x.json\n", &[]),
        vec![
            "DIR/midge.conf:1: plugin_opt_config_file without a plugin line (plugin .../mosquitto_dynamic_security.so)"
        ]
    );
}

/// Writes `conf` as DIR/midge.conf and `files` (paths under DIR) and loads
/// it; `{dir}` in any text is DIR, shown as DIR in the errors.
fn load_tree(conf: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Config, Vec<String>>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content.replace("{dir}", &d)).unwrap();
    }
    let path = dir.path().join("midge.conf");
    std::fs::write(&path, conf.replace("{dir}", &d)).unwrap();
    let r = Config::load(&path)
        .map(|l| l.config)
        .map_err(|errors| errors.iter().map(|e| e.to_string().replace(&d, "DIR")).collect());
    (dir, r)
}

#[test]
fn include_dir_reads_the_conf_files_in_name_order_at_its_line() {
    let (dir, r) = load_tree(
        "max_keepalive 60\nlistener 1885\ninclude_dir {dir}/conf.d\nallow_anonymous false\n",
        &[
            ("conf.d/b.conf", "listener 1884\n"),
            ("conf.d/a.conf", "# first\nlistener 1883 127.0.0.1\nmax_keepalive 120\n"),
            ("conf.d/B.conf", "sys_interval 5\n"),
            ("conf.d/c.txt", "bogus 1\n"),
            ("conf.d/.conf", "bogus 1\n"),
            ("conf.d/d.conf.bak", "bogus 1\n"),
        ],
    );
    let c = r.unwrap();
    let d = dir.path().join("conf.d");
    assert_eq!(c.listeners, [Listener::any(1885), Listener::at(1883, "127.0.0.1"), Listener::any(1884)]);
    assert_eq!(c.included_files, vec![d.join("B.conf"), d.join("a.conf"), d.join("b.conf")]);
    // A key set again in an included file: the later line wins, and the
    // warning names the earlier line with its file.
    assert_eq!(c.limits.keepalive_secs_max, 120);
    assert_eq!(c.sys_interval_secs, 5);
    assert!(!c.allow_anonymous);
    let w: Vec<String> =
        c.warnings.iter().map(|w| w.to_string().replace(&dir.path().display().to_string(), "DIR")).collect();
    assert_eq!(w, ["DIR/conf.d/a.conf:3: max_keepalive overrides the value set on DIR/midge.conf:1"]);
    // An empty directory adds nothing.
    let (_dir, r) = load_tree("include_dir {dir}/conf.d\n", &[("conf.d/README", "x")]);
    assert_eq!(r.unwrap().listeners, vec![Listener::any(1883)]);
}

#[test]
fn include_dir_errors_name_the_included_file_and_line() {
    let (_dir, r) = load_tree(
        "listener 1883\ninclude_dir {dir}/conf.d\nmax_qos 3\n",
        &[
            ("conf.d/a.conf", "\nbogus_option 1\npassword_file {dir}/missing\n"),
            ("conf.d/b.conf", "include_dir {dir}/more\nlistener 1883\n"),
        ],
    );
    assert_eq!(
        r.unwrap_err(),
        [
            "DIR/conf.d/a.conf:2: unknown option \"bogus_option\"",
            "DIR/conf.d/b.conf:1: include_dir: only the main configuration file may include a directory \
             (Mosquitto ignores this line)",
            "DIR/conf.d/b.conf:2: duplicate listener on port 1883 on all interfaces (already defined on DIR/midge.conf:1)",
            "DIR/midge.conf:3: max_qos: \"3\" is not a number between 0 and 2",
            "DIR/conf.d/a.conf:3: password_file DIR/missing: cannot read: No such file or directory (os error 2)",
        ]
    );
    // Not text: the included file's line; not readable: the include_dir line.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(dir.path().join("conf.d/a.conf"), b"max_qos 1\n\xff\n").unwrap();
    std::fs::create_dir(dir.path().join("conf.d/z.conf")).unwrap();
    let conf = format!("include_dir {}/conf.d\n", dir.path().display());
    let e = Config::parse_str(&conf, "midge.conf")
        .unwrap_err()
        .to_string()
        .replace(&dir.path().display().to_string(), "DIR");
    assert_eq!(
        e,
        "midge.conf:1: include_dir DIR/conf.d: DIR/conf.d/z.conf: cannot read: Is a directory (os error 21)\n\
         DIR/conf.d/a.conf:2: not valid UTF-8 text"
    );
}

#[test]
fn a_missing_include_dir_is_an_error_at_its_line() {
    let (_dir, r) = load_tree("listener 1883\ninclude_dir {dir}/nope\n", &[]);
    assert_eq!(
        r.unwrap_err(),
        ["DIR/midge.conf:2: include_dir DIR/nope: cannot read the directory: No such file or directory (os error 2)"]
    );
    assert_eq!(err("include_dir"), "midge.conf:1: include_dir: missing value");
}

#[test]
fn client_id_keys_of_mosquitto_2() {
    let d = Config::default();
    assert!(d.allow_zero_length_clientid);
    assert_eq!(d.auto_id_prefix, "auto-");
    assert!(!d.use_username_as_clientid);
    let c = parse("allow_zero_length_clientid false\nauto_id_prefix gw 1-\nuse_username_as_clientid true\n");
    assert!(!c.allow_zero_length_clientid && c.use_username_as_clientid);
    assert_eq!(c.auto_id_prefix, "gw 1-", "the rest of the line, as Mosquitto reads it");
    let s = c.broker_settings(None, None);
    assert!(!s.allow_zero_length_clientid && s.use_username_as_clientid);
    assert_eq!(&*s.auto_id_prefix, "gw 1-");
    assert_eq!(err("auto_id_prefix"), "midge.conf:1: auto_id_prefix: missing value");
    assert!(err(&format!("auto_id_prefix {}", "x".repeat(65500))).contains("longer than 65499 bytes"));
    assert_eq!(
        err("allow_zero_length_clientid 0"),
        "midge.conf:1: allow_zero_length_clientid: \"0\" is not true or false"
    );
    assert_eq!(
        err("use_username_as_clientid yes"),
        "midge.conf:1: use_username_as_clientid: \"yes\" is not true or false"
    );
    let c = parse("auto_id_prefix a-\nauto_id_prefix b-\n");
    assert_eq!(c.auto_id_prefix, "b-");
    assert_eq!(c.warnings[0].to_string(), "midge.conf:2: auto_id_prefix overrides the value set on line 1");
}

#[test]
fn max_connections_after_a_listener_is_that_listeners_own() {
    let c = parse(
        "max_connections 500\nlistener 1883\nlistener 1884\nmax_connections 2\nlistener 1885\nmax_connections -1\n",
    );
    assert_eq!(c.limits.connections_max, 500, "before any listener: all listeners together");
    let own: Vec<_> = c.listeners.iter().map(|l| (l.port, l.connections_max)).collect();
    assert_eq!(own, [(1883, None), (1884, Some(2)), (1885, None)]);
    let c = parse("listener 1884\nmax_connections 2\nmax_connections 0\n");
    assert_eq!(c.listeners[0].connections_max, None, "0 and -1 mean no limit of its own, as in Mosquitto");
    assert_eq!(c.limits.connections_max, DEFAULT_CONNECTIONS_MAX);
    assert!(c.warnings[0].to_string().starts_with("midge.conf:3: max_connections overrides"));
    assert_eq!(
        err("listener 1884\nmax_connections many"),
        "midge.conf:2: max_connections: \"many\" is not -1 or a number between 0 and 4294967295"
    );
}

#[test]
fn bridges_in_mosquitto_syntax() {
    use crate::bridge::{Direction, TopicLine};
    use crate::mqtt::{QoS, Version};
    let c = parse(
        "max_queued_messages 50\n\
         connection cloud\n\
         address 127.0.0.1:1884 [::1]:1885 broker.example\n\
         topic sensors/# out 1\n\
         topic cmd/# in 2 plant/ site7/\n\
         topic \"\" both 0 local/one remote/one\n\
         bridge_protocol_version mqttv50\n\
         cleansession true\n\
         remote_clientid gw7\n\
         remote_username u\n\
         remote_password p\n\
         try_private false\n\
         notifications false\n\
         notification_topic bridges/gw7\n\
         keepalive_interval 30\n\
         restart_timeout 2 20\n\
         round_robin true\n\
         start_type automatic\n\
         bridge_max_queued_messages 7\n\
         connection second\n\
         address 10.0.0.1\n\
         topic #\n\
         listener 1883\n",
    );
    assert_eq!(c.bridges.len(), 2);
    let b = &c.bridges[0];
    assert_eq!(b.name, "cloud");
    assert_eq!(
        b.addresses,
        [("127.0.0.1".to_string(), 1884), ("::1".to_string(), 1885), ("broker.example".to_string(), 1883)]
    );
    assert_eq!(b.topics[0], TopicLine::new("sensors/#", Direction::Out, QoS::AtLeastOnce, None, None).unwrap());
    assert_eq!(b.topics[1].local_topic, "plant/cmd/#");
    assert_eq!(b.topics[1].remote_topic, "site7/cmd/#");
    assert_eq!((b.topics[2].direction, b.topics[2].local_topic.as_str()), (Direction::Both, "local/one"));
    assert_eq!(b.version, Version::V5);
    assert!(b.clean_session && !b.try_private && !b.notifications && b.round_robin);
    assert_eq!(
        (b.remote_clientid.as_str(), b.remote_username.as_deref(), b.remote_password.as_deref()),
        ("gw7", Some("u"), Some("p"))
    );
    assert_eq!(b.notification_topic(), "bridges/gw7");
    assert_eq!((b.keepalive_secs, b.restart_base_secs, b.restart_cap_secs), (30, 2, Some(20)));
    assert_eq!(b.queued_messages_max, 7);
    // Mosquitto's defaults; the queue bound defaults to max_queued_messages.
    let d = &c.bridges[1];
    assert_eq!(d.addresses, [("10.0.0.1".to_string(), 1883)]);
    assert_eq!(d.topics[0].direction, Direction::Out);
    assert_eq!(d.topics[0].qos, QoS::AtMostOnce);
    assert!(!d.clean_session && d.try_private && d.notifications && !d.round_robin);
    assert_eq!(d.version, Version::V311);
    assert_eq!(d.remote_clientid, "second");
    assert_eq!(d.notification_topic(), "$SYS/broker/connection/second/state");
    assert_eq!((d.keepalive_secs, d.restart_base_secs, d.restart_cap_secs), (60, 5, None));
    assert_eq!(d.queued_messages_max, 50);
    // Mosquitto's older names.
    let old = parse("connection a\naddress h\ntopic #\nclientid gw\nusername u\npassword p\n");
    let o = &old.bridges[0];
    assert_eq!(
        (o.remote_clientid.as_str(), o.remote_username.as_deref(), o.remote_password.as_deref()),
        ("gw", Some("u"), Some("p"))
    );
    assert!(err("username u").contains("username: a bridge key must follow a connection line"));
    // A listener after a connection block is still a listener.
    assert_eq!(c.listeners.len(), 1);
    // The broker's apply limits carry the out routes.
    let s = c.broker_settings(None, None);
    assert_eq!(s.apply.bridges.len(), 2);
    assert_eq!(s.apply.bridges[0].lines.len(), 2, "the in-only line does not go out");
}

#[test]
fn bridge_errors_name_the_line() {
    assert_eq!(err("topic # out"), "midge.conf:1: topic: a bridge key must follow a connection line (connection NAME)");
    assert_eq!(err("connection a\ntopic #"), "midge.conf:1: connection a: no address line (address HOST:PORT)");
    assert_eq!(
        err("connection a\naddress h\n"),
        "midge.conf:1: connection a: no topic line (topic PATTERN [out|in|both] [QOS])"
    );
    let base = "connection a\naddress 127.0.0.1:1883\ntopic #\n";
    assert_eq!(
        err(&format!("{base}topic # sideways")),
        "midge.conf:4: topic: direction \"sideways\" is not out, in or both"
    );
    assert_eq!(err(&format!("{base}topic # out 3")), "midge.conf:4: topic: QoS \"3\" is not 0, 1 or 2");
    assert!(err(&format!("{base}topic \"\" out 1")).starts_with("midge.conf:4: topic: pattern \"\" needs both"));
    assert!(err(&format!("{base}topic # out 1 a/+/ b/")).contains("local prefix \"a/+/\" is not a valid topic"));
    assert_eq!(err(&format!("{base}start_type lazy")), "midge.conf:4: start_type lazy is not supported by midge: a bridge starts automatically on the leader (start_type automatic)");
    assert_eq!(
        err(&format!("{base}bridge_protocol_version mqttv31")),
        "midge.conf:4: bridge_protocol_version: \"mqttv31\" is not supported (mqttv311 or mqttv50)"
    );
    assert_eq!(
        err(&format!("{base}connection a\naddress h\ntopic #")),
        "midge.conf:4: connection a: already defined on line 1"
    );
    assert_eq!(err(&format!("{base}address h:99999")), "midge.conf:4: address: \"h:99999\" is not HOST:PORT");
    assert_eq!(
        err(&format!("{base}bridge_certfile /x.pem")),
        "midge.conf:1: connection a: bridge TLS needs bridge_cafile (the CA that signed the upstream's certificate)"
            .replace(":1:", ":4:")
    );
    assert!(err(&format!("{base}bridge_cafile /nonexistent.pem"))
        .starts_with("midge.conf:4: bridge_cafile /nonexistent.pem"));
    assert_eq!(
        err(&format!("{base}restart_timeout 10 5")),
        "midge.conf:4: restart_timeout: the cap 5 is below the base 10"
    );
    let dynsec = "plugin /x/mosquitto_dynamic_security.so\nplugin_opt_config_file /x.json\ncluster_mode dynsec_sync\n";
    assert!(
        err(&format!("{dynsec}{base}")).starts_with("midge.conf:4: connection a: bridges need cluster_mode full_sync")
    );
}

#[test]
fn mosquitto_keys_midge_still_refuses_name_file_and_line() {
    for (key, why) in
        [("clientid_prefixes", "clientid_prefixes"), ("capath", "certfile, keyfile"), ("bind_interface", "listener")]
    {
        let e = err(&format!("listener 1883\n{key} x"));
        assert!(e.starts_with("midge.conf:2: "), "{e}");
        assert!(e.contains(why), "{e}");
    }
    assert!(err("\nlog_dest dlt").starts_with("midge.conf:2: log_dest dlt is not supported"));
}

#[test]
fn mount_point_belongs_to_its_listener() {
    let c = parse("listener 1883\nlistener 1884\nmount_point site 1/\nlistener 1885\n");
    let m: Vec<Option<&str>> = c.listeners.iter().map(|l| l.mount_point.as_deref()).collect();
    assert_eq!(m, [None, Some("site 1/"), None], "the rest of the line, for the listener above");
    assert_eq!(err("mount_point site1/"), "midge.conf:1: mount_point must follow the listener line it applies to");
    assert!(err("listener 1883\nmount_point a/#/")
        .starts_with("midge.conf:2: mount_point: \"a/#/\" is not a valid topic name"));
    assert!(err("listener 1883\nmount_point +/").contains("is not a valid topic name"));
    assert_eq!(err("listener 1883\nmount_point"), "midge.conf:2: mount_point: missing value");
}

#[test]
fn use_username_as_clientid_after_a_listener_is_that_listeners() {
    let c = parse("listener 1883\nuse_username_as_clientid true\nlistener 1884\n");
    assert!(!c.use_username_as_clientid, "not every listener's");
    let own: Vec<Option<bool>> = c.listeners.iter().map(|l| l.use_username_as_clientid).collect();
    assert_eq!(own, [Some(true), None]);
    let c = parse("use_username_as_clientid true\nlistener 1883\nuse_username_as_clientid false\n");
    assert!(c.use_username_as_clientid);
    assert_eq!(c.listeners[0].use_username_as_clientid, Some(false));
}

#[test]
fn max_qos_and_max_topic_alias_after_a_listener_are_that_listeners() {
    let c = parse("max_qos 1\nmax_topic_alias 5\nlistener 1883\nlistener 1884\nmax_qos 0\nmax_topic_alias 0\n");
    assert_eq!((c.max_qos, c.limits.topic_alias_max), (1, 5), "before any listener: every listener's");
    let own: Vec<(Option<u8>, Option<u16>)> = c.listeners.iter().map(|l| (l.max_qos, l.max_topic_alias)).collect();
    assert_eq!(own, [(None, None), (Some(0), Some(0))]);
    assert_eq!(err("listener 1883\nmax_qos 3"), "midge.conf:2: max_qos: \"3\" is not a number between 0 and 2");
    let c = parse("listener 1883\nmax_qos 1\nmax_qos 2\n");
    assert_eq!(c.listeners[0].max_qos, Some(2));
    assert!(c.warnings[0].to_string().starts_with("midge.conf:3: max_qos overrides"));
}

#[test]
fn bridge_tls_files_are_read() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
    let c = parse(&format!(
        "connection a\naddress 127.0.0.1:8883\ntopic #\nbridge_cafile {dir}/ca.pem\nbridge_certfile {dir}/client.pem\nbridge_keyfile {dir}/client.key\nbridge_insecure true\n"
    ));
    let t = c.bridges[0].tls.as_ref().expect("TLS");
    assert!(t.insecure && t.certfile.is_some());
    assert!(err(&format!(
        "connection a\naddress h\ntopic #\nbridge_cafile {dir}/ca.pem\nbridge_certfile {dir}/client.pem\n"
    ))
    .starts_with("midge.conf:5: bridge_certfile needs bridge_keyfile"));
}

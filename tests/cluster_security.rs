//! Cluster security (docs/HA.md, "Securing the cluster"), with three real
//! `midge` processes on loopback and Debian's tcpdump, openssl and
//! mosquitto_pub:
//!
//! * with mutual TLS the peer link carries no payload in clear (a capture
//!   on the client port shows it; on the peer ports only without TLS);
//! * a node whose certificate another CA signed cannot join or vote, and
//!   the two others serve;
//! * random bytes and forged hellos to every peer port leave every node up
//!   and the leader serving;
//! * a node started on a data directory of another cluster is refused by
//!   its peers, both ids logged, and the leader and term do not change;
//! * SIGHUP reloads the certificates, and a bad new file keeps the old.
//!
//! Peer TLS is midge's own (Mosquitto has no cluster): nothing here runs
//! against Mosquitto.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{health_json, Cluster};
use common::cluster_tls::{config_lines, make_certs};
use common::mosquitto_sub::{publish, publish_ok};

fn sigterm(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
}

/// tcpdump on loopback with `filter`, writing `file`; ready when it says
/// it listens. Stopped (SIGTERM, by PID) by `stop`.
struct Capture {
    child: Child,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(dir: &Path, name: &str, filter: &str) -> Capture {
        let file = dir.join(format!("{name}.pcap"));
        let err = dir.join(format!("{name}.tcpdump.log"));
        let child = Command::new("tcpdump")
            .args(["-i", "lo", "-U", "--immediate-mode", "-s", "0", "-w"])
            .arg(&file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("run tcpdump (scripts/setup-test-deps.sh installs it)");
        let end = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&err).unwrap_or_default().contains("listening on") {
            assert!(
                Instant::now() < end,
                "tcpdump did not start: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Capture { child, file }
    }

    fn stop(mut self) -> Vec<u8> {
        sigterm(self.child.id());
        let _ = self.child.wait();
        std::fs::read(&self.file).unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Publishes a marked payload to the leader (QoS 1, retained: replicated)
/// while both ports are captured: whether the payload shows on the client
/// port and on the peer ports.
fn payload_seen(extra: &str) -> (bool, bool, Cluster) {
    let c = Cluster::start_with(extra);
    let leader = c.leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let peer_filter = c.peer.iter().map(|p| format!("tcp port {p}")).collect::<Vec<_>>().join(" or ");
    let client = Capture::start(c.path(), "client", &format!("tcp port {}", c.mqtt[leader]));
    let peers = Capture::start(c.path(), "peers", &peer_filter);
    let marker = format!("plant-secret-{}-{}", std::process::id(), c.mqtt[leader]);
    for i in 0..5 {
        let (code, out, err) =
            publish(c.mqtt[leader], "mqttv311", &["-q", "1", "-r", "-t", &format!("sec/{i}"), "-m", &marker]);
        assert_eq!(code, Some(0), "publish {i} to node {}: {out} {err}\n{}", leader + 1, c.logs());
    }
    // Followers receive the entries within a heartbeat or two.
    std::thread::sleep(Duration::from_millis(500));
    let (client, peers) = (client.stop(), peers.stop());
    assert!(!peers.is_empty(), "the peer capture holds packets");
    (contains(&client, marker.as_bytes()), contains(&peers, marker.as_bytes()), c)
}

#[test]
fn with_peer_tls_no_payload_crosses_the_peer_link_in_clear() {
    // Without TLS the check sees the payload in the raft traffic: it can fail.
    let (client, peers, c) = payload_seen("");
    assert!(client, "the payload is on the client port");
    assert!(peers, "without TLS the replicated payload is readable on the peer ports");
    assert!(c.log(0).contains("without TLS"), "the plain link is warned about\n{}", c.logs());
    drop(c);

    let certs_dir = common::tempdir();
    let certs = make_certs(certs_dir.path());
    let (client, peers, c) = payload_seen(&config_lines(&certs));
    assert!(client, "the payload is on the client port");
    assert!(!peers, "with peer TLS the payload never appears on the peer ports\n{}", c.logs());
}

#[test]
fn a_node_with_a_certificate_of_another_ca_cannot_join_or_vote() {
    let certs_dir = common::tempdir();
    let good = make_certs(&certs_dir.path().join("plant"));
    let other = make_certs(&certs_dir.path().join("other"));
    // Node 3's own CA and certificate are another plant's.
    let extra =
        "cluster_cafile {ca}/ca.crt\ncluster_certfile {ca}/node{node}.crt\ncluster_keyfile {ca}/node{node}.key\n";
    let mut c = Cluster::prepare("redirect", "");
    for i in 0..3 {
        let ca = if i == 2 { &other } else { &good };
        c.set_extra(i, &extra.replace("{ca}", &ca.display().to_string()));
        c.spawn(i);
    }
    let leader = c.leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader of nodes 1-2\n{}", c.logs()));
    assert_ne!(leader, 2, "node 3 cannot lead");
    let term = health_json(c.health[leader]).expect("health")["term"].as_u64();
    publish_ok(c.mqtt[leader], "mqttv311", &["-q", "1", "-t", "ca/t", "-m", "x"]);
    // Node 3 keeps trying (with backoff) for a while: it never learns a
    // leader, never disturbs the term.
    std::thread::sleep(Duration::from_secs(3));
    let h3 = health_json(c.health[2]).expect("node 3 health");
    assert_eq!(h3["leader_id"], 0, "node 3 never heard from a leader: {h3}");
    let now = health_json(c.health[leader]).expect("health");
    assert_eq!(now["term"].as_u64(), term, "the term did not change: {now}");
    assert_eq!(now["leader_id"].as_u64(), Some(leader as u64 + 1));
    let logs12 = c.log(0) + &c.log(1);
    assert!(logs12.contains("TLS handshake failed"), "nodes 1-2 refuse node 3's handshake\n{}", c.logs());
    assert!(c.log(2).contains("TLS: "), "node 3 says why it cannot reach its peers\n{}", c.logs());
    assert!(c.pid(2).is_some());
}

/// A v4 hello (docs/FORMATS.md, transport): magic, version, node id, the
/// rest's length, mode, cluster id, no addresses.
fn hello(node: u64, cluster_id: u128, version: u16) -> Vec<u8> {
    let mut rest = vec![0u8];
    rest.extend_from_slice(&cluster_id.to_le_bytes());
    rest.push(0);
    let mut h = b"MDGR".to_vec();
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&node.to_le_bytes());
    h.extend_from_slice(&(rest.len() as u16).to_le_bytes());
    h.extend_from_slice(&rest);
    h
}

fn send(port: u16, bytes: &[u8]) {
    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
        let _ = s.write_all(bytes);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A bounded pseudo-random sequence (xorshift), the same every run.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn garbage_and_forged_hellos_leave_every_node_up_and_the_leader_serving() {
    let c = Cluster::start_with("");
    let leader = c.leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let mut h = health_json(c.health[leader]).expect("health");
    let end = Instant::now() + Duration::from_secs(10);
    while h["cluster_id"].as_str().is_none_or(str::is_empty) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        h = health_json(c.health[leader]).expect("health");
    }
    let id = u128::from_str_radix(h["cluster_id"].as_str().unwrap_or(""), 16)
        .unwrap_or_else(|_| panic!("a 32-hex-digit cluster id: {h}"));
    let term = h["term"].as_u64();
    for (n, &port) in c.peer.iter().enumerate() {
        for k in 0..20u64 {
            send(port, &noise(k * 7 + n as u64, 64 + (k as usize * 97) % 4000));
        }
        send(port, &hello(2, id, 3)); // an older transport version
        send(port, &hello(99, id, 4)); // an unknown node
        send(port, &hello(2, id ^ 1, 4)); // another cluster
                                          // A valid hello, then a frame that claims 4 GB, then one that is
                                          // not a raft message.
        let mut h = hello(if n == 0 { 2 } else { 1 }, id, 4);
        h.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff]);
        send(port, &h);
        let mut h = hello(if n == 0 { 2 } else { 1 }, id, 4);
        h.extend_from_slice(&[0, 8, 0, 0, 0]);
        h.extend_from_slice(&[0xff; 8]);
        send(port, &h);
    }
    // Every node is up, the leader serves an acknowledged publish, and the
    // forged hellos are logged as what they are.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..3 {
        let h = health_json(c.health[i]).unwrap_or_else(|| panic!("node {} answers\n{}", i + 1, c.logs()));
        assert_eq!(h["cluster_id"].as_str(), Some(format!("{id:032x}").as_str()), "node {}", i + 1);
    }
    let leader_now = c.leader(Duration::from_secs(10)).unwrap_or_else(|| panic!("a leader serves\n{}", c.logs()));
    publish_ok(c.mqtt[leader_now], "mqttv5", &["-q", "1", "-t", "after/garbage", "-m", "ok"]);
    let logs: String = (0..3).map(|i| c.log(i)).collect();
    for expected in [
        "not a midge peer (bad magic)",
        "speaks transport version 3",
        "claiming to be unknown node 99",
        &format!("it belongs to cluster {:032x}, this node to cluster {id:032x}", id ^ 1),
        "oversized frame",
        "undecodable raft message",
    ] {
        assert!(logs.contains(expected), "logged: {expected}\n{}", c.logs());
    }
    if leader_now == leader {
        let now = health_json(c.health[leader]).expect("health");
        assert_eq!(now["term"].as_u64(), term, "the leader kept its term: {now}");
    }
}

#[test]
fn a_data_directory_of_another_cluster_is_refused_and_the_leader_stays() {
    let certs_dir = common::tempdir();
    let certs = make_certs(certs_dir.path());
    let tls = config_lines(&certs);
    let cluster_id = |c: &Cluster, i: usize| -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let id = health_json(c.health[i]).and_then(|h| h["cluster_id"].as_str().map(String::from));
            match id {
                Some(id) if !id.is_empty() => return id,
                _ if Instant::now() > end => panic!("node {} has no cluster id\n{}", i + 1, c.logs()),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    };
    // Another cluster, same CA and node ids: its data directories.
    let other_dir = common::tempdir();
    let other_id = {
        let mut b = Cluster::start_with(&tls);
        let l = b.leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader in B\n{}", b.logs()));
        let id = cluster_id(&b, l);
        // Every node has applied the id once it reports it.
        for i in 0..3 {
            assert_eq!(cluster_id(&b, i), id, "node {} of B", i + 1);
        }
        for i in 0..3 {
            b.kill(i);
            copy_dir(&b.path().join(format!("node{}", i + 1)), &other_dir.path().join(format!("node{}", i + 1)));
        }
        id
    };
    let mut a = Cluster::start_with(&tls);
    let leader = a.leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader in A\n{}", a.logs()));
    let a_id = cluster_id(&a, leader);
    assert_ne!(a_id, other_id, "two clusters draw two ids");
    // A follower restarts on the data of the other cluster's node of the
    // same id.
    let f = (0..3).find(|&i| i != leader).unwrap();
    let before = health_json(a.health[leader]).expect("health");
    a.kill(f);
    let name = format!("node{}", f + 1);
    std::fs::remove_dir_all(a.path().join(&name)).unwrap();
    copy_dir(&other_dir.path().join(&name), &a.path().join(&name));
    a.spawn(f);
    std::thread::sleep(Duration::from_secs(3));
    let after = health_json(a.health[leader]).expect("health");
    // The restarted node knows its data's cluster id before its first
    // hello (from the snapshot or its committed log), so none of its raft
    // messages (a higher term of the other cluster) is heard.
    let start: String = a.log(f).lines().filter(|l| l.contains("starting")).collect::<Vec<_>>().join("\n");
    assert_eq!(after["leader_id"], before["leader_id"], "the leader did not change\n{start}\n{}", a.logs());
    assert_eq!(after["term"], before["term"], "the term did not change\n{start}\n{}", a.logs());
    let refused =
        format!("Refusing peer node {}: it belongs to cluster {other_id}, this node to cluster {a_id}", f + 1);
    let others: String = (0..3).filter(|&i| i != f).map(|i| a.log(i)).collect();
    assert!(others.contains(&refused), "the peers refuse node {}, naming both ids\n{}", f + 1, a.logs());
    let back = format!("it belongs to cluster {a_id}, this node to cluster {other_id}");
    assert!(a.log(f).contains(&back), "node {} refuses them too, naming both ids\n{}", f + 1, a.logs());
    publish_ok(a.mqtt[leader], "mqttv311", &["-q", "1", "-t", "a/t", "-m", "still serving"]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn sighup_reloads_the_cluster_certificates_and_keeps_them_when_a_file_is_bad() {
    let certs_dir = common::tempdir();
    let certs = make_certs(certs_dir.path());
    let mut c = Cluster::start_with(&config_lines(&certs));
    c.leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let pid = c.pid(0).unwrap().to_string();
    let hup = || {
        Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    };
    hup();
    wait_log(&c, 0, "the cluster's CA, certificate and key read again");
    // A broken key: the files read before stay in force.
    let key = certs.join("node1.key");
    std::fs::write(&key, b"not a key\n").unwrap();
    hup();
    wait_log(&c, 0, "Reload of the cluster TLS files: cluster_keyfile");
    assert!(c.log(0).contains("The ones read before stay in force."), "{}", c.logs());
    // Node 1 forms new links with what it kept: with nodes 2 and 3
    // restarted, a majority needs node 1's new links (both directions).
    c.kill(1);
    c.kill(2);
    c.spawn(1);
    let leader = c.leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader of 1-2\n{}", c.logs()));
    assert!(leader < 2);
    publish_ok(c.mqtt[leader], "mqttv311", &["-q", "1", "-t", "hup/t", "-m", "x"]);
}

fn wait_log(c: &Cluster, i: usize, text: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while !c.log(i).contains(text) {
        assert!(Instant::now() < end, "node {} never logged {text:?}\n{}", i + 1, c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The admin listener with TLS (the client listeners' options), and only
/// for users the ACL grants `$CONTROL/midge/cluster/#`.
#[test]
fn the_admin_listener_speaks_tls_and_needs_the_acl_grant() {
    if common::is_mosquitto() {
        return; // midge's own: Mosquitto has no admin listener or cluster
    }
    let dir = common::tempdir();
    common::password_file(dir.path(), &[("admin", "secret"), ("bob", "builder")]);
    common::write_file(
        dir.path(),
        "acl",
        "user admin\ntopic write $CONTROL/midge/cluster/#\n\nuser bob\ntopic readwrite bob/#\n",
    );
    let tls = |f: &str| format!("{}/tests/fixtures/tls/{f}", env!("CARGO_MANIFEST_DIR"));
    // Copies: the test damages the key later.
    std::fs::copy(tls("server.pem"), dir.path().join("admin.pem")).unwrap();
    std::fs::copy(tls("server.key"), dir.path().join("admin.key")).unwrap();
    let admin = common::free_port();
    let b = common::Broker::start_in(
        dir,
        &format!(
            "password_file {{dir}}/passwd\nacl_file {{dir}}/acl\nadmin_listener {admin} 127.0.0.1\ncertfile {{dir}}/admin.pem\nkeyfile {{dir}}/admin.key\n"
        ),
    );
    let ctl = |user: &str, pw: &str, tls_args: &[String]| {
        let out = Command::new(common::midge_bin())
            .args(["ctl", "-p", &admin.to_string(), "-u", user, "-P", pw])
            .args(tls_args)
            .arg("status")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let ca = vec!["--cafile".to_string(), tls("ca.pem")];
    let (ok, out) = ctl("admin", "secret", &ca);
    assert!(ok && out.contains("\"role\""), "admin over TLS gets the status: {out}\n{}", b.log());
    let (ok, out) = ctl("bob", "builder", &ca);
    assert!(!ok && out.contains("CONNACK 5"), "bob has no grant: {out}");
    assert!(
        b.log().contains("admin listener needs a user allowed to publish to $CONTROL/midge/cluster/v1"),
        "{}",
        b.log()
    );
    let (ok, out) = ctl("admin", "secret", &[]);
    assert!(!ok, "plain MQTT to the TLS admin listener fails: {out}");
    // A CA that did not sign the listener's certificate.
    let (ok, out) = ctl("admin", "secret", &["--cafile".to_string(), tls("other-ca.pem")]);
    assert!(!ok && out.contains("certificate"), "the listener's certificate is checked: {out}");
    assert!(b.log().contains("New admin connection from 127.0.0.1") && b.log().contains("(TLS)"), "{}", b.log());
    // SIGHUP reads the certificate again; a damaged key keeps the old one.
    let hup = || assert!(Command::new("kill").args(["-HUP", &b.pid().to_string()]).status().unwrap().success());
    hup();
    wait_for(|| b.log().contains(&format!("Reload: the certificate and key of admin_listener {admin} read again.")));
    std::fs::write(b.dir().join("admin.key"), b"damaged\n").unwrap();
    hup();
    wait_for(|| b.log().contains(&format!("Reload of the TLS files of admin_listener {admin}: keyfile")));
    let (ok, out) = ctl("admin", "secret", &ca);
    assert!(ok, "the certificate read before still serves: {out}\n{}", b.log());
}

fn wait_for(f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node draws the cluster id when it first leads (here alone), keeps it
/// across a restart, and shows it as `$SYS/broker/cluster/id`.
#[test]
fn the_cluster_id_is_in_sys_and_survives_a_restart() {
    if common::is_mosquitto() {
        return; // midge's own: Mosquitto has no admin listener or cluster
    }
    let read_id = |port: u16| {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "$SYS/broker/cluster/id", "-C", "1", "-W", "10"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let dir = common::tempdir();
    let data = dir.path().join("data");
    let conf = format!("sys_interval 1\npersistence true\npersistence_location {}\n", data.display());
    let first = {
        let b = common::Broker::start(&conf);
        read_id(b.port)
    };
    assert_eq!(first.len(), 32, "32 hex digits: {first:?}");
    assert!(first.chars().all(|c| c.is_ascii_hexdigit()) && first != "0".repeat(32), "{first:?}");
    let b = common::Broker::start(&conf);
    assert_eq!(read_id(b.port), first, "the same id after a restart on the same data\n{}", b.log());
}

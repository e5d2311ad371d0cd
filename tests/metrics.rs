//! `GET /metrics` on the health listener: a running node answers in the
//! Prometheus text format (every family with HELP and TYPE, counters
//! ending in `_total`), and its values move with the traffic: PUBLISHes by
//! QoS, bytes, retained and queued messages, raft indexes, log writes and
//! their time. The scrape is the `curl` command in docs/CONFIG.md, and
//! Prometheus' own Python client (`prometheus_client.parser`, in the test
//! virtual environment of scripts/python-env.sh) reads the same text.
//!
//! midge only: Mosquitto has no health listener (it reports through
//! `$SYS` alone), so under MIDGE_TEST_BROKER=mosquitto this test returns
//! at once.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{free_port, is_mosquitto, mosquitto_sub, Broker, Raw};

/// The documented scrape, with the port replaced.
fn doc_curl_command(port: u16) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md")).expect("CONFIG.md");
    let line = doc
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("/metrics"))
        .expect("docs/CONFIG.md shows a curl command for /metrics");
    assert!(line.contains("127.0.0.1:8080"), "the documented command scrapes port 8080: {line}");
    line.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
}

/// The documented scrape's text.
fn scrape_text(port: u16) -> String {
    let out = Command::new("sh").arg("-c").arg(doc_curl_command(port)).output().expect("run curl");
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// A scrape: every sample by `name{labels}`, after checking the format.
fn scrape(port: u16) -> BTreeMap<String, f64> {
    parse(&scrape_text(port))
}

fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = 0;
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "a counter's name ends in _total: {line}");
            }
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "family {name} twice");
        } else if line.starts_with("# HELP ") {
            helps += 1;
        } else {
            let (series, value) = line.rsplit_once(' ').expect("sample: series value");
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|k| k == "histogram")))
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample before its TYPE line: {line}");
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
            samples.insert(series.to_string(), v);
        }
    }
    assert_eq!(helps, types.len(), "one HELP per family:\n{text}");
    samples
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| panic!("no sample {series} in {m:#?}"))
}

#[test]
fn metrics_scrape_follows_the_traffic() {
    if is_mosquitto() {
        eprintln!("skipped: Mosquitto has no health listener and no /metrics");
        return;
    }
    let health = free_port();
    let b = Broker::start(&format!("health_listener {health} 127.0.0.1\npersistence true\n"));
    let before = scrape(health);
    assert_eq!(get(&before, "midge_serving"), 1.0);
    assert_eq!(get(&before, "midge_raft_role{role=\"leader\"}"), 1.0);
    assert_eq!(get(&before, "midge_raft_role{role=\"follower\"}"), 0.0);
    assert_eq!(get(&before, "midge_retained_messages"), 0.0);
    assert_eq!(get(&before, "midge_clients_connected"), 0.0);
    assert!(get(&before, "midge_raft_term") >= 1.0);

    // An offline persistent session subscribed to q/#, then traffic: three
    // QoS 1 messages it must queue, one retained QoS 1, one QoS 0, one QoS 2.
    let sub = mosquitto_sub::Sub::start(b.port, "mqttv311", &["-c", "-i", "queued", "-q", "1", "-t", "q/#", "-E"]);
    let _ = sub.finish();
    for i in 0..3 {
        mosquitto_sub::publish_ok(b.port, "mqttv311", &["-t", "q/x", "-q", "1", "-m", &format!("m{i}")]);
    }
    mosquitto_sub::publish_ok(b.port, "mqttv311", &["-t", "r/x", "-q", "1", "-r", "-m", "kept"]);
    mosquitto_sub::publish_ok(b.port, "mqttv311", &["-t", "z/x", "-q", "0", "-m", "zero"]);
    mosquitto_sub::publish_ok(b.port, "mqttv311", &["-t", "z/x", "-q", "2", "-m", "two"]);
    let mut held = Raw::connect_v311(b.port, "held", true, 60);
    held.expect_silence(Duration::from_millis(50));

    let after = scrape(health);
    let grew = |s: &str| get(&after, s) - get(&before, s);
    assert_eq!(grew("midge_publish_received_total{qos=\"1\"}"), 4.0);
    assert_eq!(grew("midge_publish_received_total{qos=\"0\"}"), 1.0);
    assert_eq!(grew("midge_publish_received_total{qos=\"2\"}"), 1.0);
    assert_eq!(get(&after, "midge_retained_messages"), 1.0);
    assert_eq!(get(&after, "midge_queued_messages"), 3.0);
    assert_eq!(get(&after, "midge_clients_connected"), 1.0);
    assert_eq!(get(&after, "midge_sessions"), 2.0, "queued (offline) and held");
    assert!(grew("midge_bytes_received_total") > 0.0);
    assert!(grew("midge_bytes_sent_total") > 0.0);
    assert!(grew("midge_packets_received_total") >= 12.0, "7 CONNECTs, 6 PUBLISHes...");
    assert!(grew("midge_raft_applied_index") > 0.0);
    assert_eq!(get(&after, "midge_raft_applied_index"), get(&after, "midge_raft_commit_index"));
    let writes = grew("midge_store_writes_total{log=\"main\"}");
    assert!(writes > 0.0);
    assert_eq!(grew("midge_store_write_seconds_count{log=\"main\"}"), writes, "each write is timed");
    assert!(grew("midge_store_write_seconds_sum{log=\"main\"}") > 0.0);
    assert!(grew("midge_store_written_bytes_total{log=\"main\"}") > 0.0);
    assert!(grew("midge_store_written_entries_total{log=\"main\"}") > 0.0);
    // What reached the disk: every fsynced write costs at least a page
    // (nothing on a tmpfs, which has no disk).
    let fs = Command::new("stat").args(["-f", "-c", "%T"]).arg(b.dir()).output().unwrap();
    if String::from_utf8_lossy(&fs.stdout).trim() != "tmpfs" {
        assert!(grew("midge_process_disk_written_bytes_total") >= 4096.0);
    }
    // Histogram buckets are cumulative and end with +Inf = count.
    let inf = get(&after, "midge_store_write_seconds_bucket{log=\"main\",le=\"+Inf\"}");
    assert_eq!(inf, get(&after, "midge_store_write_seconds_count{log=\"main\"}"));
    assert!(get(&after, "midge_store_write_seconds_bucket{log=\"main\",le=\"0.001\"}") <= inf);

    // /health still answers as before.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{health}/health")])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

/// One sample as prometheus_client reads it: family, type, sample name,
/// labels, value.
type ParsedSample = (String, String, String, BTreeMap<String, String>, f64);

/// Prometheus' own parser of the text format (prometheus_client, Python)
/// reads a scrape without error, finds the same samples with the same
/// values, and the family types the TYPE lines give.
#[test]
fn prometheus_client_parses_the_scrape() {
    if is_mosquitto() {
        eprintln!("skipped: Mosquitto has no health listener and no /metrics");
        return;
    }
    const PARSE: &str = "
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        out.append([f.name, f.type, s.name, s.labels, s.value])
print(json.dumps(out))
";
    let python = std::env::var("MIDGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let health = free_port();
    let b = Broker::start(&format!("health_listener {health} 127.0.0.1\npersistence true\n"));
    mosquitto_sub::publish_ok(b.port, "mqttv311", &["-t", "r/x", "-q", "1", "-r", "-m", "kept"]);
    let text = scrape_text(health);
    let mut child = Command::new(&python)
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client ({python}) refused the scrape; install it with `bash scripts/python-env.sh` \
         (MIDGE_TEST_PYTHON=~/.cache/midge-venv/bin/python): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<ParsedSample> = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    // Every sample of our own reading is there, with its value.
    let ours = parse(&text);
    let theirs: BTreeMap<String, f64> = parsed
        .iter()
        .map(|(_, _, name, labels, v)| {
            // Our series names keep the labels in the order written; the
            // parser's labels are a map: compare as sorted.
            let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            l.sort();
            (format!("{name}{{{}}}", l.join(",")), *v)
        })
        .collect();
    assert_eq!(theirs.len(), ours.len(), "sample count");
    for (series, v) in &ours {
        let (name, labels) = series.split_once('{').map_or((series.as_str(), ""), |(n, l)| (n, &l[..l.len() - 1]));
        let mut l: Vec<&str> = if labels.is_empty() { vec![] } else { labels.split(',').collect() };
        l.sort();
        let key = format!("{name}{{{}}}", l.join(","));
        assert_eq!(theirs.get(&key), Some(v), "{key} in prometheus_client's reading");
    }
    // The types: a counter family is read as a counter (its name without
    // _total), the histogram as a histogram.
    let kind = |family: &str| parsed.iter().find(|p| p.0 == family).map(|p| p.1.clone());
    assert_eq!(kind("midge_publish_received").as_deref(), Some("counter"));
    assert_eq!(kind("midge_store_write_seconds").as_deref(), Some("histogram"));
    assert_eq!(kind("midge_retained_messages").as_deref(), Some("gauge"));
    assert_eq!(theirs.get("midge_retained_messages{}"), Some(&1.0));
}

//! Prometheus text exposition (format 0.0.4) for `GET /metrics` on the
//! health listener, written by hand: `# HELP` and `# TYPE` lines, then
//! samples. Owns the format and the fixed-bucket histogram of store write
//! times; never reads a clock (samples come in as microseconds) and never
//! allocates per sample.
//!
//! The values are the counters midge keeps anyway (the broker's `$SYS`
//! statistics, the cluster status, the node's batching counters): this
//! module only writes them out.

use std::fmt::Write;

/// Upper bounds of the store write histogram's buckets, in microseconds
/// (100 µs to 2.5 s: an fsync on a good SSD to one on a worn SD card);
/// `+Inf` follows.
pub const WRITE_BUCKETS_US: [u64; 14] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000];

/// A histogram with `WRITE_BUCKETS_US`' buckets: counts per bucket (not
/// cumulative; the rendering adds them up), their sum and count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Histogram {
    /// `counts[i]`: samples at most `WRITE_BUCKETS_US[i]` and above the
    /// bound before; the last: above every bound.
    counts: [u64; WRITE_BUCKETS_US.len() + 1],
    sum_us: u64,
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        let i = WRITE_BUCKETS_US.iter().position(|b| us <= *b).unwrap_or(WRITE_BUCKETS_US.len());
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s samples (two logs written to the same disk).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }
}

/// Microseconds as decimal seconds without a float: `1500` -> `0.0015`.
fn seconds(us: u64) -> String {
    let mut s = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// The text of one scrape. Each metric family is written at once (its
/// HELP and TYPE, then every sample), as the format requires.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    pub fn into_text(self) -> String {
        self.text
    }

    fn head(&mut self, name: &str, kind: &str, help: &str) {
        debug_assert!(kind != "counter" || name.ends_with("_total"), "counter {name} must end in _total");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample; `labels` are (name, value) pairs, values escaped.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.text.push_str("\\\\"),
                        '"' => self.text.push_str("\\\""),
                        '\n' => self.text.push_str("\\n"),
                        c => self.text.push(c),
                    }
                }
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.head(name, "counter", help);
        self.sample(name, &[], &value.to_string());
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.head(name, "gauge", help);
        self.sample(name, &[], &value.to_string());
    }

    /// A family with one label: (label value, sample value) each.
    pub fn labelled(&mut self, kind: &str, name: &str, help: &str, label: &str, samples: &[(&str, u64)]) {
        self.head(name, kind, help);
        for (v, n) in samples {
            self.sample(name, &[(label, v)], &n.to_string());
        }
    }

    /// A histogram of microsecond samples, in seconds, one series per
    /// label value (`label` empty: one series without labels).
    pub fn histogram_seconds(&mut self, name: &str, help: &str, label: &str, series: &[(&str, &Histogram)]) {
        self.head(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let (sum, count) = (format!("{name}_sum"), format!("{name}_count"));
        for (lv, h) in series {
            let mut cumulative = 0;
            for (i, n) in h.counts.iter().enumerate() {
                cumulative += n;
                let le = WRITE_BUCKETS_US.get(i).map_or_else(|| "+Inf".to_string(), |b| seconds(*b));
                let labels: &[(&str, &str)] =
                    if label.is_empty() { &[("le", &le)] } else { &[(label, lv), ("le", &le)] };
                self.sample(&bucket, labels, &cumulative.to_string());
            }
            let labels: &[(&str, &str)] = if label.is_empty() { &[] } else { &[(label, lv)] };
            self.sample(&sum, labels, &seconds(h.sum_us));
            self.sample(&count, labels, &cumulative.to_string());
        }
    }
}

/// Bytes this process has caused to be written to storage
/// (`write_bytes` of /proc/self/io: page-cache writeback and fsyncs,
/// whole pages): what wears an SD card. None where /proc does not say.
pub fn process_disk_written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_written_without_float_noise() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(100), "0.0001");
        assert_eq!(seconds(2_500), "0.0025");
        assert_eq!(seconds(1_000_000), "1");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(12_345_678), "12.345678");
    }

    #[test]
    fn histogram_puts_samples_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::default();
        h.record(100); // on the bound: that bucket
        h.record(101);
        h.record(3_000_000); // past every bound: +Inf
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[WRITE_BUCKETS_US.len()], 1);
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum_us, 3_000_201);
        let mut g = Histogram::default();
        g.record(50);
        g.merge(&h);
        assert_eq!((g.count(), g.counts[0], g.sum_us), (4, 2, 3_000_251));
    }

    #[test]
    fn renders_the_text_exposition_format() {
        let mut e = Exposition::new();
        e.counter("midge_bytes_received_total", "Bytes received from clients.", 42);
        e.gauge("midge_clients_connected", "Clients connected.", 3);
        e.labelled(
            "gauge",
            "midge_raft_role",
            "1 for this node's raft role.",
            "role",
            &[("leader", 1), ("follower", 0)],
        );
        e.labelled("gauge", "midge_odd", "Escapes.", "v", &[("a\"b\\c\nd", 7)]);
        let mut h = Histogram::default();
        h.record(80);
        h.record(1_200);
        e.histogram_seconds("midge_store_write_seconds", "Write time.", "log", &[("sessions", &h)]);
        let text = e.into_text();
        let expected_head = "\
# HELP midge_bytes_received_total Bytes received from clients.
# TYPE midge_bytes_received_total counter
midge_bytes_received_total 42
# HELP midge_clients_connected Clients connected.
# TYPE midge_clients_connected gauge
midge_clients_connected 3
# HELP midge_raft_role 1 for this node's raft role.
# TYPE midge_raft_role gauge
midge_raft_role{role=\"leader\"} 1
midge_raft_role{role=\"follower\"} 0
# HELP midge_odd Escapes.
# TYPE midge_odd gauge
midge_odd{v=\"a\\\"b\\\\c\\nd\"} 7
# HELP midge_store_write_seconds Write time.
# TYPE midge_store_write_seconds histogram
midge_store_write_seconds_bucket{log=\"sessions\",le=\"0.0001\"} 1
midge_store_write_seconds_bucket{log=\"sessions\",le=\"0.00025\"} 1
midge_store_write_seconds_bucket{log=\"sessions\",le=\"0.0005\"} 1
midge_store_write_seconds_bucket{log=\"sessions\",le=\"0.001\"} 1
midge_store_write_seconds_bucket{log=\"sessions\",le=\"0.0025\"} 2
";
        assert!(text.starts_with(expected_head), "{text}");
        let expected_tail = "\
midge_store_write_seconds_bucket{log=\"sessions\",le=\"2.5\"} 2
midge_store_write_seconds_bucket{log=\"sessions\",le=\"+Inf\"} 2
midge_store_write_seconds_sum{log=\"sessions\"} 0.00128
midge_store_write_seconds_count{log=\"sessions\"} 2
";
        assert!(text.ends_with(expected_tail), "{text}");
        // Every line is a comment or `name[{labels}] value`.
        for line in text.lines() {
            assert!(line.starts_with("# ") || line.rsplit_once(' ').is_some_and(|(_, v)| !v.is_empty()), "{line}");
        }
    }
}

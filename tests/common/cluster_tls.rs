//! Certificates for the peer link's mutual TLS, made by the openssl
//! commands of docs/HA.md ("Securing the cluster"), run as written; then
//! `node_cert N 127.0.0.1` (the block's own function) for the loopback
//! nodes of a test cluster.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The sh block of docs/HA.md's "Securing the cluster" section.
pub fn ha_block() -> String {
    let doc = include_str!("../../docs/HA.md");
    let at = doc.find("## Securing the cluster").expect("docs/HA.md has a \"Securing the cluster\" section");
    let start = doc[at..].find("```sh\n").expect("an sh block in it") + at + 6;
    let end = doc[start..].find("```").expect("closed block") + start;
    doc[start..end].to_string()
}

/// Runs the block in `dir` and makes nodes 1-3 certificates for
/// 127.0.0.1; returns the directory with ca.crt, nodeN.crt, nodeN.key.
pub fn make_certs(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let script = ha_block() + "for n in 1 2 3; do node_cert $n 127.0.0.1; done\n";
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir)
        .output()
        .expect("run bash (openssl is needed: scripts/setup-test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "docs/HA.md's certificate commands failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("midge-cluster-ca")
}

/// The three config lines for node `{node}` (a `Cluster` placeholder).
pub fn config_lines(certs: &Path) -> String {
    let d = certs.display();
    format!("cluster_cafile {d}/ca.crt\ncluster_certfile {d}/node{{node}}.crt\ncluster_keyfile {d}/node{{node}}.key\n")
}

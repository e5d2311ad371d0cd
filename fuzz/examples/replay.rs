//! Run files through a target's checks without libFuzzer (works on stable
//! with no flags): `cargo run --manifest-path fuzz/Cargo.toml --example
//! replay -- TARGET FILE_OR_DIR...`. Panics, naming the file, on the first
//! failing input; use it to debug a reproducer from fuzz/artifacts/.

use std::path::{Path, PathBuf};

fn files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(p).expect("read dir").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        for e in entries {
            files(&e, out);
        }
    } else {
        out.push(p.to_path_buf());
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("usage: replay TARGET FILE_OR_DIR...");
    let run: fn(&[u8]) = match target.as_str() {
        "packet_reader" => midge_fuzz::packet_reader::run,
        "broker_events" => midge_fuzz::broker_events::run,
        "state_snapshot" => midge_fuzz::state_snapshot::run,
        "dynsec_request" => midge_fuzz::dynsec_request::run,
        "peer_input" => midge_fuzz::peer_input::run,
        other => panic!("unknown target {other}"),
    };
    let mut list = Vec::new();
    for a in args {
        files(Path::new(&a), &mut list);
    }
    for f in &list {
        let data = std::fs::read(f).expect("read input");
        eprintln!("{}: {} bytes", f.display(), data.len());
        run(&data);
    }
    println!("{} inputs passed {target}", list.len());
}

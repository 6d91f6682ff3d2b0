//! Replays the config and MQTT fuzz corpora (fuzz/corpus/{config,mqtt_command}) through the same invariants the
//! fuzz targets check, on stable and in the normal test build, so a regression input checked into the corpus
//! fails `cargo test` even where the nightly fuzz run is skipped.

#[path = "../../../fuzz/src/services.rs"]
mod services;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

#[test]
fn config_corpus_holds_the_invariants() {
    let files = corpus("config");
    assert!(files.len() >= 3, "seeds missing: {files:?}");
    for (path, data) in files {
        eprintln!("{}", path.display());
        services::check_config(&data);
    }
}

#[test]
fn mqtt_command_corpus_holds_the_invariants() {
    let files = corpus("mqtt_command");
    assert!(files.len() >= 4, "seeds missing");
    for (path, data) in files {
        eprintln!("{}", path.display());
        services::check_mqtt_command(&data);
    }
}

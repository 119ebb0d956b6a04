//! The fuzz targets' inputs replayed on the stable toolchain, through the targets' own
//! harness (fuzz/src/lib.rs, included here as a module): every checked-in seed
//! (fuzz/seeds/<target>/), the captured Prometheus requests the seed corpora are built from
//! (tests/fixtures/prometheus-2.42, and ../shared/fixtures when present), and every input that
//! once crashed a target (tests/fixtures/fuzz/<target>/). `make fuzz` runs the targets
//! themselves under libFuzzer (nightly); docs/operations.md, "Fuzzing", has the figures.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files of a folder, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
        .collect();
    out.sort();
    out
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs one input through a target, naming the input if it fails.
fn replay(target: &str, run: fn(&[u8]), what: &str, input: &[u8]) {
    if std::panic::catch_unwind(|| run(input)).is_err() {
        panic!(
            "fuzz target {target} fails on {what} ({} bytes)",
            input.len()
        );
    }
}

/// The captured requests `scripts/fuzz.sh` seeds every corpus with: the shared fixtures when
/// present, else the copy in tests/fixtures.
fn fixtures() -> Vec<PathBuf> {
    let shared = root().join("../shared/fixtures/prometheus-2.42");
    let local = root().join("tests/fixtures/prometheus-2.42");
    let mut out: Vec<PathBuf> = files(&shared)
        .into_iter()
        .chain(files(&local))
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    out.dedup_by(|a, b| a.file_name() == b.file_name());
    assert!(out.len() >= 7, "captured requests missing: {out:?}");
    out
}

#[test]
fn every_seed_passes_its_target() {
    for (target, run) in harness::TARGETS {
        let seeds = files(&root().join("fuzz/seeds").join(target));
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for seed in seeds {
            replay(target, run, &seed.display().to_string(), &read(&seed));
        }
    }
}

#[test]
fn every_captured_request_passes_every_target() {
    let ha_seeds = files(&root().join("fuzz/seeds/ha_router"));
    for fixture in fixtures() {
        let body = read(&fixture);
        for (target, run) in harness::TARGETS {
            replay(target, run, &fixture.display().to_string(), &body);
        }
        // As scripts/fuzz.sh builds the ha_router corpus: each op script, then the body.
        for seed in &ha_seeds {
            let mut input = read(seed);
            input.extend_from_slice(&body);
            let what = format!("{} + {}", seed.display(), fixture.display());
            replay("ha_router", harness::ha_router, &what, &input);
        }
    }
}

#[test]
fn every_input_that_crashed_a_target_passes_now() {
    for (target, run) in harness::TARGETS {
        for input in files(&root().join("tests/fixtures/fuzz").join(target)) {
            replay(target, run, &input.display().to_string(), &read(&input));
        }
    }
}

/// The HA seeds are worth fuzzing from: together, with and without the captured requests as
/// templates, they store leader data, fail over (flushing buffered samples), backfill a
/// past lease, race a commit with a lease change and meet store failures.
#[test]
fn the_ha_seeds_reach_every_path() {
    let write = read(&root().join("tests/fixtures/prometheus-2.42/write-01.bin"));
    let mut total = harness::Stats::default();
    for seed in files(&root().join("fuzz/seeds/ha_router")) {
        let script = read(&seed);
        let mut with_body = script.clone();
        with_body.extend_from_slice(&write);
        for input in [script, with_body] {
            let s = harness::ha_router_stats(&input);
            total.leader_stored += s.leader_stored;
            total.backfilled += s.backfilled;
            total.flushed += s.flushed;
            total.fenced_out += s.fenced_out;
            total.failed_calls += s.failed_calls;
            total.leader_changes += s.leader_changes;
        }
    }
    let harness::Stats {
        leader_stored,
        backfilled,
        flushed,
        fenced_out,
        failed_calls,
        leader_changes,
    } = total;
    assert!(
        leader_stored > 0
            && backfilled > 0
            && flushed > 0
            && fenced_out > 0
            && failed_calls > 0
            && leader_changes > 0,
        "{total:?}"
    );
}

/// The remote-write and remote-read targets also take their input as the protobuf itself
/// (compressing it first), so a seed may be either; the snappy target round-trips any input.
#[test]
fn a_body_and_its_protobuf_both_pass() {
    let seed = read(&root().join("fuzz/seeds/remote_write/one-series.pb"));
    let body = snap::raw::Encoder::new()
        .compress_vec(&seed)
        .expect("compress");
    for input in [&seed, &body] {
        harness::remote_write(input);
        harness::remote_read(input);
        harness::snappy(input);
    }
}

/// The 2.0 seeds decode (the bad-symbols one is refused), so the target starts from inputs
/// that reach past the symbol table.
#[test]
fn the_remote_write_v2_seeds_decode() {
    use promgres::decode_v2::decode_write_v2;
    let dir = root().join("fuzz/seeds/remote_write_v2");
    let compress = |raw: &[u8]| {
        snap::raw::Encoder::new()
            .compress_vec(raw)
            .expect("compress")
    };
    let decode =
        |raw: &[u8]| decode_write_v2(&compress(raw), harness::SERVER_LIMITS, harness::NOW_MS);
    let batch = decode(&read(&dir.join("samples-metadata.pb"))).expect("samples seed");
    assert_eq!((batch.counts().samples, batch.metadata.len()), (3, 1));
    let batch = decode(&read(&dir.join("histograms-exemplars.pb"))).expect("histogram seed");
    let counts = batch.counts();
    assert_eq!((counts.histograms, counts.exemplars), (2, 2));
    let body = read(&dir.join("histograms-exemplars.snappy"));
    assert_eq!(
        decode_write_v2(&body, harness::SERVER_LIMITS, harness::NOW_MS),
        Ok(batch)
    );
    let err = decode(&read(&dir.join("bad-symbols.pb"))).expect_err("odd references");
    assert_eq!(err.reason(), "invalid_symbols");
    for input in files(&dir) {
        harness::remote_write_v2(&read(&input));
    }
}

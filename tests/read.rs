//! Remote read over real HTTP from a real PostgreSQL: SAMPLES and STREAMED_XOR_CHUNKS give back
//! exactly what was written (labels, timestamps, value bits, stale markers) for every matcher
//! type; the streamed frames and XOR chunks are checked with a decoder written here,
//! independently of the encoder; a real Prometheus answers PromQL over promgres-only data.

mod common;

use common::*;
use promgres::proto::{
    ChunkedReadResponse, LabelMatcher, Query, ReadRequest, ReadResponse, TimeSeries,
};
use prost::Message;
use std::collections::BTreeMap;
use std::time::Duration;

const STALE: u64 = 0x7ff0_0000_0000_0002;

type Stored = BTreeMap<Vec<(String, String)>, Vec<(i64, u64)>>;

fn matcher(t: i32, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: t,
        name: name.into(),
        value: value.into(),
    }
}

fn read_request(start: i64, end: i64, matchers: Vec<LabelMatcher>, streamed: bool) -> Vec<u8> {
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers,
        }],
        accepted_response_types: if streamed { vec![1, 0] } else { vec![] },
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

const READ_HEADERS: &[(&str, &str)] = &[
    ("Content-Encoding", "snappy"),
    ("Accept-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("X-Prometheus-Remote-Read-Version", "0.1.0"),
];

/// POSTs a read and returns the status, the body bytes and the head.
fn post_read(addr: std::net::SocketAddr, body: &[u8]) -> (u16, Vec<u8>, String) {
    let r = exchange(addr, "POST", "/read", READ_HEADERS, body, None).expect("read");
    (r.status, r.body, r.head)
}

fn to_stored(series: Vec<TimeSeries>) -> Stored {
    series.into_iter().map(raw_series).collect()
}

fn read_samples(
    addr: std::net::SocketAddr,
    start: i64,
    end: i64,
    matchers: Vec<LabelMatcher>,
) -> Stored {
    let (status, body, _) = post_read(addr, &read_request(start, end, matchers, false));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .expect("snappy response");
    let resp = ReadResponse::decode(raw.as_slice()).expect("ReadResponse");
    assert_eq!(resp.results.len(), 1);
    to_stored(resp.results.into_iter().next().expect("result").timeseries)
}

// --- an independent decoder for streamed frames and XOR chunks ---

/// Bitwise CRC-32C, deliberately not table-driven like the server's.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize, // in bits
}

impl BitReader<'_> {
    fn bit(&mut self) -> bool {
        let byte = self.data[self.pos / 8];
        let b = (byte >> (7 - self.pos % 8)) & 1 == 1;
        self.pos += 1;
        b
    }
    fn bits(&mut self, n: u32) -> u64 {
        (0..n).fold(0u64, |acc, _| (acc << 1) | u64::from(self.bit()))
    }
    fn byte(&mut self) -> u8 {
        self.bits(8) as u8
    }
    fn uvarint(&mut self) -> u64 {
        let mut x = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte();
            x |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return x;
            }
            shift += 7;
        }
    }
    fn varint(&mut self) -> i64 {
        let u = self.uvarint();
        ((u >> 1) as i64) ^ -((u & 1) as i64)
    }
}

/// Decodes a Prometheus XOR chunk (tsdb/chunkenc/xor.go semantics).
fn decode_xor(chunk: &[u8]) -> Vec<(i64, u64)> {
    let n = u16::from_be_bytes([chunk[0], chunk[1]]) as usize;
    let mut r = BitReader {
        data: &chunk[2..],
        pos: 0,
    };
    let mut out = Vec::with_capacity(n);
    let (mut t, mut delta, mut v) = (0i64, 0i64, 0u64);
    let (mut leading, mut trailing) = (0u32, 0u32);
    for i in 0..n {
        if i == 0 {
            t = r.varint();
            v = r.bits(64);
            out.push((t, v));
            continue;
        }
        if i == 1 {
            delta = r.uvarint() as i64;
        } else {
            let mut prefix = 0;
            while prefix < 4 && r.bit() {
                prefix += 1;
            }
            let width = [0, 14, 17, 20, 64][prefix];
            let dod = if width == 0 {
                0
            } else {
                let raw = r.bits(width);
                if width == 64 {
                    raw as i64
                } else if raw >> (width - 1) & 1 == 1 {
                    (raw as i64) - (1i64 << width)
                } else {
                    raw as i64
                }
            };
            delta += dod;
        }
        t += delta;
        if r.bit() {
            if r.bit() {
                leading = r.bits(5) as u32;
                let mut sig = r.bits(6) as u32;
                if sig == 0 {
                    sig = 64;
                }
                trailing = 64 - leading - sig;
            }
            let sig = 64 - leading - trailing;
            v ^= r.bits(sig) << trailing;
        }
        out.push((t, v));
    }
    out
}

fn read_streamed(
    addr: std::net::SocketAddr,
    start: i64,
    end: i64,
    matchers: Vec<LabelMatcher>,
) -> Stored {
    let (status, body, head) = post_read(addr, &read_request(start, end, matchers, true));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        head.contains("application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"),
        "{head}"
    );
    let mut out = Stored::new();
    let mut data = body.as_slice();
    while !data.is_empty() {
        let mut r = BitReader { data, pos: 0 };
        let len = r.uvarint() as usize;
        let header = r.pos / 8;
        let crc = u32::from_be_bytes(data[header..header + 4].try_into().expect("crc"));
        let payload = &data[header + 4..header + 4 + len];
        assert_eq!(crc, crc32c_bitwise(payload), "frame checksum");
        let frame = ChunkedReadResponse::decode(payload).expect("frame");
        assert_eq!(frame.query_index, 0);
        for s in frame.chunked_series {
            let labels = s.labels.into_iter().map(|l| (l.name, l.value)).collect();
            let mut samples = Vec::new();
            for c in s.chunks {
                assert_eq!(c.r#type, 1, "XOR");
                let decoded = decode_xor(&c.data);
                assert!(decoded.len() <= 120, "at most 120 samples per chunk");
                assert_eq!(decoded.first().map(|x| x.0), Some(c.min_time_ms));
                assert_eq!(decoded.last().map(|x| x.0), Some(c.max_time_ms));
                samples.extend(decoded);
            }
            out.insert(labels, samples);
        }
        data = &data[header + 4 + len..];
    }
    out
}

fn labels_key(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn written_samples_come_back_identical_for_every_matcher_and_both_response_types() {
    let run = Running::start("read");
    let t0 = now_ms() - 7_200_000;
    // 300 samples per series (more than two chunks), irregular steps, odd values.
    let values = |k: usize| -> Vec<(i64, f64)> {
        (0..300)
            .map(|i| {
                let ts = t0 + i as i64 * 15_000 + (i as i64 % 7) * 13;
                let v = match i % 50 {
                    0 => f64::from_bits(STALE),
                    1 => f64::NAN,
                    2 => f64::INFINITY,
                    _ => (i * (k + 1)) as f64 * 0.25 - 7.0,
                };
                (ts, v)
            })
            .collect()
    };
    let sets: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("__name__", "node_load1"),
            ("job", "node"),
            ("instance", "a.b:9100"),
            ("env", "prod"),
        ],
        vec![
            ("__name__", "node_load1"),
            ("job", "node"),
            ("instance", "axb:9100"),
        ],
        vec![
            ("__name__", "http_requests_total"),
            ("job", "api"),
            ("path", "/q\"uote\\d"),
        ],
        vec![
            ("__name__", "up"),
            ("job", "node"),
            ("instance", "a.b:9100"),
            ("env", "dev"),
        ],
    ];
    let mut written = Stored::new();
    let mut req = write_request(vec![]);
    for (k, labels) in sets.iter().enumerate() {
        let samples = values(k);
        written.insert(
            labels_key(labels),
            samples.iter().map(|(t, v)| (*t, v.to_bits())).collect(),
        );
        req.timeseries.push(series(labels, &samples));
    }
    assert_eq!(run.write(&req).status, 204);
    let pick = |names: &[usize]| -> Stored {
        names
            .iter()
            .map(|i| {
                let k = labels_key(&sets[*i]);
                (k.clone(), written[&k].clone())
            })
            .collect()
    };
    let (start, end) = (t0 - 1, t0 + 7_200_000);
    let cases: Vec<(&str, Vec<LabelMatcher>, Vec<usize>)> = vec![
        (
            "name =",
            vec![matcher(0, "__name__", "node_load1")],
            vec![0, 1],
        ),
        ("label =", vec![matcher(0, "job", "node")], vec![0, 1, 3]),
        (
            "label !=",
            vec![matcher(0, "job", "node"), matcher(1, "__name__", "up")],
            vec![0, 1],
        ),
        (
            "regex with an escaped dot",
            vec![matcher(2, "instance", "a\\.b:9100")],
            vec![0, 3],
        ),
        (
            "regex dot matches any",
            vec![matcher(2, "instance", "a.b:9100")],
            vec![0, 1, 3],
        ),
        ("regex is anchored", vec![matcher(2, "job", "nod")], vec![]),
        (
            "alternation",
            vec![matcher(2, "job", "node|api")],
            vec![0, 1, 2, 3],
        ),
        (
            "not regex",
            vec![matcher(3, "__name__", "node_.*|up")],
            vec![2],
        ),
        (
            "special characters",
            vec![matcher(0, "path", "/q\"uote\\d")],
            vec![2],
        ),
        (
            "regex over special characters",
            vec![matcher(2, "path", "/q\"uote\\\\d")],
            vec![2],
        ),
        (
            "empty = matches absent",
            vec![matcher(0, "env", ""), matcher(0, "job", "node")],
            vec![1],
        ),
        (
            "empty != means present",
            vec![matcher(1, "env", "")],
            vec![0, 3],
        ),
        (
            "regex matching empty includes absent",
            vec![matcher(2, "env", "prod|"), matcher(0, "job", "node")],
            vec![0, 1],
        ),
        (
            "not regex .+ means absent",
            vec![matcher(3, "env", ".+")],
            vec![1, 2],
        ),
        (
            "matcher on a label nobody has",
            vec![matcher(0, "nothere", "x")],
            vec![],
        ),
        (
            "class escape",
            vec![matcher(2, "instance", "a.b:\\d+")],
            vec![0, 1, 3],
        ),
    ];
    for (name, matchers, want) in cases {
        let want = pick(&want);
        assert_eq!(
            read_samples(run.addr, start, end, matchers.clone()),
            want,
            "SAMPLES: {name}"
        );
        assert_eq!(
            read_streamed(run.addr, start, end, matchers),
            want,
            "STREAMED: {name}"
        );
    }
    // The time range is inclusive at both ends.
    let k = labels_key(&sets[2]);
    let (first, last) = (written[&k][10].0, written[&k][20].0);
    let got = read_samples(
        run.addr,
        first,
        last,
        vec![matcher(0, "path", "/q\"uote\\d")],
    );
    assert_eq!(got[&k], written[&k][10..=20].to_vec());
}

#[test]
fn bad_reads_get_clear_4xx_and_limits_apply() {
    let run = Running::start_with("read_limits", |c| c.read_sample_limit = 100);
    let t = now_ms() - 60_000;
    let samples: Vec<(i64, f64)> = (0..150).map(|i| (t + i, 1.0)).collect();
    assert_eq!(
        run.write(&write_request(vec![series(&[("__name__", "m")], &samples)]))
            .status,
        204
    );
    let (status, body, _) = post_read(
        run.addr,
        &read_request(t - 1, t + 1000, vec![matcher(0, "__name__", "m")], false),
    );
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("--read-sample-limit"));
    let (status, body, _) = post_read(
        run.addr,
        &read_request(t, t + 10, vec![matcher(2, "__name__", "(unclosed")], false),
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = post_read(run.addr, b"not snappy");
    assert_eq!(status, 400);
    let (status, body, _) = post_read(
        run.addr,
        &read_request(t, t + 10, vec![matcher(7, "a", "b")], false),
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    // A query without matchers would select every series.
    let (status, body, _) = post_read(run.addr, &read_request(t, t + 10, vec![], false));
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("at least one label matcher"));
}

#[test]
fn with_ha_the_readers_replica_matcher_is_ignored() {
    let run = Running::start_with("read_ha", |c| {
        c.ha = Some(promgres::ha::HaConfig {
            cluster_label: "cluster".into(),
            replica_label: "__replica__".into(),
            failover_timeout_ms: 30_000,
            interval_ms: 10_000,
            buffer_bytes: 1 << 20,
        })
    });
    let t = now_ms() - 60_000;
    let req = write_request(vec![series(
        &[
            ("__name__", "up"),
            ("cluster", "demo"),
            ("__replica__", "demo-0"),
        ],
        &[(t, 1.0)],
    )]);
    assert_eq!(run.write(&req).status, 204);
    // What Prometheus sends (see the captured read-01 fixture): its own external labels as
    // equality matchers.
    let got = read_samples(
        run.addr,
        t - 1,
        t + 1,
        vec![
            matcher(0, "__name__", "up"),
            matcher(0, "__replica__", "demo-1"),
            matcher(0, "cluster", "demo"),
        ],
    );
    assert_eq!(got.len(), 1, "{got:?}");
    // The captured request from Prometheus 2.42 itself decodes and is answered.
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/prometheus-2.42/read-01.bin"
    ))
    .expect("fixture");
    let (status, _, _) = post_read(run.addr, &body);
    assert_eq!(status, 200);
}

#[test]
fn a_real_prometheus_answers_promql_over_data_only_promgres_holds() {
    let run = Running::start("read_prometheus");
    let t = (now_ms() / 1000 - 600) * 1000;
    let req = write_request(
        ["a", "b"]
            .iter()
            .enumerate()
            .map(|(k, inst)| {
                series(
                    &[
                        ("__name__", "only_in_promgres"),
                        ("instance", inst),
                        ("job", "remote"),
                    ],
                    &(0..20)
                        .map(|i| (t + i * 15_000, (k * 100 + i as usize) as f64))
                        .collect::<Vec<_>>(),
                )
            })
            .collect(),
    );
    assert_eq!(run.write(&req).status, 204);
    // The same shape five hours back, compacted into chunks before Prometheus asks.
    let old_t = t - 5 * 3_600_000;
    let old = write_request(vec![series(
        &[("__name__", "only_in_chunks"), ("job", "remote")],
        &(0..20)
            .map(|i| (old_t + i * 15_000, (1000 + i) as f64 / 4.0))
            .collect::<Vec<_>>(),
    )]);
    assert_eq!(run.write(&old).status, 204);
    let mut c = run.db.client();
    // A cutoff at t's slice (<= t): the old samples' window is long closed, the recent ones
    // stay rows whichever 10-minute mark the clock passes meanwhile.
    let cutoff = promgres::engine::cutoff_ms(t + promgres::engine::GRACE_MS);
    let folded = promgres::engine::compact(
        &mut c,
        cutoff,
        promgres::engine::Scope::AllDays,
        &mut |_| true,
    )
    .expect("compaction");
    assert_eq!(folded.samples, 20, "{folded:?}");
    let config = format!(
        "global:\n  scrape_interval: 1m\nremote_read:\n  - url: http://{}/read\n    read_recent: true\n",
        run.addr
    );
    let prometheus = Prometheus::start("remote_read", &config);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", prometheus.port)
        .parse()
        .expect("addr");
    let at = (t + 10 * 15_000) as f64 / 1000.0;
    let query = |q: &str| -> Option<String> {
        let path = format!("/api/v1/query?query={q}&time={at}");
        request(addr, "GET", &path, &[], b"")
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.body)
    };
    let body = wait_for(Duration::from_secs(30), || {
        query("only_in_promgres").filter(|b| b.contains("\"result\":[{"))
    })
    .unwrap_or_else(|| panic!("Prometheus never answered; its log:\n{}", prometheus.log()));
    for (inst, value) in [("a", "10"), ("b", "110")] {
        assert!(
            body.contains(&format!("\"instance\":\"{inst}\""))
                && body.contains(&format!("\"{value}\"]")),
            "instance {inst} = {value} in {body}"
        );
    }
    let body = query("sum(only_in_promgres)").expect("sum");
    assert!(body.contains("\"120\"]"), "PromQL over remote data: {body}");
    let body = query("rate(only_in_promgres%5B2m%5D)").expect("rate");
    assert!(
        body.contains("\"result\":[{"),
        "rate over remote data: {body}"
    );
    // From chunks: the value at old_t + 10 scrapes is (1000 + 10) / 4.
    let old_at = (old_t + 10 * 15_000) as f64 / 1000.0;
    let path = format!("/api/v1/query?query=only_in_chunks&time={old_at}");
    let body = request(addr, "GET", &path, &[], b"").expect("query").body;
    assert!(body.contains("\"252.5\"]"), "PromQL over chunks: {body}");
}

/// 50 series of 20,000 samples each, 1 ms apart, ending a minute ago: a million rows, written
/// with SQL after promgres created the series. Returns the first sample's time.
fn million_samples(addr: std::net::SocketAddr, db: &TestDb) -> i64 {
    let t0 = now_ms() - 3_600_000;
    let req = write_request(
        (0..50)
            .map(|i| series(&[("__name__", "big"), ("i", &i.to_string())], &[(t0, 0.0)]))
            .collect(),
    );
    assert_eq!(post_write(addr, &encode(&req)).status, 204);
    db.client()
        .execute(
            "INSERT INTO promgres.samples
             SELECT series_id, timestamptz 'epoch' + ($1::int8 + n) * interval '1 ms', n
               FROM prom_series, generate_series(1, 19999) n WHERE metric = 'big'",
            &[&t0],
        )
        .expect("a million rows");
    t0
}

fn peak_rss_mb(p: &Process) -> u64 {
    p.status_field("VmHWM").unwrap_or(0) / 1024
}

#[test]
fn hostile_and_huge_reads_are_bounded_before_and_while_they_run() {
    let db = TestDb::new("read_bounds");
    let p = Process::start(
        &db_uri(&db),
        &["--read-sample-limit", "300000", "--log-level", "warn"],
    );
    let t0 = million_samples(p.addr, &db);
    let before = peak_rss_mb(&p);
    // 32 MiB of empty queries: decoded by prost, sixteen million Query structs.
    let empty_queries: Vec<u8> = [0x0a, 0x00].repeat(16 << 20);
    let body = snap::raw::Encoder::new()
        .compress_vec(&empty_queries)
        .expect("snappy");
    let (status, answer, _) = post_read(p.addr, &body);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    let after_empty = peak_rss_mb(&p);
    // The sample limit holds while rows arrive: a read of a million samples stops at 300,000.
    let started = std::time::Instant::now();
    let (status, answer, _) = post_read(
        p.addr,
        &read_request(
            t0,
            t0 + 3_600_000,
            vec![matcher(0, "__name__", "big")],
            false,
        ),
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("--read-sample-limit"));
    let after_limit = peak_rss_mb(&p);
    eprintln!(
        "peak RSS: {before} MiB at start, {after_empty} MiB after 32 MiB of empty queries, \
         {after_limit} MiB after a read over the limit ({:?})",
        started.elapsed()
    );
    assert!(
        after_empty < before + 150,
        "empty queries grew the peak from {before} to {after_empty} MiB"
    );
    assert!(
        after_limit < after_empty + 80,
        "a read over the limit grew the peak from {after_empty} to {after_limit} MiB"
    );
    // The connection that stopped mid-query is not reused; the next read works.
    let (status, _, _) = post_read(
        p.addr,
        &read_request(
            t0,
            t0 + 100,
            vec![matcher(0, "__name__", "big"), matcher(0, "i", "3")],
            false,
        ),
    );
    assert_eq!(status, 200);
}

#[test]
fn a_read_ends_at_its_deadline_and_reads_never_starve_writes() {
    let db = TestDb::new("read_starve");
    let p = Process::start(
        &db_uri(&db),
        &[
            "--read-timeout",
            "2s",
            "--read-concurrent-limit",
            "1",
            "--http-threads",
            "4",
            "--log-level",
            "warn",
        ],
    );
    let t0 = million_samples(p.addr, &db);
    // A streamed read of a million samples, read slowly: the body ends, failed, at the
    // deadline (the statement or the stream, whichever comes first).
    let started = std::time::Instant::now();
    let req = read_request(
        t0,
        t0 + 3_600_000,
        vec![matcher(0, "__name__", "big")],
        true,
    );
    let answer = exchange(
        p.addr,
        "POST",
        "/read",
        READ_HEADERS,
        &req,
        Some(Duration::from_millis(100)),
    )
    .expect("read");
    let (status, body) = (answer.status, answer.body);
    let took = started.elapsed();
    assert_eq!(status, 200);
    // Frames until the deadline, then one whose checksum cannot match.
    let mut data = body.as_slice();
    let mut frames = 0;
    let mut failed = false;
    while !data.is_empty() {
        let mut r = BitReader { data, pos: 0 };
        let len = r.uvarint() as usize;
        let header = r.pos / 8;
        if data.len() < header + 4 + len {
            failed = true;
            break;
        }
        let crc = u32::from_be_bytes(data[header..header + 4].try_into().expect("crc"));
        if crc != crc32c_bitwise(&data[header + 4..header + 4 + len]) {
            failed = true;
            break;
        }
        frames += 1;
        data = &data[header + 4 + len..];
    }
    eprintln!(
        "slow streamed read: {frames} good frames of 50, then failed={failed}, after {took:?}"
    );
    assert!(
        failed && frames < 50,
        "the stream must end failed at the deadline"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");

    // Reads queue for the one read worker; the four handler threads stay free for writes.
    let p = Process::start(
        &db_uri(&db),
        &[
            "--read-concurrent-limit",
            "1",
            "--http-threads",
            "4",
            "--log-level",
            "warn",
        ],
    );
    let done = std::sync::atomic::AtomicBool::new(false);
    let slowest = std::thread::scope(|s| {
        let readers: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    post_read(
                        p.addr,
                        &read_request(
                            t0,
                            t0 + 3_600_000,
                            vec![matcher(0, "__name__", "big"), matcher(2, "i", "1[0-3]")],
                            false,
                        ),
                    )
                    .0
                })
            })
            .collect();
        let writer = s.spawn(|| {
            let mut slowest = Duration::ZERO;
            let mut n = 0;
            // Bounded: at most 300 writes.
            while !done.load(std::sync::atomic::Ordering::Relaxed) && n < 300 {
                let started = std::time::Instant::now();
                let r = post_write(p.addr, &encode(&node_like(20, now_ms() - n, 1.0, "w")));
                assert_eq!(r.status, 204, "{}", r.body);
                slowest = slowest.max(started.elapsed());
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (slowest, n)
        });
        let statuses: Vec<u16> = readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let (slowest, n) = writer.join().expect("writer");
        eprintln!("8 reads at once: {statuses:?}; {n} writes meanwhile, slowest {slowest:?}");
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        slowest
    });
    assert!(
        slowest < Duration::from_secs(2),
        "a write waited {slowest:?} behind reads"
    );
}

#[test]
fn compacted_chunks_read_back_identical_in_both_response_types() {
    let run = Running::start("read_chunks");
    let mut c = run.db.client();
    let now = promgres::store::database_clock_ms(&mut c).expect("clock");
    let start = now - 5 * 3_600_000;
    let special = [f64::from_bits(STALE), -0.0, f64::INFINITY, 0.1 + 0.2, 1e300];
    let timeseries = vec![
        series(
            &[("__name__", "chunky"), ("kind", "counter")],
            &(0..700)
                .map(|k| (start + k * 15_000, (k * 3) as f64 / 4.0))
                .collect::<Vec<_>>(),
        ),
        series(
            &[("__name__", "chunky"), ("kind", "special")],
            &(0..700)
                .map(|k| (start + k * 15_000 + 3, special[k as usize % special.len()]))
                .collect::<Vec<_>>(),
        ),
    ];
    assert_eq!(run.write(&write_request(timeseries)).status, 204);
    let all = || vec![matcher(0, "__name__", "chunky")];
    let (from, to) = (start + 100 * 15_000, start + 650 * 15_000);
    let rows_samples = read_samples(run.addr, from, to, all());
    let rows_streamed = read_streamed(run.addr, from, to, all());
    assert_eq!(rows_samples, rows_streamed);
    let special_key = labels_key(&[("__name__", "chunky"), ("kind", "special")]);
    let neg_zero = (-0.0f64).to_bits();
    assert!(
        rows_samples[&special_key].iter().any(|s| s.1 == neg_zero),
        "SAMPLES answers keep -0.0"
    );

    let cutoff = promgres::engine::cutoff_ms(now);
    let stats = promgres::engine::compact(
        &mut c,
        cutoff,
        promgres::engine::Scope::AllDays,
        &mut |_| true,
    )
    .expect("compaction");
    assert!(stats.chunks >= 4, "{stats:?}");
    assert_eq!(read_samples(run.addr, from, to, all()), rows_samples);
    assert_eq!(read_streamed(run.addr, from, to, all()), rows_samples);
}

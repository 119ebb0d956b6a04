//! `make bench`: the benchmark suite. Every figure and ratio it prints is measured in the same
//! run, on this machine: decode throughput without a database, end-to-end ingest through a
//! promgres process into a fresh database, the binary-COPY limit of PostgreSQL for the same
//! rows, series creation, HA, CPU and memory, and remote-read latencies.
//!
//! promgres runs as a separate process (the release binary next to this one) so its CPU time
//! and peak RSS are its own; PostgreSQL's CPU is summed over its processes.

use crate::loadgen::{self, Workload};
use crate::{nodedata, peers};
use promgres::clock::Clock;
use promgres::decode::{self, Limits};
use promgres::engine::{head, SampleRow};
use promgres::ha::{Election, HaConfig, Lease, LeaseStore};
use promgres::metrics::Metrics;
use promgres::proto;
use promgres::store::{self, StoreError};
use prost::Message;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct SuiteOptions {
    /// Server the suite creates its databases on.
    pub admin_uri: String,
    /// Where to write the JSON results.
    pub json_path: String,
    /// Smaller sizes, for a quick look.
    pub quick: bool,
}

struct Row {
    name: String,
    value: String,
    json: String,
}

pub struct Results {
    rows: Vec<Row>,
}

impl Results {
    fn add(&mut self, name: &str, value: String, json_value: String) {
        println!("  {name:<62} {value}");
        self.rows.push(Row {
            name: name.to_string(),
            value,
            json: json_value,
        });
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for r in &self.rows {
            let _ = writeln!(out, "| {} | {} |", r.name, r.value);
        }
        out
    }

    fn json(&self) -> String {
        let items: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                let mut name = String::new();
                decode::push_json_string(&mut name, &r.name);
                format!("{name}:{}", r.json)
            })
            .collect();
        format!("{{{}}}", items.join(","))
    }
}

fn now_ms() -> i64 {
    promgres::clock::now_ms()
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of every PostgreSQL server process on the machine.
fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(cpu_seconds)
        .sum()
}

fn peak_rss_bytes(pid: u32) -> u64 {
    status_kb(pid, "VmHWM:")
}

/// A memory figure of /proc/<pid>/status, in bytes.
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

struct Database {
    admin: String,
    name: String,
}

impl Database {
    fn create(admin: &str, tag: &str) -> Result<Database, String> {
        let name = format!("promgres_bench_{tag}_{}", std::process::id());
        let mut c = postgres::Client::connect(admin, postgres::NoTls)
            .map_err(|e| format!("cannot reach {admin}: {e}"))?;
        // Two statements: CREATE DATABASE cannot share an implicit transaction.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            c.batch_execute(&sql)
                .map_err(|e| format!("{sql}: {}", StoreError::from(e)))?;
        }
        Ok(Database {
            admin: admin.to_string(),
            name,
        })
    }

    fn uri(&self) -> String {
        match self.admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{}", self.name),
            None => self.admin.clone(),
        }
    }

    fn client(&self) -> Result<postgres::Client, String> {
        postgres::Client::connect(&self.uri(), postgres::NoTls)
            .map_err(|e| StoreError::from(e).to_string())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(db: &Database, extra: &[&str]) -> Result<Server, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let binary = exe.with_file_name("promgres");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(&binary)
            .args([
                "--db-uri",
                &db.uri(),
                "--web-listen-address",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--log-level", "warn", "--max-sample-age", "400d"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(mut c) = loadgen::Connection::open(addr) {
                if c.get("/healthz").is_ok_and(|s| s == 200) {
                    return Ok(Server { child, addr });
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("promgres did not become healthy within 30 s".into())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The series cache's own memory per entry, read from the server's /metrics.
fn cache_bytes_per_entry(addr: SocketAddr) -> f64 {
    let Ok(mut c) = loadgen::Connection::open(addr) else {
        return 0.0;
    };
    let Ok((_, body)) = c.exchange_get("/metrics") else {
        return 0.0;
    };
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    value("promgres_series_cache_bytes ") / value("promgres_series_cache_size ").max(1.0)
}

/// Bodies and per-body sample counts of a workload.
fn prepare(w: &Workload) -> (Vec<Vec<u8>>, Vec<usize>) {
    let bodies = loadgen::build_requests(w);
    let replicas = if w.ha_cluster.is_some() {
        w.replicas.max(1)
    } else {
        1
    };
    let per_request = w.samples_per_request.max(1);
    let chunks = w.series.div_ceil(per_request);
    let counts = (0..bodies.len())
        .map(|i| {
            let chunk = i / replicas % chunks;
            (w.series - chunk * per_request).min(per_request)
        })
        .collect();
    (bodies, counts)
}

fn workload(series: usize, scrapes: usize, per_request: usize) -> Workload {
    Workload {
        series,
        scrapes,
        samples_per_request: per_request,
        scrape_interval_ms: 15_000,
        start_ms: now_ms() - scrapes as i64 * 15_000 - 60_000,
        ha_cluster: None,
        replicas: 1,
    }
}

/// A lease store for the no-database decode benchmark: the first replica leads for ever.
struct StaticLeases;

impl LeaseStore for StaticLeases {
    fn get_or_create(&mut self, cluster: &str, replica: &str) -> Result<Lease, StoreError> {
        Ok(Lease {
            cluster: cluster.into(),
            leader: replica.into(),
            term: 1,
            start_ms: 0,
            leader_since_ms: 0,
            previous_leader: None,
        })
    }
    fn fetch(&mut self, _cluster: &str) -> Result<Option<promgres::ha::LeaseState>, StoreError> {
        Ok(None)
    }
    fn change_leader(
        &mut self,
        c: &str,
        e: &str,
        _n: &str,
        _s: Option<i64>,
        _r: &str,
    ) -> Result<Lease, StoreError> {
        self.get_or_create(c, e)
    }
    fn past_leases(&mut self, _c: &str, _r: &str) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(Vec::new())
    }
}

struct WallClock;
impl Clock for WallClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

fn bench_decode(results: &mut Results, quick: bool) {
    let mut w = workload(10_000, if quick { 4 } else { 20 }, 500);
    w.ha_cluster = Some("bench".into());
    w.replicas = 2;
    let (bodies, counts) = prepare(&w);
    let samples: usize = counts.iter().sum();
    let limits = Limits::new(32 << 20, i64::MAX);
    let now = now_ms();
    let started = Instant::now();
    for body in &bodies {
        let _ = decode::decode_write(body, limits, now);
    }
    let decode_rate = samples as f64 / started.elapsed().as_secs_f64();
    results.add(
        "decode + validate, 1 core (samples/s)",
        format!("{decode_rate:.0}"),
        format!("{decode_rate:.0}"),
    );
    // The same series and samples as remote write 2.0 requests.
    let v2_bodies: Vec<Vec<u8>> = bodies.iter().filter_map(|b| as_v2_body(b)).collect();
    let started = Instant::now();
    for body in &v2_bodies {
        let _ = promgres::decode_v2::decode_write_v2(body, limits, now);
    }
    let v2_rate = samples as f64 / started.elapsed().as_secs_f64();
    results.add(
        "remote write 2.0: decode + validate, 1 core (samples/s)",
        format!("{v2_rate:.0}"),
        format!("{v2_rate:.0}"),
    );
    let mean = |b: &[Vec<u8>]| b.iter().map(Vec::len).sum::<usize>() / b.len().max(1);
    let (v1_size, v2_size) = (mean(&bodies), mean(&v2_bodies));
    results.add(
        "compressed request body, 500 samples (bytes, mean): 1.0 / 2.0",
        format!("{v1_size} / {v2_size}"),
        format!("[{v1_size}, {v2_size}]"),
    );
    let ha = HaConfig {
        cluster_label: "cluster".into(),
        replica_label: "__replica__".into(),
        failover_timeout_ms: 30_000,
        interval_ms: 10_000,
        buffer_bytes: 256 << 20,
    };
    let election = Election::new(
        ha,
        Box::new(StaticLeases),
        Arc::new(WallClock),
        Arc::new(Metrics::default()),
    );
    let started = Instant::now();
    for body in &bodies {
        if let Ok(batch) = decode::decode_write(body, limits, now) {
            let _ = election.route(batch);
        }
    }
    let rate = samples as f64 / started.elapsed().as_secs_f64();
    results.add(
        "decode + validate + HA filter, 1 core (samples/s)",
        format!("{rate:.0}"),
        format!("{rate:.0}"),
    );
}

/// A remote write 1.0 body as the 2.0 body with the same series and samples: every string
/// interned in a symbol table.
fn as_v2_body(body: &[u8]) -> Option<Vec<u8>> {
    use proto::v2;
    let raw = decode::decompress(body, 32 << 20).ok()?;
    let request = proto::WriteRequest::decode(raw.as_slice()).ok()?;
    let mut symbols = vec![String::new()];
    let mut index = std::collections::HashMap::new();
    let mut symbol = |s: &str| -> u32 {
        *index.entry(s.to_string()).or_insert_with(|| {
            symbols.push(s.to_string());
            (symbols.len() - 1) as u32
        })
    };
    let timeseries = request
        .timeseries
        .iter()
        .map(|ts| v2::TimeSeries {
            labels_refs: ts
                .labels
                .iter()
                .flat_map(|l| [symbol(&l.name), symbol(&l.value)])
                .collect(),
            samples: ts
                .samples
                .iter()
                .map(|s| v2::Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                    start_timestamp: 0,
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let raw = v2::Request {
        symbols,
        timeseries,
    }
    .encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).ok()
}

struct IngestRun {
    /// From the first request sent to the last acknowledged.
    elapsed: Duration,
    samples_per_sec: f64,
    p99_ms: f64,
    promgres_cpu: f64,
    postgres_cpu: f64,
    stored: usize,
    rss: u64,
    /// Resident set after the run (transient buffers freed).
    rss_after: u64,
    /// promgres_series_cache_bytes / promgres_series_cache_size after the run.
    cache_bytes_per_entry: f64,
}

fn ingest(
    admin: &str,
    w: &Workload,
    connections: usize,
    extra: &[&str],
) -> Result<IngestRun, String> {
    let db = Database::create(admin, "ingest")?;
    let server = Server::start(&db, extra)?;
    let (bodies, counts) = prepare(w);
    let pg_before = postgres_cpu_seconds();
    let cpu_before = cpu_seconds(server.pid());
    let report = loadgen::send_all(server.addr, &bodies, &counts, connections);
    let promgres_cpu = cpu_seconds(server.pid()) - cpu_before;
    let postgres_cpu = postgres_cpu_seconds() - pg_before;
    if report.non_2xx() > 0 || report.transport_errors > 0 {
        return Err(format!("non-2xx answers: {}", report.text()));
    }
    let stored: i64 = db
        .client()?
        .query_one("SELECT count(*) FROM promgres.samples", &[])
        .map_err(|e| StoreError::from(e).to_string())?
        .get(0);
    Ok(IngestRun {
        elapsed: report.elapsed,
        samples_per_sec: report.samples_per_sec(),
        p99_ms: report.percentile(0.99).as_secs_f64() * 1e3,
        promgres_cpu,
        postgres_cpu,
        stored: usize::try_from(stored).unwrap_or(0),
        rss: peak_rss_bytes(server.pid()),
        rss_after: status_kb(server.pid(), "VmRSS:"),
        cache_bytes_per_entry: cache_bytes_per_entry(server.addr),
    })
}

/// PostgreSQL's own rate for the same rows into the same (fresh) tables: binary COPY from one
/// session, 50,000 rows per transaction, series ids and partitions prepared beforehand.
fn copy_limit(admin: &str, w: &Workload) -> Result<f64, String> {
    let db = Database::create(admin, "copy")?;
    promgres::server::migrate(&promgres::pg_tls::DbConfig::parse(&db.uri())?)
        .map_err(|e| e.to_string())?;
    let mut c = db.client()?;
    let metrics: Vec<String> = (0..w.series)
        .map(|i| loadgen::series_labels(i).swap_remove(0).value)
        .collect();
    let labels: Vec<String> = (0..w.series).map(series_json).collect();
    let mrefs: Vec<&str> = metrics.iter().map(String::as_str).collect();
    let lrefs: Vec<&str> = labels.iter().map(String::as_str).collect();
    let (ids, _) = store::resolve_series(&mut c, &mrefs, &lrefs).map_err(|e| e.to_string())?;
    let days: Vec<i32> = (0..w.scrapes)
        .map(|s| ((w.start_ms + s as i64 * w.scrape_interval_ms).div_euclid(86_400_000)) as i32)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    store::ensure_partitions(&mut c, &days).map_err(|e| e.to_string())?;
    let mut rows = Vec::with_capacity(w.series * w.scrapes);
    for s in 0..w.scrapes {
        for (i, id) in ids.iter().enumerate() {
            rows.push(SampleRow {
                series_id: *id,
                timestamp_ms: w.start_ms + s as i64 * w.scrape_interval_ms,
                value: (s * 7 + i) as f64 * 0.5,
            });
        }
    }
    let started = Instant::now();
    for batch in rows.chunks(50_000) {
        let mut sorted = batch.to_vec();
        sorted.sort_unstable_by_key(|r| (r.series_id, r.timestamp_ms));
        head::insert_samples(
            &mut c,
            head::SeriesIds {
                generation: 0,
                ids: &[],
            },
            &[],
            &[],
            i64::MIN,
            &|_| promgres::engine::HeadRows {
                samples: sorted.clone(),
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}

fn series_json(i: usize) -> String {
    let mut labels = loadgen::series_labels(i);
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::from("{");
    for (k, l) in labels.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        decode::push_json_string(&mut out, &l.name);
        out.push(':');
        decode::push_json_string(&mut out, &l.value);
    }
    out.push('}');
    out
}

fn read_latency(
    addr: SocketAddr,
    start: i64,
    end: i64,
    matchers: Vec<proto::LabelMatcher>,
    runs: usize,
) -> Result<(f64, usize), String> {
    let req = proto::ReadRequest {
        queries: vec![proto::Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers,
        }],
        accepted_response_types: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .map_err(|e| e.to_string())?;
    let mut best = f64::MAX;
    let mut samples = 0;
    for _ in 0..runs {
        let mut c = loadgen::Connection::open(addr).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let (status, response) = c
            .post_with_body("/read", &body)
            .map_err(|e| e.to_string())?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if status != 200 {
            return Err(format!("read answered {status}"));
        }
        best = best.min(ms);
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&response)
            .map_err(|e| e.to_string())?;
        let decoded = proto::ReadResponse::decode(raw.as_slice()).map_err(|e| e.to_string())?;
        samples = decoded
            .results
            .iter()
            .flat_map(|r| &r.timeseries)
            .map(|t| t.samples.len())
            .sum();
    }
    Ok((best, samples))
}

fn matcher(t: i32, name: &str, value: &str) -> proto::LabelMatcher {
    proto::LabelMatcher {
        r#type: t,
        name: name.into(),
        value: value.into(),
    }
}

fn bench_reads(admin: &str, results: &mut Results, quick: bool) -> Result<(), String> {
    let db = Database::create(admin, "read")?;
    let server = Server::start(&db, &[])?;
    let day = 86_400_000;
    let t0 = now_ms() - day - 120_000;
    // (1) one series, one day at 15 s.
    let one: Vec<proto::TimeSeries> = vec![proto::TimeSeries {
        labels: vec![
            proto::Label {
                name: "__name__".into(),
                value: "bench_one".into(),
            },
            proto::Label {
                name: "job".into(),
                value: "bench".into(),
            },
        ],
        samples: (0..5760)
            .map(|i| proto::Sample {
                value: i as f64,
                timestamp: t0 + i * 15_000,
            })
            .collect(),
        ..Default::default()
    }];
    // (2) 1,000 series sharing a label, one hour at 15 s.
    let hour_start = now_ms() - 3_600_000 - 60_000;
    let thousand: Vec<proto::TimeSeries> = (0..1000)
        .map(|i| proto::TimeSeries {
            labels: vec![
                proto::Label {
                    name: "__name__".into(),
                    value: "bench_thousand".into(),
                },
                proto::Label {
                    name: "group".into(),
                    value: "g1".into(),
                },
                proto::Label {
                    name: "n".into(),
                    value: i.to_string(),
                },
            ],
            samples: (0..240)
                .map(|k| proto::Sample {
                    value: k as f64,
                    timestamp: hour_start + k * 15_000,
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let send = |series: Vec<proto::TimeSeries>| -> Result<(), String> {
        let mut c = loadgen::Connection::open(server.addr).map_err(|e| e.to_string())?;
        for chunk in series.chunks(20) {
            let body = snap::raw::Encoder::new()
                .compress_vec(
                    &proto::WriteRequest {
                        timeseries: chunk.to_vec(),
                        metadata: vec![],
                    }
                    .encode_to_vec(),
                )
                .map_err(|e| e.to_string())?;
            let status = c.post("/write", &body).map_err(|e| e.to_string())?;
            if status != 204 {
                return Err(format!("write answered {status}"));
            }
        }
        Ok(())
    };
    send(one)?;
    send(thousand)?;
    // (3) 100,000 series, one sample each.
    let many = if quick { 20_000 } else { 100_000 };
    let w = Workload {
        series: many,
        scrapes: 1,
        samples_per_request: 2000,
        scrape_interval_ms: 15_000,
        start_ms: now_ms() - 60_000,
        ha_cluster: None,
        replicas: 1,
    };
    let (bodies, counts) = prepare(&w);
    let report = loadgen::send_all(server.addr, &bodies, &counts, 4);
    if report.non_2xx() > 0 {
        return Err(format!("loading {many} series: {}", report.text()));
    }
    let now = now_ms();
    let (ms, n) = read_latency(
        server.addr,
        t0,
        now,
        vec![matcher(0, "__name__", "bench_one")],
        5,
    )?;
    results.add(
        "read: 1 series x 1 day at 15 s (ms, best of 5)",
        format!("{ms:.1} ({n} samples)"),
        format!("{ms:.2}"),
    );
    let (ms, n) = read_latency(
        server.addr,
        hour_start,
        now,
        vec![matcher(0, "group", "g1")],
        5,
    )?;
    results.add(
        "read: 1,000 series by one label x 1 h, all head rows (ms, best of 5)",
        format!("{ms:.1} ({n} samples)"),
        format!("{ms:.2}"),
    );
    // The same read once compaction has run, as the maintenance thread keeps it: everything
    // older than the cutoff (10-20 minutes ago) in chunks, the rest in head rows.
    let mut c = db.client()?;
    compact_now(&mut c)?;
    let in_head: i64 = c
        .query_one(
            "SELECT count(*) FROM promgres.samples p JOIN promgres.series s ON s.id = p.series_id
              WHERE s.metric = 'bench_thousand'",
            &[],
        )
        .map_err(|e| StoreError::from(e).to_string())?
        .get(0);
    let (steady_ms, steady_n) = read_latency(
        server.addr,
        hour_start,
        now,
        vec![matcher(0, "group", "g1")],
        5,
    )?;
    if steady_n != n {
        return Err(format!(
            "read {steady_n} samples after compaction, {n} before"
        ));
    }
    results.add(
        "read: 1,000 series by one label x 1 h, compacted as in steady state (ms, best of 5)",
        format!(
            "{steady_ms:.1} ({:.0}% of the samples still head rows; {:.1}x faster)",
            in_head as f64 * 100.0 / n.max(1) as f64,
            ms / steady_ms
        ),
        format!("{steady_ms:.2}"),
    );
    let (ms, n) = read_latency(
        server.addr,
        now - 3_600_000,
        now,
        vec![matcher(2, "instance", "10\\.0\\.1[0-9]\\..*")],
        5,
    )?;
    results.add(
        &format!("read: regex over {many} series (ms, best of 5)"),
        format!("{ms:.1} ({n} samples)"),
        format!("{ms:.2}"),
    );
    Ok(())
}

fn database_bytes(c: &mut postgres::Client) -> Result<i64, String> {
    c.query_one("SELECT pg_database_size(current_database())", &[])
        .map_err(|e| StoreError::from(e).to_string())?
        .try_get(0)
        .map_err(|e| StoreError::from(e).to_string())
}

/// One compaction pass up to the database clock's cutoff, as the maintenance thread runs it.
fn compact_now(c: &mut postgres::Client) -> Result<promgres::engine::CompactionStats, String> {
    let now = promgres::store::database_clock_ms(c).map_err(|e| e.to_string())?;
    promgres::engine::compact(
        c,
        promgres::engine::cutoff_ms(now),
        promgres::engine::Scope::AllDays,
        &mut |_| true,
    )
    .map_err(|e| e.to_string())
}

/// What promgres's storage costs for one load.
struct StorageRun {
    /// Database growth per sample with every sample in head rows.
    head_bps: f64,
    /// ... after compaction, reclaiming the head and VACUUM.
    compacted_bps: f64,
    /// The chunk partitions alone per sample.
    chunk_bps: f64,
    /// The series table and its indexes per sample.
    series_bps: f64,
    stats: promgres::engine::CompactionStats,
    compact_secs: f64,
    compact_cpu: f64,
    compact_pg_cpu: f64,
    sql_rate: f64,
}

/// Sends `bodies` (whose windows must have closed) to a fresh promgres, then compacts.
fn promgres_storage(
    admin: &str,
    bodies: &[Vec<u8>],
    counts: &[usize],
) -> Result<StorageRun, String> {
    let db = Database::create(admin, "storage")?;
    let mut c = db.client()?;
    // No background compaction while the load (hours of history replayed in seconds) is
    // arriving: a pass in the middle would fold half-sent windows and rewrite their chunks,
    // which measures a backfill, not the steady state. The pass below folds it all at once.
    let server = Server::start(&db, &["--no-compaction"])?;
    let empty = database_bytes(&mut c)?;
    let report = loadgen::send_all(server.addr, bodies, counts, 4);
    if report.non_2xx() > 0 || report.transport_errors > 0 {
        return Err(format!("non-2xx answers: {}", report.text()));
    }
    let samples = counts.iter().sum::<usize>() as f64;
    drop(server);
    let sql = |e: postgres::Error| StoreError::from(e).to_string();
    // Its sessions end a moment after the process: VACUUM below must not meet them.
    let gone = Instant::now();
    while gone.elapsed() < Duration::from_secs(30) {
        let left: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND application_name LIKE 'promgres-%'",
                &[],
            )
            .map_err(sql)?
            .get(0);
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    c.batch_execute("VACUUM ANALYZE").map_err(sql)?;
    let head = database_bytes(&mut c)? - empty;
    let pg_before = postgres_cpu_seconds();
    let cpu_before = cpu_seconds(std::process::id());
    let started = Instant::now();
    let stats = compact_now(&mut c)?;
    let compact_secs = started.elapsed().as_secs_f64();
    let compact_cpu = cpu_seconds(std::process::id()) - cpu_before;
    let compact_pg_cpu = postgres_cpu_seconds() - pg_before;
    promgres::engine::compact::reclaim_head(&mut c).map_err(|e| e.to_string())?;
    c.batch_execute("VACUUM ANALYZE").map_err(sql)?;
    let compacted = database_bytes(&mut c)? - empty;
    let chunk_bytes: i64 = c
        .query_one(
            "SELECT (SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)::int8
                       FROM pg_inherits i WHERE i.inhparent = 'promgres.chunks'::regclass)
                    + pg_total_relation_size('promgres.open_chunks')",
            &[],
        )
        .map_err(sql)?
        .get(0);
    let series_bytes: i64 = c
        .query_one("SELECT pg_total_relation_size('promgres.series')", &[])
        .map_err(sql)?
        .get(0);
    // The SQL decoder's rate over the first 500 series (all of them would take minutes).
    let t = Instant::now();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM prom_samples
              WHERE series_id < (SELECT min(id) + 500 FROM promgres.series)",
            &[],
        )
        .map_err(sql)?
        .get(0);
    let sql_rate = n as f64 / t.elapsed().as_secs_f64();
    let (in_chunks, in_head): (i64, i64) = {
        let row = c
            .query_one(
                "SELECT (SELECT coalesce(sum(samples), 0)::int8 FROM promgres.chunks)
                      + (SELECT coalesce(sum(samples), 0)::int8 FROM promgres.open_chunks),
                        (SELECT count(*) FROM promgres.samples)",
                &[],
            )
            .map_err(sql)?;
        (row.get(0), row.get(1))
    };
    if in_chunks as f64 != samples || in_head != 0 || n == 0 {
        return Err(format!(
            "chunks hold {in_chunks} of {samples} samples, {in_head} left in the head; SQL showed {n}"
        ));
    }
    Ok(StorageRun {
        head_bps: head as f64 / samples,
        compacted_bps: compacted as f64 / samples,
        chunk_bps: chunk_bytes as f64 / samples,
        series_bps: series_bytes as f64 / samples,
        stats,
        compact_secs,
        compact_cpu,
        compact_pg_cpu,
        sql_rate,
    })
}

/// Sends `bodies` to a fresh VictoriaMetrics, flushes it, and returns its data directory's
/// bytes per sample.
fn victoria_storage(bodies: &[Vec<u8>], counts: &[usize]) -> Result<f64, String> {
    let vm = peers::Peer::victoria_metrics()?;
    let report = loadgen::send_all(vm.addr, bodies, counts, 4);
    if report.non_2xx() > 0 || report.transport_errors > 0 {
        return Err(format!(
            "victoria-metrics: non-2xx answers: {}",
            report.text()
        ));
    }
    vm.flush()?;
    Ok(vm.disk_bytes() as f64 / counts.iter().sum::<usize>() as f64)
}

/// Bytes on disk per sample for promgres (rows, then compacted) and VictoriaMetrics on the
/// same loads: the load generator's and real node_exporter output. Both end more than two
/// hours ago, so their windows are closed.
fn bench_storage(admin: &str, results: &mut Results, quick: bool) -> Result<(), String> {
    let (series, scrapes) = if quick { (2_000, 240) } else { (5_000, 1440) };
    let mut w = workload(series, scrapes, 500);
    w.start_ms = now_ms() - 135 * 60_000 - scrapes as i64 * w.scrape_interval_ms;
    let (bodies, counts) = prepare(&w);
    let label = format!("load generator, {}k series x {scrapes}", series / 1000);
    storage_rows(admin, results, &label, &bodies, &counts)?;

    let captures = if quick { 20 } else { 40 };
    let captured = nodedata::capture(captures, Duration::from_millis(250))?;
    let (hosts, scrapes) = if quick { (4, 240) } else { (10, 2880) };
    let start = now_ms() - 135 * 60_000 - scrapes as i64 * 15_000;
    let (bodies, counts) = nodedata::replay(&captured, hosts, scrapes, start, 500);
    let per_host = counts.iter().sum::<usize>() / (hosts * scrapes).max(1);
    let label = format!("real node_exporter output, {hosts} hosts x {per_host} series x {scrapes}");
    storage_rows(admin, results, &label, &bodies, &counts)
}

fn storage_rows(
    admin: &str,
    results: &mut Results,
    label: &str,
    bodies: &[Vec<u8>],
    counts: &[usize],
) -> Result<(), String> {
    let run = promgres_storage(admin, bodies, counts)?;
    let vm = victoria_storage(bodies, counts)?;
    results.add(
        &format!("bytes/sample, {label}: promgres rows -> compacted (chunks + series + rest) | VictoriaMetrics | ratio"),
        format!(
            "{:.1} -> {:.2} ({:.2} + {:.2} + {:.2}) | {vm:.2} | {:.2}x",
            run.head_bps,
            run.compacted_bps,
            run.chunk_bps,
            run.series_bps,
            run.compacted_bps - run.chunk_bps - run.series_bps,
            run.compacted_bps / vm
        ),
        format!("{:.3}", run.compacted_bps / vm),
    );
    results.add(
        &format!("compaction, {label}: samples/s, CPU s per million samples promgres / PostgreSQL"),
        format!(
            "{:.0}, {:.2} / {:.2} ({} chunks)",
            run.stats.samples as f64 / run.compact_secs,
            run.compact_cpu / run.stats.samples.max(1) as f64 * 1e6,
            run.compact_pg_cpu / run.stats.samples.max(1) as f64 * 1e6,
            run.stats.chunks
        ),
        format!("{:.0}", run.stats.samples as f64 / run.compact_secs),
    );
    results.add(
        &format!("SQL view prom_samples over chunks, {label} (samples/s, PL/pgSQL decoder)"),
        format!("{:.0}", run.sql_rate),
        format!("{:.0}", run.sql_rate),
    );
    Ok(())
}

/// Ingest at 500 samples per request, the same bodies to promgres (acks after commit),
/// Prometheus's receiver and VictoriaMetrics, each started fresh for each run; best of 4 and
/// 8 connections.
fn bench_peers(admin: &str, results: &mut Results, quick: bool) -> Result<(), String> {
    let scrapes = if quick { 10 } else { 60 };
    let w = workload(10_000, scrapes, 500);
    let (bodies, counts) = prepare(&w);
    let mut best: Vec<(&str, f64)> = Vec::new();
    for target in ["promgres", "prometheus", "victoria-metrics"] {
        let mut top = 0.0f64;
        for connections in [4, 8] {
            let rate = match target {
                "promgres" => {
                    let db = Database::create(admin, "peers")?;
                    let server = Server::start(&db, &[])?;
                    send_checked(target, server.addr, &bodies, &counts, connections)?
                }
                "prometheus" => {
                    let p = peers::Peer::prometheus()?;
                    send_checked(target, p.addr, &bodies, &counts, connections)?
                }
                _ => {
                    let p = peers::Peer::victoria_metrics()?;
                    send_checked(target, p.addr, &bodies, &counts, connections)?
                }
            };
            println!("  {target}, {connections} connections: {rate:.0} samples/s");
            top = top.max(rate);
        }
        best.push((target, top));
    }
    let rate = |name: &str| best.iter().find(|b| b.0 == name).map_or(0.0, |b| b.1);
    let (ours, prom, vm) = (
        rate("promgres"),
        rate("prometheus"),
        rate("victoria-metrics"),
    );
    results.add(
        &format!("ingest 10k x {scrapes} at 500/req, best of 4/8 conn: promgres | Prometheus 2.42 receiver | VictoriaMetrics (samples/s)"),
        format!("{ours:.0} | {prom:.0} | {vm:.0}"),
        format!("{ours:.0}"),
    );
    results.add(
        "ingest ratios: promgres / Prometheus receiver, promgres / VictoriaMetrics (targets 1.5 and 0.75)",
        format!("{:.2} / {:.2}", ours / prom, ours / vm),
        format!("{:.3}", ours / vm),
    );
    Ok(())
}

fn send_checked(
    target: &str,
    addr: SocketAddr,
    bodies: &[Vec<u8>],
    counts: &[usize],
    connections: usize,
) -> Result<f64, String> {
    let report = loadgen::send_all(addr, bodies, counts, connections);
    let server_errors: usize = report
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    if server_errors > 0 || report.transport_errors > 0 {
        return Err(format!("{target}: errors: {}", report.text()));
    }
    if report.non_2xx() > 0 {
        // Prometheus refuses a sample older than its series' newest (no out-of-order
        // window by default) with 400 when connections overtake one another; only what
        // was acknowledged counts.
        println!(
            "  {target}: {} requests refused: {}",
            report.non_2xx(),
            report.text()
        );
    }
    Ok(report.samples_per_sec())
}

/// One series over many days at 15 s read back through remote read: first as head rows (the
/// layout before the storage engine), then after compaction folded it into chunks; same run,
/// same data, same query.
fn bench_reads_chunks(admin: &str, results: &mut Results, quick: bool) -> Result<(), String> {
    let days: i64 = if quick { 7 } else { 29 };
    let db = Database::create(admin, "readchunks")?;
    let server = Server::start(&db, &[])?;
    let end = now_ms() - 3 * 3_600_000;
    let start = end - days * 86_400_000;
    let n = days * 5760;
    let labels = vec![
        proto::Label {
            name: "__name__".into(),
            value: "bench_long".into(),
        },
        proto::Label {
            name: "job".into(),
            value: "bench".into(),
        },
    ];
    let mut encoder = snap::raw::Encoder::new();
    let mut bodies = Vec::new();
    let mut counts = Vec::new();
    for first in (0..n).step_by(5000) {
        let samples: Vec<proto::Sample> = (first..(first + 5000).min(n))
            .map(|i| proto::Sample {
                // A counter with a varying step, as a real one.
                value: (i * 3 + i % 7) as f64 / 4.0,
                timestamp: start + i * 15_000,
            })
            .collect();
        counts.push(samples.len());
        let raw = proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                labels: labels.clone(),
                samples,
                ..Default::default()
            }],
            metadata: vec![],
        }
        .encode_to_vec();
        bodies.push(encoder.compress_vec(&raw).map_err(|e| e.to_string())?);
    }
    let report = loadgen::send_all(server.addr, &bodies, &counts, 2);
    if report.non_2xx() > 0 || report.transport_errors > 0 {
        return Err(format!("non-2xx answers: {}", report.text()));
    }
    let matchers = vec![matcher(0, "__name__", "bench_long")];
    let (rows_ms, got) = read_latency(server.addr, start, end, matchers.clone(), 5)?;
    let mut c = db.client()?;
    compact_now(&mut c)?;
    let (chunks_ms, got_after) = read_latency(server.addr, start, end, matchers, 5)?;
    if got != n as usize || got_after != n as usize {
        return Err(format!("read {got} then {got_after} of {n} samples"));
    }
    results.add(
        &format!("read: 1 series x {days} days at 15 s, head rows -> chunks (ms, best of 5)"),
        format!(
            "{rows_ms:.1} -> {chunks_ms:.1} ({n} samples, {:.1}x faster)",
            rows_ms / chunks_ms
        ),
        format!("{chunks_ms:.2}"),
    );
    Ok(())
}

/// Compaction beside full ingest, on one database: how fast a pass folds head rows alone and
/// while the load generator sends fresh samples as fast as promgres takes them, what it costs
/// in CPU, and what that means for how far behind compaction runs (its lag).
fn bench_compaction_lag(admin: &str, results: &mut Results, quick: bool) -> Result<(), String> {
    let series = 10_000;
    let db = Database::create(admin, "lag")?;
    let server = Server::start(&db, &[])?;
    let started = Instant::now();
    let mut c = db.client()?;
    // Two backlogs of 15 s scrapes, both older than the cutoff: the first is folded alone, the
    // second while fresh samples (1 s apart, ending now, so none is late) arrive at full speed.
    let backlog = if quick { 20 } else { 60 };
    let mut first = workload(series, backlog, 500);
    first.start_ms = now_ms() - 70 * 60_000;
    let mut second = workload(series, backlog, 500);
    second.start_ms = now_ms() - 40 * 60_000;
    let fresh_scrapes = if quick { 30 } else { 120 };
    let mut fresh = workload(series, fresh_scrapes, 500);
    fresh.scrape_interval_ms = 1_000;
    fresh.start_ms = now_ms() - 2 * fresh_scrapes as i64 * 1_000 - 5_000;
    let (fresh_bodies, fresh_counts) = prepare(&fresh);
    let half = fresh_bodies.len() / 2;
    for w in [&first, &second] {
        let (bodies, counts) = prepare(w);
        send_checked("promgres", server.addr, &bodies, &counts, 8)?;
    }
    // Ingest alone: the first half of the fresh samples.
    let ingest_alone = send_checked(
        "promgres",
        server.addr,
        &fresh_bodies[..half],
        &fresh_counts[..half],
        8,
    )?;
    // Compaction alone, up to the end of the first backlog (an earlier cutoff than the
    // database clock's is always safe).
    let first_end = first.start_ms + backlog as i64 * 15_000;
    let pass = |c: &mut postgres::Client, cutoff: i64| -> Result<(f64, f64, f64, u64), String> {
        let (cpu, pg) = (cpu_seconds(std::process::id()), postgres_cpu_seconds());
        let t = Instant::now();
        let stats =
            promgres::engine::compact(c, cutoff, promgres::engine::Scope::AllDays, &mut |_| true)
                .map_err(|e| e.to_string())?;
        if stats.ranges_skipped > 0 {
            println!(
                "  (a background pass took {} ranges of this one)",
                stats.ranges_skipped
            );
        }
        Ok((
            t.elapsed().as_secs_f64(),
            cpu_seconds(std::process::id()) - cpu,
            postgres_cpu_seconds() - pg,
            stats.samples,
        ))
    };
    let (secs, cpu, pg, folded) = pass(&mut c, first_end + 60_000)?;
    let alone = folded as f64 / secs;
    // Both at once: the compactor on its own thread, the load generator here.
    let uri = db.uri();
    let compactor = std::thread::spawn(move || -> Result<(f64, u64), String> {
        let mut c = postgres::Client::connect(&uri, postgres::NoTls)
            .map_err(|e| StoreError::from(e).to_string())?;
        let t = Instant::now();
        let stats = compact_now(&mut c)?;
        Ok((t.elapsed().as_secs_f64(), stats.samples))
    });
    let ingest_during = send_checked(
        "promgres",
        server.addr,
        &fresh_bodies[half..],
        &fresh_counts[half..],
        8,
    )?;
    let (busy_secs, busy_folded) = compactor
        .join()
        .map_err(|_| "compaction thread panicked".to_string())??;
    let during = busy_folded as f64 / busy_secs;
    if started.elapsed() > Duration::from_secs(30) {
        println!("  (over 30 s: the server's own first pass may have run meanwhile)");
    }
    results.add(
        "compaction alone: samples/s, CPU s per million samples promgres / PostgreSQL",
        format!(
            "{alone:.0}, {:.2} / {:.2}",
            cpu / folded.max(1) as f64 * 1e6,
            pg / folded.max(1) as f64 * 1e6
        ),
        format!("{alone:.0}"),
    );
    results.add(
        "compaction during full ingest: samples/s folded | ingest samples/s (alone -> with compaction)",
        format!("{during:.0} | {ingest_alone:.0} -> {ingest_during:.0}"),
        format!("{during:.0}"),
    );
    // A pass folds one 10-minute slice; ingest at rate R fills it with 600 R samples. Both
    // share the cores, so the highest rate compaction keeps up with is where their CPU
    // shares add up to one.
    let sustained = 1.0 / (1.0 / ingest_alone + 1.0 / alone);
    let pass_secs = 600.0 * sustained / alone;
    results.add(
        "compaction lag: highest ingest compaction keeps up with on these cores (samples/s), lag",
        format!(
            "{sustained:.0} (estimate from the rates alone); lag there 10-20 min + {pass_secs:.0} s a pass; at full ingest ({ingest_during:.0}/s, compaction folding {during:.0}/s) compaction {}",
            if during >= ingest_during { "keeps up" } else { "falls behind: the head grows until ingest slows" }
        ),
        format!("{sustained:.0}"),
    );
    Ok(())
}

/// Runs the whole suite; prints as it goes, then a table, and writes the JSON file.
pub fn run(options: &SuiteOptions) -> Result<(), String> {
    let mut results = Results { rows: Vec::new() };
    let admin = options.admin_uri.as_str();
    let quick = options.quick;
    println!(
        "promgres benchmark suite ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // PROMGRES_BENCH_ONLY=storage, =peers, =reads, =lag or =decode runs that section alone.
    let only = std::env::var("PROMGRES_BENCH_ONLY").unwrap_or_default();
    if only == "decode" {
        bench_decode(&mut results, quick);
        println!("\n| measurement | value |\n|---|---|\n{}", results.text());
        return Ok(());
    }
    if ["storage", "peers", "reads", "lag"].contains(&only.as_str()) {
        match only.as_str() {
            "storage" => bench_storage(admin, &mut results, quick)?,
            "lag" => bench_compaction_lag(admin, &mut results, quick)?,
            "peers" => bench_peers(admin, &mut results, quick)?,
            _ => {
                bench_reads(admin, &mut results, quick)?;
                bench_reads_chunks(admin, &mut results, quick)?
            }
        }
        println!("\n| measurement | value |\n|---|---|\n{}", results.text());
        return Ok(());
    }
    println!("1. decode without the database");
    bench_decode(&mut results, quick);

    println!("2-3. end-to-end ingest (fresh database, synchronous commit, acks after commit) vs binary COPY");
    let small_scrapes = if quick { 10 } else { 60 };
    let mut best_small = (0.0f64, 0usize);
    for per_request in [500, 2000] {
        for connections in [1, 2, 4, 8] {
            let w = workload(10_000, small_scrapes, per_request);
            let r = ingest(admin, &w, connections, &[])?;
            if r.stored != 10_000 * small_scrapes {
                return Err(format!(
                    "stored {} of {} samples",
                    r.stored,
                    10_000 * small_scrapes
                ));
            }
            results.add(
                &format!("ingest 10k series x {small_scrapes}, {per_request}/req, {connections} conn (samples/s)"),
                format!("{:.0} (p99 {:.1} ms)", r.samples_per_sec, r.p99_ms),
                format!("{:.0}", r.samples_per_sec),
            );
            if per_request == 500 && r.samples_per_sec > best_small.0 {
                best_small = (r.samples_per_sec, connections);
            }
        }
    }
    let big_series = if quick { 20_000 } else { 100_000 };
    let big_scrapes = if quick { 5 } else { 30 };
    for per_request in [500, 2000] {
        let w = workload(big_series, big_scrapes, per_request);
        let r = ingest(admin, &w, 4, &[])?;
        results.add(
            &format!(
                "ingest {}k series x {big_scrapes}, {per_request}/req, 4 conn (samples/s)",
                big_series / 1000
            ),
            format!("{:.0} (p99 {:.1} ms)", r.samples_per_sec, r.p99_ms),
            format!("{:.0}", r.samples_per_sec),
        );
    }
    let limit = copy_limit(admin, &workload(10_000, small_scrapes, 500))?;
    results.add(
        "PostgreSQL binary COPY limit, same rows and tables (rows/s)",
        format!("{limit:.0}"),
        format!("{limit:.0}"),
    );
    let ratio = best_small.0 / limit;
    results.add(
        &format!(
            "ratio promgres (10k, 500/req, {} conn) / COPY limit",
            best_small.1
        ),
        format!("{ratio:.2}"),
        format!("{ratio:.3}"),
    );

    println!("4. first-time series creation");
    let w = workload(big_series, 1, 500);
    let r = ingest(admin, &w, 8, &[])?;
    if r.stored != big_series {
        return Err(format!(
            "stored {} of {big_series} new series' samples",
            r.stored
        ));
    }
    results.add(
        &format!(
            "{}k new series, first request to all stored (s)",
            big_series / 1000
        ),
        format!("{:.2}", r.elapsed.as_secs_f64()),
        format!("{:.3}", r.elapsed.as_secs_f64()),
    );

    println!("5-6. HA pair, CPU and memory");
    let mut w = workload(10_000, small_scrapes, 500);
    w.ha_cluster = Some("bench".into());
    w.replicas = 2;
    let r = ingest(admin, &w, 4, &["--high-availability"])?;
    let stored_rate = r.samples_per_sec / 2.0;
    results.add(
        "HA, 2 replicas x 10k series, 500/req, 4 conn: received samples/s",
        format!("{:.0}", r.samples_per_sec),
        format!("{:.0}", r.samples_per_sec),
    );
    results.add(
        "HA: stored samples/s (one replica's copy)",
        format!("{stored_rate:.0}"),
        format!("{stored_rate:.0}"),
    );
    let per_million = |cpu: f64, n: usize| cpu / (n as f64 / 1e6);
    results.add(
        "HA: promgres CPU s per million stored samples",
        format!("{:.2}", per_million(r.promgres_cpu, r.stored)),
        format!("{:.3}", per_million(r.promgres_cpu, r.stored)),
    );
    let w = workload(10_000, small_scrapes, 500);
    let r = ingest(admin, &w, best_small.1, &[])?;
    results.add(
        "promgres CPU s per million samples (10k, 500/req)",
        format!("{:.2}", per_million(r.promgres_cpu, r.stored)),
        format!("{:.3}", per_million(r.promgres_cpu, r.stored)),
    );
    results.add(
        "PostgreSQL CPU s per million samples (same run)",
        format!("{:.2}", per_million(r.postgres_cpu, r.stored)),
        format!("{:.3}", per_million(r.postgres_cpu, r.stored)),
    );
    results.add(
        "promgres peak RSS, 10k series x 60 run (MiB)",
        format!("{:.1}", r.rss as f64 / 1048576.0),
        format!("{}", r.rss),
    );
    // Memory per cached series: two runs of the same shape, 10k and big_series series.
    let small = ingest(admin, &workload(10_000, 2, 2000), 4, &[])?;
    let big = ingest(admin, &workload(big_series, 2, 2000), 4, &[])?;
    results.add(
        &format!(
            "promgres RSS after 10k vs {}k series x 2 (MiB)",
            big_series / 1000
        ),
        format!(
            "{:.1} vs {:.1}",
            small.rss_after as f64 / 1048576.0,
            big.rss_after as f64 / 1048576.0
        ),
        format!("[{},{}]", small.rss_after, big.rss_after),
    );
    let per_series = (big.rss_after as f64 - small.rss_after as f64) / (big_series - 10_000) as f64;
    results.add(
        "promgres RSS growth per active series (bytes)",
        format!("{per_series:.0}"),
        format!("{per_series:.0}"),
    );
    results.add(
        "series cache structure per entry (bytes, from /metrics)",
        format!("{:.0}", big.cache_bytes_per_entry),
        format!("{:.1}", big.cache_bytes_per_entry),
    );

    println!("7. remote read");
    bench_reads(admin, &mut results, quick)?;
    bench_reads_chunks(admin, &mut results, quick)?;

    println!(
        "8. storage: bytes on disk per sample, promgres (rows, compacted) and VictoriaMetrics"
    );
    bench_storage(admin, &mut results, quick)?;

    println!("9. ingest side by side: promgres, Prometheus's receiver, VictoriaMetrics");
    bench_peers(admin, &mut results, quick)?;

    println!("10. compaction beside full ingest: rates, CPU, lag");
    bench_compaction_lag(admin, &mut results, quick)?;

    println!("\n| measurement | value |\n|---|---|\n{}", results.text());
    std::fs::write(&options.json_path, results.json())
        .map_err(|e| format!("cannot write {}: {e}", options.json_path))?;
    println!("JSON: {}", options.json_path);
    Ok(())
}

//! Test support: a database per test (created and dropped), promgres started in-process on
//! an ephemeral port or as a process of its own, a private PostgreSQL, Debian's Prometheus, a
//! minimal HTTP/1.1 client over std's TcpStream, request builders, and scrapers standing in
//! for Prometheus.
#![allow(dead_code)]

use promgres::config::Config;
use promgres::proto::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use promgres::server::Server;
use prost::Message;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The server tests create their databases on: $PROMGRES_TEST_ADMIN_URI or the local one
/// that scripts/ensure-postgres.sh provides.
pub fn admin_uri() -> String {
    std::env::var("PROMGRES_TEST_ADMIN_URI")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database of one test's own, dropped when the value is.
pub struct TestDb {
    pub name: String,
    admin: String,
    /// The role promgres and the tests' clients use: neither superuser nor the database's
    /// owner (docs/operations.md "Grants"); it may create schemas, so promgres migrates.
    pub app_role: String,
}

/// The password of every test's app role (ignored where PostgreSQL trusts local connections).
const APP_PASSWORD: &str = "promgres-test-app";

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub fn new(tag: &str) -> TestDb {
        Self::on(&admin_uri(), tag)
    }

    pub fn on(admin: &str, tag: &str) -> TestDb {
        let name = format!(
            "promgres_t_{tag}_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let mut client = postgres::Client::connect(admin, postgres::NoTls).unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {admin} (run scripts/ensure-postgres.sh): {e}")
        });
        let app_role = format!("{name}_app");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create test database");
        // A statement each: several in one call run as one transaction.
        client
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS {app_role};
                 CREATE ROLE {app_role} LOGIN PASSWORD '{APP_PASSWORD}'
                     NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
                 GRANT CONNECT, CREATE, TEMP ON DATABASE {name} TO {app_role};"
            ))
            .expect("create test database and its role");
        let db = TestDb {
            name,
            admin: admin.to_string(),
            app_role,
        };
        db.admin_client()
            .batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {}", db.app_role))
            .expect("grant CREATE on public");
        db
    }

    /// The app role's settings for this database (promgres runs with these).
    pub fn config(&self) -> postgres::Config {
        let mut c = self.admin_config();
        c.user(&self.app_role);
        c.password(APP_PASSWORD);
        c
    }

    /// A superuser's settings for this database, for what the app role may not do.
    pub fn admin_config(&self) -> postgres::Config {
        let mut c: postgres::Config = self.admin.parse().expect("admin uri");
        c.dbname(&self.name);
        c.connect_timeout(Duration::from_secs(5));
        c
    }

    /// The URI of this database as the app role, for a promgres process.
    pub fn uri(&self) -> String {
        let (base, _) = self.admin.rsplit_once('/').expect("admin uri");
        let (scheme, rest) = base.split_once("://").expect("admin uri scheme");
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        format!(
            "{scheme}://{}:{APP_PASSWORD}@{host}/{}",
            self.app_role, self.name
        )
    }

    pub fn admin_client(&self) -> postgres::Client {
        self.admin_config()
            .connect(postgres::NoTls)
            .expect("connect to test database as admin")
    }

    pub fn client(&self) -> postgres::Client {
        self.config()
            .connect(postgres::NoTls)
            .expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
            let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS {}", self.app_role));
        }
    }
}

/// A test database with promgres serving on it.
pub struct Running {
    pub db: TestDb,
    pub server: Option<Server>,
    pub addr: SocketAddr,
}

impl Running {
    pub fn start(tag: &str) -> Running {
        Self::start_with(tag, |_| {})
    }

    pub fn start_with(tag: &str, tweak: impl FnOnce(&mut Config)) -> Running {
        let db = TestDb::new(tag);
        let mut config = Config::for_database(db.config());
        tweak(&mut config);
        let server = Server::start(&config).expect("promgres starts");
        let addr = server.addr();
        Running {
            db,
            server: Some(server),
            addr,
        }
    }

    pub fn write(&self, req: &WriteRequest) -> Reply {
        post_write(self.addr, &encode(req))
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(10));
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (Connection: close), whole response read.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    exchange(addr, method, path, headers, body, None).map(RawReply::text)
}

/// An answer with its body as bytes (de-chunked).
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    /// The answer with its body as text.
    pub fn text(self) -> Reply {
        Reply {
            status: self.status,
            headers: self.headers,
            body: String::from_utf8_lossy(&self.body).to_string(),
        }
    }
}

/// One HTTP/1.1 request on a fresh connection (Connection: close); reads the whole answer,
/// pausing `pace` between reads of 64 KiB when given (a slow client).
pub fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    pace: Option<Duration>,
) -> std::io::Result<RawReply> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    match pace {
        None => {
            stream.read_to_end(&mut raw)?;
        }
        Some(pause) => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
                std::thread::sleep(pause);
            }
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<RawReply> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(RawReply {
        status,
        head,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

pub const WRITE_HEADERS: &[(&str, &str)] = &[
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("User-Agent", "Prometheus/2.42.0+ds"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

pub fn post_write(addr: SocketAddr, body: &[u8]) -> Reply {
    request(addr, "POST", "/write", WRITE_HEADERS, body).expect("write request")
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"").expect("GET")
}

pub fn encode(req: &WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

pub fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(n, v)| Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

pub fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels(pairs),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

pub fn write_request(timeseries: Vec<TimeSeries>) -> WriteRequest {
    WriteRequest {
        timeseries,
        metadata: vec![],
    }
}

pub fn metadata(metric: &str, kind: i32, help: &str, unit: &str) -> MetricMetadata {
    MetricMetadata {
        r#type: kind,
        metric_family_name: metric.into(),
        help: help.into(),
        unit: unit.into(),
    }
}

/// Every stored (labels json text, time in ms, value bits), sorted.
pub fn stored_samples(client: &mut postgres::Client) -> Vec<(String, i64, u64)> {
    let rows = client
        .query(
            "SELECT s.labels::text, (extract(epoch FROM p.time) * 1000)::bigint, p.value
               FROM prom_samples p JOIN prom_series s USING (series_id)
              ORDER BY 1, 2",
            &[],
        )
        .expect("query samples");
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get::<_, f64>(2).to_bits()))
        .collect()
}

pub fn count(client: &mut postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).expect("count query").get(0)
}

/// A node_exporter-like request: `n_series` series of one scrape at `ts`.
pub fn node_like(n_series: usize, ts: i64, value: f64, tag: &str) -> WriteRequest {
    let timeseries = (0..n_series)
        .map(|i| {
            series(
                &[
                    ("__name__", "node_cpu_seconds_total"),
                    ("cpu", &(i % 64).to_string()),
                    ("instance", &format!("host-{}:9100", i / 64)),
                    ("job", "node"),
                    ("mode", tag),
                ],
                &[(ts, value + i as f64)],
            )
        })
        .collect();
    write_request(timeseries)
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "promgres-{tag}-{}-{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` every 200 ms until it returns Some or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The configuration of a Prometheus HA replica: external labels `cluster` and `__replica__`,
/// scraping `target` every second, remote-writing to `promgres` with short backoffs. Replicas
/// scrape another Prometheus rather than promgres: promgres's own metrics carry `cluster`
/// labels, which Prometheus would keep in place of its external label.
pub fn replica_config(promgres: SocketAddr, target: u16, cluster: &str, replica: &str) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  external_labels:
    cluster: {cluster}
    __replica__: {replica}
scrape_configs:
  - job_name: target
    static_configs:
      - targets: ['127.0.0.1:{target}']
remote_write:
  - url: http://{promgres}/write
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 50ms
      max_backoff: 500ms
"#
    )
}

/// A series read back raw: its labels, and (ms, value bits) of each sample.
pub type RawSeries = (Vec<(String, String)>, Vec<(i64, u64)>);

/// A Prometheus server (Debian's package) killed when dropped.
pub struct Prometheus {
    pub child: std::process::Child,
    pub port: u16,
    pub dir: TempDir,
}

fn prometheus_binary() -> &'static str {
    ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("no prometheus binary: run scripts/ensure-prometheus.sh (make test does)")
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML; `{port}` is replaced by its own port).
    pub fn start(tag: &str, config: &str) -> Prometheus {
        let dir = TempDir::new(tag);
        let port = free_port();
        let config_path = dir.0.join("prometheus.yml");
        std::fs::write(&config_path, config.replace("{port}", &port.to_string()))
            .expect("write config");
        let child = Self::spawn(&dir, port);
        Prometheus { child, port, dir }
    }

    fn spawn(dir: &TempDir, port: u16) -> std::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.0.join("prometheus.log"))
            .expect("log file");
        std::process::Command::new(prometheus_binary())
            .arg(format!(
                "--config.file={}",
                dir.0.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus")
    }

    /// Starts it again (after `kill`) on the same port and data directory: its TSDB, WAL
    /// included, holds what it scraped before.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.dir, self.port);
    }

    /// Sends a signal by name (STOP, CONT).
    pub fn signal(&self, name: &str) {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// Raw samples (ms, value bits) of the series matching `matchers` in [start, end], read
    /// from its own TSDB over remote read, with each series' labels (external ones included).
    pub fn read_raw(
        &self,
        matchers: &[(&str, &str)],
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<RawSeries> {
        use promgres::proto::{LabelMatcher, Query, ReadRequest, ReadResponse};
        let req = ReadRequest {
            queries: vec![Query {
                start_timestamp_ms: start_ms,
                end_timestamp_ms: end_ms,
                matchers: matchers
                    .iter()
                    .map(|(n, v)| LabelMatcher {
                        r#type: 0,
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
            }],
            accepted_response_types: vec![0],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .expect("snappy");
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("addr");
        let answer = exchange(
            addr,
            "POST",
            "/api/v1/read",
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "snappy"),
                ("X-Prometheus-Remote-Read-Version", "0.1.0"),
            ],
            &body,
            None,
        )
        .expect("remote read from prometheus");
        assert_eq!(answer.status, 200, "{}", answer.head);
        let payload = answer.body;
        let decoded = snap::raw::Decoder::new()
            .decompress_vec(&payload)
            .expect("snappy answer");
        let response = ReadResponse::decode(decoded.as_slice()).expect("ReadResponse");
        response
            .results
            .into_iter()
            .flat_map(|r| r.timeseries)
            .map(raw_series)
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("prometheus.log")).unwrap_or_default()
    }

    /// SIGKILL, like a crashed host.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private PostgreSQL server (scripts/pg-scratch.sh), for tests that stop, restart or
/// promote the database without disturbing the shared one; destroyed on drop.
pub struct ScratchPg {
    pub dir: TempDir,
    pub port: u16,
}

impl ScratchPg {
    pub fn script(args: &[&str]) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-scratch.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .args(args)
            .output()
            .expect("run pg-scratch.sh");
        assert!(
            out.status.success(),
            "pg-scratch.sh {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new server (initdb) listening on a free port.
    pub fn new(tag: &str) -> ScratchPg {
        let pg = ScratchPg {
            dir: TempDir::new(tag),
            port: free_port(),
        };
        pg.start();
        pg
    }

    /// A streaming replica of `primary`, running on a free port.
    pub fn replica_of(primary: &ScratchPg, tag: &str) -> ScratchPg {
        let pg = ScratchPg {
            dir: TempDir::new(tag),
            port: free_port(),
        };
        let dir = pg.data_dir();
        Self::script(&[
            "replica",
            &dir,
            &pg.port.to_string(),
            &primary.port.to_string(),
        ]);
        pg
    }

    fn data_dir(&self) -> String {
        // A subdirectory: pg_basebackup wants to create or own it.
        self.dir.0.join("data").to_string_lossy().into_owned()
    }

    pub fn start(&self) {
        Self::script(&["start", &self.data_dir(), &self.port.to_string()]);
    }

    pub fn stop(&self) {
        Self::script(&["stop", &self.data_dir()]);
    }

    pub fn promote(&self) {
        Self::script(&["promote", &self.data_dir()]);
    }

    pub fn admin_uri(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for ScratchPg {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-scratch.sh");
        let _ = std::process::Command::new("bash")
            .arg(script)
            .args(["destroy", &self.data_dir()])
            .output();
    }
}

/// The promgres binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_promgres");

/// The URI of a test database, for a promgres process.
pub fn db_uri(db: &TestDb) -> String {
    db.uri()
}

/// promgres as a process of its own (killed when dropped), listening on a free port, its
/// stderr kept in a file.
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub log: TempDir,
    args: Vec<String>,
    fd_limit: Option<u32>,
}

impl Process {
    /// Starts promgres on `db_uri` with `args` and waits until /healthz answers 200.
    pub fn start(db_uri: &str, args: &[&str]) -> Process {
        Self::start_limited(db_uri, args, None)
    }

    /// Like `start`, with the process's file-descriptor limit lowered to `fd_limit`.
    pub fn start_limited(db_uri: &str, args: &[&str], fd_limit: Option<u32>) -> Process {
        let port = free_port();
        let mut all: Vec<String> = vec![
            "--db-uri".into(),
            db_uri.into(),
            "--web-listen-address".into(),
            format!("127.0.0.1:{port}"),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let log = TempDir::new("proc-log");
        let mut p = Process {
            child: Self::spawn(&all, fd_limit, &log),
            addr: format!("127.0.0.1:{port}").parse().expect("addr"),
            log,
            args: all,
            fd_limit,
        };
        p.wait_healthy();
        p
    }

    fn spawn(args: &[String], fd_limit: Option<u32>, log: &TempDir) -> std::process::Child {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log.0.join("stderr"))
            .expect("log file");
        let mut cmd = match fd_limit {
            Some(n) => {
                let mut c = std::process::Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(BIN);
                c
            }
            None => std::process::Command::new(BIN),
        };
        cmd.args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(stderr))
            .spawn()
            .expect("start promgres")
    }

    fn wait_healthy(&mut self) {
        let addr = self.addr;
        let up = wait_for(Duration::from_secs(20), || {
            request(addr, "GET", "/healthz", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
        if up.is_none() {
            self.kill();
            panic!("promgres on {addr} did not come up: {}", self.stderr());
        }
    }

    /// Starts the process again with the same flags and port (after `kill` or `terminate`).
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.args, self.fd_limit, &self.log);
        self.wait_healthy();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.0.join("stderr")).unwrap_or_default()
    }

    /// Sends a signal by name (STOP, CONT, TERM, KILL).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    pub fn kill(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A line of /proc/<pid>/status, e.g. "Threads" or "VmRSS" (kB), as a number.
    pub fn status_field(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status.lines().find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    }

    /// The value of an unlabelled metric (or the first line starting with `name`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&get(self.addr, "/metrics").body, name)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of the first line of a metrics text that starts with `name` followed by a
/// space or a label set.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            labelled.split_once("} ")?.1
        } else {
            rest.strip_prefix(' ')?
        };
        value.trim().parse().ok()
    })
}

/// An HTTP/1.1 keep-alive connection, for clients that send many requests on one socket
/// as Prometheus does.
pub struct KeepAlive {
    stream: std::io::BufReader<TcpStream>,
    addr: SocketAddr,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> std::io::Result<KeepAlive> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(KeepAlive {
            stream: std::io::BufReader::new(stream),
            addr,
        })
    }

    /// Sends one request and reads its answer (bodies by Content-Length only).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Reply> {
        use std::io::BufRead;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed mid-answer",
                ));
            }
            if let Some((n, v)) = line.split_once(':') {
                if n.trim().eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            raw.extend_from_slice(line.as_bytes());
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body)?;
        raw.extend_from_slice(&body);
        parse_response(&raw).map(RawReply::text)
    }

    pub fn write(&mut self, body: &[u8]) -> std::io::Result<Reply> {
        self.send("POST", "/write", WRITE_HEADERS, body)
    }
}

/// One request on a fresh connection with short timeouts, as a sender behind a load balancer
/// sees it: a frozen promgres is a timeout, not a hang. None when nothing came back.
fn post_briefly(addr: SocketAddr, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut head = format!(
        "POST /write HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in WRITE_HEADERS {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

/// A scrape of `targets` series at `ts`, labelled for `metric` and, with HA, a replica.
fn scrape(metric: &str, ha: Option<(&str, &str)>, ts: i64, targets: usize) -> Vec<u8> {
    let req = write_request(
        (0..targets)
            .map(|i| {
                let target = format!("t{i}");
                let mut labels = vec![("__name__", metric), ("target", target.as_str())];
                if let Some((cluster, replica)) = ha {
                    labels.push(("cluster", cluster));
                    labels.push(("__replica__", replica));
                }
                series(&labels, &[(ts, i as f64)])
            })
            .collect(),
    );
    encode(&req)
}

/// Stored sample times of `metric` -> how many series have a sample at that time.
pub fn stored_by_time(
    c: &mut postgres::Client,
    metric: &str,
) -> std::collections::BTreeMap<i64, i64> {
    c.query(
        "SELECT (extract(epoch FROM p.time) * 1000)::bigint, count(*)
           FROM prom_samples p JOIN prom_series s USING (series_id)
          WHERE s.metric = $1 GROUP BY 1 ORDER BY 1",
        &[&metric],
    )
    .expect("stored")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Every scrape answered 204 is stored whole (`targets` series at its time).
pub fn assert_acknowledged_stored(
    answers: &[(i64, u16)],
    stored: &std::collections::BTreeMap<i64, i64>,
    targets: usize,
) {
    for (ts, status) in answers {
        if *status == 204 {
            assert_eq!(
                stored.get(ts),
                Some(&(targets as i64)),
                "acknowledged scrape at {ts} must be stored whole"
            );
        }
    }
}

/// A decoded series as labels and (ms, value bits).
pub fn raw_series(ts: TimeSeries) -> RawSeries {
    (
        ts.labels.into_iter().map(|l| (l.name, l.value)).collect(),
        ts.samples
            .into_iter()
            .map(|s| (s.timestamp, s.value.to_bits()))
            .collect(),
    )
}

/// The grid senders scrape on, ms.
pub const SCRAPE_GRID_MS: i64 = 250;

/// A sender standing in for one Prometheus: every 250 ms a scrape of `series` targets at
/// `offset` ms past the grid, posted to the first of `targets` that answers 2xx (a load
/// balancer retrying elsewhere, as Prometheus retries 5xx and timeouts). Records (ts, final
/// status; 0 when nothing answered).
pub struct Scraper {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(i64, u16)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scraper {
    pub fn start(
        targets: Vec<SocketAddr>,
        metric: &'static str,
        ha: Option<(&'static str, &'static str)>,
        offset: i64,
        series: usize,
    ) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), answers.clone());
        let thread = std::thread::spawn(move || {
            let mut pick = 0x2545_f491_u64 ^ offset as u64;
            // Bounded: at most 400 scrapes (100 s).
            for _ in 0..400 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let ts = now_ms() / SCRAPE_GRID_MS * SCRAPE_GRID_MS + offset;
                let body = scrape(metric, ha, ts, series);
                pick ^= pick << 13;
                pick ^= pick >> 7;
                pick ^= pick << 17;
                let first = (pick % targets.len() as u64) as usize;
                let mut status = 0;
                for k in 0..targets.len() {
                    let addr = targets[(first + k) % targets.len()];
                    if let Some(st) = post_briefly(addr, &body) {
                        status = st;
                        if (200..300).contains(&st) {
                            break;
                        }
                    }
                }
                a.lock().expect("answers").push((ts, status));
                let next = ts - offset + SCRAPE_GRID_MS;
                std::thread::sleep(Duration::from_millis(
                    u64::try_from(next - now_ms()).unwrap_or(0),
                ));
            }
        });
        Scraper {
            stop,
            answers,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) -> Vec<(i64, u16)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.answers.lock().expect("answers").clone()
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop();
    }
}

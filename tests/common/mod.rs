//! Test support: a database per test (created and dropped), promgres started in-process on
//! an ephemeral port, a minimal HTTP/1.1 client over std's TcpStream, and request builders.
#![allow(dead_code)]

use promgres::config::Config;
use promgres::proto::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use promgres::server::Server;
use prost::Message;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
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
}

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
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create test database");
        TestDb {
            name,
            admin: admin.to_string(),
        }
    }

    pub fn config(&self) -> postgres::Config {
        let mut c: postgres::Config = self.admin.parse().expect("admin uri");
        c.dbname(&self.name);
        c.connect_timeout(Duration::from_secs(5));
        c
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
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Reply> {
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
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
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

/// A Prometheus server (Debian's package) killed when dropped.
pub struct Prometheus {
    pub child: std::process::Child,
    pub port: u16,
    pub dir: TempDir,
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
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("no prometheus binary: run scripts/ensure-prometheus.sh (make test does)");
        let dir = TempDir::new(tag);
        let port = free_port();
        let config_path = dir.0.join("prometheus.yml");
        std::fs::write(&config_path, config.replace("{port}", &port.to_string()))
            .expect("write config");
        let log = std::fs::File::create(dir.0.join("prometheus.log")).expect("log file");
        let child = std::process::Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, port, dir }
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
    let admin = admin_uri();
    let (base, _) = admin.rsplit_once('/').expect("admin uri");
    format!("{base}/{}", db.name)
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
        parse_response(&raw)
    }

    pub fn write(&mut self, body: &[u8]) -> std::io::Result<Reply> {
        self.send("POST", "/write", WRITE_HEADERS, body)
    }
}

//! A remote-write load generator, used by `promgres-bench` and the benchmarks: pre-builds
//! node_exporter-like requests, sends them over keep-alive HTTP/1.1 connections and reports
//! throughput, latency percentiles and non-2xx answers.
//!
//! It talks to promgres only through HTTP, like Prometheus does, so it measures the whole
//! path: decode, queue, writers, PostgreSQL commit.

use promgres::proto::{Label, Sample, TimeSeries, WriteRequest};
use prost::Message;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Workload {
    pub series: usize,
    pub scrapes: usize,
    pub samples_per_request: usize,
    /// Milliseconds between scrapes; timestamps increase strictly per series.
    pub scrape_interval_ms: i64,
    /// Timestamp of the first scrape.
    pub start_ms: i64,
    /// With Some(cluster), every series gets `cluster` and each request is sent once per
    /// replica with its `__replica__` label, like an HA pair.
    pub ha_cluster: Option<String>,
    pub replicas: usize,
}

/// Label sets like node_exporter's: `__name__` and eight more labels.
pub fn series_labels(i: usize) -> Vec<Label> {
    const METRICS: [&str; 8] = [
        "node_cpu_seconds_total",
        "node_network_receive_bytes_total",
        "node_filesystem_avail_bytes",
        "node_disk_io_time_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_netstat_Tcp_InSegs",
        "node_vmstat_pgfault",
        "node_load1",
    ];
    let l = |n: &str, v: String| Label {
        name: n.to_string(),
        value: v,
    };
    vec![
        l("__name__", METRICS[i % METRICS.len()].to_string()),
        l("cpu", (i / 8 % 16).to_string()),
        l("datacenter", format!("dc-{}", i / 4096 % 4)),
        l(
            "device",
            format!("sd{}", (b'a' + (i / 128 % 8) as u8) as char),
        ),
        l(
            "instance",
            format!(
                "10.{}.{}.{}:9100",
                i / 65536 % 256,
                i / 256 % 256,
                i / 128 % 2
            ),
        ),
        l("job", "node".to_string()),
        l(
            "mode",
            ["user", "system", "idle", "iowait"][i / 2 % 4].to_string(),
        ),
        l("rack", format!("r{}", i / 1024 % 32)),
        l("series", i.to_string()),
    ]
}

/// Compressed request bodies in sending order: scrape by scrape, each scrape's series cut
/// into requests of `samples_per_request` samples.
pub fn build_requests(w: &Workload) -> Vec<Vec<u8>> {
    let labels: Vec<Vec<Label>> = (0..w.series).map(series_labels).collect();
    let mut encoder = snap::raw::Encoder::new();
    let mut bodies = Vec::new();
    let per_request = w.samples_per_request.max(1);
    for scrape in 0..w.scrapes {
        let ts = w.start_ms + scrape as i64 * w.scrape_interval_ms;
        for chunk_start in (0..w.series).step_by(per_request) {
            let chunk_end = (chunk_start + per_request).min(w.series);
            let replicas = if w.ha_cluster.is_some() {
                w.replicas.max(1)
            } else {
                1
            };
            for replica in 0..replicas {
                let timeseries = (chunk_start..chunk_end)
                    .map(|i| {
                        let mut labels = labels[i].clone();
                        if let Some(cluster) = &w.ha_cluster {
                            labels.push(Label {
                                name: "cluster".into(),
                                value: cluster.clone(),
                            });
                            labels.push(Label {
                                name: "__replica__".into(),
                                value: format!("replica-{replica}"),
                            });
                            labels.sort_by(|a, b| a.name.cmp(&b.name));
                        }
                        TimeSeries {
                            labels,
                            samples: vec![Sample {
                                value: (scrape * 7 + i) as f64 * 0.5,
                                timestamp: ts,
                            }],
                            ..Default::default()
                        }
                    })
                    .collect();
                let raw = WriteRequest {
                    timeseries,
                    metadata: vec![],
                }
                .encode_to_vec();
                // Encoding an in-memory buffer cannot fail short of the 4 GiB Snappy limit.
                bodies.push(encoder.compress_vec(&raw).unwrap_or_default());
            }
        }
    }
    bodies
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub requests: usize,
    pub samples_acked: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub statuses: BTreeMap<u16, usize>,
    pub transport_errors: usize,
}

impl Report {
    pub fn samples_per_sec(&self) -> f64 {
        self.samples_acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[idx.min(sorted.len() - 1)]
    }

    pub fn non_2xx(&self) -> usize {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn text(&self) -> String {
        format!(
            "{} requests, {} samples acknowledged in {:.2} s: {:.0} samples/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; statuses {:?}; transport errors {}",
            self.requests,
            self.samples_acked,
            self.elapsed.as_secs_f64(),
            self.samples_per_sec(),
            self.percentile(0.5).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.percentile(1.0).as_secs_f64() * 1e3,
            self.statuses,
            self.transport_errors
        )
    }

    pub fn json(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("\"{s}\":{n}"))
            .collect();
        format!(
            "{{\"requests\":{},\"samples_acked\":{},\"elapsed_s\":{:.4},\"samples_per_s\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"statuses\":{{{}}},\"transport_errors\":{}}}",
            self.requests,
            self.samples_acked,
            self.elapsed.as_secs_f64(),
            self.samples_per_sec(),
            self.percentile(0.5).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.percentile(1.0).as_secs_f64() * 1e3,
            statuses.join(","),
            self.transport_errors
        )
    }
}

/// Sends `bodies` (each carrying `samples_per_body` samples) over `connections` keep-alive
/// connections, each request once, and waits for every answer.
pub fn send_all(
    addr: SocketAddr,
    bodies: &[Vec<u8>],
    samples_per_body: &[usize],
    connections: usize,
) -> Report {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let parts: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..connections.max(1))
            .map(|_| {
                let next = &next;
                s.spawn(move || {
                    let mut report = Report::default();
                    let mut conn: Option<Connection> = None;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else { break };
                        let sent = Instant::now();
                        let result = match conn.as_mut() {
                            Some(c) => c.post("/api/v1/write", body),
                            None => Connection::open(addr).and_then(|mut c| {
                                let r = c.post("/api/v1/write", body);
                                conn = Some(c);
                                r
                            }),
                        };
                        report.requests += 1;
                        match result {
                            Ok(status) => {
                                report.latencies.push(sent.elapsed());
                                *report.statuses.entry(status).or_insert(0) += 1;
                                if (200..300).contains(&status) {
                                    report.samples_acked +=
                                        samples_per_body.get(i).copied().unwrap_or(0);
                                }
                            }
                            Err(_) => {
                                report.transport_errors += 1;
                                conn = None;
                            }
                        }
                    }
                    report
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut total = Report {
        elapsed: started.elapsed(),
        ..Report::default()
    };
    for p in parts {
        total.requests += p.requests;
        total.samples_acked += p.samples_acked;
        total.latencies.extend(p.latencies);
        total.transport_errors += p.transport_errors;
        for (s, n) in p.statuses {
            *total.statuses.entry(s).or_insert(0) += n;
        }
    }
    total
}

/// A keep-alive HTTP/1.1 connection that POSTs remote-write bodies.
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Connection {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            host: addr.to_string(),
        })
    }

    /// POSTs a remote-write body; returns the status, having read the whole response.
    pub fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<u16> {
        self.exchange("POST", path, body).map(|(status, _)| status)
    }

    /// POSTs a body and returns the status and the response body.
    pub fn post_with_body(&mut self, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.exchange("POST", path, body)
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<u16> {
        self.exchange("GET", path, b"").map(|(status, _)| status)
    }

    /// GETs a path; returns the status and the body.
    pub fn exchange_get(&mut self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        self.exchange("GET", path, b"")
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\nUser-Agent: promgres-bench\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        self.writer.write_all(head.as_bytes())?;
        self.writer.write_all(body)?;
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(bad("connection closed in headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().map_err(|_| bad("bad content-length"))?;
                } else if n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                    chunked = true;
                }
            }
        }
        let mut response = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size =
                    usize::from_str_radix(line.trim(), 16).map_err(|_| bad("bad chunk size"))?;
                let mut chunk = vec![0u8; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                response.extend_from_slice(&chunk[..size]);
            }
        } else {
            response.resize(length, 0);
            self.reader.read_exact(&mut response)?;
        }
        Ok((status, response))
    }
}

//! The peers `make bench` measures promgres against in the same run, each started fresh by
//! the bench from Debian's packages: Prometheus 2.42's remote-write receiver and
//! VictoriaMetrics. Each runs in a temporary directory of its own, removed afterwards.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Peer {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

fn scratch(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("promgres-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn binary(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

impl Peer {
    /// Prometheus with its remote-write receiver on, scraping nothing.
    pub fn prometheus() -> Result<Peer, String> {
        let bin = binary(&["/usr/bin/prometheus", "/usr/local/bin/prometheus"])
            .ok_or("no prometheus binary (apt-get install prometheus)")?;
        let dir = scratch("prometheus")?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n").map_err(|e| format!("{e}"))?;
        let addr = free_addr()?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start prometheus: {e}"))?;
        Peer {
            name: "prometheus",
            addr,
            child,
            dir,
        }
        .ready("/-/ready")
    }

    /// VictoriaMetrics single-node, keeping data for a hundred years (the bench writes
    /// hours-old samples).
    pub fn victoria_metrics() -> Result<Peer, String> {
        let bin = binary(&[
            "/usr/bin/victoria-metrics",
            "/usr/local/bin/victoria-metrics",
        ])
        .ok_or("no victoria-metrics binary (apt-get install victoria-metrics)")?;
        let dir = scratch("victoria")?;
        let addr = free_addr()?;
        let child = Command::new(bin)
            .arg(format!("-storageDataPath={}", dir.join("data").display()))
            .arg(format!("-httpListenAddr={addr}"))
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start victoria-metrics: {e}"))?;
        Peer {
            name: "victoria-metrics",
            addr,
            child,
            dir,
        }
        .ready("/health")
    }

    fn ready(mut self, path: &str) -> Result<Peer, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited at start: {status}", self.name));
            }
            let ok = crate::loadgen::Connection::open(self.addr)
                .and_then(|mut c| c.get(path))
                .is_ok_and(|s| s == 200);
            if ok {
                return Ok(self);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("{} not ready within 30 s", self.name))
    }

    /// VictoriaMetrics: writes its in-memory buffers to disk (`/internal/force_flush`), as
    /// the bytes-per-sample figure needs.
    pub fn flush(&self) -> Result<(), String> {
        let status = crate::loadgen::Connection::open(self.addr)
            .and_then(|mut c| c.get("/internal/force_flush"))
            .map_err(|e| format!("force_flush: {e}"))?;
        if status != 200 {
            return Err(format!("force_flush answered {status}"));
        }
        // Let the flushed parts settle (background merges start at once).
        std::thread::sleep(Duration::from_secs(3));
        Ok(())
    }

    /// Bytes its data directory holds on disk.
    pub fn disk_bytes(&self) -> u64 {
        fn walk(p: &std::path::Path) -> u64 {
            let Ok(meta) = std::fs::symlink_metadata(p) else {
                return 0;
            };
            if meta.is_dir() {
                std::fs::read_dir(p)
                    .map(|entries| entries.flatten().map(|e| walk(&e.path())).sum())
                    .unwrap_or(0)
            } else {
                meta.len()
            }
        }
        walk(&self.dir.join("data"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

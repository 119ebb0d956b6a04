//! A real Prometheus (Debian's package) scrapes itself and remote-writes to promgres: its
//! series, samples and metadata appear in SQL, and stored values match what Prometheus holds.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn prometheus_remote_write_lands_in_sql() {
    let run = Running::start("prometheus");
    let config = format!(
        r#"global:
  scrape_interval: 1s
  external_labels:
    cluster: e2e
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:{{port}}']
remote_write:
  - url: http://{addr}/write
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
    metadata_config:
      send_interval: 2s
"#,
        addr = run.addr
    );
    let prometheus = Prometheus::start("prometheus", &config);
    let port = prometheus.port;
    let mut c = run.db.client();
    let found = wait_for(Duration::from_secs(60), || {
        let up = count(&mut c, "SELECT count(*) FROM prom_samples p JOIN prom_series s USING (series_id) WHERE s.metric = 'up' AND s.labels->>'job' = 'prometheus' AND p.value = 1");
        let series = count(&mut c, "SELECT count(*) FROM prom_series");
        let metadata = count(&mut c, "SELECT count(*) FROM prom_metadata");
        (up >= 3 && series > 100 && metadata > 50).then_some((up, series, metadata))
    });
    let log = prometheus.log();
    let (up, series, metadata) =
        found.unwrap_or_else(|| panic!("Prometheus' data did not arrive in 60 s; its log:\n{log}"));
    eprintln!("stored: {up} samples of up, {series} series, {metadata} metadata rows");

    assert!(
        count(&mut c, "SELECT count(*) FROM prom_metric.up") >= up,
        "the per-metric view shows the samples"
    );
    // Every series carries the external label, and the build info matches Prometheus' own.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM prom_series WHERE labels->>'cluster' IS DISTINCT FROM 'e2e'"
        ),
        0
    );
    let version: String = c
        .query_one(
            "SELECT labels->>'version' FROM prom_series WHERE metric = 'prometheus_build_info'",
            &[],
        )
        .expect("build info series")
        .get(0);
    let reported = Command::new("prometheus")
        .arg("--version")
        .output()
        .expect("version");
    let reported = String::from_utf8_lossy(&reported.stdout).to_string()
        + &String::from_utf8_lossy(&reported.stderr);
    assert!(
        reported.contains(&version),
        "stored version {version} vs {reported}"
    );
    // Prometheus reports no failed or dropped samples towards promgres.
    let metrics = request(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        "GET",
        "/metrics",
        &[],
        b"",
    )
    .expect("prometheus metrics")
    .body;
    for line in metrics.lines().filter(|l| {
        l.starts_with("prometheus_remote_storage_samples_failed_total")
            || l.starts_with("prometheus_remote_storage_samples_dropped_total")
    }) {
        assert!(line.ends_with(" 0"), "Prometheus reports failures: {line}");
    }
    let stored = get(run.addr, "/metrics").body;
    assert!(
        stored.contains("promgres_http_requests_total{path=\"/write\",code=\"204\"}"),
        "{stored}"
    );
}

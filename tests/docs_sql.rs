//! Runs every SQL example of docs/sql.md against data written through /write, with Grafana's
//! macros expanded the way its PostgreSQL data source does, and checks each returns rows.

mod common;

use common::*;

fn examples() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/sql.md"))
        .expect("docs/sql.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

fn expand_grafana_macros(sql: &str) -> String {
    sql.replace(
        "$__timeGroupAlias(time, '1m')",
        "floor(extract(epoch from time)/60)*60 AS \"time\"",
    )
    .replace(
        "$__timeFilter(time)",
        "time BETWEEN now() - interval '6 hours' AND now()",
    )
}

#[test]
fn every_sql_example_runs_and_returns_rows() {
    // With HA on, so the lease examples have rows; series without HA labels are unaffected.
    let run = Running::start_with("docs", |c| {
        c.ha = Some(promgres::ha::HaConfig {
            cluster_label: "cluster".into(),
            replica_label: "__replica__".into(),
            failover_timeout_ms: 30_000,
            interval_ms: 10_000,
            buffer_bytes: 1 << 20,
        })
    });
    let t0 = now_ms() - 30 * 60_000;
    let mut timeseries = Vec::new();
    for host in 0..3 {
        let instance = format!("host-{host}:9100");
        let load: Vec<(i64, f64)> = (0..20)
            .map(|i| (t0 + i * 15_000, 0.5 + i as f64 / 10.0))
            .collect();
        timeseries.push(series(
            &[
                ("__name__", "node_load1"),
                ("job", "node"),
                ("instance", &instance),
            ],
            &load,
        ));
        let cpu: Vec<(i64, f64)> = (0..20)
            .map(|i| (t0 + i * 15_000, 100.0 + i as f64))
            .collect();
        timeseries.push(series(
            &[
                ("__name__", "node_cpu_seconds_total"),
                ("job", "node"),
                ("instance", &instance),
                ("mode", "idle"),
                ("cpu", "0"),
            ],
            &cpu,
        ));
    }
    // A counter that resets half way, and ends with a stale marker.
    let mut counter: Vec<(i64, f64)> = (0..40)
        .map(|i| (t0 + i * 15_000, ((i % 20) * 10) as f64))
        .collect();
    counter.push((t0 + 40 * 15_000, f64::from_bits(0x7ff0_0000_0000_0002)));
    timeseries.push(series(
        &[
            ("__name__", "http_requests_total"),
            ("job", "api"),
            ("handler", "/query"),
        ],
        &counter,
    ));
    // An HA pair's sample, so the lease examples have rows.
    timeseries.push(series(
        &[
            ("__name__", "up"),
            ("cluster", "prod"),
            ("__replica__", "prod-0"),
        ],
        &[(t0, 1.0)],
    ));
    // A native histogram of request durations (schema 0: buckets (0.125, 0.25], (0.25, 0.5],
    // (0.5, 1]) with exemplars, as Prometheus sends with send_native_histograms/send_exemplars.
    let mut durations = series(
        &[
            ("__name__", "http_request_duration_seconds"),
            ("job", "api"),
            ("handler", "/query"),
        ],
        &[],
    );
    durations.histograms = (0..20)
        .map(|i| {
            let buckets = [2 + i as u64, 5 + 2 * i as u64, 1 + i as u64];
            promgres::proto::Histogram {
                count: Some(promgres::proto::HistogramCount::Int(buckets.iter().sum())),
                sum: 3.0 + i as f64,
                schema: 0,
                positive_spans: vec![promgres::proto::BucketSpan {
                    offset: -2,
                    length: 3,
                }],
                positive_deltas: vec![
                    buckets[0] as i64,
                    buckets[1] as i64 - buckets[0] as i64,
                    buckets[2] as i64 - buckets[1] as i64,
                ],
                reset_hint: 2,
                timestamp: t0 + i * 15_000,
                ..Default::default()
            }
        })
        .collect();
    durations.exemplars = (0..3)
        .map(|i| promgres::proto::Exemplar {
            labels: labels(&[("trace_id", &format!("4bf92f3577b34da6a3ce929d0e0e473{i}"))]),
            value: 0.3 + i as f64 / 10.0,
            timestamp: t0 + i * 15_000 + 7,
        })
        .collect();
    timeseries.push(durations);
    let mut req = write_request(timeseries);
    req.metadata = vec![
        metadata("node_load1", 2, "1m load average.", ""),
        metadata("http_requests_total", 1, "Requests served.", ""),
    ];
    let reply = run.write(&req);
    assert_eq!(reply.status, 204, "{}", reply.body);

    let mut c = run.db.client();
    let examples = examples();
    assert!(examples.len() >= 6, "docs/sql.md has its examples");
    for sql in examples {
        let sql = expand_grafana_macros(&sql);
        let rows = c
            .query(sql.as_str(), &[])
            .unwrap_or_else(|e| panic!("example fails: {e}\n{sql}"));
        assert!(!rows.is_empty(), "example returns no rows:\n{sql}");
    }
    // The rate example sees the reset: no negative rates.
    let rate_sql = examples_containing("requests_per_second");
    for row in c.query(rate_sql.as_str(), &[]).expect("rate") {
        let rate: f64 = row.get(2);
        assert!(
            rate >= 0.0,
            "rate {rate} must not be negative across a counter reset"
        );
    }
}

fn examples_containing(needle: &str) -> String {
    examples()
        .into_iter()
        .find(|e| e.contains(needle))
        .expect("example")
}

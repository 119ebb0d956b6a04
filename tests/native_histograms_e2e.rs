//! A real Prometheus 2.42 (Debian's package) scrapes a test exporter serving native
//! histograms (schemas 0 and 3) and a counter with exemplars over the protobuf exposition
//! format, and remote-writes them to promgres: the histograms, exemplars and samples promgres
//! stores read back equal to what Prometheus's own TSDB holds (its HTTP API), and equal to
//! what the exporter served.

mod common;
#[path = "common/exporter.rs"]
mod exporter;

use common::*;
use exporter::{Exporter, Served, COUNTER_NAME, GAUGE_NAME, HISTOGRAM_NAME, SCHEMAS};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Every wait of the test together stays within this.
const BUDGET: Duration = Duration::from_secs(60);
/// Histogram samples both sides must have, at least, per series.
const MIN_COMMON: usize = 5;

#[test]
fn native_histograms_and_exemplars_match_prometheus() {
    let started = Instant::now();
    let start_ms = now_ms();
    let run = Running::start("nativehist");
    let exporter = Exporter::start();
    let prometheus = start_prometheus(run.addr, exporter.addr);
    let api: SocketAddr = format!("127.0.0.1:{}", prometheus.port)
        .parse()
        .expect("addr");

    // 3a. Prometheus holds a few scrapes of histograms of both schemas.
    let held = wait_for(BUDGET, || {
        let h = prometheus_histograms(api, now_ms()).ok()?;
        let enough = SCHEMAS.iter().all(|s| {
            h.get(s)
                .is_some_and(|(_, points)| points.len() > MIN_COMMON)
        });
        enough.then_some(h)
    });
    let held = held.unwrap_or_else(|| {
        panic!(
            "Prometheus did not hold {} histograms per schema in {BUDGET:?} ({} scrapes served, \
             refused Accept headers {:?}); its log:\n{}",
            MIN_COMMON + 1,
            exporter.scrapes(),
            exporter.refused(),
            prometheus.log()
        )
    });
    let end_ms = now_ms();
    for (schema, (labels, points)) in &held {
        eprintln!(
            "Prometheus holds {} histograms of schema {schema} ({labels:?}); last: {:?}",
            points.len(),
            points.last()
        );
    }
    // Prometheus' view of the window [start_ms, end_ms]: fixed once the scrape in flight at
    // `end_ms` is in, which the wait below gives it time for.
    let mut c = run.db.client();
    let remaining = BUDGET.saturating_sub(started.elapsed());
    let mut last_error = String::new();
    let caught_up = wait_for(remaining, || {
        let expected = Expected::read(api, &prometheus, start_ms, end_ms).ok()?;
        match Stored::read(&mut c, end_ms) {
            Ok(stored) => stored.covers(&expected).then_some(()),
            Err(e) => {
                last_error = e;
                None
            }
        }
    });
    let expected = Expected::read(api, &prometheus, start_ms, end_ms)
        .unwrap_or_else(|e| panic!("read Prometheus: {e}"));
    expected.print();
    if caught_up.is_none() {
        eprintln!(
            "promgres did not catch up with Prometheus in {remaining:?} (last error: {last_error}); \
             comparing what it has"
        );
    }
    let stored = Stored::read(&mut c, end_ms).unwrap_or_else(|e| {
        panic!(
            "reading promgres's views failed: {e}\nPrometheus' log:\n{}",
            prometheus.log()
        )
    });

    // 3b. What promgres stored equals what Prometheus holds.
    compare_histograms(&expected, &stored);
    compare_exemplars(&expected, &stored);
    compare_floats(&expected, &stored);
    // 3c. What promgres's remote read answers equals it too.
    compare_remote_read_histograms(run.addr, &expected, start_ms, end_ms);
    assert_no_remote_write_failures(api);
    eprintln!(
        "equal: {} scrapes served, {} histogram samples, {} exemplars, {} float samples",
        exporter.scrapes(),
        expected
            .histograms
            .values()
            .map(|(_, p)| p.len())
            .sum::<usize>(),
        expected.exemplars.len(),
        expected.floats.values().map(Vec::len).sum::<usize>()
    );
}

/// Prometheus with native histograms and exemplar storage: `common::Prometheus::start` takes
/// no flags, so it is spawned here the same way.
fn start_prometheus(promgres: SocketAddr, exporter: SocketAddr) -> Prometheus {
    let dir = TempDir::new("nativehist-prom");
    let port = free_port();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: exporter
    static_configs:
      - targets: ['{exporter}']
remote_write:
  - url: http://{promgres}/write
    send_exemplars: true
    send_native_histograms: true
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 50ms
      max_backoff: 500ms
"#
    );
    std::fs::write(dir.0.join("prometheus.yml"), config).expect("write config");
    let log = std::fs::File::create(dir.0.join("prometheus.log")).expect("log file");
    let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("no prometheus binary: run scripts/ensure-prometheus.sh (make test does)");
    let child = std::process::Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.0.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.0.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--enable-feature=exemplar-storage,native-histograms")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    Prometheus { child, port, dir }
}

/// A histogram as Prometheus's API shows it: time (ms), count, sum, and its non-empty buckets
/// in ascending order as (boundary rule, lower, upper, count).
#[derive(Clone, Debug)]
struct ApiHistogram {
    ts: i64,
    count: f64,
    sum: f64,
    buckets: Vec<(i64, f64, f64, f64)>,
}

/// A series' labels without `__name__`.
type Labels = BTreeMap<String, String>;

/// schema -> (labels, histograms in time order).
type HistogramsBySchema = BTreeMap<i32, (Labels, Vec<ApiHistogram>)>;

/// An exemplar: series metric and labels, time (ms), trace_id, value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ExemplarKey {
    metric: String,
    labels: Labels,
    ts: i64,
    trace_id: String,
}

/// What Prometheus holds in the window.
struct Expected {
    histograms: HistogramsBySchema,
    /// Exemplars of the counter and of the histograms -> value bits.
    exemplars: BTreeMap<ExemplarKey, u64>,
    /// The counter's and the gauge's series, from Prometheus' remote read.
    floats: FloatSeries,
}

/// (metric, labels) -> (ms, value bits).
type FloatSeries = BTreeMap<(String, Labels), Vec<(i64, u64)>>;

impl Expected {
    fn read(
        api: SocketAddr,
        prometheus: &Prometheus,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Expected, String> {
        let histograms = prometheus_histograms(api, end_ms)?;
        let mut exemplars = BTreeMap::new();
        for metric in [COUNTER_NAME, HISTOGRAM_NAME] {
            let path = format!(
                "/api/v1/query_exemplars?query={}&start={}&end={}",
                metric,
                seconds(start_ms),
                seconds(end_ms)
            );
            for series in api_get(api, &path)?.get("data").arr() {
                let labels = labels_of(series.get("seriesLabels"));
                for e in series.get("exemplars").arr() {
                    let key = ExemplarKey {
                        metric: metric.to_string(),
                        labels: labels.clone(),
                        ts: e.get("timestamp").millis()?,
                        trace_id: e.get("labels").get("trace_id").str().to_string(),
                    };
                    exemplars.insert(key, e.get("value").float()?.to_bits());
                }
            }
        }
        let mut floats = FloatSeries::new();
        for metric in [COUNTER_NAME, GAUGE_NAME] {
            for (labels, samples) in prometheus.read_raw(&[("__name__", metric)], start_ms, end_ms)
            {
                floats.insert((metric.to_string(), without_name(labels)), samples);
            }
        }
        Ok(Expected {
            histograms,
            exemplars,
            floats,
        })
    }

    fn print(&self) {
        for (schema, (labels, points)) in &self.histograms {
            eprintln!("Prometheus, schema {schema} {labels:?}:");
            for p in points {
                eprintln!(
                    "  {} count {} sum {} buckets {:?}",
                    p.ts, p.count, p.sum, p.buckets
                );
            }
        }
        eprintln!("Prometheus exemplars:");
        for (k, v) in &self.exemplars {
            eprintln!(
                "  {} {} trace_id={} value {}",
                k.metric,
                k.ts,
                k.trace_id,
                f64::from_bits(*v)
            );
        }
        for ((metric, labels), samples) in &self.floats {
            let values: Vec<(i64, f64)> = samples
                .iter()
                .map(|&(ts, bits)| (ts, f64::from_bits(bits)))
                .collect();
            eprintln!("Prometheus {metric} {labels:?}: {values:?}");
        }
    }
}

/// Prometheus's histograms of the last 5 minutes at `at_ms`, by the `schema` label.
fn prometheus_histograms(api: SocketAddr, at_ms: i64) -> Result<HistogramsBySchema, String> {
    let path = format!(
        "/api/v1/query?query={}&time={}",
        percent_encode(&format!("{HISTOGRAM_NAME}[5m]")),
        seconds(at_ms)
    );
    let answer = api_get(api, &path)?;
    let mut out = BTreeMap::new();
    for series in answer.get("data").get("result").arr() {
        let labels = labels_of(series.get("metric"));
        let schema: i32 = labels
            .get("schema")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("a series without a schema label: {labels:?}"))?;
        let mut points = Vec::new();
        for point in series.get("histograms").arr() {
            let h = point.idx(1);
            let mut buckets = Vec::new();
            for b in h.get("buckets").arr() {
                buckets.push((
                    b.idx(0).int()?,
                    b.idx(1).float()?,
                    b.idx(2).float()?,
                    b.idx(3).float()?,
                ));
            }
            points.push(ApiHistogram {
                ts: point.idx(0).millis()?,
                count: h.get("count").float()?,
                sum: h.get("sum").float()?,
                buckets,
            });
        }
        if !series.get("values").arr().is_empty() {
            return Err(format!("float samples in a histogram series: {labels:?}"));
        }
        out.insert(schema, (labels, points));
    }
    Ok(out)
}

/// A row of `prom_histograms`.
#[derive(Clone, Debug)]
struct StoredHistogram {
    is_float: bool,
    count: f64,
    sum: f64,
    schema: i32,
    zero_threshold: f64,
    zero_count: f64,
    negative_spans: Vec<i32>,
    negative_buckets: Vec<f64>,
    positive_spans: Vec<i32>,
    positive_buckets: Vec<f64>,
    reset_hint: String,
    custom_values: Option<Vec<f64>>,
}

/// schema -> (labels, ms -> histogram).
type StoredHistograms = BTreeMap<i32, (Labels, BTreeMap<i64, StoredHistogram>)>;

/// (schema, ms) -> (lower, upper, count) in ascending order.
type StoredBuckets = BTreeMap<(i32, i64), Vec<(f64, f64, f64)>>;

/// What promgres holds up to `end_ms`, read through its SQL views.
struct Stored {
    histograms: StoredHistograms,
    buckets: StoredBuckets,
    exemplars: BTreeMap<ExemplarKey, u64>,
    floats: FloatSeries,
}

const HISTOGRAMS_SQL: &str = "
SELECT s.labels::text, (extract(epoch FROM h.time) * 1000)::bigint, h.is_float, h.count, h.sum,
       h.schema, h.zero_threshold, h.zero_count, h.negative_spans, h.negative_buckets,
       h.positive_spans, h.positive_buckets, h.reset_hint, h.custom_values
  FROM prom_histograms h JOIN prom_series s USING (series_id)
 WHERE s.metric = $1 AND h.time <= to_timestamp($2::float8 / 1000)
 ORDER BY 1, 2";

const BUCKETS_SQL: &str = "
SELECT s.labels::text, (extract(epoch FROM b.time) * 1000)::bigint, b.lower, b.upper, b.count
  FROM prom_histogram_buckets b JOIN prom_series s USING (series_id)
 WHERE s.metric = $1 AND b.time <= to_timestamp($2::float8 / 1000)
 ORDER BY 1, 2, 3";

const EXEMPLARS_SQL: &str = "
SELECT s.metric, s.labels::text, (extract(epoch FROM e.time) * 1000)::bigint, e.value,
       e.exemplar_labels::text
  FROM prom_exemplars e JOIN prom_series s USING (series_id)
 WHERE s.metric IN ($1, $2) AND e.time <= to_timestamp($3::float8 / 1000)
 ORDER BY 1, 2, 3";

const SAMPLES_SQL: &str = "
SELECT s.metric, s.labels::text, (extract(epoch FROM p.time) * 1000)::bigint, p.value
  FROM prom_samples p JOIN prom_series s USING (series_id)
 WHERE s.metric IN ($1, $2) AND p.time <= to_timestamp($3::float8 / 1000)
 ORDER BY 1, 2, 3";

impl Stored {
    fn read(c: &mut postgres::Client, end_ms: i64) -> Result<Stored, String> {
        let end = end_ms as f64;
        let err = |what: &str, e: postgres::Error| match e.as_db_error() {
            Some(db) => format!("{what}: {}: {}", db.code().code(), db.message()),
            None => format!("{what}: {e}"),
        };
        let mut histograms = StoredHistograms::new();
        for r in c
            .query(HISTOGRAMS_SQL, &[&HISTOGRAM_NAME, &end])
            .map_err(|e| err(HISTOGRAMS_SQL, e))?
        {
            let labels = without_name_map(parse_labels_json(r.get(0))?);
            let schema = schema_label(&labels)?;
            let h = StoredHistogram {
                is_float: r.get(2),
                count: r.get(3),
                sum: r.get(4),
                schema: r.get(5),
                zero_threshold: r.get(6),
                zero_count: r.get(7),
                negative_spans: r.get(8),
                negative_buckets: r.get(9),
                positive_spans: r.get(10),
                positive_buckets: r.get(11),
                reset_hint: r.get(12),
                custom_values: r.get(13),
            };
            histograms
                .entry(schema)
                .or_insert_with(|| (labels, BTreeMap::new()))
                .1
                .insert(r.get(1), h);
        }
        let mut buckets = StoredBuckets::new();
        for r in c
            .query(BUCKETS_SQL, &[&HISTOGRAM_NAME, &end])
            .map_err(|e| err(BUCKETS_SQL, e))?
        {
            let schema = schema_label(&parse_labels_json(r.get(0))?)?;
            buckets
                .entry((schema, r.get(1)))
                .or_default()
                .push((r.get(2), r.get(3), r.get(4)));
        }
        let mut exemplars = BTreeMap::new();
        for r in c
            .query(EXEMPLARS_SQL, &[&COUNTER_NAME, &HISTOGRAM_NAME, &end])
            .map_err(|e| err(EXEMPLARS_SQL, e))?
        {
            let exemplar_labels = parse_labels_json(r.get(4))?;
            let key = ExemplarKey {
                metric: r.get(0),
                labels: without_name_map(parse_labels_json(r.get(1))?),
                ts: r.get(2),
                trace_id: exemplar_labels.get("trace_id").cloned().unwrap_or_default(),
            };
            exemplars.insert(key, r.get::<_, f64>(3).to_bits());
        }
        let mut floats = FloatSeries::new();
        for r in c
            .query(SAMPLES_SQL, &[&COUNTER_NAME, &GAUGE_NAME, &end])
            .map_err(|e| err(SAMPLES_SQL, e))?
        {
            floats
                .entry((r.get(0), without_name_map(parse_labels_json(r.get(1))?)))
                .or_default()
                .push((r.get(2), r.get::<_, f64>(3).to_bits()));
        }
        Ok(Stored {
            histograms,
            buckets,
            exemplars,
            floats,
        })
    }

    /// Whether promgres has every histogram, exemplar and float sample Prometheus holds.
    fn covers(&self, expected: &Expected) -> bool {
        let histograms = expected.histograms.iter().all(|(schema, (_, points))| {
            self.histograms
                .get(schema)
                .is_some_and(|(_, stored)| points.iter().all(|p| stored.contains_key(&p.ts)))
        });
        let exemplars = expected
            .exemplars
            .keys()
            .all(|k| self.exemplars.contains_key(k));
        let floats = expected.floats.iter().all(|(series, samples)| {
            self.floats.get(series).is_some_and(|stored| {
                let times: BTreeSet<i64> = stored.iter().map(|s| s.0).collect();
                samples.iter().all(|s| times.contains(&s.0))
            })
        });
        histograms && exemplars && floats
    }
}

/// The timestamps to compare: those both have. Requires at least `MIN_COMMON` of them, that
/// promgres has every time Prometheus has up to the last one promgres received, and that
/// promgres has nothing Prometheus does not.
fn common_times(what: &str, prometheus: &[i64], stored: &BTreeSet<i64>) -> Vec<i64> {
    let held: BTreeSet<i64> = prometheus.iter().copied().collect();
    let invented: Vec<_> = stored.difference(&held).collect();
    assert!(
        invented.is_empty(),
        "{what}: promgres has times Prometheus does not: {invented:?} (Prometheus: {held:?})"
    );
    let last = stored.iter().next_back().copied().unwrap_or(i64::MIN);
    let missing: Vec<_> = held
        .iter()
        .filter(|t| **t <= last && !stored.contains(t))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: promgres lacks times Prometheus has before its last one ({last}): {missing:?}"
    );
    let common: Vec<i64> = held.intersection(stored).copied().collect();
    assert!(
        common.len() >= MIN_COMMON,
        "{what}: only {} of Prometheus' {} times are in promgres (stored: {stored:?})",
        common.len(),
        held.len()
    );
    common
}

fn compare_histograms(expected: &Expected, stored: &Stored) {
    for (schema, (labels, points)) in &expected.histograms {
        let what = format!("{HISTOGRAM_NAME} schema {schema}");
        let Some((stored_labels, rows)) = stored.histograms.get(schema) else {
            panic!(
                "{what}: no rows in prom_histograms (series in promgres: {:?})",
                stored.histograms.keys().collect::<Vec<_>>()
            );
        };
        assert_eq!(stored_labels, labels, "{what}: series labels");
        let times: Vec<i64> = points.iter().map(|p| p.ts).collect();
        let common = common_times(&what, &times, &rows.keys().copied().collect());
        let mut hints = BTreeSet::new();
        let mut inexact_bounds = 0;
        for p in points.iter().filter(|p| common.contains(&p.ts)) {
            let row = &rows[&p.ts];
            let at = format!("{what} at {}", p.ts);
            assert_eq!(
                row.count.to_bits(),
                p.count.to_bits(),
                "{at}: count {row:?}"
            );
            assert_eq!(row.sum.to_bits(), p.sum.to_bits(), "{at}: sum {row:?}");
            // The row as the exporter served it, told by its count.
            let n = exporter::scrape_of_count(*schema, p.count as u64)
                .unwrap_or_else(|| panic!("{at}: count {} was never served", p.count));
            assert_served(&at, row, &exporter::served_histogram(*schema, n));
            hints.insert(row.reset_hint.clone());
            // Every bucket as Prometheus bounds it; the API leaves out empty buckets.
            let listed: Vec<(f64, f64, f64)> = stored
                .buckets
                .get(&(*schema, p.ts))
                .map(|b| b.iter().copied().filter(|b| b.2 != 0.0).collect())
                .unwrap_or_default();
            assert_eq!(
                listed.len(),
                p.buckets.len(),
                "{at}: prom_histogram_buckets {listed:?} vs Prometheus {:?}",
                p.buckets
            );
            for (mine, theirs) in listed.iter().zip(&p.buckets) {
                let (_, lower, upper, count) = *theirs;
                inexact_bounds += usize::from(mine.0 != lower) + usize::from(mine.1 != upper);
                let bounds_equal = if *schema == 0 {
                    mine.0 == lower && mine.1 == upper
                } else {
                    close(mine.0, lower) && close(mine.1, upper)
                };
                assert!(
                    bounds_equal && mine.2.to_bits() == count.to_bits(),
                    "{at}: bucket {mine:?} vs Prometheus {theirs:?}\n all: {listed:?}\n vs {:?}",
                    p.buckets
                );
            }
        }
        eprintln!(
            "{what}: {} histograms equal (reset hints {hints:?}, {inexact_bounds} bucket \
             bounds not bit-equal)",
            common.len()
        );
    }
}

/// Relative difference within 1e-12 (bounds computed another way than Go's table).
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn assert_served(at: &str, row: &StoredHistogram, served: &Served) {
    let flat = |spans: &[(i32, u32)]| -> Vec<i32> {
        spans
            .iter()
            .flat_map(|&(offset, length)| [offset, length as i32])
            .collect()
    };
    let floats = |counts: &[u64]| -> Vec<f64> { counts.iter().map(|&c| c as f64).collect() };
    assert!(!row.is_float, "{at}: integer histogram stored as float");
    assert_eq!(row.schema, served.schema, "{at}: schema");
    assert_eq!(
        row.zero_threshold.to_bits(),
        served.zero_threshold.to_bits(),
        "{at}: zero threshold"
    );
    assert_eq!(row.zero_count, served.zero_count as f64, "{at}: zero count");
    assert_eq!(
        row.negative_spans,
        flat(&served.negative_spans),
        "{at}: negative spans"
    );
    assert_eq!(
        row.negative_buckets,
        floats(&served.negative),
        "{at}: negative buckets"
    );
    assert_eq!(
        row.positive_spans,
        flat(&served.positive_spans),
        "{at}: positive spans"
    );
    assert_eq!(
        row.positive_buckets,
        floats(&served.positive),
        "{at}: positive buckets"
    );
    assert!(
        row.custom_values.as_ref().is_none_or(Vec::is_empty),
        "{at}: custom values {:?}",
        row.custom_values
    );
}

fn compare_exemplars(expected: &Expected, stored: &Stored) {
    for metric in [COUNTER_NAME, HISTOGRAM_NAME] {
        let theirs: Vec<_> = expected
            .exemplars
            .iter()
            .filter(|(k, _)| k.metric == metric)
            .collect();
        assert!(
            theirs.len() >= MIN_COMMON,
            "Prometheus holds only {} exemplars of {metric}",
            theirs.len()
        );
        // Exemplars are sent in time order: compare up to the last one promgres received.
        let last = stored
            .exemplars
            .keys()
            .filter(|k| k.metric == metric)
            .map(|k| k.ts)
            .max()
            .unwrap_or(i64::MIN);
        let mut compared = 0;
        for (key, value) in theirs.iter().filter(|(k, _)| k.ts <= last) {
            let mine = stored.exemplars.get(key).unwrap_or_else(|| {
                panic!(
                    "exemplar {key:?} is not in prom_exemplars; promgres has {:?}",
                    stored
                        .exemplars
                        .keys()
                        .filter(|k| k.metric == metric)
                        .collect::<Vec<_>>()
                )
            });
            assert_eq!(
                mine,
                *value,
                "exemplar {key:?}: value {} vs Prometheus {}",
                f64::from_bits(*mine),
                f64::from_bits(**value)
            );
            compared += 1;
        }
        let invented: Vec<_> = stored
            .exemplars
            .keys()
            .filter(|k| k.metric == metric && !expected.exemplars.contains_key(k))
            .collect();
        assert!(
            invented.is_empty(),
            "promgres has exemplars Prometheus does not: {invented:?}"
        );
        assert!(
            compared >= MIN_COMMON,
            "only {compared} exemplars of {metric} in promgres"
        );
        eprintln!("{metric}: {compared} exemplars equal");
    }
}

fn compare_floats(expected: &Expected, stored: &Stored) {
    for metric in [COUNTER_NAME, GAUGE_NAME] {
        assert!(
            expected.floats.keys().any(|(m, _)| m == metric),
            "Prometheus has no {metric}"
        );
    }
    for ((metric, labels), samples) in &expected.floats {
        let what = format!("{metric} {labels:?}");
        let mine: BTreeMap<i64, u64> = stored
            .floats
            .get(&(metric.clone(), labels.clone()))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let times: Vec<i64> = samples.iter().map(|s| s.0).collect();
        let common = common_times(&what, &times, &mine.keys().copied().collect());
        let served = if metric == COUNTER_NAME {
            exporter::counter_value
        } else {
            exporter::gauge_value
        };
        for (ts, bits) in samples.iter().filter(|s| common.contains(&s.0)) {
            assert_eq!(
                mine[ts],
                *bits,
                "{what} at {ts}: {} vs Prometheus {}",
                f64::from_bits(mine[ts]),
                f64::from_bits(*bits)
            );
            assert!(
                (1..100_000).any(|n| served(n).to_bits() == *bits),
                "{what} at {ts}: {} was never served",
                f64::from_bits(*bits)
            );
        }
        eprintln!("{what}: {} samples equal", common.len());
    }
}

/// Prometheus reports nothing failed or dropped towards promgres.
fn assert_no_remote_write_failures(api: SocketAddr) {
    let metrics = request(api, "GET", "/metrics", &[], b"")
        .expect("prometheus metrics")
        .body;
    for line in metrics.lines().filter(|l| {
        ["samples", "exemplars", "histograms"].iter().any(|kind| {
            l.starts_with(&format!("prometheus_remote_storage_{kind}_failed_total"))
                || l.starts_with(&format!("prometheus_remote_storage_{kind}_dropped_total"))
        })
    }) {
        assert!(line.ends_with(" 0"), "Prometheus reports failures: {line}");
    }
}

// ---------------------------------------------------------------------------------------
// Remote read of histograms from promgres (SAMPLES answers, `TimeSeries.histograms`).
// Decoded with messages of this file's own, from prompb types.proto of v2.42, so promgres's
// answer is not read back through promgres's own declarations. Prometheus 2.42's remote
// read answers no histograms ("TODO(beorn7): Add Histogram support" in
// storage/remote/codec.go), so the reference is its query API (`Expected`).
// ---------------------------------------------------------------------------------------

mod wire {
    //! prompb's read answer with histograms (types.proto, remote.proto of Prometheus 2.42).

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadResponse {
        #[prost(message, repeated, tag = "1")]
        pub results: Vec<QueryResult>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryResult {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<promgres::proto::Label>,
        #[prost(message, repeated, tag = "4")]
        pub histograms: Vec<Histogram>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, optional, tag = "1")]
        pub count_int: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub count_float: Option<f64>,
        #[prost(double, tag = "3")]
        pub sum: f64,
        #[prost(sint32, tag = "4")]
        pub schema: i32,
        #[prost(double, tag = "5")]
        pub zero_threshold: f64,
        #[prost(uint64, optional, tag = "6")]
        pub zero_count_int: Option<u64>,
        #[prost(double, optional, tag = "7")]
        pub zero_count_float: Option<f64>,
        #[prost(message, repeated, tag = "8")]
        pub negative_spans: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "9")]
        pub negative_deltas: Vec<i64>,
        #[prost(double, repeated, tag = "10")]
        pub negative_counts: Vec<f64>,
        #[prost(message, repeated, tag = "11")]
        pub positive_spans: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "12")]
        pub positive_deltas: Vec<i64>,
        #[prost(double, repeated, tag = "13")]
        pub positive_counts: Vec<f64>,
        #[prost(int32, tag = "14")]
        pub reset_hint: i32,
        #[prost(int64, tag = "15")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, tag = "1")]
        pub offset: i32,
        #[prost(uint32, tag = "2")]
        pub length: u32,
    }
}

/// Absolute bucket counts from a histogram's deltas, or its float counts.
fn absolute(deltas: &[i64], counts: &[f64]) -> Vec<f64> {
    if deltas.is_empty() {
        return counts.to_vec();
    }
    let mut running = 0i64;
    deltas
        .iter()
        .map(|d| {
            running += d;
            running as f64
        })
        .collect()
}

/// promgres's remote read (SAMPLES) of the histogram series answers, for every
/// time Prometheus holds in the window, the histogram the exporter served: count and sum as
/// Prometheus's API shows them, spans and absolute buckets as served.
fn compare_remote_read_histograms(
    promgres: SocketAddr,
    expected: &Expected,
    start_ms: i64,
    end_ms: i64,
) {
    use promgres::proto::{LabelMatcher, Query, ReadRequest};
    use prost::Message;
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: start_ms,
            end_timestamp_ms: end_ms,
            matchers: vec![LabelMatcher {
                r#type: 0,
                name: "__name__".into(),
                value: HISTOGRAM_NAME.into(),
            }],
        }],
        accepted_response_types: vec![0],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    let answer = exchange(
        promgres,
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
    .expect("remote read from promgres");
    assert_eq!(answer.status, 200, "{}", answer.head);
    let decoded = snap::raw::Decoder::new()
        .decompress_vec(&answer.body)
        .expect("snappy answer");
    let response = wire::ReadResponse::decode(decoded.as_slice()).expect("ReadResponse");
    let mut read: BTreeMap<i32, BTreeMap<i64, wire::Histogram>> = BTreeMap::new();
    for series in response.results.into_iter().flat_map(|r| r.timeseries) {
        let labels: Labels = series
            .labels
            .iter()
            .filter(|l| l.name != "__name__")
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        let schema = schema_label(&labels).expect("schema label");
        read.entry(schema)
            .or_default()
            .extend(series.histograms.into_iter().map(|h| (h.timestamp, h)));
    }
    for (schema, (_, points)) in &expected.histograms {
        let what = format!("remote read of {HISTOGRAM_NAME} schema {schema}");
        let got = read.remove(schema).unwrap_or_default();
        let times: Vec<i64> = points.iter().map(|p| p.ts).collect();
        let common = common_times(&what, &times, &got.keys().copied().collect());
        for p in points.iter().filter(|p| common.contains(&p.ts)) {
            let h = &got[&p.ts];
            let at = format!("{what} at {}", p.ts);
            let count = h
                .count_int
                .map(|c| c as f64)
                .or(h.count_float)
                .unwrap_or(0.0);
            assert_eq!(count.to_bits(), p.count.to_bits(), "{at}: count");
            assert_eq!(h.sum.to_bits(), p.sum.to_bits(), "{at}: sum");
            let n = exporter::scrape_of_count(*schema, p.count as u64).expect("served count");
            let served = exporter::served_histogram(*schema, n);
            let spans = |s: &[wire::BucketSpan]| -> Vec<(i32, u32)> {
                s.iter().map(|s| (s.offset, s.length)).collect()
            };
            let floats = |c: &[u64]| -> Vec<f64> { c.iter().map(|&c| c as f64).collect() };
            assert_eq!(h.schema, *schema, "{at}");
            assert_eq!(
                h.zero_threshold.to_bits(),
                served.zero_threshold.to_bits(),
                "{at}"
            );
            assert_eq!(
                h.zero_count_int
                    .map(|c| c as f64)
                    .or(h.zero_count_float)
                    .unwrap_or(0.0),
                served.zero_count as f64,
                "{at}: zero count"
            );
            assert_eq!(spans(&h.negative_spans), served.negative_spans, "{at}");
            assert_eq!(spans(&h.positive_spans), served.positive_spans, "{at}");
            assert_eq!(
                absolute(&h.negative_deltas, &h.negative_counts),
                floats(&served.negative),
                "{at}"
            );
            assert_eq!(
                absolute(&h.positive_deltas, &h.positive_counts),
                floats(&served.positive),
                "{at}"
            );
        }
        eprintln!("{what}: {} histograms equal", common.len());
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus's HTTP API and a minimal JSON reader (the crate has no JSON dependency).
// ---------------------------------------------------------------------------------------

fn api_get(api: SocketAddr, path: &str) -> Result<Json, String> {
    let reply = request(api, "GET", path, &[], b"").map_err(|e| format!("GET {path}: {e}"))?;
    if reply.status != 200 {
        return Err(format!("GET {path}: {} {}", reply.status, reply.body));
    }
    let json = Json::parse(&reply.body).map_err(|e| format!("GET {path}: {e}: {}", reply.body))?;
    if json.get("status").str() != "success" {
        return Err(format!("GET {path}: {}", reply.body));
    }
    Ok(json)
}

/// Milliseconds as the API's seconds with a fraction.
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn labels_of(object: &Json) -> Labels {
    match object {
        Json::Obj(fields) => fields
            .iter()
            .filter(|(k, _)| k != "__name__")
            .map(|(k, v)| (k.clone(), v.str().to_string()))
            .collect(),
        _ => Labels::new(),
    }
}

fn parse_labels_json(text: &str) -> Result<Labels, String> {
    let json = Json::parse(text)?;
    Ok(match &json {
        Json::Obj(fields) => fields
            .iter()
            .map(|(k, v)| (k.clone(), v.str().to_string()))
            .collect(),
        _ => return Err(format!("labels are not an object: {text}")),
    })
}

fn without_name(labels: Vec<(String, String)>) -> Labels {
    labels
        .into_iter()
        .filter(|(k, _)| k != "__name__")
        .collect()
}

fn without_name_map(mut labels: Labels) -> Labels {
    labels.remove("__name__");
    labels
}

fn schema_label(labels: &Labels) -> Result<i32, String> {
    labels
        .get("schema")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no schema label in {labels:?}"))
}

/// A JSON value; numbers keep their text, so times convert to ms exactly.
#[derive(Clone, Debug)]
enum Json {
    Null,
    Bool,
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

static NULL: Json = Json::Null;

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = JsonParser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing text at {}", p.i));
        }
        Ok(v)
    }

    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }

    fn idx(&self, i: usize) -> &Json {
        match self {
            Json::Arr(items) => items.get(i).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(items) => items,
            _ => &[],
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) | Json::Num(s) => s,
            _ => "",
        }
    }

    /// A float from a number or from the API's quoted values ("1.5", "NaN", "+Inf").
    fn float(&self) -> Result<f64, String> {
        let s = self.str();
        s.parse().map_err(|_| format!("not a float: {self:?}"))
    }

    fn int(&self) -> Result<i64, String> {
        self.str()
            .parse()
            .map_err(|_| format!("not an integer: {self:?}"))
    }

    /// Seconds with up to 3 decimals (the API's times) as milliseconds, exactly.
    fn millis(&self) -> Result<i64, String> {
        let s = self.str();
        let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
        if fraction.len() > 3 || whole.is_empty() {
            return Err(format!("not a time in ms: {s}"));
        }
        let whole: i64 = whole.parse().map_err(|_| format!("not a time: {s}"))?;
        let fraction: i64 = format!("{fraction:0<3}")
            .parse()
            .map_err(|_| format!("not a time: {s}"))?;
        Ok(whole * 1000 + if whole < 0 { -fraction } else { fraction })
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at {}", b as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.eat(b':')?;
                    fields.push((key, self.value()?));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return Err(format!("bad object at {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("bad array at {}", self.i)),
                    }
                }
            }
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.word("true", Json::Bool),
            Some(b'f') => self.word("false", Json::Bool),
            Some(b'n') => self.word("null", Json::Null),
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'
                    )
                {
                    self.i += 1;
                }
                if start == self.i {
                    return Err(format!("unexpected byte at {}", self.i));
                }
                Ok(Json::Num(
                    String::from_utf8_lossy(&self.s[start..self.i]).to_string(),
                ))
            }
            None => Err("unexpected end".to_string()),
        }
    }

    fn word(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(value)
        } else {
            Err(format!("bad literal at {}", self.i))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.s.get(self.i) != Some(&b'"') {
            return Err(format!("expected a string at {}", self.i));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("unterminated escape")?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("short \\u")?;
                            self.i += 4;
                            let code = u32::from_str_radix(&String::from_utf8_lossy(hex), 16)
                                .map_err(|_| "bad \\u")?;
                            let c = char::from_u32(code).unwrap_or('\u{fffd}');
                            out.extend_from_slice(c.to_string().as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

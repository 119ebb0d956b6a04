//! Real node_exporter data for the bytes-per-sample figure: a node_exporter (Debian's
//! `prometheus-node-exporter`) is started and scraped a few dozen times in quick succession;
//! its own output is then replayed as many hosts x many 15 s scrapes. Counters continue by
//! repeating the deltas they showed (they keep rising, as counters do); other series play
//! their captured values forwards and backwards (no jumps a real gauge would not make).
//! Timestamps carry a few milliseconds of jitter, as real scrapes do.

use promgres::proto::{Label, Sample, TimeSeries, WriteRequest};
use prost::Message;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One parsed sample line: sorted labels (with `__name__`) and the value.
type Scrape = BTreeMap<LabelPairs, f64>;
type LabelPairs = Vec<(String, String)>;

/// Parses the Prometheus text format (what node_exporter serves) into series and values.
pub fn parse_text(text: &str) -> Scrape {
    let mut out = Scrape::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_end, mut labels, rest) = match line.find('{') {
            Some(brace) => {
                let Some((labels, rest)) = parse_labels(&line[brace + 1..]) else {
                    continue;
                };
                (brace, labels, rest)
            }
            None => match line.find(' ') {
                Some(space) => (space, Vec::new(), &line[space..]),
                None => continue,
            },
        };
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        labels.push(("__name__".to_string(), line[..name_end].to_string()));
        labels.sort();
        out.insert(labels, value);
    }
    out
}

/// Parses `a="x",b="y"} rest`; returns the labels and what follows the brace.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().to_string();
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in chars {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    other => other,
                });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(eq + 1 + i + 1);
                break;
            } else {
                value.push(c);
            }
        }
        labels.push((name, value));
        rest = &rest[end?..];
    }
}

/// Starts node_exporter, scrapes it `count` times `gap` apart, stops it.
pub fn capture(count: usize, gap: Duration) -> Result<Vec<Scrape>, String> {
    let bin = [
        "/usr/bin/prometheus-node-exporter",
        "/usr/local/bin/node_exporter",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .ok_or("no node_exporter (apt-get install prometheus-node-exporter)")?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start node_exporter: {e}"))?;
    let mut scrapes = Vec::new();
    let mut result = Ok(());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while scrapes.len() < count {
        let got =
            crate::loadgen::Connection::open(addr).and_then(|mut c| c.exchange_get("/metrics"));
        match got {
            Ok((200, body)) => {
                scrapes.push(parse_text(&String::from_utf8_lossy(&body)));
                std::thread::sleep(gap);
            }
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => {
                result = Err("node_exporter did not answer".to_string());
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    result.map(|_| scrapes)
}

/// Request bodies (Snappy + protobuf, `per_request` samples each) replaying the captured
/// scrapes as `hosts` hosts x `scrapes` scrapes 15 s apart from `start_ms`; and the number
/// of samples each body holds.
pub fn replay(
    captured: &[Scrape],
    hosts: usize,
    scrapes: usize,
    start_ms: i64,
    per_request: usize,
) -> (Vec<Vec<u8>>, Vec<usize>) {
    // Series present in every capture, with their captured values in order.
    let Some(first) = captured.first() else {
        return (Vec::new(), Vec::new());
    };
    let series: Vec<(&LabelPairs, Vec<f64>)> = first
        .keys()
        .filter_map(|k| {
            let values: Option<Vec<f64>> = captured.iter().map(|s| s.get(k).copied()).collect();
            values.map(|v| (k, v))
        })
        .collect();
    let n = captured.len();
    // Decimals the series' captured values show (node_exporter prints short decimals; the
    // extension must not add float noise they never have).
    let decimals = |values: &[f64]| -> i32 {
        values
            .iter()
            .map(|v| {
                let t = format!("{v}");
                t.split_once('.').map_or(0, |(_, f)| f.len() as i32)
            })
            .max()
            .unwrap_or(0)
    };
    let value_at = |values: &[f64], counter: bool, s: usize| -> f64 {
        if counter {
            let (round, i) = (s / n, s % n);
            let raw = values[i] + round as f64 * (values[n - 1] - values[0]);
            let d = decimals(values);
            if d > 0 && d <= 9 {
                let scale = 10f64.powi(d);
                (raw * scale).round() / scale
            } else {
                raw
            }
        } else {
            // Forwards then backwards: 0..n-1, n-1..0, ...
            let period = 2 * n;
            let i = s % period;
            values[if i < n { i } else { period - 1 - i }]
        }
    };
    let counters: Vec<bool> = series
        .iter()
        .map(|(labels, v)| {
            let name = labels
                .iter()
                .find(|(k, _)| k == "__name__")
                .map_or("", |(_, v)| v.as_str());
            (name.ends_with("_total") || name.ends_with("_seconds_total"))
                && v.windows(2).all(|w| w[1] >= w[0])
        })
        .collect();
    let mut encoder = snap::raw::Encoder::new();
    let (mut bodies, mut counts) = (Vec::new(), Vec::new());
    let mut batch: Vec<TimeSeries> = Vec::new();
    let mut flush = |batch: &mut Vec<TimeSeries>| {
        if batch.is_empty() {
            return;
        }
        counts.push(batch.len());
        let raw = WriteRequest {
            timeseries: std::mem::take(batch),
            metadata: vec![],
        }
        .encode_to_vec();
        bodies.push(encoder.compress_vec(&raw).unwrap_or_default());
    };
    for s in 0..scrapes {
        for h in 0..hosts {
            // A few ms of jitter per scrape (splitmix64 of the scrape), the same for every
            // series of one scrape: not periodic, so no compressor gets it for free.
            let mut z = (s as u64 * 1_000_003 + h as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let jitter = ((z ^ (z >> 31)) % 5) as i64;
            let ts = start_ms + s as i64 * 15_000 + jitter;
            let instance = format!("host-{h}:9100");
            for ((labels, values), counter) in series.iter().zip(&counters) {
                let mut ls: Vec<Label> = labels
                    .iter()
                    .map(|(k, v)| Label {
                        name: k.clone(),
                        value: v.clone(),
                    })
                    .collect();
                ls.push(Label {
                    name: "instance".into(),
                    value: instance.clone(),
                });
                ls.push(Label {
                    name: "job".into(),
                    value: "node".into(),
                });
                ls.sort_by(|a, b| a.name.cmp(&b.name));
                batch.push(TimeSeries {
                    labels: ls,
                    samples: vec![Sample {
                        // Each host starts its replay at another capture.
                        value: value_at(values, *counter, s + h),
                        timestamp: ts,
                    }],
                    ..Default::default()
                });
                if batch.len() >= per_request {
                    flush(&mut batch);
                }
            }
        }
    }
    flush(&mut batch);
    (bodies, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let s = parse_text(
            "# HELP x y\nnode_load1 0.5\nnode_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 123.25\nweird{a=\"q\\\"uote,}\"} NaN\n",
        );
        assert_eq!(s.len(), 3);
        let key = vec![
            ("__name__".to_string(), "node_cpu_seconds_total".to_string()),
            ("cpu".to_string(), "0".to_string()),
            ("mode".to_string(), "idle".to_string()),
        ];
        assert_eq!(s.get(&key), Some(&123.25));
        assert!(s
            .keys()
            .any(|k| k.contains(&("a".to_string(), "q\"uote,}".to_string()))));
    }
}

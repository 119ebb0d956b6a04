//! Remote-write 2.0 decoding (`io.prometheus.write.v2.Request`, spec 2.0-rc.4): from a
//! Snappy-compressed body to the same [`WriteBatch`] as 1.0, under the same budget and the
//! same validation rules (`decode`).
//!
//! A 2.0 request interns every string in one symbol table and refers to it by index. This
//! module owns what is particular to that: the symbol table's rules, bounds-checked
//! references, and per-series metadata turned into one `Metadata` entry per metric name. The
//! resolved label text goes into one shared string as in 1.0; since a reference can repeat a
//! long symbol many times, the text is charged against the memory budget as it grows.

use crate::decode::wire::{self, each_field, Field};
use crate::decode::{self, DecodeError, Limits, ParsedSeries, WriteBatch};
use crate::proto;
use std::collections::HashSet;

/// In-memory cost of a symbol (a `&str` into the request).
const SYMBOL_COST: usize = 16;

/// Decodes and validates a remote-write 2.0 body. `now_ms` is the receiver's clock. Refuses
/// the whole request at the first problem, like [`decode::decode_write`]; the start
/// timestamps (per sample and histogram, and the older per-series `created_timestamp`) are
/// accepted and ignored.
pub fn decode_write_v2(
    body: &[u8],
    limits: Limits,
    now_ms: i64,
) -> Result<WriteBatch, DecodeError> {
    let raw = decode::decompress_within_budget(body, limits.max_decoded_bytes, estimate_bytes)?;
    let budget = decode::memory_budget(limits.max_decoded_bytes);
    let parsed = parse_request(&raw, budget).map_err(as_v2)?;
    decode::validate_parsed(parsed, limits, now_ms)
}

/// The shared wire walk words its errors for 1.0; name the 2.0 message instead.
fn as_v2(e: DecodeError) -> DecodeError {
    match e {
        DecodeError::BadProtobuf(e) => DecodeError::BadProtobufV2(e),
        e => e,
    }
}

fn symbols_error(what: impl Into<String>) -> DecodeError {
    DecodeError::InvalidSymbols(what.into())
}

/// The request's symbol table: every entry valid UTF-8, the first one "".
struct Symbols<'a>(Vec<&'a str>);

impl<'a> Symbols<'a> {
    fn read(raw: &'a [u8]) -> Result<Symbols<'a>, DecodeError> {
        let mut symbols = Vec::new();
        let mut v1_fields = false;
        each_field(raw, |field, value| match (field, value) {
            (4, Field::Bytes(b)) => {
                let s = std::str::from_utf8(b).map_err(|_| {
                    symbols_error(format!("symbol {} is not valid UTF-8", symbols.len()))
                })?;
                symbols.push(s);
                Ok(())
            }
            (5, Field::Bytes(_)) => Ok(()),
            (4 | 5, _) => Err(wire::bad("wrong wire type in a request")),
            (1..=3, _) => {
                v1_fields = true;
                Ok(())
            }
            _ => Ok(()),
        })?;
        match symbols.first() {
            None if v1_fields => Err(symbols_error(
                "the request has no symbols (field 4) but fields reserved in 2.0: is it a remote write 1.0 body sent as 2.0?",
            )),
            None => Err(symbols_error("the request has no symbols (field 4)")),
            Some(first) if !first.is_empty() => Err(symbols_error(format!(
                "the first symbol must be \"\", not {:?}",
                first.chars().take(64).collect::<String>()
            ))),
            Some(_) => Ok(Symbols(symbols)),
        }
    }

    fn get(&self, reference: u64, what: &str) -> Result<&'a str, DecodeError> {
        usize::try_from(reference)
            .ok()
            .and_then(|i| self.0.get(i))
            .copied()
            .ok_or_else(|| {
                symbols_error(format!(
                    "{what} refers to symbol {reference}, but there are {}",
                    self.0.len()
                ))
            })
    }
}

/// Memory the parsed request takes beyond what the allocation-free estimate saw: the label,
/// exemplar and metadata text that references copy out of the symbol table.
struct Budget {
    used: usize,
    limit: usize,
}

impl Budget {
    fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(DecodeError::TooManyElements {
                estimated: self.used,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

/// Calls `on_ref` for each element of a repeated `uint32` field, packed or not.
fn each_ref(
    value: Field<'_>,
    mut on_ref: impl FnMut(u64) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    match value {
        Field::Varint(r) => on_ref(r),
        Field::Bytes(packed) => {
            let mut pos = 0;
            while pos < packed.len() {
                on_ref(wire::varint(packed, &mut pos)?)?;
            }
            Ok(())
        }
        _ => Err(wire::bad("wrong wire type for symbol references")),
    }
}

/// A series' labels or an exemplar's, as (name, value) pairs of symbols.
#[derive(Default)]
struct RefPairs<'a> {
    pending_name: Option<&'a str>,
}

impl<'a> RefPairs<'a> {
    /// Takes one reference; returns a complete pair every second call.
    fn push(
        &mut self,
        symbols: &Symbols<'a>,
        reference: u64,
        what: &str,
    ) -> Result<Option<(&'a str, &'a str)>, DecodeError> {
        let symbol = symbols.get(reference, what)?;
        Ok(match self.pending_name.take() {
            None => {
                self.pending_name = Some(symbol);
                None
            }
            Some(name) => Some((name, symbol)),
        })
    }

    fn finish(self, what: &str) -> Result<(), DecodeError> {
        match self.pending_name {
            Some(_) => Err(symbols_error(format!(
                "{what} has an odd number of label references"
            ))),
            None => Ok(()),
        }
    }
}

/// Parses a request into the form 1.0 parses into; validation is shared.
fn parse_request(raw: &[u8], budget: usize) -> Result<decode::Parsed, DecodeError> {
    let symbols = Symbols::read(raw)?;
    let mut budget = Budget {
        used: 0,
        // Label offsets are u32.
        limit: budget.min(u32::MAX as usize),
    };
    let mut text = String::with_capacity(raw.len());
    let mut series = Vec::new();
    let mut metadata = Vec::new();
    let mut metadata_names = HashSet::new();
    each_field(raw, |field, value| {
        if let (5, Field::Bytes(ts)) = (field, value) {
            let (parsed, meta) = parse_series(ts, &symbols, &mut text, &mut budget)?;
            series.push(parsed);
            if let Some(m) = meta {
                if metadata_names.insert(m.metric) {
                    budget.charge(m.metric.len() + m.help.len() + m.unit.len())?;
                    metadata.push(proto::MetricMetadata {
                        r#type: m.r#type,
                        metric_family_name: m.metric.to_string(),
                        help: m.help.to_string(),
                        unit: m.unit.to_string(),
                    });
                }
            }
        }
        Ok(())
    })?;
    Ok(decode::Parsed {
        text,
        series,
        metadata,
    })
}

/// A series' metadata with its symbols resolved, keyed by the series' metric name.
struct SeriesMetadata<'a> {
    metric: &'a str,
    r#type: i32,
    help: &'a str,
    unit: &'a str,
}

fn parse_series<'a>(
    buf: &[u8],
    symbols: &Symbols<'a>,
    text: &mut String,
    budget: &mut Budget,
) -> Result<(ParsedSeries, Option<SeriesMetadata<'a>>), DecodeError> {
    let mut series = ParsedSeries::default();
    let mut labels = RefPairs::default();
    let mut metric = None;
    let mut meta: Option<(i32, &'a str, &'a str)> = None;
    each_field(buf, |field, value| {
        match (field, value) {
            (1, value @ (Field::Varint(_) | Field::Bytes(_))) => each_ref(value, |r| {
                if let Some((name, value)) = labels.push(symbols, r, "a series label")? {
                    budget.charge(name.len() + value.len())?;
                    if name == "__name__" && metric.is_none() {
                        metric = Some(value);
                    }
                    series.spans.push(decode::push_label(text, name, value));
                }
                Ok(())
            })?,
            (2, Field::Bytes(b)) => series.samples.push(parse_sample(b)?),
            (3, Field::Bytes(b)) => series.histograms.push(wire::parse_histogram(b)?),
            (4, Field::Bytes(b)) => series.exemplars.push(parse_exemplar(b, symbols, budget)?),
            (5, Field::Bytes(b)) => {
                // A message field given twice is merged: later fields win.
                let (mut t, mut help, mut unit) = meta.unwrap_or((0, "", ""));
                each_field(b, |f, v| {
                    match (f, v) {
                        (1, Field::Varint(v)) => t = v as i32,
                        (3, Field::Varint(r)) => help = symbols.get(r, "metadata help")?,
                        (4, Field::Varint(r)) => unit = symbols.get(r, "metadata unit")?,
                        (1 | 3 | 4, _) => return Err(wire::bad("wrong wire type in metadata")),
                        _ => {}
                    }
                    Ok(())
                })?;
                meta = Some((t, help, unit));
            }
            // The created timestamp of Prometheus 2.54-3.8: accepted, ignored.
            (6, Field::Varint(_)) => {}
            (1..=6, _) => return Err(wire::bad("wrong wire type in a series")),
            _ => {}
        }
        Ok(())
    })?;
    labels.finish("a series")?;
    let metadata = match (meta, metric) {
        (Some((r#type, help, unit)), Some(metric))
            if r#type != 0 || !help.is_empty() || !unit.is_empty() =>
        {
            Some(SeriesMetadata {
                metric,
                r#type,
                help,
                unit,
            })
        }
        _ => None,
    };
    Ok((series, metadata))
}

/// A 2.0 `Sample`: value 1, timestamp 2, start timestamp 3 (ignored).
fn parse_sample(buf: &[u8]) -> Result<proto::Sample, DecodeError> {
    let mut s = proto::Sample::default();
    each_field(buf, |f, v| match (f, v) {
        (1, Field::Fixed64(bits)) => {
            s.value = f64::from_bits(bits);
            Ok(())
        }
        (2, Field::Varint(t)) => {
            s.timestamp = t as i64;
            Ok(())
        }
        (3, Field::Varint(_)) => Ok(()),
        (1..=3, _) => Err(wire::bad("wrong wire type in a sample")),
        _ => Ok(()),
    })?;
    Ok(s)
}

/// A 2.0 `Exemplar`: labels_refs 1, value 2, timestamp 3.
fn parse_exemplar(
    buf: &[u8],
    symbols: &Symbols<'_>,
    budget: &mut Budget,
) -> Result<proto::Exemplar, DecodeError> {
    let mut e = proto::Exemplar::default();
    let mut labels = RefPairs::default();
    each_field(buf, |f, v| match (f, v) {
        (1, v @ (Field::Varint(_) | Field::Bytes(_))) => each_ref(v, |r| {
            if let Some((name, value)) = labels.push(symbols, r, "an exemplar label")? {
                budget.charge(wire::LABEL_COST + name.len() + value.len())?;
                e.labels.push(proto::Label {
                    name: name.to_string(),
                    value: value.to_string(),
                });
            }
            Ok(())
        }),
        (2, Field::Fixed64(bits)) => {
            e.value = f64::from_bits(bits);
            Ok(())
        }
        (3, Field::Varint(t)) => {
            e.timestamp = t as i64;
            Ok(())
        }
        (1..=3, _) => Err(wire::bad("wrong wire type in an exemplar")),
        _ => Ok(()),
    })?;
    labels.finish("an exemplar")?;
    Ok(e)
}

/// Estimated bytes a decoded request occupies before its references are resolved (the text
/// they copy is charged while parsing); stops counting past `budget`.
fn estimate_bytes(buf: &[u8], budget: usize) -> Result<usize, DecodeError> {
    let mut total = 0usize;
    let refs = |value: &Field<'_>| match value {
        Field::Bytes(p) => p.iter().filter(|b| **b < 0x80).count(),
        _ => 1,
    };
    each_field(buf, |field, value| {
        if total > budget {
            return Ok(());
        }
        match (field, value) {
            (4, _) => total += SYMBOL_COST,
            (5, Field::Bytes(series)) => {
                total += wire::SERIES_COST;
                each_field(series, |f, v| {
                    total += match (f, &v) {
                        // Half a label per reference.
                        (1, v) => refs(v) * wire::LABEL_COST / 2,
                        (2, _) => wire::SAMPLE_COST,
                        (3, Field::Bytes(h)) => wire::histogram_cost(h)?,
                        (4, Field::Bytes(e)) => {
                            let mut labels = 0;
                            each_field(e, |f, v| {
                                if f == 1 {
                                    labels += refs(&v);
                                }
                                Ok(())
                            })?;
                            wire::EXEMPLAR_COST + labels * wire::LABEL_COST / 2
                        }
                        _ => 0,
                    };
                    Ok(())
                })?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{
        bits, bytes_field, float_histogram, int_histogram, key, label, push_varint,
    };
    use crate::decode::{Histogram, Metadata};
    use crate::proto::v2;
    use prost::Message;

    const NOW: i64 = 1_700_000_000_000;
    const LIMITS: Limits = Limits {
        max_decoded_bytes: 1 << 20,
        max_sample_age_ms: 30 * 86_400_000,
    };
    const STALE: u64 = 0x7ff0_0000_0000_0002;

    /// Builds a request's symbol table as a sender would.
    struct Table(Vec<String>);

    impl Table {
        fn new() -> Table {
            Table(vec![String::new()])
        }

        fn r(&mut self, s: &str) -> u32 {
            let i = self.0.iter().position(|x| x == s).unwrap_or_else(|| {
                self.0.push(s.to_string());
                self.0.len() - 1
            });
            i as u32
        }

        fn refs(&mut self, pairs: &[(&str, &str)]) -> Vec<u32> {
            pairs
                .iter()
                .flat_map(|(n, v)| [self.r(n), self.r(v)])
                .collect()
        }
    }

    fn body(raw: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(raw).expect("c")
    }

    fn decode(req: &v2::Request) -> Result<WriteBatch, DecodeError> {
        decode_write_v2(&body(&req.encode_to_vec()), LIMITS, NOW)
    }

    fn sample(value: f64, timestamp: i64) -> v2::Sample {
        v2::Sample {
            value,
            timestamp,
            start_timestamp: 0,
        }
    }

    fn metadata(r#type: i32, help: u32, unit: u32) -> Option<v2::Metadata> {
        Some(v2::Metadata {
            r#type,
            help_ref: help,
            unit_ref: unit,
        })
    }

    fn one_series(t: &mut Table, labels: &[(&str, &str)]) -> v2::TimeSeries {
        v2::TimeSeries {
            labels_refs: t.refs(labels),
            samples: vec![sample(1.0, NOW)],
            ..Default::default()
        }
    }

    fn with_histogram_start(h: &Histogram) -> proto::Histogram {
        let mut wire = proto::Histogram::from(h);
        wire.start_timestamp = h.timestamp - 60_000;
        wire
    }

    /// Every message and field of 2.0, and the same content as 1.0: both decode alike.
    #[test]
    fn every_message_and_field_decodes_like_its_1_0_twin() {
        let mut t = Table::new();
        let name = "http_requests_total";
        let (help, unit) = (t.r("Requests served."), t.r("requests"));
        let a = [("job", "api"), ("__name__", name), ("instance", "a")];
        let b = [("__name__", name), ("instance", "b"), ("job", "api")];
        let c = [("__name__", "latency_seconds"), ("job", "api")];
        let d = [("__name__", "g")];
        let e = [("__name__", "traced")];
        let trace = [("trace_id", "4bf92f3577b34da6"), ("span_id", "00f067aa")];
        let (ints, floats) = (int_histogram(NOW - 2), float_histogram(NOW - 1));
        let timeseries = vec![
            v2::TimeSeries {
                labels_refs: t.refs(&a),
                samples: vec![
                    v2::Sample {
                        value: 1.0,
                        timestamp: NOW - 1000,
                        start_timestamp: NOW - 5000,
                    },
                    sample(f64::from_bits(STALE), NOW),
                    sample(-0.0, NOW + 1),
                ],
                metadata: metadata(1, help, unit),
                created_timestamp: NOW - 60_000,
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: t.refs(&b),
                samples: vec![sample(2.0, NOW)],
                metadata: metadata(1, help, unit),
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: t.refs(&c),
                histograms: vec![with_histogram_start(&ints), with_histogram_start(&floats)],
                exemplars: vec![v2::Exemplar {
                    labels_refs: t.refs(&trace),
                    value: 0.3,
                    timestamp: NOW - 2,
                }],
                metadata: metadata(3, 0, t.r("seconds")),
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: t.refs(&d),
                samples: vec![sample(5.0, NOW)],
                metadata: metadata(0, 0, 0),
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: t.refs(&e),
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![],
                    value: 7.0,
                    timestamp: NOW,
                }],
                ..Default::default()
            },
        ];
        let request = v2::Request {
            symbols: t.0.clone(),
            timeseries,
        };
        let got = decode(&request).expect("valid");

        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(n, v)| label(n, v)).collect();
        let v1_sample = |value: f64, timestamp| proto::Sample { value, timestamp };
        let v1 = proto::WriteRequest {
            timeseries: vec![
                proto::TimeSeries {
                    labels: labels(&a),
                    samples: vec![
                        v1_sample(1.0, NOW - 1000),
                        v1_sample(f64::from_bits(STALE), NOW),
                        v1_sample(-0.0, NOW + 1),
                    ],
                    ..Default::default()
                },
                proto::TimeSeries {
                    labels: labels(&b),
                    samples: vec![v1_sample(2.0, NOW)],
                    ..Default::default()
                },
                proto::TimeSeries {
                    labels: labels(&c),
                    histograms: vec![(&ints).into(), (&floats).into()],
                    exemplars: vec![proto::Exemplar {
                        labels: labels(&trace),
                        value: 0.3,
                        timestamp: NOW - 2,
                    }],
                    ..Default::default()
                },
                proto::TimeSeries {
                    labels: labels(&d),
                    samples: vec![v1_sample(5.0, NOW)],
                    ..Default::default()
                },
                proto::TimeSeries {
                    labels: labels(&e),
                    exemplars: vec![proto::Exemplar {
                        labels: vec![],
                        value: 7.0,
                        timestamp: NOW,
                    }],
                    ..Default::default()
                },
            ],
            metadata: vec![],
        };
        let want = decode::validate(v1, LIMITS, NOW).expect("1.0 twin");
        assert_eq!(bits(&got), bits(&want));
        assert_eq!(got.series[2].histograms, [ints, floats]);
        assert_eq!(
            got.series[0].samples[2].value.to_bits(),
            (-0.0f64).to_bits()
        );
        assert_eq!(
            got.series[0].labels.to_json(),
            r#"{"__name__":"http_requests_total","instance":"a","job":"api"}"#
        );
        assert_eq!(
            got.counts(),
            decode::Counts {
                samples: 5,
                histograms: 2,
                exemplars: 2
            }
        );
        // One entry per metric name; none for UNSPECIFIED without help or unit.
        assert_eq!(
            got.metadata,
            [
                Metadata {
                    metric: name.into(),
                    metric_type: "counter",
                    help: "Requests served.".into(),
                    unit: "requests".into(),
                },
                Metadata {
                    metric: "latency_seconds".into(),
                    metric_type: "histogram",
                    help: String::new(),
                    unit: "seconds".into(),
                },
            ]
        );
    }

    #[test]
    fn start_timestamps_in_either_place_are_ignored() {
        let mut t = Table::new();
        let mut plain = one_series(&mut t, &[("__name__", "up")]);
        plain
            .histograms
            .push(proto::Histogram::from(&int_histogram(NOW)));
        let mut old = plain.clone();
        old.created_timestamp = NOW - 3_600_000;
        let mut new = plain.clone();
        new.samples[0].start_timestamp = NOW - 3_600_000;
        new.histograms[0].start_timestamp = -1;
        let decoded: Vec<_> = [plain, old, new]
            .into_iter()
            .map(|ts| {
                let request = v2::Request {
                    symbols: t.0.clone(),
                    timeseries: vec![ts],
                };
                bits(&decode(&request).expect("valid"))
            })
            .collect();
        assert_eq!(decoded[0], decoded[1]);
        assert_eq!(decoded[0], decoded[2]);
    }

    #[test]
    fn metadata_only_series_keep_their_metadata() {
        let mut t = Table::new();
        let series = v2::TimeSeries {
            labels_refs: t.refs(&[("__name__", "up"), ("job", "x")]),
            metadata: metadata(2, t.r("Up."), 0),
            ..Default::default()
        };
        let batch = decode(&v2::Request {
            symbols: t.0,
            timeseries: vec![series],
        })
        .expect("valid");
        assert!(batch.series.is_empty());
        assert_eq!(batch.metadata.len(), 1);
        assert_eq!(
            (
                batch.metadata[0].metric.as_str(),
                batch.metadata[0].metric_type
            ),
            ("up", "gauge")
        );
        // Metadata is validated like 1.0's.
        let mut t = Table::new();
        let series = v2::TimeSeries {
            labels_refs: t.refs(&[("__name__", "up")]),
            metadata: metadata(2, t.r("nul\0"), 0),
            ..Default::default()
        };
        let err = decode(&v2::Request {
            symbols: t.0,
            timeseries: vec![series],
        })
        .expect_err("NUL");
        assert_eq!(err.reason(), "invalid_metadata");
    }

    #[test]
    fn malformed_symbol_tables_are_refused() {
        let mut t = Table::new();
        let good = one_series(&mut t, &[("__name__", "up")]);
        let n = t.0.len() as u32;
        let cases: Vec<(&str, Vec<String>, v2::TimeSeries)> = vec![
            ("no symbols", vec![], good.clone()),
            (
                "first symbol",
                vec!["x".into(), "__name__".into(), "up".into()],
                v2::TimeSeries {
                    labels_refs: vec![1, 2],
                    ..good.clone()
                },
            ),
            (
                "odd number",
                t.0.clone(),
                v2::TimeSeries {
                    labels_refs: vec![1, 2, 1],
                    ..good.clone()
                },
            ),
            (
                "refers to symbol 3",
                t.0.clone(),
                v2::TimeSeries {
                    labels_refs: vec![1, n],
                    ..good.clone()
                },
            ),
            (
                "exemplar label",
                t.0.clone(),
                v2::TimeSeries {
                    exemplars: vec![v2::Exemplar {
                        labels_refs: vec![1, 99],
                        value: 1.0,
                        timestamp: NOW,
                    }],
                    ..good.clone()
                },
            ),
            (
                "an exemplar has an odd number",
                t.0.clone(),
                v2::TimeSeries {
                    exemplars: vec![v2::Exemplar {
                        labels_refs: vec![1],
                        value: 1.0,
                        timestamp: NOW,
                    }],
                    ..good.clone()
                },
            ),
            (
                "metadata help",
                t.0.clone(),
                v2::TimeSeries {
                    metadata: metadata(1, n, 0),
                    ..good.clone()
                },
            ),
            (
                "metadata unit",
                t.0.clone(),
                v2::TimeSeries {
                    metadata: metadata(1, 0, u32::MAX),
                    ..good.clone()
                },
            ),
        ];
        for (want, symbols, series) in cases {
            let err = decode(&v2::Request {
                symbols,
                timeseries: vec![series],
            })
            .expect_err(want);
            assert_eq!(err.reason(), "invalid_symbols", "{err}");
            assert!(err.to_string().contains(want), "{err} should say {want}");
            assert_eq!(err.refused_samples(), 0);
        }
        // Invalid UTF-8 in a symbol.
        let mut raw = Vec::new();
        bytes_field(&mut raw, 4, b"");
        bytes_field(&mut raw, 4, &[0xff, 0xfe]);
        let err = decode_write_v2(&body(&raw), LIMITS, NOW).expect_err("utf-8");
        assert_eq!(err.reason(), "invalid_symbols");
        assert!(err.to_string().contains("UTF-8"), "{err}");
        // A 1.0 body sent as 2.0 says so.
        let v1 = proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                labels: vec![label("__name__", "up")],
                samples: vec![proto::Sample {
                    value: 1.0,
                    timestamp: NOW,
                }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let err = decode_write_v2(&body(&v1.encode_to_vec()), LIMITS, NOW).expect_err("v1");
        assert!(err.to_string().contains("remote write 1.0 body"), "{err}");
    }

    #[test]
    fn unpacked_label_references_are_accepted() {
        let mut raw = Vec::new();
        for s in ["", "__name__", "up"] {
            bytes_field(&mut raw, 4, s.as_bytes());
        }
        let mut series = Vec::new();
        for r in [1, 2] {
            key(&mut series, 1, 0);
            push_varint(&mut series, r);
        }
        let mut s = Vec::new();
        key(&mut s, 1, 1);
        s.extend_from_slice(&1.5f64.to_le_bytes());
        key(&mut s, 2, 0);
        push_varint(&mut s, NOW as u64);
        bytes_field(&mut series, 2, &s);
        bytes_field(&mut raw, 5, &series);
        let batch = decode_write_v2(&body(&raw), LIMITS, NOW).expect("valid");
        assert_eq!(batch.series[0].labels.metric(), "up");
        assert_eq!(batch.series[0].samples[0].value, 1.5);
    }

    #[test]
    fn series_follow_the_label_rules_of_1_0() {
        let cases: [(&[(&str, &str)], &str); 4] = [
            (&[("job", "x")], "no __name__"),
            (
                &[("__name__", "up"), ("a", "1"), ("a", "2")],
                "duplicate label name",
            ),
            (&[("__name__", "up"), ("a-b", "1")], "invalid label name"),
            (&[("__name__", "bad name")], "metric name"),
        ];
        for (labels, want) in cases {
            let mut t = Table::new();
            let series = one_series(&mut t, labels);
            let err = decode(&v2::Request {
                symbols: t.0,
                timeseries: vec![series],
            })
            .expect_err(want);
            assert_eq!(err.reason(), "invalid_series");
            assert!(err.to_string().contains(want), "{err} should say {want}");
        }
        // Empty values are dropped; out-of-range times and bad histograms are refused.
        let mut t = Table::new();
        let series = one_series(&mut t, &[("__name__", "up"), ("empty", "")]);
        let batch = decode(&v2::Request {
            symbols: t.0.clone(),
            timeseries: vec![series.clone()],
        })
        .expect("valid");
        assert_eq!(batch.series[0].labels.len(), 1);
        let late = v2::TimeSeries {
            samples: vec![sample(1.0, NOW + decode::MAX_FUTURE_MS + 1)],
            ..series.clone()
        };
        let mut bad = proto::Histogram::from(&int_histogram(NOW));
        bad.schema = 20;
        let bad = v2::TimeSeries {
            histograms: vec![bad],
            ..series
        };
        for (s, want, points) in [
            (late, "timestamp_out_of_range", 1),
            (bad, "invalid_histogram", 2),
        ] {
            let err = decode(&v2::Request {
                symbols: t.0.clone(),
                timeseries: vec![s],
            })
            .expect_err(want);
            assert_eq!(err.reason(), want);
            assert_eq!(err.refused_samples(), points);
        }
    }

    #[test]
    fn malformed_protobuf_names_the_2_0_message() {
        let mut raw = Vec::new();
        bytes_field(&mut raw, 4, b"");
        key(&mut raw, 5, 0);
        push_varint(&mut raw, 1);
        let err = decode_write_v2(&body(&raw), LIMITS, NOW).expect_err("wire type");
        assert_eq!(err.reason(), "bad_protobuf");
        assert!(
            err.to_string().contains("io.prometheus.write.v2.Request"),
            "{err}"
        );
        let truncated = body(&[0x22, 0x05, 0x61]);
        assert_eq!(
            decode_write_v2(&truncated, LIMITS, NOW)
                .expect_err("truncated")
                .reason(),
            "bad_protobuf"
        );
        assert_eq!(
            decode_write_v2(b"", LIMITS, NOW)
                .expect_err("empty")
                .reason(),
            "not_snappy"
        );
    }

    #[test]
    fn oversized_requests_are_refused() {
        let mut t = Table::new();
        let series = one_series(&mut t, &[("__name__", "up")]);
        let raw = v2::Request {
            symbols: t.0.clone(),
            timeseries: vec![series],
        }
        .encode_to_vec();
        let compressed = body(&raw);
        let declared = raw.len();
        assert!(decode_write_v2(&compressed, Limits::new(declared, i64::MAX), NOW).is_ok());
        assert_eq!(
            decode_write_v2(&compressed, Limits::new(declared - 1, i64::MAX), NOW),
            Err(DecodeError::TooLarge {
                declared,
                limit: declared - 1
            })
        );
        // 500,000 empty series: 1 MB on the wire, ~32 MB decoded.
        let mut raw = Vec::new();
        bytes_field(&mut raw, 4, b"");
        for _ in 0..500_000 {
            bytes_field(&mut raw, 5, b"");
        }
        let err = decode_write_v2(&body(&raw), Limits::new(2 << 20, i64::MAX), NOW)
            .expect_err("many series");
        assert_eq!(err.reason(), "too_many_elements", "{err}");
        // A 16 KiB symbol referenced by 2,000 series: 40 KB on the wire, 32 MB of label
        // text, refused as the text grows past the 4 MiB budget.
        let long = "v".repeat(16 << 10);
        let mut t = Table::new();
        let timeseries = (0..2000)
            .map(|_| one_series(&mut t, &[("__name__", "up"), ("big", &long)]))
            .collect();
        let request = v2::Request {
            symbols: t.0.clone(),
            timeseries,
        };
        assert!(request.encoded_len() < 100_000);
        let err = decode(&request).expect_err("amplified labels");
        assert_eq!(err.reason(), "too_many_elements", "{err}");
        // ... and as help text of 1,000 metric names.
        let mut t = Table::new();
        let help = t.r(&long);
        let timeseries = (0..1000)
            .map(|i| v2::TimeSeries {
                metadata: metadata(1, help, 0),
                ..one_series(&mut t, &[("__name__", &format!("m{i}"))])
            })
            .collect();
        let err = decode(&v2::Request {
            symbols: t.0.clone(),
            timeseries,
        })
        .expect_err("amplified help");
        assert_eq!(err.reason(), "too_many_elements", "{err}");
    }
}

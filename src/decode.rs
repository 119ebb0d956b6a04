//! Remote-write 1.0 decoding and validation: from a Snappy-compressed request body to a
//! [`WriteBatch`] of validated series, or a [`DecodeError`] that is always the client's fault.
//!
//! This stage knows nothing of storage or HTTP. It owns the rules of what a valid series is
//! (label names, `__name__`, timestamps) so every later stage can rely on them.

use crate::proto;
use prost::Message;
use std::fmt;

/// A sample timestamp may be at most this far ahead of the receiver's clock (Prometheus' own rule).
pub const MAX_FUTURE_MS: i64 = 10 * 60 * 1000;

/// One validated series: labels sorted by name, unique, non-empty values, `__name__` present.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    pub labels: LabelSet,
    pub samples: Vec<proto::Sample>,
}

/// A label set in canonical form (sorted by name, no duplicates, no empty values).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelSet {
    labels: Vec<proto::Label>,
}

impl LabelSet {
    /// Builds a canonical label set; the caller has validated names.
    fn from_sorted(labels: Vec<proto::Label>) -> Self {
        LabelSet { labels }
    }

    pub fn labels(&self) -> &[proto::Label] {
        &self.labels
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.labels[i].value.as_str())
    }

    /// The value of `__name__`, present by construction.
    pub fn metric(&self) -> &str {
        self.get("__name__").unwrap_or_default()
    }

    /// A copy without the label `name` (used to merge HA replicas into one series).
    pub fn without(&self, name: &str) -> LabelSet {
        LabelSet {
            labels: self
                .labels
                .iter()
                .filter(|l| l.name != name)
                .cloned()
                .collect(),
        }
    }

    /// The label set as a JSON object with keys in name order. It doubles as the series
    /// cache key: two label sets are equal exactly when their JSON texts are equal.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(16 + self.labels.len() * 24);
        out.push('{');
        for (i, l) in self.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, &l.name);
            out.push(':');
            push_json_string(&mut out, &l.value);
        }
        out.push('}');
        out
    }
}

impl fmt::Display for LabelSet {
    /// Prometheus notation, `metric{a="b", ...}`, for error messages and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric())?;
        f.write_str("{")?;
        let mut first = true;
        for l in self.labels.iter().filter(|l| l.name != "__name__") {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // PostgreSQL's jsonb rejects \u0000, so a NUL in a value is refused earlier.
            c if (c as u32) < 0x20 => {
                use fmt::Write;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Metric metadata as sent by Prometheus once a minute.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub metric: String,
    pub metric_type: &'static str,
    pub help: String,
    pub unit: String,
}

/// A decoded, fully validated write request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WriteBatch {
    pub series: Vec<SeriesSamples>,
    pub metadata: Vec<Metadata>,
}

impl WriteBatch {
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

/// Why a request body was refused. Every variant is the sender's fault (a 4xx).
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// The Snappy length header declares more than the limit; nothing was allocated.
    TooLarge {
        declared: usize,
        limit: usize,
    },
    NotSnappy(String),
    BadProtobuf(String),
    /// A series breaks a label rule; `samples` is the request's sample count (all refused).
    InvalidSeries {
        series: String,
        reason: String,
        samples: usize,
    },
    /// A sample timestamp is in the future or before 1970.
    TimestampOutOfRange {
        series: String,
        timestamp_ms: i64,
        samples: usize,
    },
}

impl DecodeError {
    /// A short stable name for metrics (`reason` label).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotSnappy(_) => "not_snappy",
            DecodeError::BadProtobuf(_) => "bad_protobuf",
            DecodeError::InvalidSeries { .. } => "invalid_series",
            DecodeError::TimestampOutOfRange { .. } => "timestamp_out_of_range",
        }
    }

    /// Samples the request carried that are now refused (0 when it could not be parsed).
    pub fn refused_samples(&self) -> usize {
        match self {
            DecodeError::InvalidSeries { samples, .. }
            | DecodeError::TimestampOutOfRange { samples, .. } => *samples,
            _ => 0,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { declared, limit } => write!(
                f,
                "decoded request size {declared} bytes exceeds the limit of {limit} bytes (--max-request-bytes)"
            ),
            DecodeError::NotSnappy(e) => write!(f, "body is not Snappy block-format data: {e}"),
            DecodeError::BadProtobuf(e) => {
                write!(f, "body is not a valid prometheus.WriteRequest: {e}")
            }
            DecodeError::InvalidSeries { series, reason, .. } => {
                write!(f, "invalid series {series}: {reason}")
            }
            DecodeError::TimestampOutOfRange {
                series,
                timestamp_ms,
                ..
            } => write!(
                f,
                "series {series}: sample timestamp {timestamp_ms} ms is before 1970 or more than 10 minutes in the future"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decompresses a Snappy block-format body, refusing before allocation when its declared
/// decoded length is over `limit`.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let declared =
        snap::raw::decompress_len(body).map_err(|e| DecodeError::NotSnappy(e.to_string()))?;
    if declared > limit {
        return Err(DecodeError::TooLarge { declared, limit });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::NotSnappy(e.to_string()))
}

/// Decodes and validates a remote-write 1.0 body. `now_ms` is the receiver's clock, injected
/// so tests can pin it.
pub fn decode_write(body: &[u8], limit: usize, now_ms: i64) -> Result<WriteBatch, DecodeError> {
    let raw = decompress(body, limit)?;
    let request = proto::WriteRequest::decode(raw.as_slice())
        .map_err(|e| DecodeError::BadProtobuf(e.to_string()))?;
    validate(request, now_ms)
}

/// Turns a parsed request into a [`WriteBatch`], refusing it whole at the first invalid series:
/// Prometheus does not retry a 4xx, so a partial store would make the sender's and our counts
/// disagree without telling anyone which samples were kept.
pub fn validate(request: proto::WriteRequest, now_ms: i64) -> Result<WriteBatch, DecodeError> {
    let total_samples: usize = request.timeseries.iter().map(|t| t.samples.len()).sum();
    let max_ts = now_ms.saturating_add(MAX_FUTURE_MS);
    let mut series = Vec::with_capacity(request.timeseries.len());
    for ts in request.timeseries {
        if ts.samples.is_empty() {
            continue;
        }
        let labels =
            canonical_labels(ts.labels).map_err(|(series, reason)| DecodeError::InvalidSeries {
                series,
                reason,
                samples: total_samples,
            })?;
        if let Some(bad) = ts
            .samples
            .iter()
            .find(|s| s.timestamp < 0 || s.timestamp > max_ts)
        {
            return Err(DecodeError::TimestampOutOfRange {
                series: labels.to_string(),
                timestamp_ms: bad.timestamp,
                samples: total_samples,
            });
        }
        series.push(SeriesSamples {
            labels,
            samples: ts.samples,
        });
    }
    let metadata = request
        .metadata
        .into_iter()
        .filter(|m| !m.metric_family_name.is_empty())
        .map(|m| Metadata {
            metric_type: proto::metric_type_name(m.r#type),
            metric: m.metric_family_name,
            help: m.help,
            unit: m.unit,
        })
        .collect();
    Ok(WriteBatch { series, metadata })
}

/// Sorts, checks and normalises one series' labels. On error returns the series as written
/// by the sender (for the message) and the reason.
fn canonical_labels(mut labels: Vec<proto::Label>) -> Result<LabelSet, (String, String)> {
    // An empty value means "label absent" in Prometheus; drop it so both spellings are one series.
    labels.retain(|l| !l.value.is_empty());
    labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let describe =
        |labels: &[proto::Label]| truncate(&LabelSet::from_sorted(labels.to_vec()).to_string());
    for (i, l) in labels.iter().enumerate() {
        if !valid_label_name(&l.name) {
            return Err((
                describe(&labels),
                format!(
                    "invalid label name {:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)",
                    l.name
                ),
            ));
        }
        if l.value.contains('\0') {
            return Err((
                describe(&labels),
                format!("label {} has a NUL character in its value", l.name),
            ));
        }
        if i > 0 && labels[i - 1].name == l.name {
            return Err((
                describe(&labels),
                format!("duplicate label name {:?}", l.name),
            ));
        }
    }
    let set = LabelSet::from_sorted(labels);
    if set.get("__name__").is_none() {
        return Err((truncate(&set.to_string()), "no __name__ label".to_string()));
    }
    Ok(set)
}

pub fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn truncate(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(n: &str, v: &str) -> proto::Label {
        proto::Label {
            name: n.into(),
            value: v.into(),
        }
    }

    fn request(labels: Vec<proto::Label>, ts: i64) -> proto::WriteRequest {
        proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                labels,
                samples: vec![proto::Sample {
                    value: 1.0,
                    timestamp: ts,
                }],
            }],
            metadata: vec![],
        }
    }

    fn compress(req: &proto::WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .expect("compress")
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn sorts_labels_and_drops_empty_values() {
        let req = request(
            vec![
                label("job", "x"),
                label("__name__", "up"),
                label("empty", ""),
            ],
            NOW,
        );
        let batch = validate(req, NOW).expect("valid");
        let names: Vec<_> = batch.series[0]
            .labels
            .labels()
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["__name__", "job"]);
        assert_eq!(
            batch.series[0].labels.to_json(),
            r#"{"__name__":"up","job":"x"}"#
        );
    }

    #[test]
    fn refuses_missing_name_duplicates_and_bad_names() {
        let cases = [
            (vec![label("job", "x")], "no __name__"),
            (
                vec![label("__name__", "up"), label("a", "1"), label("a", "2")],
                "duplicate label name",
            ),
            (
                vec![label("__name__", "up"), label("1a", "x")],
                "invalid label name",
            ),
            (
                vec![label("__name__", "up"), label("a-b", "x")],
                "invalid label name",
            ),
        ];
        for (labels, want) in cases {
            let err = validate(request(labels, NOW), NOW).expect_err("invalid");
            assert!(err.to_string().contains(want), "{err} should say {want}");
            assert_eq!(err.reason(), "invalid_series");
        }
    }

    #[test]
    fn refuses_future_and_negative_timestamps() {
        assert!(validate(
            request(vec![label("__name__", "up")], NOW + MAX_FUTURE_MS),
            NOW
        )
        .is_ok());
        for ts in [NOW + MAX_FUTURE_MS + 1, -1] {
            let err =
                validate(request(vec![label("__name__", "up")], ts), NOW).expect_err("bad ts");
            assert_eq!(err.reason(), "timestamp_out_of_range");
            assert!(err.to_string().contains("up{}"), "{err}");
        }
    }

    #[test]
    fn json_escapes_quotes_and_controls() {
        let set = LabelSet::from_sorted(vec![label("__name__", "m"), label("a", "q\"\\\n\u{1}é")]);
        assert_eq!(set.to_json(), r#"{"__name__":"m","a":"q\"\\\n\u0001é"}"#);
    }

    #[test]
    fn size_limit_is_checked_before_decoding() {
        let body = compress(&request(vec![label("__name__", "up")], NOW));
        let declared = snap::raw::decompress_len(&body).expect("len");
        assert!(decode_write(&body, declared, NOW).is_ok());
        let err = decode_write(&body, declared - 1, NOW).expect_err("too large");
        assert_eq!(err.reason(), "too_large");
        // A forged header declaring 4 GiB is refused without allocating it.
        let forged = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert_eq!(
            decode_write(&forged, 1 << 20, NOW)
                .expect_err("forged")
                .reason(),
            "too_large"
        );
    }

    #[test]
    fn garbage_is_not_snappy_or_not_protobuf() {
        assert_eq!(
            decode_write(b"", 1 << 20, NOW).expect_err("empty").reason(),
            "not_snappy"
        );
        let not_proto = snap::raw::Encoder::new()
            .compress_vec(&[0xff; 10])
            .expect("c");
        assert_eq!(
            decode_write(&not_proto, 1 << 20, NOW)
                .expect_err("p")
                .reason(),
            "bad_protobuf"
        );
    }

    #[test]
    fn decodes_real_prometheus_requests() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/prometheus-2.42"
        );
        for n in 1..=5 {
            let body = std::fs::read(format!("{dir}/write-0{n}.bin")).expect("fixture");
            // The captures are from 2023; pin the clock near them.
            let batch = decode_write(&body, 32 << 20, i64::MAX / 2).expect("decodes");
            assert_eq!(batch.sample_count(), 500, "write-0{n}");
            assert!(batch
                .series
                .iter()
                .all(|s| s.labels.get("cluster") == Some("demo")));
        }
        let body = std::fs::read(format!("{dir}/metadata-01.bin")).expect("fixture");
        let batch = decode_write(&body, 32 << 20, 0).expect("metadata decodes");
        assert!(batch.series.is_empty());
        assert_eq!(batch.metadata.len(), 451);
    }
}

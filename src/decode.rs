//! Remote-write 1.0 decoding and validation: from a Snappy-compressed request body to a
//! [`WriteBatch`] of validated series, or a [`DecodeError`] that is always the client's fault.
//! Remote write 2.0 (`decode_v2`) parses into the same intermediate form and shares the
//! budget, the wire walk and every validation rule here.
//!
//! This stage knows nothing of storage or HTTP. It owns the rules of what a valid series is
//! (label names, `__name__`, timestamps, native histograms, exemplars) so every later stage can
//! rely on them.

use crate::proto;
use std::fmt;
use std::sync::Arc;

/// A sample timestamp may be at most this far ahead of the receiver's clock (Prometheus' own rule).
pub const MAX_FUTURE_MS: i64 = 10 * 60 * 1000;
/// Labels per series. Real series have tens; the bound keeps a crafted request from costing
/// gigabytes once decoded.
pub const MAX_LABELS_PER_SERIES: usize = 128;
/// Bytes in a label name, and in a metric name (which becomes a table key and a view name).
pub const MAX_NAME_BYTES: usize = 1024;
/// Bytes in a label value or a metadata help text.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// UTF-8 characters of an exemplar's label names and values together (Prometheus's
/// `ExemplarMaxLabelSetLength`).
pub const MAX_EXEMPLAR_LABEL_CHARS: usize = 128;
/// Exponential histogram schemas Prometheus accepts; -53 is the custom-buckets schema.
pub const HISTOGRAM_SCHEMAS: std::ops::RangeInclusive<i32> = -4..=8;
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;
/// Decoded requests may take at most this many times `max_decoded_bytes` in memory.
const MEMORY_FACTOR: usize = 4;
/// ... but small limits still allow this much.
const MIN_MEMORY_BUDGET: usize = 1 << 20;

/// What a request may contain, from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--max-request-bytes`: the Snappy-decoded size.
    pub max_decoded_bytes: usize,
    /// `--max-sample-age`: older samples are refused (each day of data is a partition).
    pub max_sample_age_ms: i64,
}

impl Limits {
    pub fn new(max_decoded_bytes: usize, max_sample_age_ms: i64) -> Self {
        Limits {
            max_decoded_bytes,
            max_sample_age_ms,
        }
    }
}

/// One validated series: labels sorted by name, unique, non-empty values, `__name__` present.
/// It carries at least one float sample, histogram or exemplar.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesSamples {
    pub labels: LabelSet,
    pub samples: Vec<proto::Sample>,
    /// Native histograms, in the sender's order (remote write 1.0 `TimeSeries` field 4, 2.0
    /// field 3).
    pub histograms: Vec<Histogram>,
    /// Exemplars of this series (1.0 field 3, 2.0 field 4).
    pub exemplars: Vec<Exemplar>,
}

impl SeriesSamples {
    /// Float samples, histograms and exemplars this series carries.
    pub fn counts(&self) -> Counts {
        Counts {
            samples: self.samples.len(),
            histograms: self.histograms.len(),
            exemplars: self.exemplars.len(),
        }
    }

    /// Float samples plus histograms plus exemplars: what the HA stage and the queue count.
    pub fn points(&self) -> usize {
        self.samples.len() + self.histograms.len() + self.exemplars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points() == 0
    }

    /// Keeps only the points whose timestamp `keep` accepts; returns how many were removed.
    pub fn retain_time(&mut self, mut keep: impl FnMut(i64) -> bool) -> usize {
        let before = self.points();
        self.samples.retain(|s| keep(s.timestamp));
        self.histograms.retain(|h| keep(h.timestamp));
        self.exemplars.retain(|e| keep(e.timestamp));
        before - self.points()
    }

    /// Moves the points whose timestamp `take` accepts into a new series with the same labels.
    pub fn take_where(&mut self, mut take: impl FnMut(i64) -> bool) -> SeriesSamples {
        fn split<T>(v: &mut Vec<T>, mut take: impl FnMut(&T) -> bool) -> Vec<T> {
            let (taken, kept) = std::mem::take(v).into_iter().partition(|x| take(x));
            *v = kept;
            taken
        }
        SeriesSamples {
            labels: self.labels.clone(),
            samples: split(&mut self.samples, |s| take(s.timestamp)),
            histograms: split(&mut self.histograms, |h| take(h.timestamp)),
            exemplars: split(&mut self.exemplars, |e| take(e.timestamp)),
        }
    }

    /// Every timestamp this series carries (samples, histograms, exemplars).
    pub fn timestamps(&self) -> impl Iterator<Item = i64> + '_ {
        self.samples
            .iter()
            .map(|s| s.timestamp)
            .chain(self.histograms.iter().map(|h| h.timestamp))
            .chain(self.exemplars.iter().map(|e| e.timestamp))
    }
}

/// How many of each kind of point a request, series or outcome holds: the
/// `X-Prometheus-Remote-Write-*-Written` headers report these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub samples: usize,
    pub histograms: usize,
    pub exemplars: usize,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.samples += o.samples;
        self.histograms += o.histograms;
        self.exemplars += o.exemplars;
    }
}

/// A native histogram at one timestamp, validated: spans and buckets agree, bucket counts are
/// absolute (the wire's integer deltas summed) and never negative.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// -4..=8 for exponential buckets; -53 for custom buckets (`custom_values`).
    pub schema: i32,
    pub zero_threshold: f64,
    pub sum: f64,
    pub reset_hint: ResetHint,
    pub counts: HistogramCounts,
    pub negative_spans: Vec<BucketSpan>,
    pub positive_spans: Vec<BucketSpan>,
    /// Upper bounds of custom buckets (schema -53); empty otherwise.
    pub custom_values: Vec<f64>,
}

impl Histogram {
    /// The histogram as text with every float as its bit pattern (NaN payloads and -0.0
    /// compare as what they are): for comparisons in tests and the fuzz targets.
    #[doc(hidden)]
    pub fn bit_image(&self) -> String {
        let floats = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let counts = match &self.counts {
            HistogramCounts::Integer {
                count,
                zero_count,
                negative,
                positive,
            } => format!("int {count} {zero_count} {negative:?} {positive:?}"),
            HistogramCounts::Float {
                count,
                zero_count,
                negative,
                positive,
            } => format!(
                "float {:?} {:?} {:?}",
                floats(&[*count, *zero_count]),
                floats(negative),
                floats(positive)
            ),
        };
        format!(
            "{} {} {:?} {:?} {counts} {:?} {:?} {:?}",
            self.timestamp,
            self.schema,
            floats(&[self.zero_threshold, self.sum]),
            self.reset_hint,
            self.negative_spans,
            self.positive_spans,
            floats(&self.custom_values)
        )
    }
}

/// An integer histogram's counts (what Prometheus scrapes) or a float histogram's (what
/// recording rules and aggregations produce). Bucket counts are absolute, one per bucket the
/// spans describe, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum HistogramCounts {
    Integer {
        count: u64,
        zero_count: u64,
        negative: Vec<u64>,
        positive: Vec<u64>,
    },
    Float {
        count: f64,
        zero_count: f64,
        negative: Vec<f64>,
        positive: Vec<f64>,
    },
}

/// A run of consecutive buckets: `offset` buckets after the previous span's end (the first
/// span's offset is from bucket index 0), `length` buckets long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpan {
    pub offset: i32,
    pub length: u32,
}

/// `Histogram.ResetHint` of the remote-write protos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetHint {
    #[default]
    Unknown = 0,
    Yes = 1,
    No = 2,
    Gauge = 3,
}

impl ResetHint {
    /// The wire value; unknown future values read as `Unknown`.
    pub fn from_wire(value: i32) -> ResetHint {
        match value {
            1 => ResetHint::Yes,
            2 => ResetHint::No,
            3 => ResetHint::Gauge,
            _ => ResetHint::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ResetHint::Unknown => "unknown",
            ResetHint::Yes => "yes",
            ResetHint::No => "no",
            ResetHint::Gauge => "gauge",
        }
    }
}

/// An exemplar: a sample of another signal (a trace, usually) attached to a series at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// Sorted by name, unique names; may be empty. Values may be empty strings.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// Where one label's name and value lie in a [`LabelSet`]'s text (byte offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// A label set in canonical form (sorted by name, no duplicates, no empty values).
///
/// The names and values live in one text shared by every series of a request (an `Arc`), and
/// the set holds offsets into it: decoding a request allocates the text once instead of two
/// strings per label, which was the largest item of promgres's CPU profile.
#[derive(Clone)]
pub struct LabelSet {
    text: Arc<str>,
    spans: Vec<Span>,
}

impl Default for LabelSet {
    fn default() -> Self {
        LabelSet {
            text: Arc::from(""),
            spans: Vec::new(),
        }
    }
}

impl LabelSet {
    fn part(&self, (start, end): (u32, u32)) -> &str {
        self.text
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// A label set from labels already sorted and valid, for other modules' tests.
    #[cfg(test)]
    pub(crate) fn from_sorted_for_tests(labels: Vec<proto::Label>) -> Self {
        let mut text = String::new();
        let spans = labels
            .iter()
            .map(|l| push_label(&mut text, &l.name, &l.value))
            .collect();
        LabelSet {
            text: text.into(),
            spans,
        }
    }

    /// (name, value) pairs in name order.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.spans
            .iter()
            .map(|s| (self.part(s.name), self.part(s.value)))
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.spans.binary_search_by(|s| self.part(s.name).cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).ok().map(|i| self.part(self.spans[i].value))
    }

    /// The value of `__name__`, present by construction.
    pub fn metric(&self) -> &str {
        self.get("__name__").unwrap_or_default()
    }

    /// The set without the label `name` (used to merge HA replicas into one series). Takes
    /// the set, so no label is copied.
    pub fn without(mut self, name: &str) -> LabelSet {
        if let Ok(i) = self.find(name) {
            self.spans.remove(i);
        }
        self
    }

    /// Bytes of label text this set refers to (for memory accounting).
    pub fn text_bytes(&self) -> usize {
        self.spans
            .iter()
            .map(|s| (s.name.1 - s.name.0 + s.value.1 - s.value.0) as usize)
            .sum()
    }

    /// The label set as a JSON object with keys in name order, as stored in `series.labels`.
    pub fn to_json(&self) -> String {
        labels_json(self.labels(), self.spans.len())
    }
}

/// Labels as a JSON object, in the order given (names sorted and unique, by the callers'
/// rules), as series and exemplar labels are stored.
pub fn labels_json<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>, len: usize) -> String {
    let mut out = String::with_capacity(16 + len * 24);
    out.push('{');
    for (i, (name, value)) in labels.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, name);
        out.push(':');
        push_json_string(&mut out, value);
    }
    out.push('}');
    out
}

impl PartialEq for LabelSet {
    fn eq(&self, other: &Self) -> bool {
        self.labels().eq(other.labels())
    }
}

impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LabelSet({self})")
    }
}

/// Appends a label to a request's text and returns where it lies.
pub(crate) fn push_label(text: &mut String, name: &str, value: &str) -> Span {
    let at = |text: &String| u32::try_from(text.len()).unwrap_or(u32::MAX);
    let n0 = at(text);
    text.push_str(name);
    let n1 = at(text);
    text.push_str(value);
    Span {
        name: (n0, n1),
        value: (n1, at(text)),
    }
}

impl fmt::Display for LabelSet {
    /// Prometheus notation, `metric{a="b", ...}`, for error messages and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric())?;
        f.write_str("{")?;
        let mut first = true;
        for (name, value) in self.labels().filter(|(n, _)| *n != "__name__") {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{name}={value:?}")?;
        }
        f.write_str("}")
    }
}

pub fn push_json_string(out: &mut String, s: &str) {
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
    /// Float samples, histograms and exemplars: the points the queue and writers count.
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(SeriesSamples::points).sum()
    }

    /// Each series as text with every float as its bit pattern (NaN != NaN otherwise): for
    /// comparisons in tests and the fuzz targets.
    #[doc(hidden)]
    pub fn series_bit_image(&self) -> Vec<String> {
        self.series
            .iter()
            .map(|s| {
                let samples: Vec<_> = s
                    .samples
                    .iter()
                    .map(|x| (x.timestamp, x.value.to_bits()))
                    .collect();
                let histograms: Vec<_> = s.histograms.iter().map(Histogram::bit_image).collect();
                let exemplars: Vec<_> = s
                    .exemplars
                    .iter()
                    .map(|e| (&e.labels, e.value.to_bits(), e.timestamp))
                    .collect();
                format!(
                    "{} {samples:?} {histograms:?} {exemplars:?}",
                    s.labels.to_json()
                )
            })
            .collect()
    }

    /// Each kind of point apart, for the `X-Prometheus-Remote-Write-*-Written` headers.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for s in &self.series {
            c += s.counts();
        }
        c
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
    /// A series breaks a label rule; `samples` is the request's point count (all refused).
    InvalidSeries {
        series: String,
        reason: String,
        samples: usize,
    },
    /// A sample, histogram or exemplar timestamp is too far in the future or older than
    /// `--max-sample-age`.
    TimestampOutOfRange {
        series: String,
        timestamp_ms: i64,
        oldest_ms: i64,
        samples: usize,
    },
    /// A native histogram breaks a rule (spans and buckets disagree, a negative count, ...);
    /// `samples` is the request's point count (all refused).
    InvalidHistogram {
        series: String,
        reason: String,
        samples: usize,
    },
    /// An exemplar's labels break a rule; `samples` is the request's point count.
    InvalidExemplar {
        series: String,
        reason: String,
        samples: usize,
    },
    /// A metadata entry breaks a rule.
    InvalidMetadata {
        metric: String,
        reason: String,
    },
    /// A remote write 2.0 request's symbol table is missing or invalid, or a reference points
    /// outside it.
    InvalidSymbols(String),
    /// The body is not a valid `io.prometheus.write.v2.Request` (the 2.0 twin of
    /// `BadProtobuf`).
    BadProtobufV2(String),
    /// The request is within the size limit but would take far more memory once decoded
    /// (e.g. millions of empty messages).
    TooManyElements {
        estimated: usize,
        limit: usize,
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
            DecodeError::InvalidHistogram { .. } => "invalid_histogram",
            DecodeError::InvalidExemplar { .. } => "invalid_exemplar",
            DecodeError::InvalidMetadata { .. } => "invalid_metadata",
            DecodeError::InvalidSymbols(_) => "invalid_symbols",
            DecodeError::BadProtobufV2(_) => "bad_protobuf",
            DecodeError::TooManyElements { .. } => "too_many_elements",
        }
    }

    /// Points (float samples, histograms, exemplars) the request carried that are now refused
    /// (0 when it could not be parsed).
    pub fn refused_samples(&self) -> usize {
        match self {
            DecodeError::InvalidSeries { samples, .. }
            | DecodeError::InvalidHistogram { samples, .. }
            | DecodeError::InvalidExemplar { samples, .. }
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
                oldest_ms,
                ..
            } => write!(
                f,
                "series {series}: sample timestamp {timestamp_ms} ms is more than 10 minutes in the future or older than {oldest_ms} ms (--max-sample-age)"
            ),
            DecodeError::InvalidHistogram { series, reason, .. } => {
                write!(f, "series {series}: invalid native histogram: {reason}")
            }
            DecodeError::InvalidExemplar { series, reason, .. } => {
                write!(f, "series {series}: invalid exemplar: {reason}")
            }
            DecodeError::InvalidMetadata { metric, reason } => {
                write!(f, "invalid metadata for {metric:?}: {reason}")
            }
            DecodeError::InvalidSymbols(e) => {
                write!(f, "invalid remote write 2.0 symbol table: {e}")
            }
            DecodeError::BadProtobufV2(e) => {
                write!(f, "body is not a valid io.prometheus.write.v2.Request: {e}")
            }
            DecodeError::TooManyElements { estimated, limit } => write!(
                f,
                "request would take about {estimated} bytes in memory once decoded, over {limit} bytes: too many series, labels or samples for its size"
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

/// A request parsed but not yet validated: all label text in one string, series as spans.
/// Remote write 1.0 and 2.0 both parse into this form.
pub(crate) struct Parsed {
    pub(crate) text: String,
    pub(crate) series: Vec<ParsedSeries>,
    pub(crate) metadata: Vec<proto::MetricMetadata>,
}

#[derive(Default)]
pub(crate) struct ParsedSeries {
    pub(crate) spans: Vec<Span>,
    pub(crate) samples: Vec<proto::Sample>,
    pub(crate) histograms: Vec<proto::Histogram>,
    pub(crate) exemplars: Vec<proto::Exemplar>,
}

impl ParsedSeries {
    fn points(&self) -> usize {
        self.samples.len() + self.histograms.len() + self.exemplars.len()
    }
}

impl Parsed {
    /// The same shape from a message decoded by prost (tests, and any caller holding one).
    fn from_message(request: proto::WriteRequest) -> Parsed {
        let mut text = String::new();
        let series = request
            .timeseries
            .into_iter()
            .map(|ts| ParsedSeries {
                spans: ts
                    .labels
                    .iter()
                    .map(|l| push_label(&mut text, &l.name, &l.value))
                    .collect(),
                samples: ts.samples,
                histograms: ts.histograms,
                exemplars: ts.exemplars,
            })
            .collect();
        Parsed {
            text,
            series,
            metadata: request.metadata,
        }
    }
}

/// Decodes and validates a remote-write 1.0 body. `now_ms` is the receiver's clock, injected
/// so tests can pin it.
pub fn decode_write(body: &[u8], limits: Limits, now_ms: i64) -> Result<WriteBatch, DecodeError> {
    let raw =
        decompress_within_budget(body, limits.max_decoded_bytes, wire::estimate_decoded_bytes)?;
    validate_parsed(wire::parse_write_request(&raw)?, limits, now_ms)
}

/// Bytes a decoded request may take in memory: 4x the size limit, at least 1 MiB.
pub(crate) fn memory_budget(max_decoded_bytes: usize) -> usize {
    max_decoded_bytes
        .saturating_mul(MEMORY_FACTOR)
        .max(MIN_MEMORY_BUDGET)
}

/// Decompresses `body` (at most `max_decoded_bytes`) and refuses it when `estimate` says its
/// decoded message would take more memory than [`memory_budget`].
pub(crate) fn decompress_within_budget(
    body: &[u8],
    max_decoded_bytes: usize,
    estimate: fn(&[u8], usize) -> Result<usize, DecodeError>,
) -> Result<Vec<u8>, DecodeError> {
    let raw = decompress(body, max_decoded_bytes)?;
    let budget = memory_budget(max_decoded_bytes);
    let estimated = estimate(&raw, budget)?;
    if estimated > budget {
        return Err(DecodeError::TooManyElements {
            estimated,
            limit: budget,
        });
    }
    Ok(raw)
}

/// Decompresses a remote-read body and checks, before prost builds the `ReadRequest`, that it
/// would not take more memory than a write request may: a body of millions of empty queries
/// is refused (413) instead of being allocated.
pub fn decompress_read_request(
    body: &[u8],
    max_decoded_bytes: usize,
) -> Result<Vec<u8>, DecodeError> {
    decompress_within_budget(body, max_decoded_bytes, wire::estimate_read_request_bytes)
}

/// Validates a request decoded by prost; see [`decode_write`].
pub fn validate(
    request: proto::WriteRequest,
    limits: Limits,
    now_ms: i64,
) -> Result<WriteBatch, DecodeError> {
    validate_parsed(Parsed::from_message(request), limits, now_ms)
}

/// Turns a parsed request into a [`WriteBatch`], refusing it whole at the first invalid series:
/// Prometheus does not retry a 4xx, so a partial store would make the sender's and our counts
/// disagree without telling anyone which samples were kept.
pub(crate) fn validate_parsed(
    parsed: Parsed,
    limits: Limits,
    now_ms: i64,
) -> Result<WriteBatch, DecodeError> {
    let Parsed {
        text,
        series: parsed_series,
        metadata: raw_metadata,
    } = parsed;
    let text: Arc<str> = text.into();
    let total_points: usize = parsed_series.iter().map(ParsedSeries::points).sum();
    let max_ts = now_ms.saturating_add(MAX_FUTURE_MS);
    let min_ts = now_ms.saturating_sub(limits.max_sample_age_ms).max(0);
    let mut series = Vec::with_capacity(parsed_series.len());
    for ts in parsed_series {
        // Series with nothing to store (a 2.0 series carrying only metadata, say) are skipped
        // unchecked, as before.
        if ts.points() == 0 {
            continue;
        }
        let labels = canonical_labels(&text, ts.spans).map_err(|(series, reason)| {
            DecodeError::InvalidSeries {
                series,
                reason,
                samples: total_points,
            }
        })?;
        let timestamps = ts
            .samples
            .iter()
            .map(|s| s.timestamp)
            .chain(ts.histograms.iter().map(|h| h.timestamp))
            .chain(ts.exemplars.iter().map(|e| e.timestamp));
        for timestamp in timestamps {
            if timestamp < min_ts || timestamp > max_ts {
                return Err(DecodeError::TimestampOutOfRange {
                    series: labels.to_string(),
                    timestamp_ms: timestamp,
                    oldest_ms: min_ts,
                    samples: total_points,
                });
            }
        }
        let histograms = ts
            .histograms
            .into_iter()
            .map(Histogram::try_from)
            .collect::<Result<Vec<_>, String>>()
            .map_err(|reason| DecodeError::InvalidHistogram {
                series: truncate(&labels.to_string()),
                reason,
                samples: total_points,
            })?;
        let exemplars = ts
            .exemplars
            .into_iter()
            .map(Exemplar::try_from)
            .collect::<Result<Vec<_>, String>>()
            .map_err(|reason| DecodeError::InvalidExemplar {
                series: truncate(&labels.to_string()),
                reason,
                samples: total_points,
            })?;
        series.push(SeriesSamples {
            labels,
            samples: ts.samples,
            histograms,
            exemplars,
        });
    }
    let mut metadata = Vec::with_capacity(raw_metadata.len());
    for m in raw_metadata {
        let problem = if !valid_metric_name(&m.metric_family_name) {
            Some("metric family name must match [a-zA-Z_:][a-zA-Z0-9_:]* and be at most 1024 bytes")
        } else if m.help.len() > MAX_VALUE_BYTES || m.unit.len() > MAX_NAME_BYTES {
            Some("help or unit text too long")
        } else if m.help.contains('\0') || m.unit.contains('\0') {
            Some("NUL character in help or unit")
        } else {
            None
        };
        if let Some(reason) = problem {
            return Err(DecodeError::InvalidMetadata {
                metric: truncate(&m.metric_family_name),
                reason: reason.to_string(),
            });
        }
        metadata.push(Metadata {
            metric_type: proto::metric_type_name(m.r#type),
            metric: m.metric_family_name,
            help: m.help,
            unit: m.unit,
        });
    }
    Ok(WriteBatch { series, metadata })
}

impl TryFrom<proto::Histogram> for Histogram {
    type Error = String;

    /// Validates a wire histogram as Prometheus's `histogram.Validate` does and turns an
    /// integer histogram's bucket deltas into absolute counts. The error is the reason.
    ///
    /// One rule is looser than Prometheus's: an integer histogram's count may exceed its
    /// buckets' total whatever its sum (Prometheus asks for equality unless the sum is NaN).
    fn try_from(h: proto::Histogram) -> Result<Histogram, String> {
        let custom = h.schema == CUSTOM_BUCKETS_SCHEMA;
        if !custom && !HISTOGRAM_SCHEMAS.contains(&h.schema) {
            return Err(format!(
                "schema {} is neither -4..8 nor -53 (custom buckets)",
                h.schema
            ));
        }
        if !custom && !h.custom_values.is_empty() {
            return Err(format!(
                "custom bucket bounds with exponential schema {}",
                h.schema
            ));
        }
        // The count decides the kind; the other kind's fields are ignored, as Prometheus does.
        let float = matches!(h.count, Some(proto::HistogramCount::Float(_)));
        let (negative_buckets, positive_buckets) = if float {
            (h.negative_counts.len(), h.positive_counts.len())
        } else {
            (h.negative_deltas.len(), h.positive_deltas.len())
        };
        check_spans("negative", &h.negative_spans, negative_buckets, custom)?;
        check_spans("positive", &h.positive_spans, positive_buckets, custom)?;
        if custom {
            check_custom_buckets(&h, float)?;
        }
        let spans = |wire: &[proto::BucketSpan]| {
            wire.iter()
                .map(|s| BucketSpan {
                    offset: s.offset,
                    length: s.length,
                })
                .collect::<Vec<_>>()
        };
        let negative_spans = spans(&h.negative_spans);
        let positive_spans = spans(&h.positive_spans);
        let counts = match h.count {
            Some(proto::HistogramCount::Float(count)) => {
                let zero_count = match h.zero_count {
                    Some(proto::HistogramCount::Float(z)) => z,
                    _ => 0.0,
                };
                for (side, buckets) in [
                    ("negative", &h.negative_counts),
                    ("positive", &h.positive_counts),
                ] {
                    if let Some(c) = buckets.iter().find(|c| **c < 0.0) {
                        return Err(format!("{side} bucket count {c} is negative"));
                    }
                }
                HistogramCounts::Float {
                    count,
                    zero_count,
                    negative: h.negative_counts,
                    positive: h.positive_counts,
                }
            }
            // A histogram without a count is an integer one with count 0, as Prometheus reads it.
            Some(proto::HistogramCount::Int(_)) | None => {
                let count = match h.count {
                    Some(proto::HistogramCount::Int(c)) => c,
                    _ => 0,
                };
                let zero_count = match h.zero_count {
                    Some(proto::HistogramCount::Int(z)) => z,
                    _ => 0,
                };
                let negative = absolute_counts("negative", &h.negative_deltas)?;
                let positive = absolute_counts("positive", &h.positive_deltas)?;
                let in_buckets = negative
                    .iter()
                    .chain(&positive)
                    .try_fold(zero_count, |sum, c| sum.checked_add(*c))
                    .ok_or("the bucket counts' total overflows")?;
                if in_buckets > count {
                    return Err(format!(
                        "{in_buckets} observations in the buckets, but the count is {count}"
                    ));
                }
                HistogramCounts::Integer {
                    count,
                    zero_count,
                    negative,
                    positive,
                }
            }
        };
        Ok(Histogram {
            timestamp: h.timestamp,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            sum: h.sum,
            reset_hint: ResetHint::from_wire(h.reset_hint),
            counts,
            negative_spans,
            positive_spans,
            custom_values: h.custom_values,
        })
    }
}

/// An integer histogram's bucket deltas summed into absolute counts, each of which must be
/// at least 0.
fn absolute_counts(side: &str, deltas: &[i64]) -> Result<Vec<u64>, String> {
    let mut current = 0i64;
    deltas
        .iter()
        .map(|d| {
            current = current
                .checked_add(*d)
                .ok_or_else(|| format!("{side} bucket count overflows"))?;
            u64::try_from(current).map_err(|_| format!("{side} bucket count {current} is negative"))
        })
        .collect()
}

/// The spans of one side must describe exactly as many buckets as it has; after the first,
/// no span may go backwards (custom buckets: not even the first).
fn check_spans(
    side: &str,
    spans: &[proto::BucketSpan],
    buckets: usize,
    custom: bool,
) -> Result<(), String> {
    let mut total = 0u64;
    for (i, span) in spans.iter().enumerate() {
        if span.offset < 0 && (i > 0 || custom) {
            return Err(format!(
                "{side} span {} has a negative offset {}",
                i + 1,
                span.offset
            ));
        }
        total += u64::from(span.length);
    }
    if total != buckets as u64 {
        return Err(format!(
            "{side} spans describe {total} buckets, but there are {buckets}"
        ));
    }
    Ok(())
}

/// Custom buckets (schema -53): increasing finite bounds that cover the spans, no zero bucket
/// and no negative side.
fn check_custom_buckets(h: &proto::Histogram, float: bool) -> Result<(), String> {
    let zero_count_is_zero = match h.zero_count {
        Some(proto::HistogramCount::Int(z)) => float || z == 0,
        Some(proto::HistogramCount::Float(z)) => !float || z == 0.0,
        None => true,
    };
    if !zero_count_is_zero || h.zero_threshold != 0.0 {
        return Err("custom buckets with a zero bucket".to_string());
    }
    let negative = if float {
        h.negative_counts.len()
    } else {
        h.negative_deltas.len()
    };
    if !h.negative_spans.is_empty() || negative > 0 {
        return Err("custom buckets with negative buckets".to_string());
    }
    let mut previous = f64::NEG_INFINITY;
    for bound in &h.custom_values {
        // Also refuses NaN.
        if bound.is_nan() || *bound <= previous {
            return Err(format!(
                "custom bucket bound {bound} does not follow {previous}"
            ));
        }
        previous = *bound;
    }
    if previous == f64::INFINITY {
        return Err("custom bucket bounds must not end with +Inf".to_string());
    }
    let covered: u64 = h
        .positive_spans
        .iter()
        .map(|s| u64::from(s.length) + u64::from(s.offset.unsigned_abs()))
        .sum();
    if covered > h.custom_values.len() as u64 + 1 {
        return Err(format!(
            "{} custom bounds cannot cover spans {covered} buckets long",
            h.custom_values.len()
        ));
    }
    Ok(())
}

impl From<&Histogram> for proto::Histogram {
    /// The wire form: an integer histogram's absolute counts become deltas again. Counts
    /// above `i64::MAX` cannot be represented (as in Prometheus, whose deltas are int64) and
    /// wrap.
    fn from(h: &Histogram) -> proto::Histogram {
        fn deltas(counts: &[u64]) -> Vec<i64> {
            let mut previous = 0i64;
            counts
                .iter()
                .map(|c| {
                    let c = *c as i64;
                    let d = c.wrapping_sub(previous);
                    previous = c;
                    d
                })
                .collect()
        }
        let spans = |spans: &[BucketSpan]| {
            spans
                .iter()
                .map(|s| proto::BucketSpan {
                    offset: s.offset,
                    length: s.length,
                })
                .collect()
        };
        let mut wire = proto::Histogram {
            sum: h.sum,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            negative_spans: spans(&h.negative_spans),
            positive_spans: spans(&h.positive_spans),
            reset_hint: h.reset_hint as i32,
            timestamp: h.timestamp,
            custom_values: h.custom_values.clone(),
            ..proto::Histogram::default()
        };
        match &h.counts {
            HistogramCounts::Integer {
                count,
                zero_count,
                negative,
                positive,
            } => {
                wire.count = Some(proto::HistogramCount::Int(*count));
                wire.zero_count = Some(proto::HistogramCount::Int(*zero_count));
                wire.negative_deltas = deltas(negative);
                wire.positive_deltas = deltas(positive);
            }
            HistogramCounts::Float {
                count,
                zero_count,
                negative,
                positive,
            } => {
                wire.count = Some(proto::HistogramCount::Float(*count));
                wire.zero_count = Some(proto::HistogramCount::Float(*zero_count));
                wire.negative_counts = negative.clone();
                wire.positive_counts = positive.clone();
            }
        }
        wire
    }
}

impl TryFrom<proto::Exemplar> for Exemplar {
    type Error = String;

    /// Validates an exemplar's labels (valid names, unique, no NUL, at most
    /// [`MAX_EXEMPLAR_LABEL_CHARS`] characters in all) and sorts them by name.
    fn try_from(e: proto::Exemplar) -> Result<Exemplar, String> {
        let mut chars = 0usize;
        for l in &e.labels {
            if !valid_label_name(&l.name) {
                return Err(format!(
                    "invalid label name {:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)",
                    truncate(&l.name)
                ));
            }
            if l.value.contains('\0') {
                return Err(format!("label {} has a NUL character in its value", l.name));
            }
            chars += l.name.chars().count() + l.value.chars().count();
        }
        if chars > MAX_EXEMPLAR_LABEL_CHARS {
            return Err(format!(
                "labels are {chars} characters long, more than {MAX_EXEMPLAR_LABEL_CHARS}"
            ));
        }
        let mut labels: Vec<(String, String)> =
            e.labels.into_iter().map(|l| (l.name, l.value)).collect();
        labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!("duplicate label name {:?}", w[0].0));
        }
        Ok(Exemplar {
            labels,
            value: e.value,
            timestamp: e.timestamp,
        })
    }
}

impl From<&Exemplar> for proto::Exemplar {
    fn from(e: &Exemplar) -> proto::Exemplar {
        proto::Exemplar {
            labels: e
                .labels
                .iter()
                .map(|(name, value)| proto::Label {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            value: e.value,
            timestamp: e.timestamp,
        }
    }
}

/// Sorts, checks and normalises one series' labels. On error returns the series as written
/// by the sender (for the message) and the reason.
fn canonical_labels(text: &Arc<str>, mut spans: Vec<Span>) -> Result<LabelSet, (String, String)> {
    let part = |(a, b): (u32, u32)| text.get(a as usize..b as usize).unwrap_or_default();
    // An empty value means "label absent" in Prometheus; drop it so both spellings are one series.
    spans.retain(|s| s.value.1 > s.value.0);
    spans.sort_unstable_by(|a, b| part(a.name).cmp(part(b.name)));
    let describe = |spans: &[Span]| {
        let shown = LabelSet {
            text: text.clone(),
            spans: spans.iter().take(16).copied().collect(),
        };
        truncate(&shown.to_string())
    };
    if spans.len() > MAX_LABELS_PER_SERIES {
        return Err((
            describe(&spans),
            format!("{} labels, more than {MAX_LABELS_PER_SERIES}", spans.len()),
        ));
    }
    for (i, s) in spans.iter().enumerate() {
        let (name, value) = (part(s.name), part(s.value));
        if !valid_label_name(name) || name.len() > MAX_NAME_BYTES {
            return Err((
                describe(&spans),
                format!("invalid label name {name:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)"),
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err((
                describe(&spans),
                format!(
                    "label {name} value is {} bytes, more than {MAX_VALUE_BYTES}",
                    value.len()
                ),
            ));
        }
        if value.contains('\0') {
            return Err((
                describe(&spans),
                format!("label {name} has a NUL character in its value"),
            ));
        }
        if i > 0 && part(spans[i - 1].name) == name {
            return Err((describe(&spans), format!("duplicate label name {name:?}")));
        }
    }
    let set = LabelSet {
        text: text.clone(),
        spans,
    };
    match set.get("__name__") {
        None => Err((truncate(&set.to_string()), "no __name__ label".to_string())),
        Some(name) if !valid_metric_name(name) => Err((
            truncate(&set.to_string()),
            "metric name must match [a-zA-Z_:][a-zA-Z0-9_:]* and be at most 1024 bytes".to_string(),
        )),
        Some(_) => Ok(set),
    }
}

pub fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Metric names as remote write 1.0 allows them. They become view names in SQL, so the rule
/// is enforced rather than trusted.
pub fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':' => {}
        _ => return false,
    }
    name.len() <= MAX_NAME_BYTES
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
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

/// A walk over the protobuf wire format that allocates nothing: it estimates what decoding
/// the request will allocate, so a crafted body (millions of empty messages) is refused before
/// prost builds it.
pub(crate) mod wire {
    use super::DecodeError;

    /// In-memory cost of one decoded element (struct size plus allocation overhead).
    pub(crate) const SERIES_COST: usize = 64;
    pub(crate) const LABEL_COST: usize = 64;
    pub(crate) const SAMPLE_COST: usize = 16;
    const METADATA_COST: usize = 96;
    /// A histogram's wire form and its validated form.
    const HISTOGRAM_COST: usize = 512;
    /// One bucket, span or custom bound: in the wire form, then validated.
    const BUCKET_COST: usize = 16;
    pub(crate) const EXEMPLAR_COST: usize = 64;

    pub(crate) fn bad(what: &str) -> DecodeError {
        DecodeError::BadProtobuf(format!("malformed protobuf: {what}"))
    }

    pub(crate) fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
            *pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("varint too long"))
    }

    /// Calls `on_field(field_number, payload)` for each length-delimited field of `buf` and
    /// skips the others.
    pub(crate) fn fields(
        buf: &[u8],
        mut on_field: impl FnMut(u64, &[u8]) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        each_field(buf, |number, value| match value {
            Field::Bytes(payload) => on_field(number, payload),
            _ => Ok(()),
        })
    }

    /// One field of a protobuf message.
    pub(crate) enum Field<'a> {
        Varint(u64),
        Fixed64(u64),
        Fixed32,
        Bytes(&'a [u8]),
    }

    /// Calls `on_field(number, value)` for every field of `buf`.
    pub(crate) fn each_field<'a>(
        buf: &'a [u8],
        mut on_field: impl FnMut(u64, Field<'a>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let mut pos = 0;
        while pos < buf.len() {
            let key = varint(buf, &mut pos)?;
            let value = match key & 7 {
                0 => Field::Varint(varint(buf, &mut pos)?),
                1 => {
                    let bytes = buf
                        .get(pos..pos + 8)
                        .ok_or_else(|| bad("truncated fixed64"))?;
                    pos += 8;
                    let mut word = [0u8; 8];
                    word.copy_from_slice(bytes);
                    Field::Fixed64(u64::from_le_bytes(word))
                }
                5 => {
                    buf.get(pos..pos + 4)
                        .ok_or_else(|| bad("truncated fixed32"))?;
                    pos += 4;
                    Field::Fixed32
                }
                2 => {
                    let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| bad("length"))?;
                    let end = pos
                        .checked_add(len)
                        .filter(|&e| e <= buf.len())
                        .ok_or_else(|| bad("length past end"))?;
                    let bytes = &buf[pos..end];
                    pos = end;
                    Field::Bytes(bytes)
                }
                _ => return Err(bad("unsupported wire type")),
            };
            on_field(key >> 3, value)?;
        }
        Ok(())
    }

    pub(crate) fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
        std::str::from_utf8(bytes).map_err(|_| bad("label is not valid UTF-8"))
    }

    /// Parses a `prometheus.WriteRequest` without a string allocation per label: names and
    /// values are appended to one text and referred to by offsets.
    pub(super) fn parse_write_request(raw: &[u8]) -> Result<super::Parsed, DecodeError> {
        use prost::Message;
        let mut text = String::with_capacity(raw.len());
        let mut series = Vec::new();
        let mut metadata = Vec::new();
        each_field(raw, |field, value| match (field, value) {
            (1, Field::Bytes(ts)) => {
                series.push(parse_series(ts, &mut text)?);
                Ok(())
            }
            (3, Field::Bytes(m)) => {
                let m = crate::proto::MetricMetadata::decode(m)
                    .map_err(|e| DecodeError::BadProtobuf(e.to_string()))?;
                metadata.push(m);
                Ok(())
            }
            (1 | 3, _) => Err(bad("wrong wire type for a message field")),
            _ => Ok(()),
        })?;
        Ok(super::Parsed {
            text,
            series,
            metadata,
        })
    }

    fn parse_series(buf: &[u8], text: &mut String) -> Result<super::ParsedSeries, DecodeError> {
        let mut series = super::ParsedSeries::default();
        each_field(buf, |field, value| match (field, value) {
            (1, Field::Bytes(label)) => {
                let (name, value) = parse_label(label)?;
                series.spans.push(super::push_label(text, name, value));
                Ok(())
            }
            (2, Field::Bytes(sample)) => {
                let mut s = crate::proto::Sample {
                    value: 0.0,
                    timestamp: 0,
                };
                each_field(sample, |f, v| match (f, v) {
                    (1, Field::Fixed64(bits)) => {
                        s.value = f64::from_bits(bits);
                        Ok(())
                    }
                    (2, Field::Varint(t)) => {
                        s.timestamp = t as i64;
                        Ok(())
                    }
                    (1 | 2, _) => Err(bad("wrong wire type in a sample")),
                    _ => Ok(()),
                })?;
                series.samples.push(s);
                Ok(())
            }
            (3, Field::Bytes(exemplar)) => {
                series.exemplars.push(parse_exemplar(exemplar)?);
                Ok(())
            }
            (4, Field::Bytes(histogram)) => {
                series.histograms.push(parse_histogram(histogram)?);
                Ok(())
            }
            (1..=4, _) => Err(bad("wrong wire type in a series")),
            _ => Ok(()),
        })?;
        Ok(series)
    }

    fn parse_label(label: &[u8]) -> Result<(&str, &str), DecodeError> {
        let (mut name, mut value) = ("", "");
        each_field(label, |f, v| match (f, v) {
            (1, Field::Bytes(b)) => {
                name = utf8(b)?;
                Ok(())
            }
            (2, Field::Bytes(b)) => {
                value = utf8(b)?;
                Ok(())
            }
            (1 | 2, _) => Err(bad("wrong wire type in a label")),
            _ => Ok(()),
        })?;
        Ok((name, value))
    }

    /// A 1.0 `Exemplar`: labels 1, value 2, timestamp 3.
    fn parse_exemplar(buf: &[u8]) -> Result<crate::proto::Exemplar, DecodeError> {
        let mut e = crate::proto::Exemplar::default();
        each_field(buf, |f, v| match (f, v) {
            (1, Field::Bytes(label)) => {
                let (name, value) = parse_label(label)?;
                e.labels.push(crate::proto::Label {
                    name: name.to_string(),
                    value: value.to_string(),
                });
                Ok(())
            }
            (2, Field::Fixed64(bits)) => {
                e.value = f64::from_bits(bits);
                Ok(())
            }
            (3, Field::Varint(t)) => {
                e.timestamp = t as i64;
                Ok(())
            }
            (1..=3, _) => Err(bad("wrong wire type in an exemplar")),
            _ => Ok(()),
        })?;
        Ok(e)
    }

    fn zigzag64(v: u64) -> i64 {
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }

    /// A `Histogram`, the same message in 1.0 and 2.0 (fields 1-16; 2.0's start timestamp,
    /// 17, is skipped like any unknown field). Repeated numbers are read packed or not, and
    /// values are truncated to their declared width as prost does.
    pub(crate) fn parse_histogram(buf: &[u8]) -> Result<crate::proto::Histogram, DecodeError> {
        use crate::proto::{BucketSpan, HistogramCount};
        let mut h = crate::proto::Histogram::default();
        fn deltas(out: &mut Vec<i64>, value: Field<'_>) -> Result<(), DecodeError> {
            match value {
                Field::Varint(v) => out.push(zigzag64(v)),
                Field::Bytes(packed) => {
                    let mut pos = 0;
                    while pos < packed.len() {
                        out.push(zigzag64(varint(packed, &mut pos)?));
                    }
                }
                _ => return Err(bad("wrong wire type for histogram deltas")),
            }
            Ok(())
        }
        fn doubles(out: &mut Vec<f64>, value: Field<'_>) -> Result<(), DecodeError> {
            match value {
                Field::Fixed64(bits) => out.push(f64::from_bits(bits)),
                Field::Bytes(packed) if packed.len() % 8 == 0 => {
                    out.extend(packed.chunks_exact(8).map(|c| {
                        let mut word = [0u8; 8];
                        word.copy_from_slice(c);
                        f64::from_le_bytes(word)
                    }))
                }
                _ => return Err(bad("wrong wire type or length for histogram doubles")),
            }
            Ok(())
        }
        fn span(buf: &[u8]) -> Result<BucketSpan, DecodeError> {
            let mut s = BucketSpan::default();
            each_field(buf, |f, v| match (f, v) {
                (1, Field::Varint(o)) => {
                    let o = o as u32;
                    s.offset = ((o >> 1) as i32) ^ -((o & 1) as i32);
                    Ok(())
                }
                (2, Field::Varint(l)) => {
                    s.length = l as u32;
                    Ok(())
                }
                (1 | 2, _) => Err(bad("wrong wire type in a bucket span")),
                _ => Ok(()),
            })?;
            Ok(s)
        }
        each_field(buf, |f, v| {
            match (f, v) {
                (1, Field::Varint(c)) => h.count = Some(HistogramCount::Int(c)),
                (2, Field::Fixed64(b)) => h.count = Some(HistogramCount::Float(f64::from_bits(b))),
                (3, Field::Fixed64(b)) => h.sum = f64::from_bits(b),
                (4, Field::Varint(v)) => {
                    let v = v as u32;
                    h.schema = ((v >> 1) as i32) ^ -((v & 1) as i32);
                }
                (5, Field::Fixed64(b)) => h.zero_threshold = f64::from_bits(b),
                (6, Field::Varint(c)) => h.zero_count = Some(HistogramCount::Int(c)),
                (7, Field::Fixed64(b)) => {
                    h.zero_count = Some(HistogramCount::Float(f64::from_bits(b)))
                }
                (8, Field::Bytes(b)) => h.negative_spans.push(span(b)?),
                (9, v) => deltas(&mut h.negative_deltas, v)?,
                (10, v) => doubles(&mut h.negative_counts, v)?,
                (11, Field::Bytes(b)) => h.positive_spans.push(span(b)?),
                (12, v) => deltas(&mut h.positive_deltas, v)?,
                (13, v) => doubles(&mut h.positive_counts, v)?,
                (14, Field::Varint(r)) => h.reset_hint = r as i32,
                (15, Field::Varint(t)) => h.timestamp = t as i64,
                (16, v) => doubles(&mut h.custom_values, v)?,
                (1..=15, _) => return Err(bad("wrong wire type in a histogram")),
                _ => {}
            }
            Ok(())
        })?;
        Ok(h)
    }

    /// Estimated bytes a decoded histogram occupies: per bucket, span and custom bound.
    pub(crate) fn histogram_cost(buf: &[u8]) -> Result<usize, DecodeError> {
        let mut total = HISTOGRAM_COST;
        each_field(buf, |f, v| {
            total += match (f, v) {
                // Packed varints: one element per byte without the continuation bit.
                (9 | 12, Field::Bytes(p)) => BUCKET_COST * p.iter().filter(|b| **b < 0x80).count(),
                (10 | 13 | 16, Field::Bytes(p)) => BUCKET_COST * (p.len() / 8),
                (8 | 9 | 10 | 11 | 12 | 13 | 16, _) => BUCKET_COST,
                _ => 0,
            };
            Ok(())
        })?;
        Ok(total)
    }

    /// Estimated bytes a decoded `ReadRequest` occupies; stops counting past `budget`.
    pub fn estimate_read_request_bytes(buf: &[u8], budget: usize) -> Result<usize, DecodeError> {
        let query_cost = std::mem::size_of::<crate::proto::Query>() + 16;
        let matcher_cost = std::mem::size_of::<crate::proto::LabelMatcher>() + 32;
        let mut total = 0usize;
        each_field(buf, |field, value| {
            if total > budget {
                return Ok(());
            }
            match (field, value) {
                (1, Field::Bytes(query)) => {
                    total += query_cost;
                    fields(query, |f, p| {
                        if f == 3 {
                            total += matcher_cost + p.len();
                        }
                        Ok(())
                    })
                }
                // accepted_response_types: an i32 each, packed or not.
                (2, Field::Bytes(packed)) => {
                    total += 4 * packed.len();
                    Ok(())
                }
                (2, _) => {
                    total += 4;
                    Ok(())
                }
                _ => Ok(()),
            }
        })?;
        Ok(total)
    }

    /// Estimated bytes a decoded `WriteRequest` occupies; stops counting past `budget`.
    pub fn estimate_decoded_bytes(buf: &[u8], budget: usize) -> Result<usize, DecodeError> {
        let mut total = 0usize;
        fields(buf, |field, payload| {
            if total > budget {
                return Ok(());
            }
            match field {
                1 => {
                    total += SERIES_COST;
                    fields(payload, |f, p| {
                        total += match f {
                            1 => LABEL_COST + p.len(),
                            2 => SAMPLE_COST,
                            // Exemplar labels are strings of their own.
                            3 => {
                                let mut labels = 0;
                                fields(p, |f, _| {
                                    labels += usize::from(f == 1);
                                    Ok(())
                                })?;
                                EXEMPLAR_COST + labels * LABEL_COST + p.len()
                            }
                            4 => histogram_cost(p)?,
                            _ => 0,
                        };
                        Ok(())
                    })
                }
                3 => {
                    total += METADATA_COST + payload.len();
                    Ok(())
                }
                _ => Ok(()),
            }
        })?;
        Ok(total)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use prost::Message;

    pub(crate) fn label(n: &str, v: &str) -> proto::Label {
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
                ..Default::default()
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
    const LIMITS: Limits = Limits {
        max_decoded_bytes: 1 << 20,
        max_sample_age_ms: 30 * 86_400_000,
    };

    fn validate(req: proto::WriteRequest, now: i64) -> Result<WriteBatch, DecodeError> {
        super::validate(req, LIMITS, now)
    }

    fn decode_write(body: &[u8], limit: usize, now: i64) -> Result<WriteBatch, DecodeError> {
        super::decode_write(body, Limits::new(limit, LIMITS.max_sample_age_ms), now)
    }

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
        let names: Vec<_> = batch.series[0].labels.labels().map(|(n, _)| n).collect();
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
        assert!(validate(
            request(
                vec![label("__name__", "up")],
                NOW - LIMITS.max_sample_age_ms
            ),
            NOW
        )
        .is_ok());
        for ts in [
            NOW + MAX_FUTURE_MS + 1,
            -1,
            NOW - LIMITS.max_sample_age_ms - 1,
        ] {
            let err =
                validate(request(vec![label("__name__", "up")], ts), NOW).expect_err("bad ts");
            assert_eq!(err.reason(), "timestamp_out_of_range");
            assert!(err.to_string().contains("up{}"), "{err}");
        }
    }

    #[test]
    fn too_many_labels_is_refused() {
        let mut labels: Vec<_> = (0..=MAX_LABELS_PER_SERIES)
            .map(|i| label(&format!("l{i}"), "v"))
            .collect();
        labels.push(label("__name__", "up"));
        let err = validate(request(labels, NOW), NOW).expect_err("too many");
        assert!(err.to_string().contains("labels, more than 128"), "{err}");
    }

    #[test]
    fn invalid_metadata_is_refused() {
        let meta = |name: &str, help: &str| proto::WriteRequest {
            timeseries: vec![],
            metadata: vec![proto::MetricMetadata {
                r#type: 1,
                metric_family_name: name.into(),
                help: help.into(),
                unit: String::new(),
            }],
        };
        assert!(validate(meta("http_requests_total", "ok"), NOW).is_ok());
        assert_eq!(
            validate(meta("bad name", "ok"), NOW)
                .expect_err("name")
                .reason(),
            "invalid_metadata"
        );
        assert_eq!(
            validate(meta("m", "nul\0"), NOW).expect_err("nul").reason(),
            "invalid_metadata"
        );
    }

    #[test]
    fn millions_of_empty_messages_are_refused_before_decoding() {
        // 500,000 empty labels in one series: 1 MB on the wire, ~32 MB once decoded, over
        // the 8 MiB budget of a 2 MiB limit.
        let mut series = Vec::new();
        for _ in 0..500_000 {
            series.extend_from_slice(&[0x0a, 0x00]);
        }
        let mut raw = vec![0x0a];
        let mut len = series.len();
        while len >= 0x80 {
            raw.push((len as u8) | 0x80);
            len >>= 7;
        }
        raw.push(len as u8);
        raw.extend_from_slice(&series);
        let body = snap::raw::Encoder::new().compress_vec(&raw).expect("c");
        let err = decode_write(&body, 2 << 20, NOW).expect_err("refused");
        assert_eq!(err.reason(), "too_many_elements", "{err}");
    }

    #[test]
    fn truncated_protobuf_is_refused_by_the_prescan() {
        let body = snap::raw::Encoder::new()
            .compress_vec(&[0x0a, 0x10, 0x0a])
            .expect("c");
        assert_eq!(
            decode_write(&body, 1 << 20, NOW).expect_err("bad").reason(),
            "bad_protobuf"
        );
    }

    #[test]
    fn json_escapes_quotes_and_controls() {
        let set = LabelSet::from_sorted_for_tests(vec![
            label("__name__", "m"),
            label("a", "q\"\\\n\u{1}é"),
        ]);
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
    fn the_wire_parser_agrees_with_prost() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/prometheus-2.42"
        );
        for name in [
            "write-01",
            "write-02",
            "write-03",
            "write-04",
            "write-05",
            "metadata-01",
        ] {
            let body = std::fs::read(format!("{dir}/{name}.bin")).expect("fixture");
            let limits = Limits::new(32 << 20, i64::MAX);
            let fast = super::decode_write(&body, limits, i64::MAX / 2).expect("wire parser");
            let raw = decompress(&body, 32 << 20).expect("snappy");
            let message = proto::WriteRequest::decode(raw.as_slice()).expect("prost");
            let slow = super::validate(message, limits, i64::MAX / 2).expect("prost path");
            let (f, w) = (bits(&fast), bits(&slow));
            assert_eq!(f.len(), w.len(), "{name}");
            for (a, b) in f.iter().zip(&w) {
                assert_eq!(a, b, "{name}");
            }
            assert_eq!(fast.metadata, slow.metadata, "{name}");
        }
        // Every sample value survives, including the stale-marker NaN payload.
        let req = request(vec![label("__name__", "up")], NOW);
        let mut req = req;
        req.timeseries[0].samples[0].value = f64::from_bits(0x7ff0_0000_0000_0002);
        let batch = decode_write(&compress(&req), 1 << 20, NOW).expect("decodes");
        assert_eq!(
            batch.series[0].samples[0].value.to_bits(),
            0x7ff0_0000_0000_0002
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
            // Any clock after the capture: the age limit is off.
            let batch = super::decode_write(&body, Limits::new(32 << 20, i64::MAX), i64::MAX / 2)
                .expect("decodes");
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

    pub(crate) fn bits(b: &WriteBatch) -> Vec<String> {
        b.series_bit_image()
    }

    pub(crate) fn int_histogram(timestamp: i64) -> Histogram {
        Histogram {
            timestamp,
            schema: 3,
            zero_threshold: 1e-128,
            sum: -0.0,
            reset_hint: ResetHint::No,
            counts: HistogramCounts::Integer {
                count: 20,
                zero_count: 2,
                negative: vec![1, 0, 3],
                positive: vec![5, 4, 0, 2, 3],
            },
            negative_spans: vec![BucketSpan {
                offset: -2,
                length: 3,
            }],
            positive_spans: vec![
                BucketSpan {
                    offset: 0,
                    length: 2,
                },
                BucketSpan {
                    offset: 3,
                    length: 3,
                },
            ],
            custom_values: vec![],
        }
    }

    pub(crate) fn float_histogram(timestamp: i64) -> Histogram {
        Histogram {
            timestamp,
            schema: -53,
            zero_threshold: 0.0,
            sum: 12.5,
            reset_hint: ResetHint::Gauge,
            counts: HistogramCounts::Float {
                count: 7.5,
                zero_count: 0.0,
                negative: vec![],
                positive: vec![1.5, 0.0, 6.0],
            },
            negative_spans: vec![],
            positive_spans: vec![BucketSpan {
                offset: 1,
                length: 3,
            }],
            custom_values: vec![0.1, 0.5, 1.0],
        }
    }

    fn series_with(
        labels: Vec<proto::Label>,
        histograms: Vec<proto::Histogram>,
        exemplars: Vec<proto::Exemplar>,
    ) -> proto::WriteRequest {
        proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                labels,
                samples: vec![],
                exemplars,
                histograms,
            }],
            metadata: vec![],
        }
    }

    /// Decodes with the wire walk and with prost, which must agree.
    fn decode_both(req: &proto::WriteRequest) -> Result<WriteBatch, DecodeError> {
        let fast = decode_write(&compress(req), 1 << 20, NOW);
        let slow = validate(req.clone(), NOW);
        match (&fast, &slow) {
            (Ok(a), Ok(b)) => assert_eq!(bits(a), bits(b)),
            (a, b) => assert_eq!(a, b),
        }
        fast
    }

    fn exemplar(labels: &[(&str, &str)], timestamp: i64) -> proto::Exemplar {
        proto::Exemplar {
            labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
            value: 0.25,
            timestamp,
        }
    }

    #[test]
    fn histogram_only_series_round_trip() {
        let mut stale = int_histogram(NOW + 1);
        stale.sum = f64::from_bits(0x7ff0_0000_0000_0002);
        let mut nan_count = float_histogram(NOW + 2);
        nan_count.counts = HistogramCounts::Float {
            count: f64::NAN,
            zero_count: 0.0,
            negative: vec![],
            positive: vec![1.0, 2.0, 3.0],
        };
        let want = [
            int_histogram(NOW),
            stale,
            nan_count,
            float_histogram(NOW - 1),
        ];
        let req = series_with(
            vec![label("__name__", "h")],
            want.iter().map(proto::Histogram::from).collect(),
            vec![],
        );
        let batch = decode_both(&req).expect("valid");
        assert_eq!(batch.series.len(), 1);
        let s = &batch.series[0];
        assert!(s.samples.is_empty());
        assert_eq!(s.histograms[0], want[0]);
        assert_eq!(s.histograms[0].sum.to_bits(), (-0.0f64).to_bits());
        assert_eq!(s.histograms[1].sum.to_bits(), 0x7ff0_0000_0000_0002);
        assert_eq!(s.histograms[3], want[3]);
        assert_eq!(
            batch.counts(),
            Counts {
                samples: 0,
                histograms: 4,
                exemplars: 0
            }
        );
        // Deltas on the wire.
        let wire = proto::Histogram::from(&want[0]);
        assert_eq!(wire.negative_deltas, [1, -1, 3]);
        assert_eq!(wire.positive_deltas, [5, -1, -4, 2, 1]);
    }

    pub(crate) fn key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
        push_varint(out, field << 3 | wire_type);
    }

    pub(crate) fn push_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub(crate) fn bytes_field(out: &mut Vec<u8>, field: u64, payload: &[u8]) {
        key(out, field, 2);
        push_varint(out, payload.len() as u64);
        out.extend_from_slice(payload);
    }

    #[test]
    fn unpacked_histogram_fields_are_accepted() {
        // count_int 3, positive span {0, 2}, deltas 1 then 1 unpacked, timestamp NOW, then
        // the 2.0 start timestamp (field 17), which 1.0 skips.
        let mut h = Vec::new();
        key(&mut h, 1, 0);
        push_varint(&mut h, 3);
        let mut span = Vec::new();
        key(&mut span, 2, 0);
        push_varint(&mut span, 2);
        bytes_field(&mut h, 11, &span);
        for _ in 0..2 {
            key(&mut h, 12, 0);
            push_varint(&mut h, 2); // zigzag(1)
        }
        key(&mut h, 15, 0);
        push_varint(&mut h, NOW as u64);
        key(&mut h, 17, 0);
        push_varint(&mut h, 5);
        let mut l = Vec::new();
        bytes_field(&mut l, 1, b"__name__");
        bytes_field(&mut l, 2, b"h");
        let mut ts = Vec::new();
        bytes_field(&mut ts, 1, &l);
        bytes_field(&mut ts, 4, &h);
        let mut raw = Vec::new();
        bytes_field(&mut raw, 1, &ts);
        let body = snap::raw::Encoder::new().compress_vec(&raw).expect("c");
        let batch = decode_write(&body, 1 << 20, NOW).expect("valid");
        let h = &batch.series[0].histograms[0];
        assert_eq!(
            h.counts,
            HistogramCounts::Integer {
                count: 3,
                zero_count: 0,
                negative: vec![],
                positive: vec![1, 2]
            }
        );
        let message = proto::WriteRequest::decode(raw.as_slice()).expect("prost");
        assert_eq!(
            bits(&validate(message, NOW).expect("prost path")),
            bits(&batch)
        );
    }

    #[test]
    fn invalid_histograms_are_refused() {
        let base = proto::Histogram::from(&int_histogram(NOW));
        let float = proto::Histogram::from(&float_histogram(NOW));
        type Edit = fn(&mut proto::Histogram);
        let cases: [(&str, proto::Histogram, Edit); 12] = [
            ("spans describe", base.clone(), |h| {
                h.positive_spans[1].length = 2
            }),
            ("is negative", base.clone(), |h| h.positive_deltas[1] = -6),
            ("overflows", base.clone(), |h| {
                h.positive_deltas[1] = i64::MAX
            }),
            ("schema 9", base.clone(), |h| h.schema = 9),
            ("schema -5", base.clone(), |h| h.schema = -5),
            ("custom bucket bounds with exponential", base.clone(), |h| {
                h.custom_values = vec![1.0]
            }),
            ("observations in the buckets", base.clone(), |h| {
                h.count = Some(proto::HistogramCount::Int(19))
            }),
            ("negative offset", base.clone(), |h| {
                h.positive_spans[1].offset = -1
            }),
            ("does not follow", float.clone(), |h| {
                h.custom_values = vec![0.1, 0.1, 1.0]
            }),
            ("cannot cover", float.clone(), |h| {
                h.custom_values.pop().map_or((), drop)
            }),
            ("is negative", float.clone(), |h| {
                h.positive_counts[0] = -1.0
            }),
            ("zero bucket", float.clone(), |h| h.zero_threshold = 0.5),
        ];
        for (want, mut h, edit) in cases {
            edit(&mut h);
            let err = decode_both(&series_with(vec![label("__name__", "h")], vec![h], vec![]))
                .expect_err(want);
            assert_eq!(err.reason(), "invalid_histogram", "{err}");
            assert!(err.to_string().contains(want), "{err} should say {want}");
            assert_eq!(err.refused_samples(), 1);
        }
        // Prometheus's looser rule when the sum is NaN, and ours: count above the buckets.
        let mut more = base.clone();
        more.count = Some(proto::HistogramCount::Int(25));
        assert!(decode_both(&series_with(
            vec![label("__name__", "h")],
            vec![more],
            vec![]
        ))
        .is_ok());
        // An integer histogram whose deltas reach i64::MAX exactly is fine.
        let mut big = proto::Histogram {
            count: Some(proto::HistogramCount::Int(u64::MAX)),
            positive_spans: vec![proto::BucketSpan {
                offset: 0,
                length: 2,
            }],
            positive_deltas: vec![i64::MAX, -i64::MAX],
            timestamp: NOW,
            ..Default::default()
        };
        assert!(decode_both(&series_with(
            vec![label("__name__", "h")],
            vec![big.clone()],
            vec![]
        ))
        .is_ok());
        big.positive_deltas = vec![i64::MAX, i64::MAX - 1];
        assert!(decode_both(&series_with(
            vec![label("__name__", "h")],
            vec![big],
            vec![]
        ))
        .is_err());
    }

    #[test]
    fn exemplar_only_series_are_kept_with_sorted_labels() {
        let req = series_with(
            vec![label("__name__", "up"), label("job", "x")],
            vec![],
            vec![
                exemplar(&[("trace_id", "abc"), ("span_id", "1"), ("empty", "")], NOW),
                exemplar(&[], NOW - 5),
            ],
        );
        let batch = decode_both(&req).expect("valid");
        let e = &batch.series[0].exemplars;
        assert_eq!(
            e[0].labels,
            [
                ("empty".to_string(), String::new()),
                ("span_id".into(), "1".into()),
                ("trace_id".into(), "abc".into())
            ]
        );
        assert_eq!((e[0].value, e[0].timestamp), (0.25, NOW));
        assert!(e[1].labels.is_empty());
        assert_eq!(batch.counts().exemplars, 2);
        assert_eq!(batch.sample_count(), 2);
        // And back to the wire.
        assert_eq!(proto::Exemplar::from(&e[1]), exemplar(&[], NOW - 5));
    }

    #[test]
    fn invalid_exemplars_are_refused() {
        let long = "x".repeat(100);
        // 128 characters exactly is allowed (counted in characters, not bytes).
        let at_limit = "é".repeat(128 - 8 - 5);
        assert!(decode_both(&series_with(
            vec![label("__name__", "up")],
            vec![],
            vec![exemplar(&[("trace_id", &at_limit), ("a", "bcde")], NOW)],
        ))
        .is_ok());
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[("trace-id", "1")], "invalid label name"),
            (&[("", "1")], "invalid label name"),
            (&[("a", "nul\0")], "NUL"),
            (
                &[("b", "1"), ("a", "2"), ("b", "3")],
                "duplicate label name",
            ),
            (&[("trace_id", &long), ("span_id", &long)], "more than 128"),
        ];
        for (labels, want) in cases {
            let err = decode_both(&series_with(
                vec![label("__name__", "up")],
                vec![],
                vec![exemplar(labels, NOW)],
            ))
            .expect_err(want);
            assert_eq!(err.reason(), "invalid_exemplar", "{err}");
            assert!(err.to_string().contains(want), "{err} should say {want}");
        }
    }

    #[test]
    fn histogram_and_exemplar_timestamps_are_range_checked() {
        let late = NOW + MAX_FUTURE_MS + 1;
        for req in [
            series_with(
                vec![label("__name__", "h")],
                vec![proto::Histogram::from(&int_histogram(late))],
                vec![],
            ),
            series_with(
                vec![label("__name__", "h")],
                vec![],
                vec![exemplar(&[], late)],
            ),
            series_with(vec![label("__name__", "h")], vec![], vec![exemplar(&[], 0)]),
        ] {
            let err = decode_both(&req).expect_err("out of range");
            assert_eq!(err.reason(), "timestamp_out_of_range", "{err}");
        }
    }

    #[test]
    fn histogram_buckets_and_exemplar_labels_count_toward_the_budget() {
        // One histogram with a million zero deltas: 1 MB on the wire, ~16 MB decoded, over
        // the 4 MiB budget of a 1 MiB limit.
        let mut h = Vec::new();
        bytes_field(&mut h, 12, &vec![0u8; 1 << 20]);
        let mut ts = Vec::new();
        bytes_field(&mut ts, 4, &h);
        let mut raw = Vec::new();
        bytes_field(&mut raw, 1, &ts);
        let body = snap::raw::Encoder::new().compress_vec(&raw).expect("c");
        let limit = raw.len();
        let err = decode_write(&body, limit, NOW).expect_err("refused");
        assert_eq!(err.reason(), "too_many_elements", "{err}");
        // 400,000 empty exemplar labels: 1.6 MB on the wire, ~26 MB decoded.
        let mut e = Vec::new();
        for _ in 0..400_000 {
            bytes_field(&mut e, 1, &[]);
        }
        let mut ts = Vec::new();
        bytes_field(&mut ts, 3, &e);
        let mut raw = Vec::new();
        bytes_field(&mut raw, 1, &ts);
        let body = snap::raw::Encoder::new().compress_vec(&raw).expect("c");
        let err = decode_write(&body, raw.len(), NOW).expect_err("refused");
        assert_eq!(err.reason(), "too_many_elements", "{err}");
    }
}

//! Prometheus TSDB native-histogram chunks for remote read's streamed answers: encodings
//! HISTOGRAM (2, integer histograms) and FLOAT_HISTOGRAM (3), byte-compatible with
//! prometheus/prometheus `tsdb/chunkenc/{histogram,float_histogram,histogram_meta,varbit,
//! bstream}.go`, whose iterators are the specification.
//!
//! A chunk is a big-endian u16 sample count, a header byte whose top two bits say what is known
//! about counter resets, then a bit stream: the layout (zero threshold, schema, spans, custom
//! bounds) once, then the samples. Every sample of a chunk shares the layout. Prometheus recodes
//! a chunk when buckets appear; this encoder cuts a new chunk instead, so the spans a reader
//! gets back are exactly the ones stored. Chunks are also cut where Prometheus cuts them: on a
//! counter reset (of a non-gauge histogram), a schema, zero-threshold or custom-bounds change, a
//! switch between integer and float or gauge and counter, when a sample follows a stale marker,
//! and after [`MAX_SAMPLES_PER_CHUNK`] samples (Prometheus' head cuts histogram chunks near
//! 1 KiB instead; readers take any count). The header of a cut chunk is what Prometheus' head
//! appender gives it, except that "unknown" is used wherever Prometheus' integer and float
//! appenders disagree (after a gauge chunk, a resolution change or a stale marker).

use crate::decode::{BucketSpan, Histogram, HistogramCounts, ResetHint};
use crate::xor::{bit_range, write_value, BitWriter};
use std::fmt;

/// prompb `Chunk.Encoding` of integer-histogram chunks (chunkenc `EncHistogram`).
pub const CHUNK_HISTOGRAM: i32 = 2;
/// prompb `Chunk.Encoding` of float-histogram chunks (chunkenc `EncFloatHistogram`).
pub const CHUNK_FLOAT_HISTOGRAM: i32 = 3;
/// A chunk holds at most this many samples, as promgres' XOR chunks.
pub const MAX_SAMPLES_PER_CHUNK: usize = crate::xor::MAX_SAMPLES_PER_CHUNK;

/// Header bits: nothing is known about a counter reset before the first sample.
pub const HEADER_UNKNOWN_COUNTER_RESET: u8 = 0b0000_0000;
/// Header bits: the chunk was cut because of a counter reset.
pub const HEADER_COUNTER_RESET: u8 = 0b1000_0000;
/// Header bits: the chunk continues the previous one without a counter reset.
pub const HEADER_NOT_COUNTER_RESET: u8 = 0b0100_0000;
/// Header bits: a chunk of gauge histograms, where counter resets do not exist.
pub const HEADER_GAUGE: u8 = 0b1100_0000;
const HEADER_MASK: u8 = 0b1100_0000;
/// The count (2 bytes) and the header byte.
const HEADER_BYTES: usize = 3;

/// Prometheus' stale marker (`value.StaleNaN`).
const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
const CUSTOM_BUCKETS_SCHEMA: i32 = -53;
const EXPONENTIAL_SCHEMA_MIN: i32 = -4;
const EXPONENTIAL_SCHEMA_MAX: i32 = 8;

/// One chunk of a series: min/max sample time (ms), the prompb Chunk.Encoding value (2 or 3),
/// the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramChunk {
    pub min_time_ms: i64,
    pub max_time_ms: i64,
    pub encoding: i32,
    pub data: Vec<u8>,
}

/// Samples that cannot be encoded (an invalid schema, buckets that disagree with their spans,
/// timestamps out of order); the caller answers without chunks.
#[derive(Debug)]
pub struct HistogramChunkError(pub String);

impl fmt::Display for HistogramChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "histogram chunk: {}", self.0)
    }
}

impl std::error::Error for HistogramChunkError {}

fn error(message: impl Into<String>) -> HistogramChunkError {
    HistogramChunkError(message.into())
}

/// Encodes `samples` (sorted by timestamp, unique) as chunks. Integer and float histograms may
/// be mixed; each chunk holds one kind. Errors on timestamps that do not increase, schemas
/// other than -4..=8 and -53, custom bounds with an exponential schema, and bucket counts that
/// disagree with their spans (stale markers are exempt: their layout is never written).
pub fn encode_chunks(samples: &[Histogram]) -> Result<Vec<HistogramChunk>, HistogramChunkError> {
    let mut chunks = Vec::new();
    let mut open: Option<OpenChunk> = None;
    let mut previous_timestamp: Option<i64> = None;
    for h in samples {
        if previous_timestamp.is_some_and(|p| h.timestamp <= p) {
            return Err(error(format!(
                "timestamps not increasing at {} ms",
                h.timestamp
            )));
        }
        previous_timestamp = Some(h.timestamp);
        let sample = Sample::of(h)?;
        let header = match open.as_mut() {
            Some(chunk) if chunk.kind == sample.kind => {
                let (appendable, header) = chunk.verdict(&sample);
                if appendable && chunk.samples < MAX_SAMPLES_PER_CHUNK {
                    chunk.append(sample);
                    continue;
                }
                header
            }
            // The first chunk, or a switch between integer and float: Prometheus has no previous
            // appender of the kind to compare with, and only the hint speaks.
            _ => match h.reset_hint {
                ResetHint::Gauge => HEADER_GAUGE,
                ResetHint::Yes => HEADER_COUNTER_RESET,
                ResetHint::Unknown | ResetHint::No => HEADER_UNKNOWN_COUNTER_RESET,
            },
        };
        if let Some(done) = open.take() {
            chunks.push(done.finish());
        }
        open = Some(OpenChunk::start(header, sample));
    }
    if let Some(done) = open {
        chunks.push(done.finish());
    }
    Ok(chunks)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Float,
}

/// The schema, zero threshold, spans and custom bounds every sample of a chunk shares.
#[derive(Debug, Clone, PartialEq)]
struct Layout<'a> {
    schema: i32,
    zero_threshold: f64,
    positive_spans: &'a [BucketSpan],
    negative_spans: &'a [BucketSpan],
    custom_values: &'a [f64],
}

/// The layout Prometheus writes for a stale marker (`histogram.Histogram{Sum: StaleNaN}`).
const EMPTY_LAYOUT: Layout<'static> = Layout {
    schema: 0,
    zero_threshold: 0.0,
    positive_spans: &[],
    negative_spans: &[],
    custom_values: &[],
};

impl Layout<'_> {
    /// Whether a sample of layout `other` can share a chunk started with this one.
    fn same_as(&self, other: &Layout) -> bool {
        self.schema == other.schema
            && self.zero_threshold == other.zero_threshold
            && self.positive_spans == other.positive_spans
            && self.negative_spans == other.negative_spans
            && custom_bounds_match(self, other)
    }
}

/// `histogram.CustomBucketBoundsMatch`, asked only for custom-bucket schemas.
fn custom_bounds_match(a: &Layout, b: &Layout) -> bool {
    a.schema != CUSTOM_BUCKETS_SCHEMA || a.custom_values == b.custom_values
}

/// One validated sample as the encoder sees it: a stale marker has been emptied out as
/// Prometheus does before writing it (no layout, no buckets, zero counts).
struct Sample<'a> {
    source: &'a Histogram,
    kind: Kind,
    stale: bool,
    layout: Layout<'a>,
}

impl<'a> Sample<'a> {
    fn of(h: &'a Histogram) -> Result<Sample<'a>, HistogramChunkError> {
        let kind = match h.counts {
            HistogramCounts::Integer { .. } => Kind::Integer,
            HistogramCounts::Float { .. } => Kind::Float,
        };
        if h.sum.to_bits() == STALE_NAN_BITS {
            return Ok(Sample {
                source: h,
                kind,
                stale: true,
                layout: EMPTY_LAYOUT,
            });
        }
        let at = h.timestamp;
        let custom = h.schema == CUSTOM_BUCKETS_SCHEMA;
        if !custom && !(EXPONENTIAL_SCHEMA_MIN..=EXPONENTIAL_SCHEMA_MAX).contains(&h.schema) {
            return Err(error(format!("invalid schema {} at {at} ms", h.schema)));
        }
        if !custom && !h.custom_values.is_empty() {
            return Err(error(format!(
                "custom bucket bounds with exponential schema {} at {at} ms",
                h.schema
            )));
        }
        let (positive, negative) = match &h.counts {
            HistogramCounts::Integer {
                positive, negative, ..
            } => (positive.len(), negative.len()),
            HistogramCounts::Float {
                positive, negative, ..
            } => (positive.len(), negative.len()),
        };
        if span_buckets(&h.positive_spans) != positive as u64
            || span_buckets(&h.negative_spans) != negative as u64
        {
            return Err(error(format!(
                "bucket counts disagree with their spans at {at} ms"
            )));
        }
        Ok(Sample {
            source: h,
            kind,
            stale: false,
            layout: Layout {
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                positive_spans: &h.positive_spans,
                negative_spans: &h.negative_spans,
                custom_values: &h.custom_values,
            },
        })
    }
}

/// How many buckets `spans` describe (saturating: a damaged chunk may claim any number).
fn span_buckets(spans: &[BucketSpan]) -> u64 {
    spans
        .iter()
        .fold(0u64, |n, s| n.saturating_add(u64::from(s.length)))
}

/// Absolute bucket indexes of the buckets `spans` describe, in order (chunkenc
/// `bucketIterator`).
fn bucket_indexes(spans: &[BucketSpan]) -> impl Iterator<Item = i64> + '_ {
    let mut next = 0i64;
    spans.iter().flat_map(move |s| {
        let start = next + i64::from(s.offset);
        next = start + i64::from(s.length);
        (0..i64::from(s.length)).map(move |i| start + i)
    })
}

/// The counter-reset part of chunkenc `expandIntSpansAndBuckets` / `expandFloatSpansAndBuckets`:
/// whether going from buckets `a` to buckets `b` is a reset (a bucket shrank, or a bucket in use
/// disappeared). Buckets new in `b` are not.
fn buckets_reset<T: Copy + PartialOrd + Default>(
    a_spans: &[BucketSpan],
    a_counts: &[T],
    b_spans: &[BucketSpan],
    b_counts: &[T],
) -> bool {
    let zero = T::default();
    let mut a = bucket_indexes(a_spans)
        .zip(a_counts.iter().copied())
        .peekable();
    let mut b = bucket_indexes(b_spans)
        .zip(b_counts.iter().copied())
        .peekable();
    loop {
        match (a.peek().copied(), b.peek().copied()) {
            (Some((ai, ac)), Some((bi, bc))) if ai == bi => {
                if ac > bc {
                    return true;
                }
                a.next();
                b.next();
            }
            (Some((ai, ac)), Some((bi, _))) if ai < bi => {
                if ac != zero {
                    return true;
                }
                a.next();
            }
            (Some(_), Some(_)) | (None, Some(_)) => {
                b.next();
            }
            (Some((_, ac)), None) => {
                if ac != zero {
                    return true;
                }
                a.next();
            }
            (None, None) => return false,
        }
    }
}

/// Integer bucket counts compared as Prometheus compares them: as int64.
fn as_i64(counts: &[u64]) -> Vec<i64> {
    counts.iter().map(|&c| c as i64).collect()
}

struct OpenChunk<'a> {
    kind: Kind,
    header: u8,
    writer: BitWriter,
    samples: usize,
    min_time_ms: i64,
    max_time_ms: i64,
    /// The layout of the first sample, written once.
    layout: Layout<'a>,
    /// The last sample appended: what the next one is compared with for counter resets.
    last: &'a Histogram,
    last_stale: bool,
    appender: Appender,
}

impl<'a> OpenChunk<'a> {
    fn start(header: u8, sample: Sample<'a>) -> OpenChunk<'a> {
        let mut writer = BitWriter::new();
        for _ in 0..HEADER_BYTES {
            writer.byte(0);
        }
        write_layout(&mut writer, &sample.layout);
        let appender = match sample.kind {
            Kind::Integer => Appender::Integer(IntegerAppender::first(&mut writer, &sample)),
            Kind::Float => Appender::Float(FloatAppender::first(&mut writer, &sample)),
        };
        OpenChunk {
            kind: sample.kind,
            header,
            writer,
            samples: 1,
            min_time_ms: sample.source.timestamp,
            max_time_ms: sample.source.timestamp,
            layout: sample.layout,
            last: sample.source,
            last_stale: sample.stale,
            appender,
        }
    }

    fn append(&mut self, sample: Sample<'a>) {
        match &mut self.appender {
            Appender::Integer(a) => a.next(&mut self.writer, &sample),
            Appender::Float(a) => a.next(&mut self.writer, &sample),
        }
        self.samples += 1;
        self.max_time_ms = sample.source.timestamp;
        self.last = sample.source;
        self.last_stale = sample.stale;
    }

    /// Whether `sample` may join this chunk, and the header of the chunk it starts otherwise:
    /// chunkenc `appendable` and `appendableGauge`, with a cut where Prometheus would recode.
    fn verdict(&self, sample: &Sample) -> (bool, u8) {
        let h = sample.source;
        if h.reset_hint == ResetHint::Gauge {
            let appendable = self.header == HEADER_GAUGE
                && (sample.stale || (!self.last_stale && self.layout.same_as(&sample.layout)));
            return (appendable, HEADER_GAUGE);
        }
        if self.header == HEADER_GAUGE {
            // Prometheus marks this NotCounterReset for integer histograms and unknown for
            // float ones; after a gauge nothing is known, so say so for both.
            return (false, HEADER_UNKNOWN_COUNTER_RESET);
        }
        if h.reset_hint == ResetHint::Yes {
            return (false, HEADER_COUNTER_RESET);
        }
        if sample.stale {
            return (true, HEADER_NOT_COUNTER_RESET);
        }
        if self.last_stale {
            return (false, HEADER_UNKNOWN_COUNTER_RESET);
        }
        let last = self.last;
        let reset = match (&last.counts, &h.counts) {
            (
                HistogramCounts::Integer {
                    count: a_count,
                    zero_count: a_zero,
                    negative: a_negative,
                    positive: a_positive,
                },
                HistogramCounts::Integer {
                    count: b_count,
                    zero_count: b_zero,
                    negative: b_negative,
                    positive: b_positive,
                },
            ) => Resets {
                count: b_count < a_count,
                zero_count: b_zero < a_zero,
                buckets: buckets_reset(
                    &last.positive_spans,
                    &as_i64(a_positive),
                    &h.positive_spans,
                    &as_i64(b_positive),
                ) || buckets_reset(
                    &last.negative_spans,
                    &as_i64(a_negative),
                    &h.negative_spans,
                    &as_i64(b_negative),
                ),
            },
            (
                HistogramCounts::Float {
                    count: a_count,
                    zero_count: a_zero,
                    negative: a_negative,
                    positive: a_positive,
                },
                HistogramCounts::Float {
                    count: b_count,
                    zero_count: b_zero,
                    negative: b_negative,
                    positive: b_positive,
                },
            ) => Resets {
                count: b_count < a_count,
                zero_count: b_zero < a_zero,
                buckets: buckets_reset(
                    &last.positive_spans,
                    a_positive,
                    &h.positive_spans,
                    b_positive,
                ) || buckets_reset(
                    &last.negative_spans,
                    a_negative,
                    &h.negative_spans,
                    b_negative,
                ),
            },
            // Kinds differ: the caller cut already.
            _ => return (false, HEADER_UNKNOWN_COUNTER_RESET),
        };
        if reset.count {
            return (false, HEADER_COUNTER_RESET);
        }
        let (old, new) = (&self.layout, &sample.layout);
        if old.schema != new.schema || old.zero_threshold != new.zero_threshold {
            // Prometheus does not look for a reset across a resolution change. (Its float
            // appender says NotCounterReset here when the cut is for size; unknown is safe.)
            return (false, HEADER_UNKNOWN_COUNTER_RESET);
        }
        if !custom_bounds_match(old, new) || reset.zero_count || reset.buckets {
            return (false, HEADER_COUNTER_RESET);
        }
        (old.same_as(new), HEADER_NOT_COUNTER_RESET)
    }

    fn finish(self) -> HistogramChunk {
        let mut data = self.writer.bytes;
        let count = (self.samples as u16).to_be_bytes();
        data[0] = count[0];
        data[1] = count[1];
        data[2] = self.header & HEADER_MASK;
        HistogramChunk {
            min_time_ms: self.min_time_ms,
            max_time_ms: self.max_time_ms,
            encoding: match self.kind {
                Kind::Integer => CHUNK_HISTOGRAM,
                Kind::Float => CHUNK_FLOAT_HISTOGRAM,
            },
            data,
        }
    }
}

struct Resets {
    count: bool,
    zero_count: bool,
    buckets: bool,
}

enum Appender {
    Integer(IntegerAppender),
    Float(FloatAppender),
}

/// Integer bucket counts as Prometheus stores them: each bucket's delta to the previous one.
fn bucket_deltas(absolute: &[u64]) -> Vec<i64> {
    let mut previous = 0i64;
    absolute
        .iter()
        .map(|&c| {
            let delta = (c as i64).wrapping_sub(previous);
            previous = c as i64;
            delta
        })
        .collect()
}

/// An integer sample's fields as chunkenc `HistogramAppender.appendHistogram` writes them.
struct IntegerFields {
    count: u64,
    zero_count: u64,
    sum: f64,
    positive: Vec<i64>,
    negative: Vec<i64>,
}

impl IntegerFields {
    fn of(sample: &Sample) -> IntegerFields {
        let sum = sample.source.sum;
        match &sample.source.counts {
            HistogramCounts::Integer {
                count,
                zero_count,
                negative,
                positive,
            } if !sample.stale => IntegerFields {
                count: *count,
                zero_count: *zero_count,
                sum,
                positive: bucket_deltas(positive),
                negative: bucket_deltas(negative),
            },
            _ => IntegerFields {
                count: 0,
                zero_count: 0,
                sum,
                positive: Vec::new(),
                negative: Vec::new(),
            },
        }
    }
}

/// chunkenc `HistogramAppender`: timestamps, counts and bucket deltas as delta-of-deltas, the
/// sum XOR-ed.
struct IntegerAppender {
    t: i64,
    count: u64,
    zero_count: u64,
    t_delta: i64,
    count_delta: i64,
    zero_count_delta: i64,
    positive: Vec<i64>,
    negative: Vec<i64>,
    positive_delta: Vec<i64>,
    negative_delta: Vec<i64>,
    sum: f64,
    leading: u8,
    trailing: u8,
}

impl IntegerAppender {
    fn first(w: &mut BitWriter, sample: &Sample) -> IntegerAppender {
        let f = IntegerFields::of(sample);
        let t = sample.source.timestamp;
        put_varbit_int(w, t);
        put_varbit_uint(w, f.count);
        put_varbit_uint(w, f.zero_count);
        w.bits(f.sum.to_bits(), 64);
        for &b in f.positive.iter().chain(&f.negative) {
            put_varbit_int(w, b);
        }
        IntegerAppender {
            t,
            count: f.count,
            zero_count: f.zero_count,
            t_delta: 0,
            count_delta: 0,
            zero_count_delta: 0,
            positive_delta: vec![0; f.positive.len()],
            negative_delta: vec![0; f.negative.len()],
            positive: f.positive,
            negative: f.negative,
            sum: f.sum,
            leading: 0xff,
            trailing: 0,
        }
    }

    fn next(&mut self, w: &mut BitWriter, sample: &Sample) {
        let f = IntegerFields::of(sample);
        let t = sample.source.timestamp;
        let t_delta = t.wrapping_sub(self.t);
        let count_delta = (f.count as i64).wrapping_sub(self.count as i64);
        let zero_count_delta = (f.zero_count as i64).wrapping_sub(self.zero_count as i64);
        let (mut count_dod, mut zero_count_dod) = (
            count_delta.wrapping_sub(self.count_delta),
            zero_count_delta.wrapping_sub(self.zero_count_delta),
        );
        if sample.stale {
            (count_dod, zero_count_dod) = (0, 0);
        }
        put_varbit_int(w, t_delta.wrapping_sub(self.t_delta));
        put_varbit_int(w, count_dod);
        put_varbit_int(w, zero_count_dod);
        write_value(w, f.sum, self.sum, &mut self.leading, &mut self.trailing);
        // A stale marker has no buckets: the previous ones and their deltas stay.
        for ((b, previous), previous_delta) in f
            .positive
            .iter()
            .zip(self.positive.iter_mut())
            .zip(self.positive_delta.iter_mut())
            .chain(
                f.negative
                    .iter()
                    .zip(self.negative.iter_mut())
                    .zip(self.negative_delta.iter_mut()),
            )
        {
            let delta = b.wrapping_sub(*previous);
            put_varbit_int(w, delta.wrapping_sub(*previous_delta));
            *previous_delta = delta;
            *previous = *b;
        }
        self.t = t;
        self.count = f.count;
        self.zero_count = f.zero_count;
        self.t_delta = t_delta;
        self.count_delta = count_delta;
        self.zero_count_delta = zero_count_delta;
        self.sum = f.sum;
    }
}

/// A float XOR-ed against its previous value, with the window of the last write.
#[derive(Clone, Copy)]
struct XorValue {
    value: f64,
    leading: u8,
    trailing: u8,
}

impl XorValue {
    fn new(value: f64) -> XorValue {
        XorValue {
            value,
            leading: 0xff,
            trailing: 0,
        }
    }

    fn write(&mut self, w: &mut BitWriter, value: f64) {
        write_value(w, value, self.value, &mut self.leading, &mut self.trailing);
        self.value = value;
    }
}

/// chunkenc `FloatHistogramAppender`: timestamps as delta-of-deltas, every float XOR-ed.
struct FloatAppender {
    t: i64,
    t_delta: i64,
    count: XorValue,
    zero_count: XorValue,
    sum: XorValue,
    positive: Vec<XorValue>,
    negative: Vec<XorValue>,
}

/// A float sample's count, zero count and buckets; a stale marker's are zero and none.
fn float_fields<'s>(sample: &Sample<'s>) -> (f64, f64, &'s [f64], &'s [f64]) {
    match &sample.source.counts {
        HistogramCounts::Float {
            count,
            zero_count,
            negative,
            positive,
        } if !sample.stale => (*count, *zero_count, positive, negative),
        _ => (0.0, 0.0, &[], &[]),
    }
}

impl FloatAppender {
    fn first(w: &mut BitWriter, sample: &Sample) -> FloatAppender {
        let (count, zero_count, positive, negative) = float_fields(sample);
        let t = sample.source.timestamp;
        let sum = sample.source.sum;
        put_varbit_int(w, t);
        for v in [count, zero_count, sum]
            .iter()
            .chain(positive)
            .chain(negative)
        {
            w.bits(v.to_bits(), 64);
        }
        FloatAppender {
            t,
            t_delta: 0,
            count: XorValue::new(count),
            zero_count: XorValue::new(zero_count),
            sum: XorValue::new(sum),
            positive: positive.iter().map(|&v| XorValue::new(v)).collect(),
            negative: negative.iter().map(|&v| XorValue::new(v)).collect(),
        }
    }

    fn next(&mut self, w: &mut BitWriter, sample: &Sample) {
        let (count, zero_count, positive, negative) = float_fields(sample);
        let t = sample.source.timestamp;
        let t_delta = t.wrapping_sub(self.t);
        put_varbit_int(w, t_delta.wrapping_sub(self.t_delta));
        self.count.write(w, count);
        self.zero_count.write(w, zero_count);
        self.sum.write(w, sample.source.sum);
        for (v, previous) in positive
            .iter()
            .zip(self.positive.iter_mut())
            .chain(negative.iter().zip(self.negative.iter_mut()))
        {
            previous.write(w, *v);
        }
        self.t = t;
        self.t_delta = t_delta;
    }
}

/// chunkenc `writeHistogramChunkLayout`.
fn write_layout(w: &mut BitWriter, layout: &Layout) {
    put_zero_threshold(w, layout.zero_threshold);
    put_varbit_int(w, i64::from(layout.schema));
    for spans in [layout.positive_spans, layout.negative_spans] {
        put_varbit_uint(w, spans.len() as u64);
        for s in spans {
            put_varbit_uint(w, u64::from(s.length));
            put_varbit_int(w, i64::from(s.offset));
        }
    }
    if layout.schema == CUSTOM_BUCKETS_SCHEMA {
        put_varbit_uint(w, layout.custom_values.len() as u64);
        for &bound in layout.custom_values {
            put_custom_bound(w, bound);
        }
    }
}

/// chunkenc `putZeroThreshold`: 0 as one zero byte, a power of two in 2^-243..=2^10 as one byte
/// (its `math.Frexp` exponent + 243), anything else as 255 and the float's 8 bytes.
fn put_zero_threshold(w: &mut BitWriter, threshold: f64) {
    if threshold == 0.0 {
        w.byte(0);
        return;
    }
    let bits = threshold.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let is_power_of_two = threshold > 0.0 && biased != 0 && biased != 0x7ff && bits & MANTISSA == 0;
    // Frexp gives threshold = 0.5 * 2^exp.
    let exp = biased - 1022;
    if !is_power_of_two || !(-242..=11).contains(&exp) {
        w.byte(255);
        w.bits(bits, 64);
        return;
    }
    w.byte((exp + 243) as u8);
}

const MANTISSA: u64 = (1 << 52) - 1;

/// chunkenc `putCustomBound`: multiples of 0.001 in 0..=33554.430 as varbit (value*1000 + 1),
/// anything else as a zero bit and the float's 8 bytes.
fn put_custom_bound(w: &mut BitWriter, bound: f64) {
    let scaled = bound * 1000.0;
    if !(0.0..=33_554_430.0).contains(&scaled) || !whole_when_multiplied(bound) {
        w.bit(false);
        w.bits(bound.to_bits(), 64);
        return;
    }
    put_varbit_uint(w, scaled.round() as u64 + 1);
}

/// chunkenc `isWholeWhenMultiplied`.
fn whole_when_multiplied(value: f64) -> bool {
    let scaled = (value * 1000.0).round() as u64;
    value == scaled as f64 / 1000.0
}

/// chunkenc `putVarbitInt`.
fn put_varbit_int(w: &mut BitWriter, value: i64) {
    if value == 0 {
        w.bit(false);
        return;
    }
    for (prefix, prefix_bits, nbits) in VARBIT_BUCKETS {
        if bit_range(value, nbits) {
            w.bits(prefix, prefix_bits);
            w.bits(value as u64, nbits);
            return;
        }
    }
    w.bits(0b1111_1111, 8);
    w.bits(value as u64, 64);
}

/// chunkenc `putVarbitUint`: the same buckets as [`put_varbit_int`], unsigned.
fn put_varbit_uint(w: &mut BitWriter, value: u64) {
    if value == 0 {
        w.bit(false);
        return;
    }
    for (prefix, prefix_bits, nbits) in VARBIT_BUCKETS {
        if value.leading_zeros() >= 64 - nbits {
            w.bits(prefix, prefix_bits);
            w.bits(value, nbits);
            return;
        }
    }
    w.bits(0b1111_1111, 8);
    w.bits(value, 64);
}

/// Varbit buckets after zero (a single 0 bit): prefix, prefix length, value bits. Beyond the
/// last, eight 1 bits and the full 64.
const VARBIT_BUCKETS: [(u64, u32, u32); 7] = [
    (0b10, 2, 3),
    (0b110, 3, 6),
    (0b1110, 4, 9),
    (0b1_1110, 5, 12),
    (0b11_1110, 6, 18),
    (0b111_1110, 7, 25),
    (0b1111_1110, 8, 56),
];

/// A decoded chunk: its counter-reset header bits and its samples, as Prometheus' iterators
/// return them (stale markers as a bare stale sum; the reset hint derived from the header and
/// the position: gauge in gauge chunks, unknown for the first sample, no reset after it).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedChunk {
    pub header: u8,
    pub histograms: Vec<Histogram>,
}

/// Test support, not used by the server: decodes a chunk as chunkenc `histogramIterator` and
/// `floatHistogramIterator` do. Integration tests use it to read streamed answers.
#[doc(hidden)]
pub fn decode_chunk(encoding: i32, data: &[u8]) -> Result<DecodedChunk, HistogramChunkError> {
    let kind = match encoding {
        CHUNK_HISTOGRAM => Kind::Integer,
        CHUNK_FLOAT_HISTOGRAM => Kind::Float,
        other => return Err(error(format!("not a histogram chunk encoding: {other}"))),
    };
    let [count_high, count_low, header_byte, ..] = *data else {
        return Err(error("chunk shorter than its header"));
    };
    let total = usize::from(u16::from_be_bytes([count_high, count_low]));
    let header = header_byte & HEADER_MASK;
    let mut r = BitReader::new(&data[HEADER_BYTES..]);
    let mut histograms = Vec::with_capacity(total.min(MAX_SAMPLES_PER_CHUNK));
    if total == 0 {
        return Ok(DecodedChunk { header, histograms });
    }
    let layout = read_layout(&mut r)?;
    let positive_buckets = span_buckets(&layout.positive_spans);
    let negative_buckets = span_buckets(&layout.negative_spans);
    // Every bucket takes at least one bit in the first sample: a bound against huge spans.
    if positive_buckets + negative_buckets > r.remaining() {
        return Err(error("more buckets than the chunk has bits"));
    }
    let (p, n) = (positive_buckets as usize, negative_buckets as usize);
    let hint = |read: usize| match (header, read) {
        (HEADER_GAUGE, _) => ResetHint::Gauge,
        (_, 0) => ResetHint::Unknown,
        _ => ResetHint::No,
    };
    let make = |t: i64, sum: f64, counts: HistogramCounts, read: usize| {
        if sum.to_bits() == STALE_NAN_BITS {
            return Histogram {
                timestamp: t,
                schema: 0,
                zero_threshold: 0.0,
                sum,
                reset_hint: ResetHint::Unknown,
                counts: match kind {
                    Kind::Integer => HistogramCounts::Integer {
                        count: 0,
                        zero_count: 0,
                        negative: Vec::new(),
                        positive: Vec::new(),
                    },
                    Kind::Float => HistogramCounts::Float {
                        count: 0.0,
                        zero_count: 0.0,
                        negative: Vec::new(),
                        positive: Vec::new(),
                    },
                },
                negative_spans: Vec::new(),
                positive_spans: Vec::new(),
                custom_values: Vec::new(),
            };
        }
        Histogram {
            timestamp: t,
            schema: layout.schema,
            zero_threshold: layout.zero_threshold,
            sum,
            reset_hint: hint(read),
            counts,
            negative_spans: layout.negative_spans.clone(),
            positive_spans: layout.positive_spans.clone(),
            custom_values: layout.custom_values.clone(),
        }
    };
    match kind {
        Kind::Integer => {
            let mut t = read_varbit_int(&mut r)?;
            let mut count = read_varbit_uint(&mut r)?;
            let mut zero_count = read_varbit_uint(&mut r)?;
            let mut sum = f64::from_bits(r.bits(64)?);
            let mut buckets = Vec::with_capacity(p + n);
            for _ in 0..p + n {
                buckets.push(read_varbit_int(&mut r)?);
            }
            let mut bucket_deltas = vec![0i64; p + n];
            let (mut t_delta, mut count_delta, mut zero_count_delta) = (0i64, 0i64, 0i64);
            let (mut leading, mut trailing) = (0u8, 0u8);
            for read in 0..total {
                if read > 0 {
                    t_delta = t_delta.wrapping_add(read_varbit_int(&mut r)?);
                    t = t.wrapping_add(t_delta);
                    count_delta = count_delta.wrapping_add(read_varbit_int(&mut r)?);
                    count = (count as i64).wrapping_add(count_delta) as u64;
                    zero_count_delta = zero_count_delta.wrapping_add(read_varbit_int(&mut r)?);
                    zero_count = (zero_count as i64).wrapping_add(zero_count_delta) as u64;
                    xor_read(&mut r, &mut sum, &mut leading, &mut trailing)?;
                    if sum.to_bits() != STALE_NAN_BITS {
                        for (b, d) in buckets.iter_mut().zip(bucket_deltas.iter_mut()) {
                            *d = d.wrapping_add(read_varbit_int(&mut r)?);
                            *b = b.wrapping_add(*d);
                        }
                    }
                }
                let absolute = |deltas: &[i64]| {
                    let mut current = 0i64;
                    deltas
                        .iter()
                        .map(|d| {
                            current = current.wrapping_add(*d);
                            current as u64
                        })
                        .collect::<Vec<u64>>()
                };
                let counts = HistogramCounts::Integer {
                    count,
                    zero_count,
                    negative: absolute(&buckets[p..]),
                    positive: absolute(&buckets[..p]),
                };
                histograms.push(make(t, sum, counts, read));
            }
        }
        Kind::Float => {
            let mut t = read_varbit_int(&mut r)?;
            let mut values = Vec::with_capacity(3 + p + n);
            for _ in 0..3 + p + n {
                values.push((f64::from_bits(r.bits(64)?), 0u8, 0u8));
            }
            let mut t_delta = 0i64;
            for read in 0..total {
                if read > 0 {
                    t_delta = t_delta.wrapping_add(read_varbit_int(&mut r)?);
                    t = t.wrapping_add(t_delta);
                    // Count, zero count and sum always; the buckets unless the sum is stale.
                    for i in 0..values.len() {
                        if i == 3 && values[2].0.to_bits() == STALE_NAN_BITS {
                            break;
                        }
                        let (value, leading, trailing) = &mut values[i];
                        xor_read(&mut r, value, leading, trailing)?;
                    }
                }
                let floats: Vec<f64> = values.iter().map(|v| v.0).collect();
                let counts = HistogramCounts::Float {
                    count: floats[0],
                    zero_count: floats[1],
                    negative: floats[3 + p..].to_vec(),
                    positive: floats[3..3 + p].to_vec(),
                };
                histograms.push(make(t, floats[2], counts, read));
            }
        }
    }
    Ok(DecodedChunk { header, histograms })
}

struct ReadLayout {
    schema: i32,
    zero_threshold: f64,
    positive_spans: Vec<BucketSpan>,
    negative_spans: Vec<BucketSpan>,
    custom_values: Vec<f64>,
}

/// chunkenc `readHistogramChunkLayout`, refusing schemas the Go iterators refuse.
fn read_layout(r: &mut BitReader) -> Result<ReadLayout, HistogramChunkError> {
    let zero_threshold = match r.bits(8)? {
        0 => 0.0,
        255 => f64::from_bits(r.bits(64)?),
        // math.Ldexp(0.5, b-243) = 2^(b-244), always a normal float.
        b => f64::from_bits(((b as i64 - 244 + 1023) as u64) << 52),
    };
    let schema = read_varbit_int(r)?;
    let schema = i32::try_from(schema).map_err(|_| error("schema out of range"))?;
    let mut spans = [Vec::new(), Vec::new()];
    for side in spans.iter_mut() {
        let count = read_varbit_uint(r)?;
        // A span takes at least two bits.
        if count > r.remaining() {
            return Err(error("more spans than the chunk has bits"));
        }
        for _ in 0..count {
            let length = read_varbit_uint(r)? as u32;
            let offset = read_varbit_int(r)? as i32;
            side.push(BucketSpan { offset, length });
        }
    }
    let mut custom_values = Vec::new();
    if schema == CUSTOM_BUCKETS_SCHEMA {
        let count = read_varbit_uint(r)?;
        if count > r.remaining() {
            return Err(error("more custom bounds than the chunk has bits"));
        }
        for _ in 0..count {
            custom_values.push(match read_varbit_uint(r)? {
                0 => f64::from_bits(r.bits(64)?),
                v => (v - 1) as f64 / 1000.0,
            });
        }
    } else if !(-9..=52).contains(&schema) {
        return Err(error(format!("unknown schema {schema}")));
    }
    let [positive_spans, negative_spans] = spans;
    Ok(ReadLayout {
        schema,
        zero_threshold,
        positive_spans,
        negative_spans,
        custom_values,
    })
}

/// chunkenc `readVarbitInt`.
fn read_varbit_int(r: &mut BitReader) -> Result<i64, HistogramChunkError> {
    let Some(nbits) = read_varbit_width(r)? else {
        return Ok(0);
    };
    let bits = r.bits(nbits)?;
    if nbits < 64 && bits > 1 << (nbits - 1) {
        return Ok(bits.wrapping_sub(1 << nbits) as i64);
    }
    Ok(bits as i64)
}

/// chunkenc `readVarbitUint`.
fn read_varbit_uint(r: &mut BitReader) -> Result<u64, HistogramChunkError> {
    match read_varbit_width(r)? {
        None => Ok(0),
        Some(nbits) => r.bits(nbits),
    }
}

/// The value width a varbit prefix announces (up to eight 1 bits ended by a 0); None for zero.
fn read_varbit_width(r: &mut BitReader) -> Result<Option<u32>, HistogramChunkError> {
    let mut ones = 0;
    while ones < 8 && r.bit()? {
        ones += 1;
    }
    Ok(match ones {
        0 => None,
        8 => Some(64),
        n => Some(VARBIT_BUCKETS[n - 1].2),
    })
}

/// chunkenc `xorRead`.
fn xor_read(
    r: &mut BitReader,
    value: &mut f64,
    leading: &mut u8,
    trailing: &mut u8,
) -> Result<(), HistogramChunkError> {
    if !r.bit()? {
        return Ok(());
    }
    let significant = if !r.bit()? {
        64 - u32::from(*leading) - u32::from(*trailing)
    } else {
        let new_leading = r.bits(5)? as u32;
        let significant = match r.bits(6)? as u32 {
            0 => 64,
            s => s,
        };
        let new_trailing = 64u32
            .checked_sub(new_leading + significant)
            .ok_or_else(|| error("bad XOR window"))?;
        *leading = new_leading as u8;
        *trailing = new_trailing as u8;
        significant
    };
    let bits = r.bits(significant)?;
    let shifted = bits.checked_shl(u32::from(*trailing)).unwrap_or(0);
    *value = f64::from_bits(value.to_bits() ^ shifted);
    Ok(())
}

/// chunkenc `bstreamReader`.
struct BitReader<'a> {
    bytes: &'a [u8],
    /// Bits read so far.
    position: u64,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, position: 0 }
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() as u64 * 8).saturating_sub(self.position)
    }

    fn bit(&mut self) -> Result<bool, HistogramChunkError> {
        let byte = self
            .bytes
            .get((self.position / 8) as usize)
            .ok_or_else(|| error("chunk ends early"))?;
        let one = byte >> (7 - self.position % 8) & 1 == 1;
        self.position += 1;
        Ok(one)
    }

    fn bits(&mut self, n: u32) -> Result<u64, HistogramChunkError> {
        if u64::from(n) > self.remaining() {
            return Err(error("chunk ends early"));
        }
        let mut value = 0u64;
        for _ in 0..n {
            value = value << 1 | u64::from(self.bit()?);
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: f64 = f64::from_bits(STALE_NAN_BITS);
    /// Prometheus' default zero threshold, 2^-128.
    const DEFAULT_ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;

    fn span(offset: i32, length: u32) -> BucketSpan {
        BucketSpan { offset, length }
    }

    /// An integer histogram with one positive span over `positive`.
    fn int_hist(t: i64, positive: &[u64]) -> Histogram {
        Histogram {
            timestamp: t,
            schema: 3,
            zero_threshold: DEFAULT_ZERO_THRESHOLD,
            sum: positive.iter().sum::<u64>() as f64 * 1.5,
            reset_hint: ResetHint::Unknown,
            counts: HistogramCounts::Integer {
                count: positive.iter().sum(),
                zero_count: 0,
                negative: Vec::new(),
                positive: positive.to_vec(),
            },
            negative_spans: Vec::new(),
            positive_spans: vec![span(-2, positive.len() as u32)],
            custom_values: Vec::new(),
        }
    }

    fn float_hist(t: i64, positive: &[f64]) -> Histogram {
        Histogram {
            timestamp: t,
            schema: 0,
            zero_threshold: 0.001,
            sum: positive.iter().sum::<f64>() * 0.7,
            reset_hint: ResetHint::Unknown,
            counts: HistogramCounts::Float {
                count: positive.iter().sum(),
                zero_count: 0.0,
                negative: Vec::new(),
                positive: positive.to_vec(),
            },
            negative_spans: Vec::new(),
            positive_spans: vec![span(1, positive.len() as u32)],
            custom_values: Vec::new(),
        }
    }

    fn stale(mut h: Histogram) -> Histogram {
        h.sum = STALE;
        h
    }

    /// Everything a reader gets back, floats as bits (NaN payloads matter), the reset hint left
    /// out (the chunk header carries it).
    fn key(h: &Histogram) -> String {
        Histogram {
            reset_hint: ResetHint::Unknown,
            ..h.clone()
        }
        .bit_image()
    }

    /// What Prometheus' iterators return for `h`: a stale marker loses all but its sum.
    fn expected(h: &Histogram) -> String {
        if h.sum.to_bits() != STALE_NAN_BITS {
            return key(h);
        }
        let counts = match h.counts {
            HistogramCounts::Integer { .. } => HistogramCounts::Integer {
                count: 0,
                zero_count: 0,
                negative: Vec::new(),
                positive: Vec::new(),
            },
            HistogramCounts::Float { .. } => HistogramCounts::Float {
                count: 0.0,
                zero_count: 0.0,
                negative: Vec::new(),
                positive: Vec::new(),
            },
        };
        key(&Histogram {
            timestamp: h.timestamp,
            schema: 0,
            zero_threshold: 0.0,
            sum: h.sum,
            reset_hint: ResetHint::Unknown,
            counts,
            negative_spans: Vec::new(),
            positive_spans: Vec::new(),
            custom_values: Vec::new(),
        })
    }

    /// Encodes, decodes every chunk, checks the samples come back bit for bit and the chunks
    /// are well formed; returns the chunks and their headers.
    fn round_trip(samples: &[Histogram]) -> Vec<(HistogramChunk, u8)> {
        let chunks = encode_chunks(samples).unwrap();
        let mut decoded = Vec::new();
        let mut out = Vec::new();
        for c in chunks {
            let d = decode_chunk(c.encoding, &c.data).unwrap();
            assert!(!d.histograms.is_empty() && d.histograms.len() <= MAX_SAMPLES_PER_CHUNK);
            assert_eq!(c.min_time_ms, d.histograms[0].timestamp);
            assert_eq!(c.max_time_ms, d.histograms.last().unwrap().timestamp);
            for (i, h) in d.histograms.iter().enumerate() {
                let is_integer = matches!(h.counts, HistogramCounts::Integer { .. });
                assert_eq!(is_integer, c.encoding == CHUNK_HISTOGRAM);
                if h.sum.to_bits() == STALE_NAN_BITS {
                    continue;
                }
                let hint = match (d.header, i) {
                    (HEADER_GAUGE, _) => ResetHint::Gauge,
                    (_, 0) => ResetHint::Unknown,
                    _ => ResetHint::No,
                };
                assert_eq!(h.reset_hint, hint, "hint of sample {i}");
            }
            decoded.extend(d.histograms);
            out.push((c, d.header));
        }
        let want: Vec<String> = samples.iter().map(expected).collect();
        let got: Vec<String> = decoded.iter().map(key).collect();
        assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w, g);
        }
        out
    }

    fn headers(chunks: &[(HistogramChunk, u8)]) -> Vec<u8> {
        chunks.iter().map(|(_, h)| *h).collect()
    }

    fn sizes(chunks: &[(HistogramChunk, u8)]) -> Vec<usize> {
        chunks
            .iter()
            .map(|(c, _)| usize::from(u16::from_be_bytes([c.data[0], c.data[1]])))
            .collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// prometheus/prometheus storage/remote/read_handler_test.go (TestStreamReadEndpoint):
    /// the FLOAT_HISTOGRAM chunk Prometheus streams for `tsdbutil.GenerateTestFloatHistograms(25)`
    /// at one-minute steps.
    const PROMETHEUS_FLOAT_CHUNK: &str = concat!(
        "001900ff3f50624dd2f1a9fc8ca4946524a24028000000000000400000000000000040326666666666663ff0000000000000",
        "40000000000000003ff00000000000003ff00000000000003ff000000000000040000000000000003ff00000000000003ff0",
        "000000000000f8ea60d62f7603d21fc25fffd80f097fff097fff097fff603c25fffc25fff4bd617b349ffffffffffffd80f5",
        "85ec07b01ec07ac2f603d80da48fbda0f5eb9ffffffffffffd617b41eb0bd617ac2f683d617ac2d0bec0b8acccccccccccdb",
        "41ec0bda0f683da0f605ed07b41a09999333333333333b02e7605ec0bd8173b02f605a38d427ea1fbcea13e667509f32dc24",
        "ee07bb29ffffffffffff509fb81ea13f509fa84fdc0f509fa84f6d17fb42f6e7b555555555557703da17b81ee07b81ed0bdc",
        "0f7034999d99999999999ed0b9da17b42f685ced0bda16d8377b03fb32e4cccccccccce7607e667607e65131dd95aaaaaaaa",
        "aaabb03f1d81fd81fd81f8ec0fec0fa5e7b73cffffffffffff19c6319c62d44fc63af5effffffffffffce339ce339a05eb13",
        "e0acccccccccccc7589f18c7589f18a0cef070c99999999999b589fbc1eb13f589fac4fde0f589fac4f40fdc1707aaaaaaaa",
        "aaab783dc17bc1ef07bc1ee0bde0f78343998e7fffffffffffb82e7705ee0bdc173b82f705a05ed0fc16aaaaaaaaaaa9da1f",
        "999da1f994198c2d99999999999da1f8ed0fed0fed0fc7687f687d1de73c99999999999a338c6338c5026305aaaaaaaaaaaa",
        "719ce719cd06f609f0cfffffffffffe3b04f8c63b04f8c5026183d55555555555b04f87609fb04fd827c3b04fd827a1fc71c",
        "99999999999a18e18618e184",    );

    #[test]
    fn float_chunk_matches_prometheus_bytes() {
        let samples: Vec<Histogram> = (0..25i64)
            .map(|i| {
                let f = i as f64;
                let buckets = vec![f + 1.0, f + 2.0, f + 1.0, f + 1.0];
                Histogram {
                    timestamp: i * 60_000,
                    schema: 1,
                    zero_threshold: 0.001,
                    sum: 18.4 * (f + 1.0),
                    reset_hint: if i == 0 {
                        ResetHint::Unknown
                    } else {
                        ResetHint::No
                    },
                    counts: HistogramCounts::Float {
                        count: 12.0 + f * 9.0,
                        zero_count: 2.0 + f,
                        negative: buckets.clone(),
                        positive: buckets,
                    },
                    negative_spans: vec![span(0, 2), span(1, 2)],
                    positive_spans: vec![span(0, 2), span(1, 2)],
                    custom_values: Vec::new(),
                }
            })
            .collect();
        let chunks = encode_chunks(&samples).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].encoding, CHUNK_FLOAT_HISTOGRAM);
        assert_eq!(
            (chunks[0].min_time_ms, chunks[0].max_time_ms),
            (0, 1_440_000)
        );
        assert_eq!(chunks[0].data, unhex(PROMETHEUS_FLOAT_CHUNK));
        round_trip(&samples);
    }

    /// Bytes worked out by hand from the Go writers (putZeroThreshold, putVarbitInt/Uint,
    /// xorWrite), not by this encoder.
    #[test]
    fn integer_chunk_matches_hand_encoding() {
        let first = Histogram {
            timestamp: 1000,
            schema: 0,
            zero_threshold: DEFAULT_ZERO_THRESHOLD,
            sum: 2.5,
            reset_hint: ResetHint::Unknown,
            counts: HistogramCounts::Integer {
                count: 4,
                zero_count: 0,
                negative: Vec::new(),
                positive: vec![1, 3],
            },
            negative_spans: Vec::new(),
            positive_spans: vec![span(0, 2)],
            custom_values: Vec::new(),
        };
        // 00 01: one sample; 00: unknown counter reset. 0x74 = 116: the zero threshold 2^-128.
        // Then bits: 0 (schema 0) | 10 001 (one positive span) | 10 010 (length 2) 0 (offset 0)
        // | 0 (no negative spans) | 11110 001111101000 (t 1000) | 10 100 (count 4) | 0 (zero
        // count) | 64 bits of 2.5 | 10 001, 10 010 (bucket deltas 1, 2).
        let chunks = encode_chunks(std::slice::from_ref(&first)).unwrap();
        assert_eq!(
            chunks[0].data,
            unhex("0001007446478fa2840040000000000008c8")
        );
        assert_eq!(chunks[0].encoding, CHUNK_HISTOGRAM);
        let second = Histogram {
            timestamp: 2000,
            sum: 5.0,
            counts: HistogramCounts::Integer {
                count: 7,
                zero_count: 0,
                negative: Vec::new(),
                positive: vec![2, 5],
            },
            ..first.clone()
        };
        // Second sample: 11110 001111101000 (t dod 1000) | 10 011 (count dod 3) | 0 | 1 1 01011
        // 000001 1 (sum 2.5 -> 5.0: 11 leading zeros, one significant bit) | 10 001, 10 001
        // (bucket dods 1, 1).
        let chunks = encode_chunks(&[first.clone(), second.clone()]).unwrap();
        assert_eq!(
            chunks[0].data,
            unhex("0002007446478fa2840040000000000008cbc7d136b07188")
        );
        round_trip(&[first, second]);
    }

    #[test]
    fn integer_histograms_with_growing_counts_share_a_chunk() {
        let samples: Vec<Histogram> = (0..50u64)
            .map(|i| int_hist(1_000 + i as i64 * 15_000, &[i, 2 * i + 1, i * i, 7, 0]))
            .collect();
        let chunks = round_trip(&samples);
        assert_eq!(sizes(&chunks), vec![50]);
        assert_eq!(headers(&chunks), vec![HEADER_UNKNOWN_COUNTER_RESET]);
    }

    #[test]
    fn more_than_120_samples_are_cut_into_chunks_that_continue() {
        let samples: Vec<Histogram> = (0..300u64)
            .map(|i| int_hist(i as i64 * 10_000, &[i, i + 3]))
            .collect();
        let chunks = round_trip(&samples);
        assert_eq!(sizes(&chunks), vec![120, 120, 60]);
        assert_eq!(
            headers(&chunks),
            vec![
                HEADER_UNKNOWN_COUNTER_RESET,
                HEADER_NOT_COUNTER_RESET,
                HEADER_NOT_COUNTER_RESET
            ]
        );
        let floats: Vec<Histogram> = (0..241)
            .map(|i| float_hist(i * 10_000, &[i as f64 * 0.25, i as f64 / 7.0]))
            .collect();
        let chunks = round_trip(&floats);
        assert_eq!(sizes(&chunks), vec![120, 120, 1]);
        assert!(chunks
            .iter()
            .all(|(c, _)| c.encoding == CHUNK_FLOAT_HISTOGRAM));
    }

    #[test]
    fn counter_resets_cut_chunks_marked_as_resets() {
        let mut samples = vec![
            int_hist(1_000, &[5, 5]),
            int_hist(2_000, &[6, 7]),
            // Total count drops.
            int_hist(3_000, &[1, 1]),
            int_hist(4_000, &[2, 1]),
            // One bucket drops while the total grows.
            int_hist(5_000, &[9, 0]),
            int_hist(6_000, &[10, 0]),
        ];
        // The zero bucket drops.
        let mut zero_high = int_hist(7_000, &[10, 0]);
        let mut zero_low = int_hist(8_000, &[11, 0]);
        if let HistogramCounts::Integer {
            zero_count, count, ..
        } = &mut zero_high.counts
        {
            *zero_count = 5;
            *count += 5;
        }
        if let HistogramCounts::Integer {
            zero_count, count, ..
        } = &mut zero_low.counts
        {
            *zero_count = 1;
            *count += 1;
        }
        samples.push(zero_high);
        samples.push(zero_low);
        // An explicit hint, counts growing.
        let mut hinted = int_hist(9_000, &[20, 20]);
        hinted.reset_hint = ResetHint::Yes;
        samples.push(hinted);
        let chunks = round_trip(&samples);
        assert_eq!(sizes(&chunks), vec![2, 2, 3, 1, 1]);
        assert_eq!(
            headers(&chunks),
            vec![
                HEADER_UNKNOWN_COUNTER_RESET,
                HEADER_COUNTER_RESET,
                HEADER_COUNTER_RESET,
                HEADER_COUNTER_RESET,
                HEADER_COUNTER_RESET
            ]
        );
    }

    #[test]
    fn layout_changes_cut_chunks() {
        let a = int_hist(1_000, &[0, 2]);
        let mut wider = int_hist(2_000, &[0, 2, 3]);
        wider.positive_spans = vec![span(-2, 3)];
        // A bucket disappears while empty: no reset, but other spans.
        let mut narrower = int_hist(3_000, &[0, 2, 3]);
        narrower.positive_spans = vec![span(-2, 3)];
        let mut narrowest = int_hist(4_000, &[2, 3]);
        narrowest.positive_spans = vec![span(-1, 2)];
        let mut rescaled = int_hist(5_000, &[2, 3]);
        rescaled.schema = 2;
        let mut rethresholded = int_hist(6_000, &[2, 3]);
        rethresholded.schema = 2;
        rethresholded.zero_threshold = 0.5;
        let mut same = rethresholded.clone();
        same.timestamp = 7_000;
        let chunks = round_trip(&[a, wider, narrower, narrowest, rescaled, rethresholded, same]);
        assert_eq!(sizes(&chunks), vec![1, 2, 1, 1, 2]);
        assert_eq!(
            headers(&chunks),
            vec![
                HEADER_UNKNOWN_COUNTER_RESET,
                HEADER_NOT_COUNTER_RESET,
                HEADER_NOT_COUNTER_RESET,
                HEADER_UNKNOWN_COUNTER_RESET,
                HEADER_UNKNOWN_COUNTER_RESET
            ]
        );
    }

    #[test]
    fn empty_spans_gaps_negative_and_zero_buckets() {
        let samples: Vec<Histogram> = (0..30u64)
            .map(|i| Histogram {
                timestamp: i as i64 * 1_000,
                schema: -4,
                zero_threshold: 0.0,
                sum: -3.25 * i as f64,
                reset_hint: ResetHint::Unknown,
                counts: HistogramCounts::Integer {
                    count: 100 * i,
                    zero_count: 3 * i,
                    negative: vec![i, 0, 5 * i, i / 2],
                    positive: vec![1_000_000 * i, i, 0, 0, 1 << 40, i * 7],
                },
                negative_spans: vec![span(-5, 1), span(0, 0), span(3, 3)],
                positive_spans: vec![
                    span(0, 0),
                    span(2, 2),
                    span(10, 1),
                    span(0, 0),
                    span(1_000, 3),
                ],
                custom_values: Vec::new(),
            })
            .collect();
        let chunks = round_trip(&samples);
        assert_eq!(sizes(&chunks), vec![30]);
        // Zero threshold 0 is one zero byte.
        assert_eq!(chunks[0].0.data[3], 0);
        // No buckets at all.
        let empty = Histogram {
            timestamp: 5,
            schema: 8,
            zero_threshold: 1024.0,
            sum: 0.0,
            reset_hint: ResetHint::Unknown,
            counts: HistogramCounts::Integer {
                count: 9,
                zero_count: 9,
                negative: Vec::new(),
                positive: Vec::new(),
            },
            negative_spans: Vec::new(),
            positive_spans: Vec::new(),
            custom_values: Vec::new(),
        };
        let chunks = round_trip(&[
            empty.clone(),
            Histogram {
                timestamp: 6,
                ..empty
            },
        ]);
        // 2^10 = 0.5 * 2^11: one byte, 11 + 243.
        assert_eq!(chunks[0].0.data[3], 254);
    }

    #[test]
    fn float_histograms_with_stale_and_nan_sums_and_fractions() {
        let nan = f64::from_bits(0x7ff8_0000_0000_0001);
        let mut samples = vec![
            float_hist(1_000, &[0.1, 0.2, 0.30000000000000004]),
            float_hist(2_000, &[0.5, 1.0 / 3.0, 2.75]),
        ];
        let mut with_nan = float_hist(3_000, &[1.5, 2.0 / 3.0, 3.0]);
        with_nan.sum = nan;
        samples.push(with_nan);
        samples.push(stale(float_hist(4_000, &[1.0, 1.0, 1.0])));
        samples.push(stale(float_hist(5_000, &[9.0])));
        samples.push(float_hist(6_000, &[2.0, 2.5, 3.5]));
        let chunks = round_trip(&samples);
        // Only stale markers may follow a stale marker; what comes after is unknown.
        assert_eq!(sizes(&chunks), vec![5, 1]);
        assert_eq!(
            headers(&chunks),
            vec![HEADER_UNKNOWN_COUNTER_RESET, HEADER_UNKNOWN_COUNTER_RESET]
        );
        // A chunk that starts stale has the empty layout.
        let chunks = round_trip(&[
            stale(float_hist(1, &[1.0])),
            stale(float_hist(2, &[1.0])),
            float_hist(3, &[1.0]),
        ]);
        assert_eq!(sizes(&chunks), vec![2, 1]);
        // Integer stale markers too.
        let chunks = round_trip(&[
            int_hist(1, &[1, 2]),
            int_hist(2, &[2, 4]),
            stale(int_hist(3, &[1])),
            stale(int_hist(4, &[])),
            int_hist(5, &[3, 4]),
        ]);
        assert_eq!(sizes(&chunks), vec![4, 1]);
    }

    #[test]
    fn irregular_timestamps_and_big_jumps() {
        let times = [
            i64::MIN / 4,
            -1,
            0,
            1,
            2,
            5,
            1 << 20,
            (1 << 20) + 17,
            1 << 40,
            (1 << 40) + 1,
            1 << 58,
            i64::MAX / 2,
            i64::MAX - 3,
            i64::MAX,
        ];
        let samples: Vec<Histogram> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| int_hist(t, &[i as u64, 1]))
            .collect();
        let chunks = round_trip(&samples);
        assert_eq!(sizes(&chunks), vec![times.len()]);
        let floats: Vec<Histogram> = times
            .iter()
            .map(|&t| float_hist(t, &[0.5, t as f64]))
            .collect();
        round_trip(&floats);
    }

    #[test]
    fn integer_and_float_histograms_mixed_get_their_own_chunks() {
        let chunks = round_trip(&[
            int_hist(1, &[1]),
            int_hist(2, &[2]),
            float_hist(3, &[2.5]),
            int_hist(4, &[3]),
        ]);
        let encodings: Vec<i32> = chunks.iter().map(|(c, _)| c.encoding).collect();
        assert_eq!(
            encodings,
            vec![CHUNK_HISTOGRAM, CHUNK_FLOAT_HISTOGRAM, CHUNK_HISTOGRAM]
        );
        assert_eq!(headers(&chunks), vec![HEADER_UNKNOWN_COUNTER_RESET; 3]);
    }

    #[test]
    fn gauge_histograms_go_down_in_one_chunk() {
        let gauge = |t: i64, buckets: &[f64]| Histogram {
            reset_hint: ResetHint::Gauge,
            ..float_hist(t, buckets)
        };
        let mut moved = gauge(4, &[1.0]);
        moved.positive_spans = vec![span(5, 1)];
        let chunks = round_trip(&[
            gauge(1, &[5.0, 4.0]),
            gauge(2, &[1.0, 0.5]),
            gauge(3, &[7.0, 0.0]),
            moved,
            float_hist(5, &[1.0]),
        ]);
        assert_eq!(sizes(&chunks), vec![3, 1, 1]);
        assert_eq!(
            headers(&chunks),
            vec![HEADER_GAUGE, HEADER_GAUGE, HEADER_UNKNOWN_COUNTER_RESET]
        );
    }

    #[test]
    fn custom_bucket_histograms_carry_their_bounds() {
        let nhcb = |t: i64, bounds: Vec<f64>, counts: Vec<u64>| Histogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            zero_threshold: 0.0,
            positive_spans: vec![span(0, counts.len() as u32)],
            custom_values: bounds,
            ..int_hist(t, &counts)
        };
        let bounds = vec![
            0.0,
            0.001,
            0.25,
            1.0,
            33_554.43,
            33_554.431,
            1e9,
            -3.0,
            0.1 + 0.2,
        ];
        let chunks = round_trip(&[
            nhcb(1, bounds.clone(), vec![1, 2, 3]),
            nhcb(2, bounds.clone(), vec![2, 2, 3]),
            nhcb(3, vec![0.5, 1.0], vec![3, 3, 3]),
        ]);
        assert_eq!(sizes(&chunks), vec![2, 1]);
        // Other bounds are a counter reset, as in Prometheus.
        assert_eq!(
            headers(&chunks),
            vec![HEADER_UNKNOWN_COUNTER_RESET, HEADER_COUNTER_RESET]
        );
    }

    #[test]
    fn invalid_samples_are_errors() {
        let mut bad_schema = int_hist(1, &[1]);
        bad_schema.schema = 9;
        assert!(encode_chunks(&[bad_schema]).is_err());
        let mut bad_spans = int_hist(1, &[1, 2]);
        bad_spans.positive_spans = vec![span(0, 3)];
        assert!(encode_chunks(&[bad_spans]).is_err());
        let mut stray_bounds = int_hist(1, &[1]);
        stray_bounds.custom_values = vec![1.0];
        assert!(encode_chunks(&[stray_bounds]).is_err());
        assert!(encode_chunks(&[int_hist(2, &[1]), int_hist(2, &[1])]).is_err());
        assert!(encode_chunks(&[int_hist(2, &[1]), int_hist(1, &[1])]).is_err());
        assert!(encode_chunks(&[]).unwrap().is_empty());
        // A stale marker's layout does not matter.
        let mut stale_odd = stale(int_hist(1, &[1]));
        stale_odd.schema = 100;
        round_trip(&[stale_odd]);
    }

    #[test]
    fn decoder_refuses_damaged_chunks_without_panicking() {
        let chunks = encode_chunks(&[int_hist(1, &[1, 2]), int_hist(2, &[3, 4])]).unwrap();
        let data = &chunks[0].data;
        for len in 0..data.len() {
            assert!(
                decode_chunk(CHUNK_HISTOGRAM, &data[..len]).is_err(),
                "{len}"
            );
        }
        assert!(decode_chunk(1, data).is_err());
        let mut noise = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000 {
            let bytes: Vec<u8> = (0..40)
                .map(|_| {
                    noise ^= noise << 13;
                    noise ^= noise >> 7;
                    noise ^= noise << 17;
                    noise as u8
                })
                .collect();
            let _ = decode_chunk(CHUNK_HISTOGRAM, &bytes);
            let _ = decode_chunk(CHUNK_FLOAT_HISTOGRAM, &bytes);
        }
    }

    /// Random series: counts that mostly grow, sometimes reset, layouts that change, stale
    /// markers, gauges, integer and float samples mixed.
    #[test]
    fn random_series_round_trip() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..40 {
            let mut samples = Vec::new();
            let mut t = next(1 << 40) as i64;
            let mut buckets = vec![next(10); 1 + next(6) as usize];
            let mut float = next(2) == 0;
            for _ in 0..400 {
                let step = if next(20) == 0 { 1 << 36 } else { 30_000 };
                t += 1 + next(step) as i64;
                match next(40) {
                    0 => buckets = vec![next(3); 1 + next(6) as usize],
                    1 => buckets.push(0),
                    2 => float = !float,
                    _ => buckets.iter_mut().for_each(|b| *b += next(4)),
                }
                let mut h = if float {
                    let fractions: Vec<f64> = buckets.iter().map(|&b| b as f64 / 3.0).collect();
                    float_hist(t, &fractions)
                } else {
                    int_hist(t, &buckets)
                };
                match next(30) {
                    0 => h.sum = STALE,
                    1 => h.reset_hint = ResetHint::Gauge,
                    2 => h.reset_hint = ResetHint::Yes,
                    3 => h.schema = 1,
                    _ => {}
                }
                samples.push(h);
            }
            let chunks = round_trip(&samples);
            assert!(chunks.len() < samples.len() / 3, "{} chunks", chunks.len());
        }
    }
}

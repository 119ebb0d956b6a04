//! The chunk encoding of native histograms: one series' histograms of a window as
//! `(data: bytea, floats: float8[])`. Every integer (times, schema, spans, integer counts,
//! flags) is a varint in `data`; every f64 (sum, zero threshold, custom bounds, the counts of
//! float histograms) is an element of `floats`, so SQL never rebuilds a float from its bits and
//! NaN payloads (the stale marker in `sum`) and -0.0 stay bit-exact through PostgreSQL.
//! `migrations/0010_histogram_codec.sql` (`promgres.histogram_samples`) holds the same decoder
//! in PL/pgSQL, so change both together.
//!
//! `data`, varints little-endian base-128 (at most 10 bytes), `z` marking zigzag:
//! `version (1 byte, = 1) | count | sample*`, each sample
//! - `time (z)`: the first sample's time, the second's gap to it, then each gap minus the
//!   previous gap (a regular scrape: one byte of zero);
//! - `flags`: bit 0 float counts, bits 1-2 the reset hint (0 unknown, 1 yes, 2 no, 3 gauge),
//!   bit 3 same layout as the previous sample, bit 4 same sum bits as the previous sample;
//!   other bits zero. Same layout means the same kind of counts, schema, spans, zero threshold
//!   and custom bounds (bits), and is never set on the first sample; nor is same sum;
//! - unless same layout: `schema (z) | n | (offset (z) | length)*n` for the negative spans,
//!   the same for the positive ones, `number of custom bounds`;
//! - integer counts: `count | zero_count | negative buckets | positive buckets`, one per
//!   bucket the spans describe, absolute, or with the same layout `(z)` of the wrapping
//!   difference to the previous sample's value at the same position (a counter growing
//!   slowly costs a byte a bucket).
//!
//! `floats`, per sample in this order: unless same layout `zero_threshold, custom bounds...`;
//! unless same sum `sum`; for float counts `count, zero_count, negative..., positive...`.
//!
//! Allocation is bounded by the input: a sample with the same layout copies its spans and
//! custom bounds from the previous one, so a small input could otherwise ask for many copies
//! of a large layout. After each sample the decoder requires the elements decoded so far
//! (spans, buckets, custom bounds) to be at most [`BUDGET_BASE`] plus [`BUDGET_PER_UNIT`] per
//! byte and float read so far; the encoder writes the layout again where same layout would
//! break that (a full layout always keeps it, as it costs at least a unit per element).

use crate::decode::{BucketSpan, Histogram, HistogramCounts, ResetHint};

const VERSION: u8 = 1;
const FLAG_FLOAT: u64 = 1;
const FLAG_SAME_LAYOUT: u64 = 1 << 3;
const FLAG_SAME_SUM: u64 = 1 << 4;
const KNOWN_FLAGS: u64 = 0b1_1111;

/// Elements any input may decode to, whatever its size (32 KB of spans and buckets).
pub const BUDGET_BASE: usize = 4096;
/// Elements each byte of `data` or element of `floats` may decode to beyond the base.
pub const BUDGET_PER_UNIT: usize = 4;

/// One window's histograms, encoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedHistograms {
    pub data: Vec<u8>,
    pub floats: Vec<f64>,
}

#[derive(Debug)]
pub struct HistogramCodecError(pub String);

impl std::fmt::Display for HistogramCodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt histogram chunk: {}", self.0)
    }
}

impl std::error::Error for HistogramCodecError {}

fn corrupt(what: &str) -> HistogramCodecError {
    HistogramCodecError(what.to_string())
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

fn reset_code(hint: ResetHint) -> u64 {
    match hint {
        ResetHint::Unknown => 0,
        ResetHint::Yes => 1,
        ResetHint::No => 2,
        ResetHint::Gauge => 3,
    }
}

fn bucket_total(spans: &[BucketSpan]) -> u64 {
    spans.iter().map(|s| u64::from(s.length)).sum()
}

/// Spans, buckets and custom bounds: what decoding a sample allocates.
fn elements(h: &Histogram) -> usize {
    let buckets = bucket_total(&h.negative_spans) + bucket_total(&h.positive_spans);
    (h.negative_spans.len() + h.positive_spans.len() + h.custom_values.len())
        .saturating_add(usize::try_from(buckets).unwrap_or(usize::MAX))
}

fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn same_layout(a: &Histogram, b: &Histogram) -> bool {
    let kind = |h: &Histogram| matches!(h.counts, HistogramCounts::Float { .. });
    kind(a) == kind(b)
        && a.schema == b.schema
        && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
        && a.negative_spans == b.negative_spans
        && a.positive_spans == b.positive_spans
        && same_bits(&a.custom_values, &b.custom_values)
}

fn put_spans(out: &mut Vec<u8>, spans: &[BucketSpan]) {
    put_uvarint(out, spans.len() as u64);
    for s in spans {
        put_zigzag(out, i64::from(s.offset));
        put_uvarint(out, u64::from(s.length));
    }
}

/// `n` values of `values`, zero-padded: a valid histogram has exactly one per bucket its
/// spans describe, and the decoder reads that many.
fn padded<T: Copy + Default>(values: &[T], n: u64) -> impl Iterator<Item = T> + '_ {
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    values
        .iter()
        .copied()
        .chain(std::iter::repeat(T::default()))
        .take(n)
}

/// Everything of a sample after its time.
fn put_sample(
    out: &mut EncodedHistograms,
    h: &Histogram,
    prev: Option<&Histogram>,
    with_same_layout: bool,
) {
    let same_sum = prev.is_some_and(|p| p.sum.to_bits() == h.sum.to_bits());
    let is_float = matches!(h.counts, HistogramCounts::Float { .. });
    let mut flags = reset_code(h.reset_hint) << 1;
    if is_float {
        flags |= FLAG_FLOAT;
    }
    if with_same_layout {
        flags |= FLAG_SAME_LAYOUT;
    }
    if same_sum {
        flags |= FLAG_SAME_SUM;
    }
    put_uvarint(&mut out.data, flags);
    if !with_same_layout {
        put_zigzag(&mut out.data, i64::from(h.schema));
        put_spans(&mut out.data, &h.negative_spans);
        put_spans(&mut out.data, &h.positive_spans);
        put_uvarint(&mut out.data, h.custom_values.len() as u64);
        out.floats.push(h.zero_threshold);
        out.floats.extend_from_slice(&h.custom_values);
    }
    if !same_sum {
        out.floats.push(h.sum);
    }
    let n_negative = bucket_total(&h.negative_spans);
    let n_positive = bucket_total(&h.positive_spans);
    match &h.counts {
        HistogramCounts::Float {
            count,
            zero_count,
            negative,
            positive,
        } => {
            out.floats.push(*count);
            out.floats.push(*zero_count);
            out.floats.extend(padded(negative, n_negative));
            out.floats.extend(padded(positive, n_positive));
        }
        HistogramCounts::Integer {
            count,
            zero_count,
            negative,
            positive,
        } => {
            let previous = match prev.map(|p| &p.counts) {
                Some(HistogramCounts::Integer {
                    count,
                    zero_count,
                    negative,
                    positive,
                }) if with_same_layout => Some((*count, *zero_count, negative, positive)),
                _ => None,
            };
            let data = &mut out.data;
            match previous {
                Some((p_count, p_zero, p_negative, p_positive)) => {
                    let mut delta = |v: u64, p: u64| put_zigzag(data, v.wrapping_sub(p) as i64);
                    delta(*count, p_count);
                    delta(*zero_count, p_zero);
                    for (v, p) in padded(negative, n_negative).zip(padded(p_negative, n_negative)) {
                        delta(v, p);
                    }
                    for (v, p) in padded(positive, n_positive).zip(padded(p_positive, n_positive)) {
                        delta(v, p);
                    }
                }
                None => {
                    put_uvarint(data, *count);
                    put_uvarint(data, *zero_count);
                    for v in padded(negative, n_negative).chain(padded(positive, n_positive)) {
                        put_uvarint(data, v);
                    }
                }
            }
        }
    }
}

fn within_budget(elements: usize, units: usize) -> bool {
    elements <= BUDGET_BASE.saturating_add(BUDGET_PER_UNIT.saturating_mul(units))
}

/// Encodes one series' histograms, `samples` sorted by timestamp, timestamps unique. Each
/// must be valid as `decode.rs` leaves it (one count per bucket its spans describe; others
/// are cut or zero-padded to their spans).
pub fn encode(samples: &[Histogram]) -> EncodedHistograms {
    let mut out = EncodedHistograms {
        data: Vec::with_capacity(16 + samples.len() * 32),
        floats: Vec::with_capacity(samples.len() * 2),
    };
    out.data.push(VERSION);
    put_uvarint(&mut out.data, samples.len() as u64);
    let (mut prev_time, mut prev_gap) = (0i64, 0i64);
    let mut decoded_elements = 0usize;
    let mut prev: Option<&Histogram> = None;
    for (i, h) in samples.iter().enumerate() {
        let gap = h.timestamp.wrapping_sub(prev_time);
        match i {
            0 => put_zigzag(&mut out.data, h.timestamp),
            1 => put_zigzag(&mut out.data, gap),
            _ => put_zigzag(&mut out.data, gap.wrapping_sub(prev_gap)),
        }
        prev_gap = gap;
        prev_time = h.timestamp;
        decoded_elements = decoded_elements.saturating_add(elements(h));
        let (data_len, floats_len) = (out.data.len(), out.floats.len());
        let reuse = prev.is_some_and(|p| same_layout(p, h));
        put_sample(&mut out, h, prev, reuse);
        if reuse && !within_budget(decoded_elements, out.data.len() + out.floats.len()) {
            out.data.truncate(data_len);
            out.floats.truncate(floats_len);
            put_sample(&mut out, h, prev, false);
        }
        prev = Some(h);
    }
    out
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
    floats: &'a [f64],
    next_float: usize,
}

impl Input<'_> {
    fn uvarint(&mut self) -> Result<u64, HistogramCodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .data
                .get(self.pos)
                .ok_or_else(|| corrupt("data cut short"))?;
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(corrupt("varint overflows 64 bits"));
            }
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err(corrupt("varint longer than 10 bytes"))
    }

    fn zigzag(&mut self) -> Result<i64, HistogramCodecError> {
        self.uvarint().map(unzigzag)
    }

    fn float(&mut self) -> Result<f64, HistogramCodecError> {
        let v = *self
            .floats
            .get(self.next_float)
            .ok_or_else(|| corrupt("floats cut short"))?;
        self.next_float += 1;
        Ok(v)
    }

    fn float_slice(&mut self, n: u64) -> Result<Vec<f64>, HistogramCodecError> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.next_float.checked_add(n))
            .filter(|&end| end <= self.floats.len())
            .ok_or_else(|| corrupt("floats cut short"))?;
        let out = self.floats[self.next_float..end].to_vec();
        self.next_float = end;
        Ok(out)
    }

    fn bytes_left(&self) -> usize {
        self.data.len() - self.pos
    }

    fn units_read(&self) -> usize {
        self.pos + self.next_float
    }

    fn spans(&mut self) -> Result<(Vec<BucketSpan>, u64), HistogramCodecError> {
        let n = self.uvarint()?;
        // A span takes at least two bytes.
        if n > (self.bytes_left() / 2) as u64 {
            return Err(corrupt("more spans than the data holds"));
        }
        let mut spans = Vec::with_capacity(n as usize);
        let mut total = 0u64;
        for _ in 0..n {
            let offset =
                i32::try_from(self.zigzag()?).map_err(|_| corrupt("span offset out of range"))?;
            let length =
                u32::try_from(self.uvarint()?).map_err(|_| corrupt("span length out of range"))?;
            total += u64::from(length);
            spans.push(BucketSpan { offset, length });
        }
        Ok((spans, total))
    }

    /// `n` integer counts, absolute or as differences to `previous`.
    fn integer_buckets(
        &mut self,
        n: u64,
        previous: Option<&[u64]>,
    ) -> Result<Vec<u64>, HistogramCodecError> {
        // A count takes at least a byte; the vector grows only as bytes are read.
        let capacity = n.min(self.bytes_left() as u64) as usize;
        let mut out = Vec::with_capacity(capacity);
        for k in 0..n {
            let v = match previous {
                Some(p) => {
                    let base = p.get(k as usize).copied().unwrap_or(0);
                    base.wrapping_add(self.zigzag()? as u64)
                }
                None => self.uvarint()?,
            };
            out.push(v);
        }
        Ok(out)
    }
}

fn reset_hint(code: u64) -> ResetHint {
    match code {
        1 => ResetHint::Yes,
        2 => ResetHint::No,
        3 => ResetHint::Gauge,
        _ => ResetHint::Unknown,
    }
}

/// Decodes what [`encode`] wrote; corrupt input is an error, never a panic, and allocations
/// stay within a constant factor of the input's size.
pub fn decode(data: &[u8], floats: &[f64]) -> Result<Vec<Histogram>, HistogramCodecError> {
    let mut input = Input {
        data,
        pos: 0,
        floats,
        next_float: 0,
    };
    match data.first() {
        Some(&VERSION) => input.pos = 1,
        Some(v) => return Err(HistogramCodecError(format!("unknown version {v}"))),
        None => return Err(corrupt("empty")),
    }
    let n = input.uvarint()?;
    // A sample takes at least two bytes (time and flags).
    if n > (input.bytes_left() / 2) as u64 {
        return Err(corrupt("more samples than the data holds"));
    }
    let mut out: Vec<Histogram> = Vec::with_capacity(n as usize);
    let (mut time, mut gap) = (0i64, 0i64);
    let mut decoded_elements = 0usize;
    for i in 0..n {
        let code = input.zigzag()?;
        match i {
            0 => time = code,
            1 => {
                gap = code;
                time = time.wrapping_add(gap);
            }
            _ => {
                gap = gap.wrapping_add(code);
                time = time.wrapping_add(gap);
            }
        }
        let flags = input.uvarint()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(HistogramCodecError(format!("unknown flags {flags:#x}")));
        }
        let is_float = flags & FLAG_FLOAT != 0;
        let prev = out.last();
        let reuse = flags & FLAG_SAME_LAYOUT != 0;
        let layout_source = match prev {
            Some(p) if reuse => {
                if matches!(p.counts, HistogramCounts::Float { .. }) != is_float {
                    return Err(corrupt("same layout across integer and float counts"));
                }
                Some(p)
            }
            None if reuse => return Err(corrupt("first sample with the same layout")),
            _ => None,
        };
        // The layout: its spans and custom bounds are copied only once the budget allows.
        let (schema, zero_threshold, new_layout) = match layout_source {
            Some(p) => (p.schema, p.zero_threshold, None),
            None => {
                let schema =
                    i32::try_from(input.zigzag()?).map_err(|_| corrupt("schema out of range"))?;
                let negative = input.spans()?;
                let positive = input.spans()?;
                let n_custom = input.uvarint()?;
                let zero_threshold = input.float()?;
                let custom = input.float_slice(n_custom)?;
                (schema, zero_threshold, Some((negative, positive, custom)))
            }
        };
        let (n_negative, n_positive) = match (&new_layout, layout_source) {
            (Some((negative, positive, _)), _) => (negative.1, positive.1),
            (None, Some(p)) => (
                bucket_total(&p.negative_spans),
                bucket_total(&p.positive_spans),
            ),
            (None, None) => (0, 0),
        };
        let sum = if flags & FLAG_SAME_SUM != 0 {
            prev.ok_or_else(|| corrupt("first sample with the same sum"))?
                .sum
        } else {
            input.float()?
        };
        let counts = if is_float {
            HistogramCounts::Float {
                count: input.float()?,
                zero_count: input.float()?,
                negative: input.float_slice(n_negative)?,
                positive: input.float_slice(n_positive)?,
            }
        } else {
            let previous = match layout_source.map(|p| &p.counts) {
                Some(HistogramCounts::Integer {
                    count,
                    zero_count,
                    negative,
                    positive,
                }) => Some((*count, *zero_count, negative, positive)),
                _ => None,
            };
            match previous {
                Some((p_count, p_zero, p_negative, p_positive)) => HistogramCounts::Integer {
                    count: p_count.wrapping_add(input.zigzag()? as u64),
                    zero_count: p_zero.wrapping_add(input.zigzag()? as u64),
                    negative: input.integer_buckets(n_negative, Some(p_negative))?,
                    positive: input.integer_buckets(n_positive, Some(p_positive))?,
                },
                None => HistogramCounts::Integer {
                    count: input.uvarint()?,
                    zero_count: input.uvarint()?,
                    negative: input.integer_buckets(n_negative, None)?,
                    positive: input.integer_buckets(n_positive, None)?,
                },
            }
        };
        let (negative_spans, positive_spans, custom_values) = match (new_layout, layout_source) {
            (Some((negative, positive, custom)), _) => (negative.0, positive.0, custom),
            (None, Some(p)) => {
                let copied =
                    p.negative_spans.len() + p.positive_spans.len() + p.custom_values.len();
                let buckets = usize::try_from(n_negative + n_positive).unwrap_or(usize::MAX);
                if !within_budget(
                    decoded_elements
                        .saturating_add(copied)
                        .saturating_add(buckets),
                    input.units_read(),
                ) {
                    return Err(corrupt("layout repeated beyond the allocation budget"));
                }
                (
                    p.negative_spans.clone(),
                    p.positive_spans.clone(),
                    p.custom_values.clone(),
                )
            }
            (None, None) => (Vec::new(), Vec::new(), Vec::new()),
        };
        let h = Histogram {
            timestamp: time,
            schema,
            zero_threshold,
            sum,
            reset_hint: reset_hint((flags >> 1) & 3),
            counts,
            negative_spans,
            positive_spans,
            custom_values,
        };
        decoded_elements = decoded_elements.saturating_add(elements(&h));
        if !within_budget(decoded_elements, input.units_read()) {
            return Err(corrupt("more decoded than the allocation budget"));
        }
        out.push(h);
    }
    if input.pos != data.len() || input.next_float != floats.len() {
        return Err(corrupt("trailing data"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: u64 = 0x7ff0_0000_0000_0002;

    /// A histogram as comparable bits (floats by their bits, so NaN equals itself).
    type Bits = (
        i64,
        i32,
        u64,
        u64,
        u64,
        Vec<u64>,
        Vec<(i32, u32)>,
        Vec<(i32, u32)>,
    );

    fn bits(h: &Histogram) -> Bits {
        let spans = |s: &[BucketSpan]| s.iter().map(|s| (s.offset, s.length)).collect();
        let mut counts = Vec::new();
        match &h.counts {
            HistogramCounts::Integer {
                count,
                zero_count,
                negative,
                positive,
            } => {
                counts.extend([0, *count, *zero_count, negative.len() as u64]);
                counts.extend(negative.iter().chain(positive));
            }
            HistogramCounts::Float {
                count,
                zero_count,
                negative,
                positive,
            } => {
                counts.extend([1, count.to_bits(), zero_count.to_bits()]);
                counts.push(negative.len() as u64);
                counts.extend(negative.iter().chain(positive).map(|v| v.to_bits()));
            }
        }
        counts.extend(h.custom_values.iter().map(|v| v.to_bits()));
        (
            h.timestamp,
            h.schema,
            h.zero_threshold.to_bits(),
            h.sum.to_bits(),
            reset_code(h.reset_hint),
            counts,
            spans(&h.negative_spans),
            spans(&h.positive_spans),
        )
    }

    fn round_trip(samples: &[Histogram]) -> EncodedHistograms {
        let encoded = encode(samples);
        let back = decode(&encoded.data, &encoded.floats).expect("decodes");
        assert_eq!(back.len(), samples.len());
        for (a, b) in samples.iter().zip(&back) {
            assert_eq!(bits(a), bits(b));
        }
        encoded
    }

    fn span(offset: i32, length: u32) -> BucketSpan {
        BucketSpan { offset, length }
    }

    fn integer(t: i64, spans: &[BucketSpan], positive: Vec<u64>) -> Histogram {
        let count = positive.iter().fold(3u64, |a, &b| a.wrapping_add(b));
        Histogram {
            timestamp: t,
            schema: 3,
            zero_threshold: 1e-128,
            sum: count as f64 * 0.25,
            reset_hint: ResetHint::No,
            counts: HistogramCounts::Integer {
                count,
                zero_count: 3,
                negative: Vec::new(),
                positive,
            },
            negative_spans: Vec::new(),
            positive_spans: spans.to_vec(),
            custom_values: Vec::new(),
        }
    }

    fn float(t: i64, negative_spans: &[BucketSpan], negative: Vec<f64>) -> Histogram {
        Histogram {
            timestamp: t,
            schema: -2,
            zero_threshold: 0.0,
            sum: -1.5,
            reset_hint: ResetHint::Gauge,
            counts: HistogramCounts::Float {
                count: negative.iter().sum(),
                zero_count: 0.5,
                negative,
                positive: vec![2.5],
            },
            negative_spans: negative_spans.to_vec(),
            positive_spans: vec![span(-1, 1)],
            custom_values: Vec::new(),
        }
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A counter-like integer histogram series whose layout changes now and then, mixed
    /// with float ones.
    fn random_series(rng: &mut Rng, n: usize) -> Vec<Histogram> {
        let mut out: Vec<Histogram> = Vec::new();
        let mut t = 1_765_000_000_000i64;
        for _ in 0..n {
            t += 15_000 + rng.below(7) as i64 - 3;
            let keep = out.last().filter(|_| rng.below(10) != 0).cloned();
            let h = match keep {
                Some(mut h) => {
                    h.timestamp = t;
                    match &mut h.counts {
                        HistogramCounts::Integer {
                            count, positive, ..
                        } => {
                            for b in positive.iter_mut() {
                                let add = rng.below(40);
                                *b += add;
                                *count += add;
                            }
                            h.sum += 0.125 * rng.below(100) as f64;
                        }
                        HistogramCounts::Float { negative, .. } => {
                            negative.iter_mut().for_each(|b| *b *= 1.5);
                        }
                    }
                    h
                }
                None => {
                    let lengths = [rng.below(4) as u32, rng.below(6) as u32];
                    let spans = [
                        span(rng.below(9) as i32 - 4, lengths[0]),
                        span(2, lengths[1]),
                    ];
                    let buckets = (lengths[0] + lengths[1]) as usize;
                    if rng.below(4) == 0 {
                        let values = (0..buckets).map(|_| rng.below(1000) as f64 / 8.0).collect();
                        float(t, &spans, values)
                    } else {
                        let values = (0..buckets).map(|_| rng.below(1 << 40)).collect();
                        integer(t, &spans, values)
                    }
                }
            };
            out.push(h);
        }
        out
    }

    #[test]
    fn integer_and_float_histograms_round_trip() {
        let spans = [span(-2, 3), span(4, 2)];
        let mut series: Vec<Histogram> = (0..50)
            .map(|k| {
                integer(
                    1000 + k * 15_000,
                    &spans,
                    vec![k as u64, 7, 9, 100 * k as u64, 0],
                )
            })
            .collect();
        round_trip(&series);
        // A layout change mid-chunk, then back.
        series[20] = integer(series[20].timestamp, &[span(0, 1)], vec![5]);
        series[21] = float(series[21].timestamp, &[span(3, 2)], vec![0.1, 0.2]);
        series[22] = float(series[22].timestamp, &[span(3, 2)], vec![0.3, 0.4]);
        series[23] = float(series[23].timestamp, &[span(3, 3)], vec![0.3, 0.4, 7.0]);
        round_trip(&series);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20 {
            let n = rng.below(300) as usize;
            round_trip(&random_series(&mut rng, n));
        }
    }

    #[test]
    fn counter_resets_and_extreme_counts_round_trip() {
        let spans = [span(0, 3)];
        let mut series = vec![
            integer(0, &spans, vec![1000, 2000, 3000]),
            integer(15_000, &spans, vec![1, 0, 2]),
            integer(30_000, &spans, vec![u64::MAX, 0, 1 << 63]),
            integer(45_000, &spans, vec![0, u64::MAX, 5]),
        ];
        series[1].reset_hint = ResetHint::Yes;
        series[2].reset_hint = ResetHint::Unknown;
        if let HistogramCounts::Integer { count, .. } = &mut series[3].counts {
            *count = u64::MAX;
        }
        round_trip(&series);
    }

    #[test]
    fn custom_buckets_and_empty_spans_round_trip() {
        let mut custom = integer(5, &[span(0, 2), span(1, 1)], vec![4, 0, 9]);
        custom.schema = -53;
        custom.zero_threshold = 0.0;
        custom.custom_values = vec![0.1, 0.5, 1.0, f64::INFINITY];
        let mut next = custom.clone();
        next.timestamp = 10;
        next.custom_values[1] = 0.25;
        let mut empty = integer(20, &[], Vec::new());
        empty.positive_spans = vec![span(3, 0)];
        let mut empty_again = empty.clone();
        empty_again.timestamp = 40;
        round_trip(&[custom, next, empty, empty_again]);
        round_trip(&[integer(-7, &[], Vec::new())]);
        round_trip(&[]);
    }

    #[test]
    fn special_float_bits_survive() {
        let specials = [
            f64::from_bits(STALE),
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::from_bits(0xfff8_0000_dead_beef),
            f64::MIN_POSITIVE / 3.0,
        ];
        let mut series = Vec::new();
        for (k, &v) in specials.iter().enumerate() {
            let mut h = float(k as i64 * 1000, &[span(0, 2)], vec![v, -v]);
            h.sum = v;
            h.zero_threshold = if k % 2 == 0 { -0.0 } else { 0.0 };
            if let HistogramCounts::Float { count, .. } = &mut h.counts {
                *count = v;
            }
            series.push(h);
            let mut i = integer(k as i64 * 1000 + 1, &[span(1, 1)], vec![k as u64]);
            i.sum = v;
            series.push(i);
        }
        round_trip(&series);
        // One sample alone, the stale marker in its sum.
        let mut stale = integer(i64::MIN, &[span(i32::MIN, u32::MAX >> 28)], vec![0; 15]);
        stale.sum = f64::from_bits(STALE);
        stale.schema = i32::MIN;
        let encoded = round_trip(&[stale]);
        assert_eq!(encoded.floats[1].to_bits(), STALE);
        round_trip(&[
            integer(i64::MAX, &[], Vec::new()),
            integer(i64::MIN, &[], Vec::new()),
            integer(0, &[], Vec::new()),
        ]);
    }

    #[test]
    fn a_realistic_chunk_is_small() {
        // 480 scrapes (two hours at 15 s) of a 20-bucket latency histogram taking ~150
        // observations a scrape, most in the middle buckets.
        let mut rng = Rng(42);
        let spans = [span(-6, 12), span(1, 8)];
        let mut buckets = vec![0u64; 20];
        let mut sum = 0.0;
        let mut t = 1_765_000_000_000i64;
        let mut series = Vec::new();
        for _ in 0..480 {
            t += 15_000 + rng.below(5) as i64 - 2;
            for (i, b) in buckets.iter_mut().enumerate() {
                let weight = 20 - (i as i64 - 9).unsigned_abs();
                let add = rng.below(weight * weight / 8 + 1);
                *b += add;
                sum += add as f64 * 0.0123 * (i + 1) as f64;
            }
            let mut h = integer(t, &spans, buckets.clone());
            h.sum = sum;
            series.push(h);
        }
        let encoded = round_trip(&series);
        let bytes = encoded.data.len() + 8 * encoded.floats.len();
        let per_sample = bytes as f64 / 480.0;
        println!(
            "realistic chunk: {} data bytes + {} floats = {bytes} bytes, {per_sample:.1} bytes/sample",
            encoded.data.len(),
            encoded.floats.len()
        );
        assert!(per_sample < 40.0, "{per_sample} bytes a sample");
    }

    #[test]
    fn a_large_layout_repeated_stays_within_the_budget() {
        // Many empty spans and custom bounds, few buckets: the layout outweighs each sample,
        // so the encoder must restate it now and then and the decoder still accepts all.
        let mut h = integer(0, &[], Vec::new());
        h.schema = -53;
        h.positive_spans = (0..2000).map(|_| span(1, 0)).collect();
        h.custom_values = (0..3000).map(f64::from).collect();
        let series: Vec<Histogram> = (0..400)
            .map(|k| {
                let mut s = h.clone();
                s.timestamp = k * 1000;
                s
            })
            .collect();
        let encoded = round_trip(&series);
        assert!(encoded.data.len() < 400 * 4000);
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let mut rng = Rng(7);
        let series = random_series(&mut rng, 60);
        let encoded = encode(&series);
        for cut in 0..encoded.data.len() {
            assert!(decode(&encoded.data[..cut], &encoded.floats).is_err());
        }
        for cut in 0..encoded.floats.len() {
            assert!(decode(&encoded.data, &encoded.floats[..cut]).is_err());
        }
        for _ in 0..20_000 {
            let mut data = encoded.data.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(data.len() as u64) as usize;
                match rng.below(3) {
                    0 => data[at] = rng.next() as u8,
                    1 => data[at] ^= 1 << rng.below(8),
                    _ => data.insert(at, rng.next() as u8),
                }
            }
            let cut = rng.below(encoded.floats.len() as u64 + 1) as usize;
            let floats = &encoded.floats[..cut];
            if let Ok(decoded) = decode(&data, floats) {
                let elements: usize = decoded.iter().map(elements).sum();
                assert!(within_budget(elements, data.len() + floats.len()));
            }
        }
        for _ in 0..5_000 {
            let junk: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            let floats: Vec<f64> = (0..rng.below(8)).map(|_| 1.0).collect();
            let _ = decode(&junk, &floats);
        }
        // A tiny input claiming a huge layout many times over.
        let mut data = vec![VERSION];
        put_uvarint(&mut data, 3);
        for (i, flags) in [0u64, FLAG_SAME_LAYOUT, FLAG_SAME_LAYOUT]
            .iter()
            .enumerate()
        {
            put_zigzag(&mut data, i as i64);
            put_uvarint(&mut data, *flags);
            if i == 0 {
                put_zigzag(&mut data, 0);
                put_uvarint(&mut data, 0);
                put_uvarint(&mut data, 1);
                put_zigzag(&mut data, 0);
                put_uvarint(&mut data, u64::from(u32::MAX));
                put_uvarint(&mut data, 0);
            }
            put_uvarint(&mut data, 0);
            put_uvarint(&mut data, 0);
        }
        assert!(decode(&data, &[0.0, 1.0, 1.0, 1.0]).is_err());
    }
}

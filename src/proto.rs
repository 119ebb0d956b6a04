//! Wire messages of the Prometheus remote-write 1.0 protocol (`prometheus.WriteRequest`),
//! written by hand with `prost` derives so no protoc or build script is needed.
//!
//! Field numbers follow prometheus/prometheus `prompb/remote.proto` and `prompb/types.proto`
//! (1.0), and `prompb/io/prometheus/write/v2/types.proto` (2.0, module [`v2`]). The server
//! decodes write requests with its own wire walk (`decode`, `decode_v2`); these types serve
//! the prost path (`decode::validate`), remote read's answers, tests, the fuzz harness and the
//! benchmark's request builder.
//!
//! Messages with `double` fields are encoded by hand where a derived encoder would lose -0.0
//! (see [`Sample`]).

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Prometheus sends exemplars in series of their own, without samples.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// A sample. Its protobuf encoding is written by hand: proto3's rule "omit a field equal to
/// its default" compares with `==`, under which -0.0 equals 0.0, so a derived encoder would
/// send -0.0 as +0.0 (remote-read answers did). This one omits only the all-zero bit pattern.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// Encodes a singular `double` field unless it is +0.0 (all bits zero): -0.0 is sent.
fn encode_double(tag: u32, value: f64, buf: &mut impl prost::bytes::BufMut) {
    if value.to_bits() != 0 {
        prost::encoding::double::encode(tag, &value, buf);
    }
}

fn double_len(tag: u32, value: f64) -> usize {
    if value.to_bits() != 0 {
        prost::encoding::double::encoded_len(tag, &value)
    } else {
        0
    }
}

fn encode_int64(tag: u32, value: i64, buf: &mut impl prost::bytes::BufMut) {
    if value != 0 {
        prost::encoding::int64::encode(tag, &value, buf);
    }
}

fn int64_len(tag: u32, value: i64) -> usize {
    if value != 0 {
        prost::encoding::int64::encoded_len(tag, &value)
    } else {
        0
    }
}

impl prost::Message for Sample {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        encode_double(1, self.value, buf);
        encode_int64(2, self.timestamp, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => prost::encoding::double::merge(wire_type, &mut self.value, buf, ctx),
            2 => prost::encoding::int64::merge(wire_type, &mut self.timestamp, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        double_len(1, self.value) + int64_len(2, self.timestamp)
    }

    fn clear(&mut self) {
        *self = Sample::default();
    }
}

/// An exemplar (1.0 `TimeSeries` field 3); encoded by hand like [`Sample`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exemplar {
    /// Optional; a `trace_id` label is usual.
    pub labels: Vec<Label>,
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

impl prost::Message for Exemplar {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        prost::encoding::message::encode_repeated(1, &self.labels, buf);
        encode_double(2, self.value, buf);
        encode_int64(3, self.timestamp, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => prost::encoding::message::merge_repeated(wire_type, &mut self.labels, buf, ctx),
            2 => prost::encoding::double::merge(wire_type, &mut self.value, buf, ctx),
            3 => prost::encoding::int64::merge(wire_type, &mut self.timestamp, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::message::encoded_len_repeated(1, &self.labels)
            + double_len(2, self.value)
            + int64_len(3, self.timestamp)
    }

    fn clear(&mut self) {
        *self = Exemplar::default();
    }
}

/// The `count` and `zero_count` oneofs of [`Histogram`]: which member is set decides whether
/// the histogram is an integer or a float one (by `count`, as Prometheus reads it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HistogramCount {
    /// `count_int` (field 1) / `zero_count_int` (6).
    Int(u64),
    /// `count_float` (2) / `zero_count_float` (7).
    Float(f64),
}

/// A native histogram as on the wire (1.0 `TimeSeries` field 4, 2.0 field 3): integer
/// histograms carry bucket deltas (`*_deltas`), float histograms absolute counts (`*_counts`).
/// Nothing is checked here; `decode::Histogram::try_from` validates.
///
/// Encoded by hand: `sum` and `zero_threshold` keep -0.0 (see [`Sample`]); a set oneof member
/// is always sent, even when zero, as proto3 requires.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub count: Option<HistogramCount>,
    pub sum: f64,
    /// `sint32` on the wire.
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: Option<HistogramCount>,
    pub negative_spans: Vec<BucketSpan>,
    /// `sint64`, packed.
    pub negative_deltas: Vec<i64>,
    pub negative_counts: Vec<f64>,
    pub positive_spans: Vec<BucketSpan>,
    pub positive_deltas: Vec<i64>,
    pub positive_counts: Vec<f64>,
    /// `ResetHint`: 0 UNKNOWN, 1 YES, 2 NO, 3 GAUGE.
    pub reset_hint: i32,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Custom bucket bounds (schema -53).
    pub custom_values: Vec<f64>,
    /// Remote write 2.0 only (field 17, Prometheus 3.9+); promgres ignores it.
    pub start_timestamp: i64,
}

impl HistogramCount {
    fn encode(self, int_tag: u32, buf: &mut impl prost::bytes::BufMut) {
        match self {
            HistogramCount::Int(v) => prost::encoding::uint64::encode(int_tag, &v, buf),
            HistogramCount::Float(v) => prost::encoding::double::encode(int_tag + 1, &v, buf),
        }
    }

    fn encoded_len(self, int_tag: u32) -> usize {
        match self {
            HistogramCount::Int(v) => prost::encoding::uint64::encoded_len(int_tag, &v),
            HistogramCount::Float(v) => prost::encoding::double::encoded_len(int_tag + 1, &v),
        }
    }
}

impl prost::Message for Histogram {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        use prost::encoding::{double, int32, message, sint32, sint64};
        if let Some(c) = self.count {
            c.encode(1, buf);
        }
        encode_double(3, self.sum, buf);
        if self.schema != 0 {
            sint32::encode(4, &self.schema, buf);
        }
        encode_double(5, self.zero_threshold, buf);
        if let Some(c) = self.zero_count {
            c.encode(6, buf);
        }
        message::encode_repeated(8, &self.negative_spans, buf);
        sint64::encode_packed(9, &self.negative_deltas, buf);
        double::encode_packed(10, &self.negative_counts, buf);
        message::encode_repeated(11, &self.positive_spans, buf);
        sint64::encode_packed(12, &self.positive_deltas, buf);
        double::encode_packed(13, &self.positive_counts, buf);
        if self.reset_hint != 0 {
            int32::encode(14, &self.reset_hint, buf);
        }
        encode_int64(15, self.timestamp, buf);
        double::encode_packed(16, &self.custom_values, buf);
        encode_int64(17, self.start_timestamp, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        use prost::encoding::{double, int32, int64, message, sint32, sint64, uint64};
        let h = self;
        match tag {
            1 | 6 => {
                let mut v = 0u64;
                uint64::merge(wire_type, &mut v, buf, ctx)?;
                let slot = if tag == 1 {
                    &mut h.count
                } else {
                    &mut h.zero_count
                };
                *slot = Some(HistogramCount::Int(v));
                Ok(())
            }
            2 | 7 => {
                let mut v = 0f64;
                double::merge(wire_type, &mut v, buf, ctx)?;
                let slot = if tag == 2 {
                    &mut h.count
                } else {
                    &mut h.zero_count
                };
                *slot = Some(HistogramCount::Float(v));
                Ok(())
            }
            3 => double::merge(wire_type, &mut h.sum, buf, ctx),
            4 => sint32::merge(wire_type, &mut h.schema, buf, ctx),
            5 => double::merge(wire_type, &mut h.zero_threshold, buf, ctx),
            8 => message::merge_repeated(wire_type, &mut h.negative_spans, buf, ctx),
            9 => sint64::merge_repeated(wire_type, &mut h.negative_deltas, buf, ctx),
            10 => double::merge_repeated(wire_type, &mut h.negative_counts, buf, ctx),
            11 => message::merge_repeated(wire_type, &mut h.positive_spans, buf, ctx),
            12 => sint64::merge_repeated(wire_type, &mut h.positive_deltas, buf, ctx),
            13 => double::merge_repeated(wire_type, &mut h.positive_counts, buf, ctx),
            14 => int32::merge(wire_type, &mut h.reset_hint, buf, ctx),
            15 => int64::merge(wire_type, &mut h.timestamp, buf, ctx),
            16 => double::merge_repeated(wire_type, &mut h.custom_values, buf, ctx),
            17 => int64::merge(wire_type, &mut h.start_timestamp, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        use prost::encoding::{double, int32, message, sint32, sint64};
        self.count.map_or(0, |c| c.encoded_len(1))
            + double_len(3, self.sum)
            + if self.schema != 0 {
                sint32::encoded_len(4, &self.schema)
            } else {
                0
            }
            + double_len(5, self.zero_threshold)
            + self.zero_count.map_or(0, |c| c.encoded_len(6))
            + message::encoded_len_repeated(8, &self.negative_spans)
            + sint64::encoded_len_packed(9, &self.negative_deltas)
            + double::encoded_len_packed(10, &self.negative_counts)
            + message::encoded_len_repeated(11, &self.positive_spans)
            + sint64::encoded_len_packed(12, &self.positive_deltas)
            + double::encoded_len_packed(13, &self.positive_counts)
            + if self.reset_hint != 0 {
                int32::encoded_len(14, &self.reset_hint)
            } else {
                0
            }
            + int64_len(15, self.timestamp)
            + double::encoded_len_packed(16, &self.custom_values)
            + int64_len(17, self.start_timestamp)
    }

    fn clear(&mut self) {
        *self = Histogram::default();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    /// `MetricType` enum; kept as a plain integer so unknown future values still decode.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// The `MetricMetadata.MetricType` names, indexed by their wire value.
pub fn metric_type_name(value: i32) -> &'static str {
    match value {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

// Remote read (prompb/remote.proto).

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadRequest {
    #[prost(message, repeated, tag = "1")]
    pub queries: Vec<Query>,
    /// `ResponseType` values in the client's order of preference: 0 SAMPLES,
    /// 1 STREAMED_XOR_CHUNKS. Empty means SAMPLES.
    #[prost(int32, repeated, tag = "2")]
    pub accepted_response_types: Vec<i32>,
}

pub const RESPONSE_SAMPLES: i32 = 0;
pub const RESPONSE_STREAMED_XOR_CHUNKS: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Query {
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    #[prost(message, repeated, tag = "3")]
    pub matchers: Vec<LabelMatcher>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelMatcher {
    /// 0 EQ, 1 NEQ, 2 RE, 3 NRE.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub value: String,
}

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
pub struct ChunkedReadResponse {
    #[prost(message, repeated, tag = "1")]
    pub chunked_series: Vec<ChunkedSeries>,
    #[prost(int64, tag = "2")]
    pub query_index: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkedSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub chunks: Vec<Chunk>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Chunk {
    #[prost(int64, tag = "1")]
    pub min_time_ms: i64,
    #[prost(int64, tag = "2")]
    pub max_time_ms: i64,
    /// 1 = XOR.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

pub const CHUNK_XOR: i32 = 1;

/// Remote write 2.0 (`io.prometheus.write.v2.Request`, spec 2.0-rc.4): every string of a
/// request is interned in `symbols` and referred to by index. promgres decodes 2.0 with its
/// own wire walk (`decode_v2`); these types build requests (tests, fuzz seeds, the benchmark).
pub mod v2 {
    use super::{double_len, encode_double, encode_int64, int64_len};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        /// Element 0 must be "".
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// (name, value) pairs of indexes into `symbols`, sorted by name.
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub histograms: Vec<super::Histogram>,
        #[prost(message, repeated, tag = "4")]
        pub exemplars: Vec<Exemplar>,
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
        /// Prometheus 2.54-3.8 sent `created_timestamp` here; reserved since 3.9.
        #[prost(int64, tag = "6")]
        pub created_timestamp: i64,
    }

    /// A 2.0 sample; encoded by hand like `proto::Sample`.
    #[derive(Clone, Copy, Debug, Default, PartialEq)]
    pub struct Sample {
        pub value: f64,
        pub timestamp: i64,
        /// "ST" (Prometheus 3.9+); 0 = unset. promgres ignores it.
        pub start_timestamp: i64,
    }

    impl prost::Message for Sample {
        fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
            encode_double(1, self.value, buf);
            encode_int64(2, self.timestamp, buf);
            encode_int64(3, self.start_timestamp, buf);
        }

        fn merge_field(
            &mut self,
            tag: u32,
            wire_type: prost::encoding::WireType,
            buf: &mut impl prost::bytes::Buf,
            ctx: prost::encoding::DecodeContext,
        ) -> Result<(), prost::DecodeError> {
            use prost::encoding::{double, int64};
            match tag {
                1 => double::merge(wire_type, &mut self.value, buf, ctx),
                2 => int64::merge(wire_type, &mut self.timestamp, buf, ctx),
                3 => int64::merge(wire_type, &mut self.start_timestamp, buf, ctx),
                _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
            }
        }

        fn encoded_len(&self) -> usize {
            double_len(1, self.value)
                + int64_len(2, self.timestamp)
                + int64_len(3, self.start_timestamp)
        }

        fn clear(&mut self) {
            *self = Sample::default();
        }
    }

    /// A 2.0 exemplar; encoded by hand like `proto::Sample`.
    #[derive(Clone, Debug, Default, PartialEq)]
    pub struct Exemplar {
        pub labels_refs: Vec<u32>,
        pub value: f64,
        pub timestamp: i64,
    }

    impl prost::Message for Exemplar {
        fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
            prost::encoding::uint32::encode_packed(1, &self.labels_refs, buf);
            encode_double(2, self.value, buf);
            encode_int64(3, self.timestamp, buf);
        }

        fn merge_field(
            &mut self,
            tag: u32,
            wire_type: prost::encoding::WireType,
            buf: &mut impl prost::bytes::Buf,
            ctx: prost::encoding::DecodeContext,
        ) -> Result<(), prost::DecodeError> {
            use prost::encoding::{double, int64, uint32};
            match tag {
                1 => uint32::merge_repeated(wire_type, &mut self.labels_refs, buf, ctx),
                2 => double::merge(wire_type, &mut self.value, buf, ctx),
                3 => int64::merge(wire_type, &mut self.timestamp, buf, ctx),
                _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
            }
        }

        fn encoded_len(&self) -> usize {
            prost::encoding::uint32::encoded_len_packed(1, &self.labels_refs)
                + double_len(2, self.value)
                + int64_len(3, self.timestamp)
        }

        fn clear(&mut self) {
            *self = Exemplar::default();
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Metadata {
        /// `MetricType`: the values of 1.0's `MetricMetadata.type` (0 = UNSPECIFIED).
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        /// Indexes into `symbols`; 0 = "".
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }
}

//! The fuzz targets' harness: what each target does with its input and the invariants it
//! asserts. A broken invariant is a panic, which libFuzzer reports as a crash.
//!
//! Shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`, nightly, libFuzzer) and by
//! `tests/fuzz_regressions.rs` (stable `cargo test`), which includes this file as a module
//! and replays every seed and every input that once crashed through the same functions. It
//! therefore uses only what the main crate depends on: `promgres`, `snap` and `prost`.
//!
//! | target | input | drives |
//! |---|---|---|
//! | `remote_write` | a request body; also the input itself as the protobuf | `decode::decode_write` with the server's limits, against prost |
//! | `remote_write_v2` | a 2.0 request body; also the input itself as the protobuf | `decode_v2::decode_write_v2` with the server's limits, against prost's `v2::Request` resolved into a 1.0 request |
//! | `remote_read` | a request body; also the input itself as the protobuf | `decode::decompress_read_request`, `read::decode_request`, `read::plan` |
//! | `snappy` | a Snappy block | `decode::decompress` at several limits, against `snap`'s decoder |
//! | `ha_router` | an op script, then a remote-write body | `ha::Election` (route, re-route, tick, hand-over) on decoded batches |

use promgres::decode::{self, DecodeError, Limits, WriteBatch};
use promgres::decode_v2;
use promgres::proto;
use prost::Message;

/// The limits promgres serves with by default: `--max-request-bytes` 32 MiB,
/// `--max-sample-age` 30 days.
pub const SERVER_LIMITS: Limits = Limits {
    max_decoded_bytes: 32 << 20,
    max_sample_age_ms: 30 * 86_400_000,
};

/// The same size limit with the age limit off, so captures of any date decode in full.
const NO_AGE_LIMITS: Limits = Limits {
    max_decoded_bytes: 32 << 20,
    max_sample_age_ms: i64::MAX,
};

/// The receiver's clock for the decoders: shortly after the fixtures were captured (2023).
pub const NOW_MS: i64 = 1_700_000_000_000;

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `cargo fuzz run NAME` and the seed folders know them.
pub const TARGETS: [(&str, Target); 5] = [
    ("remote_write", remote_write),
    ("remote_write_v2", remote_write_v2),
    ("remote_read", remote_read),
    ("snappy", snappy),
    ("ha_router", ha_router),
];

fn compress(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(data)
        .expect("snappy compresses any input")
}

// ---------------------------------------------------------------------------------------
// remote_write

/// Fuzz target: a remote-write body, then the input taken as the protobuf itself.
pub fn remote_write(data: &[u8]) {
    check_write_body(data);
    check_write_body(&compress(data));
}

/// A write decoder: `decode::decode_write` or `decode_v2::decode_write_v2`.
type Decoder = fn(&[u8], Limits, i64) -> Result<WriteBatch, DecodeError>;

/// What both decoders promise: the size limit on the header, the age limit refusing more and
/// nothing else, valid batches. Returns the batch decoded without the age limit.
fn check_decoder(body: &[u8], decode_with: Decoder) -> Option<WriteBatch> {
    // The size limit is checked on the Snappy header, before anything is allocated.
    if let Ok(declared) = snap::raw::decompress_len(body) {
        if declared > 0 {
            let limits = Limits::new(declared - 1, i64::MAX);
            assert_eq!(
                decode_with(body, limits, NOW_MS),
                Err(DecodeError::TooLarge {
                    declared,
                    limit: declared - 1
                }),
                "a body over the limit is refused on its header"
            );
        }
    }
    let served = decode_with(body, SERVER_LIMITS, NOW_MS);
    let no_age = decode_with(body, NO_AGE_LIMITS, NOW_MS);
    describe(&served);
    match (&served, &no_age) {
        (Ok(a), Ok(b)) => assert_eq!(batch_bits(a), batch_bits(b)),
        (Ok(_), Err(e)) => panic!("accepted with the age limit, refused without it: {e}"),
        // The age limit refuses more, never anything else.
        (Err(DecodeError::TimestampOutOfRange { .. }), _) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "the age limit changed another refusal"),
        (Err(e), Ok(_)) => panic!("only a sample time may be refused by the age limit: {e}"),
    }
    if let Ok(batch) = &served {
        check_batch(batch, SERVER_LIMITS);
    }
    let batch = no_age.ok()?;
    check_batch(&batch, NO_AGE_LIMITS);
    Some(batch)
}

fn check_write_body(body: &[u8]) {
    if let Some(batch) = &check_decoder(body, decode::decode_write) {
        // The allocation-free wire walk and prost agree on what they both accept.
        let raw = decode::decompress(body, NO_AGE_LIMITS.max_decoded_bytes)
            .expect("decoded, so decompressed");
        if let Ok(message) = proto::WriteRequest::decode(raw.as_slice()) {
            let slow = decode::validate(message, NO_AGE_LIMITS, NOW_MS)
                .expect("the wire parser accepted it, so must the prost path");
            assert_eq!(batch_bits(batch), batch_bits(&slow), "wire parser vs prost");
        }
    }
}

/// A decoded batch with every float as bits (NaN != NaN) and labels as JSON.
type BatchBits = (Vec<String>, Vec<(String, &'static str, String, String)>);

fn batch_bits(batch: &WriteBatch) -> BatchBits {
    (
        batch.series_bit_image(),
        batch
            .metadata
            .iter()
            .map(|m| {
                (
                    m.metric.clone(),
                    m.metric_type,
                    m.help.clone(),
                    m.unit.clone(),
                )
            })
            .collect(),
    )
}

/// Everything a handler does with a refusal: its metric reason, message and count.
fn describe(result: &Result<WriteBatch, DecodeError>) {
    if let Err(e) = result {
        assert!(!e.reason().is_empty());
        assert!(!e.to_string().is_empty());
        let _ = e.refused_samples();
    }
}

/// What every later stage relies on in a decoded batch.
fn check_batch(batch: &WriteBatch, limits: Limits) {
    let oldest = NOW_MS.saturating_sub(limits.max_sample_age_ms).max(0);
    let newest = NOW_MS + decode::MAX_FUTURE_MS;
    let mut points = 0;
    for s in &batch.series {
        assert!(!s.is_empty(), "a series without points is kept");
        points += s.points();
        for t in s.timestamps() {
            assert!(
                (oldest..=newest).contains(&t),
                "point time {t} out of [{oldest}, {newest}]"
            );
        }
        s.histograms.iter().for_each(check_histogram);
        for e in &s.exemplars {
            assert!(
                e.labels.windows(2).all(|w| w[0].0 < w[1].0),
                "exemplar labels sorted by name, unique: {:?}",
                e.labels
            );
            let chars: usize = e
                .labels
                .iter()
                .map(|(n, v)| n.chars().count() + v.chars().count())
                .sum();
            assert!(chars <= decode::MAX_EXEMPLAR_LABEL_CHARS);
            for (name, value) in &e.labels {
                assert!(decode::valid_label_name(name) && !value.contains('\0'));
            }
        }
        let labels: Vec<(&str, &str)> = s.labels.labels().collect();
        assert!(!labels.is_empty() && labels.len() <= decode::MAX_LABELS_PER_SERIES);
        assert_eq!(labels.len(), s.labels.len());
        assert!(
            labels.windows(2).all(|w| w[0].0 < w[1].0),
            "labels sorted by name, unique: {labels:?}"
        );
        let mut text = 0;
        for (name, value) in &labels {
            assert!(decode::valid_label_name(name) && name.len() <= decode::MAX_NAME_BYTES);
            assert!(!value.is_empty() && value.len() <= decode::MAX_VALUE_BYTES);
            assert!(!value.contains('\0'), "NUL in a label value");
            assert_eq!(s.labels.get(name), Some(*value));
            text += name.len() + value.len();
        }
        assert_eq!(s.labels.text_bytes(), text);
        assert!(decode::valid_metric_name(s.labels.metric()));
        let json = s.labels.to_json();
        assert!(json.starts_with('{') && json.ends_with('}'));
        assert!(!json.contains('\0'));
        assert!(s.labels.to_string().starts_with(s.labels.metric()));
        assert_eq!(s.labels.clone().without("__name__").get("__name__"), None);
    }
    assert_eq!(batch.sample_count(), points);
    for m in &batch.metadata {
        assert!(decode::valid_metric_name(&m.metric));
        assert!(m.help.len() <= decode::MAX_VALUE_BYTES && m.unit.len() <= decode::MAX_NAME_BYTES);
        assert!(!m.help.contains('\0') && !m.unit.contains('\0'));
    }
}

/// What a validated histogram promises: a known schema, spans that describe its buckets,
/// integer counts that add up; and it survives the trip back to the wire.
fn check_histogram(h: &decode::Histogram) {
    let custom = h.schema == decode::CUSTOM_BUCKETS_SCHEMA;
    assert!(custom || decode::HISTOGRAM_SCHEMAS.contains(&h.schema));
    assert!(custom || h.custom_values.is_empty());
    let described =
        |spans: &[decode::BucketSpan]| -> u64 { spans.iter().map(|s| u64::from(s.length)).sum() };
    let (negative, positive) = match &h.counts {
        decode::HistogramCounts::Integer {
            count,
            zero_count,
            negative,
            positive,
        } => {
            let total = negative
                .iter()
                .chain(positive)
                .try_fold(*zero_count, |a, c| a.checked_add(*c));
            assert!(total.is_some_and(|t| t <= *count), "count below buckets");
            (negative.len(), positive.len())
        }
        decode::HistogramCounts::Float {
            negative, positive, ..
        } => {
            assert!(negative
                .iter()
                .chain(positive)
                .all(|c| c.is_nan() || *c >= 0.0));
            (negative.len(), positive.len())
        }
    };
    assert_eq!(described(&h.negative_spans), negative as u64);
    assert_eq!(described(&h.positive_spans), positive as u64);
    let wire = proto::Histogram::from(h);
    let back = decode::Histogram::try_from(wire).expect("a valid histogram converts back");
    assert_eq!(back.bit_image(), h.bit_image(), "histogram round trip");
}

// ---------------------------------------------------------------------------------------
// remote_write_v2

/// Fuzz target: a remote-write 2.0 body, then the input taken as the protobuf itself.
pub fn remote_write_v2(data: &[u8]) {
    check_write_v2_body(data);
    check_write_v2_body(&compress(data));
}

fn check_write_v2_body(body: &[u8]) {
    let Some(batch) = check_decoder(body, decode_v2::decode_write_v2) else {
        return;
    };
    // prost's reading of the same body, its references resolved into a 1.0 request, must
    // validate to the same batch.
    let raw = decode::decompress(body, NO_AGE_LIMITS.max_decoded_bytes)
        .expect("decoded, so decompressed");
    let Ok(request) = proto::v2::Request::decode(raw.as_slice()) else {
        return;
    };
    let twin = v1_twin(&request).expect("the wire walk accepted every reference");
    let slow = decode::validate(twin, NO_AGE_LIMITS, NOW_MS)
        .expect("the 2.0 decoder accepted it, so must the 1.0 prost path");
    assert_eq!(
        batch_bits(&batch),
        batch_bits(&slow),
        "2.0 wire walk vs prost"
    );
}

/// A 2.0 request as the 1.0 request with the same content: references resolved, one
/// metadata entry per metric name. `None` when a reference is out of range or odd.
fn v1_twin(request: &proto::v2::Request) -> Option<proto::WriteRequest> {
    let symbol = |r: u32| request.symbols.get(r as usize).cloned();
    let pairs = |refs: &[u32]| -> Option<Vec<proto::Label>> {
        if !refs.len().is_multiple_of(2) {
            return None;
        }
        refs.chunks(2)
            .map(|p| {
                Some(proto::Label {
                    name: symbol(p[0])?,
                    value: symbol(p[1])?,
                })
            })
            .collect()
    };
    if request.symbols.first().is_none_or(|s| !s.is_empty()) {
        return None;
    }
    let mut out = proto::WriteRequest::default();
    let mut names = std::collections::HashSet::new();
    for ts in &request.timeseries {
        let labels = pairs(&ts.labels_refs)?;
        let exemplars = ts
            .exemplars
            .iter()
            .map(|e| {
                Some(proto::Exemplar {
                    labels: pairs(&e.labels_refs)?,
                    value: e.value,
                    timestamp: e.timestamp,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        if let Some(m) = ts.metadata {
            let (help, unit) = (symbol(m.help_ref)?, symbol(m.unit_ref)?);
            let name = labels.iter().find(|l| l.name == "__name__");
            if let Some(name) = name {
                if (m.r#type != 0 || !help.is_empty() || !unit.is_empty())
                    && names.insert(name.value.clone())
                {
                    out.metadata.push(proto::MetricMetadata {
                        r#type: m.r#type,
                        metric_family_name: name.value.clone(),
                        help,
                        unit,
                    });
                }
            }
        }
        out.timeseries.push(proto::TimeSeries {
            labels,
            samples: ts
                .samples
                .iter()
                .map(|s| proto::Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                })
                .collect(),
            exemplars,
            histograms: ts.histograms.clone(),
        });
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// remote_read

/// `read::MIN_MS` and `read::MAX_MS`: the data-time bounds (years 1 to 9999) a plan is
/// clamped to.
const READ_MIN_MS: i64 = -62_135_596_800_000;
const READ_MAX_MS: i64 = 253_402_300_799_999;

/// Fuzz target: a remote-read body, then the input taken as the protobuf itself.
pub fn remote_read(data: &[u8]) {
    check_read_body(data);
    check_read_body(&compress(data));
}

fn check_read_body(body: &[u8]) {
    use promgres::read::{self, ReadError};
    let limit = SERVER_LIMITS.max_decoded_bytes;
    if let Ok(declared) = snap::raw::decompress_len(body) {
        if declared > 0 {
            assert_eq!(
                decode::decompress_read_request(body, declared - 1),
                Err(DecodeError::TooLarge {
                    declared,
                    limit: declared - 1
                })
            );
        }
    }
    let raw = decode::decompress_read_request(body, limit);
    match (&raw, decode::decompress(body, limit)) {
        (Ok(a), Ok(b)) => assert_eq!(*a, b, "the budget check changed the bytes"),
        (Err(DecodeError::TooManyElements { .. } | DecodeError::BadProtobuf(_)), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(*a, b),
        (a, b) => panic!("decompress_read_request {a:?} vs decompress {b:?}"),
    }
    let request = read::decode_request(body, limit);
    let prost = raw
        .as_ref()
        .ok()
        .map(|r| proto::ReadRequest::decode(r.as_slice()));
    match (&request, &prost) {
        (Ok(a), Some(Ok(b))) => assert_eq!(a, b),
        (Err(ReadError::Decode(_)), None | Some(Err(_))) => {}
        (r, p) => panic!("decode_request {r:?} vs decompress + prost {p:?}"),
    }
    let Ok(request) = request else {
        if let Err(e) = &request {
            assert!(!e.to_string().is_empty());
        }
        return;
    };
    let _ = read::wants_stream(&request);
    let all = read::plan(&request, None);
    let ha = read::plan(&request, Some("__replica__"));
    for plans in [&all, &ha].into_iter().flatten() {
        assert_eq!(plans.len(), request.queries.len());
        for (plan, query) in plans.iter().zip(&request.queries) {
            assert!(
                !plan.matchers.is_empty(),
                "a plan without matchers reads everything"
            );
            assert_eq!(
                plan.start_ms,
                query.start_timestamp_ms.clamp(READ_MIN_MS, READ_MAX_MS)
            );
            assert_eq!(
                plan.end_ms,
                query.end_timestamp_ms.clamp(READ_MIN_MS, READ_MAX_MS)
            );
            for m in &plan.matchers {
                use promgres::store::Matcher;
                let (Matcher::Equal(name, _)
                | Matcher::NotEqual(name, _)
                | Matcher::Regex(name, _)
                | Matcher::NotRegex(name, _)) = m;
                assert!(decode::valid_label_name(name));
            }
        }
    }
    // Dropping the replica's equality matchers drops exactly those.
    match (&all, &ha) {
        (Ok(all), Ok(ha)) => {
            for ((a, h), q) in all.iter().zip(ha).zip(&request.queries) {
                let replica = q
                    .matchers
                    .iter()
                    .filter(|m| m.r#type == 0 && m.name == "__replica__")
                    .count();
                assert_eq!(a.matchers.len(), h.matchers.len() + replica);
            }
        }
        (Ok(_), Err(ReadError::BadMatcher(e))) => {
            assert!(e.contains("at least one"), "{e}")
        }
        (Err(_), Err(_)) => {}
        (a, h) => panic!("plan without HA {a:?}, with {h:?}"),
    }
    for e in [&all, &ha].into_iter().filter_map(|p| p.as_ref().err()) {
        assert!(!e.to_string().is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// snappy

/// Fuzz target: a Snappy block, decompressed by promgres at several limits and compared
/// with `snap`'s own decoder; then the input compressed and decompressed again.
pub fn snappy(data: &[u8]) {
    let declared = snap::raw::decompress_len(data);
    let theirs = match declared {
        Ok(n) if n <= SERVER_LIMITS.max_decoded_bytes => {
            Some(snap::raw::Decoder::new().decompress_vec(data))
        }
        _ => None,
    };
    for limit in [0, 1, 64, 4096, 1 << 16, SERVER_LIMITS.max_decoded_bytes] {
        let ours = decode::decompress(data, limit);
        match (&declared, &theirs) {
            (Err(_), _) => assert!(
                matches!(ours, Err(DecodeError::NotSnappy(_))),
                "no length header: {ours:?}"
            ),
            (Ok(n), _) if *n > limit => assert_eq!(
                ours,
                Err(DecodeError::TooLarge {
                    declared: *n,
                    limit
                })
            ),
            (Ok(n), Some(theirs)) => match (ours, theirs) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.len(), *n, "decoded length differs from the header");
                    assert_eq!(&a, b);
                }
                (Err(DecodeError::NotSnappy(_)), Err(_)) => {}
                (a, b) => panic!("promgres {a:?} vs snap {b:?}"),
            },
            (Ok(_), None) => unreachable!("declared within the largest limit"),
        }
    }
    let compressed = compress(data);
    assert_eq!(
        decode::decompress(&compressed, data.len()).as_deref(),
        Ok(data),
        "round trip"
    );
    if !data.is_empty() {
        assert!(matches!(
            decode::decompress(&compressed, data.len() - 1),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}

// ---------------------------------------------------------------------------------------
// ha_router

pub use ha_router::Stats;

/// Fuzz target: the HA stage on decoded input (see [`ha_router::run`]).
pub fn ha_router(data: &[u8]) {
    ha_router::run(data);
}

/// What one `ha_router` input did, so tests can tell that the seeds reach every path.
pub fn ha_router_stats(data: &[u8]) -> Stats {
    ha_router::run(data)
}

/// The HA stage on decoded input: several promgres instances (`Election`s) share an
/// in-memory lease store that mimics the SQL functions of migrations/0002_ha.sql, a manual
/// clock, and a simulated writer that applies the fence the real one checks at commit.
///
/// Input: a little-endian u16 `n`, `n` bytes of op script, then an optional remote-write body.
/// When the body decodes (with the server's size limit), its first series are a template the
/// script can send as any replica of any cluster, with its times moved to the clock's; other
/// ops send small synthetic requests (times in seconds from now, or in milliseconds around the
/// cluster's lease start), move the clock, tick an election, hand a lease over, make the next
/// store calls fail, or commit what was routed earlier (a commit racing a lease change).
///
/// Every sample carries a unique id as its value, so the invariants are about samples:
/// - routing puts each sample in exactly one place: stored unconditionally (ordinary or
///   backfill), fenced for the leader, or not stored (standby buffer or dropped), and the
///   count the request is answered with matches;
/// - a buffered sample is handed back (flushed) at most once, by the instance that buffered
///   it, for the replica that sent it;
/// - a stored sample is stored once; backfill lies inside a closed lease of the replica that
///   sent it; one moment of one series is stored from one replica only;
/// - the replica label never reaches storage for an HA pair's series, and the standby
///   buffer stays within its bytes.
mod ha_router {
    use promgres::clock::Clock;
    use promgres::decode::{self, Limits, SeriesSamples, WriteBatch};
    use promgres::ha::{Election, HaConfig, Routed};
    use promgres::metrics::Metrics;
    use promgres::proto;
    use promgres::queue::FencedGroup;
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    const CLUSTER: &str = "cluster";
    const REPLICA: &str = "__replica__";
    const TIMEOUT_MS: i64 = 30_000;
    const INTERVAL_MS: i64 = 10_000;
    const START_MS: i64 = 1_700_000_000_000;
    /// Series of the decoded body used as the template (a capture has 500; more only slow
    /// the fuzzer down).
    const TEMPLATE_SERIES: usize = 16;
    /// Ops run per input, so one input stays fast.
    const MAX_OPS: usize = 200;
    const CLUSTERS: [&str; 3] = ["c0", "c1", ""];
    const REPLICAS: [&str; 4] = ["a", "b", "c", ""];
    const METRICS: [&str; 3] = ["up", "m1", "m2"];

    struct ManualClock(AtomicI64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    // The lease store: the model of the SQL lease functions shared with ha_tests.
    use promgres::ha_model::{ModelDb as FakeDb, ModelStore as FakeStore};

    /// The op script.
    struct Script<'a> {
        bytes: &'a [u8],
    }

    impl Script<'_> {
        fn next(&mut self) -> Option<u8> {
            let (first, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            Some(*first)
        }

        /// The next byte, 0 once the script is over.
        fn byte(&mut self) -> u8 {
            self.next().unwrap_or(0)
        }
    }

    /// One template series: its labels and its samples' times relative to the first.
    type TemplateSeries = (Vec<(String, String)>, Vec<i64>);

    /// Where a sample came from: (cluster, replica) as sent, "" when absent.
    type Origin = (String, String);

    /// What one input did.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Stats {
        /// HA samples in the leader's committed groups (fenced groups and flushes).
        pub leader_stored: usize,
        /// HA samples stored as backfill into a replica's past lease.
        pub backfilled: usize,
        /// Samples a new leader's flush handed back from the standby buffer.
        pub flushed: usize,
        /// Fenced groups the writer refused (the lease moved before commit).
        pub fenced_out: usize,
        /// Store calls that failed (injected) under a route, tick or hand-over.
        pub failed_calls: usize,
        /// Leader changes in the lease store.
        pub leader_changes: usize,
    }

    struct Sim {
        stats: Stats,
        clock: Arc<ManualClock>,
        store: FakeStore,
        instances: Vec<(Election, Arc<Metrics>)>,
        buffer_bytes: usize,
        next_id: u64,
        origin: HashMap<u64, Origin>,
        /// Per instance: ids of samples that may be in its standby buffer.
        kept_back: Vec<HashSet<u64>>,
        stored: HashSet<u64>,
        /// Routed requests whose commit is still to come.
        deferred: Vec<(usize, Routed)>,
    }

    fn id_of(value: f64) -> u64 {
        value as u64
    }

    fn ids(series: &[SeriesSamples]) -> Vec<u64> {
        series
            .iter()
            .flat_map(|s| s.samples.iter().map(|x| id_of(x.value)))
            .collect()
    }

    fn group_ids(groups: &[FencedGroup]) -> Vec<u64> {
        groups.iter().flat_map(|g| ids(&g.series)).collect()
    }

    impl Sim {
        fn new(instances: usize, buffer_bytes: usize) -> Sim {
            let clock = Arc::new(ManualClock(AtomicI64::new(START_MS)));
            let store = FakeStore::new(clock.clone());
            let config = HaConfig {
                cluster_label: CLUSTER.into(),
                replica_label: REPLICA.into(),
                failover_timeout_ms: TIMEOUT_MS,
                interval_ms: INTERVAL_MS,
                buffer_bytes,
            };
            let instances = (0..instances)
                .map(|_| {
                    let metrics = Arc::new(Metrics::default());
                    let election = Election::new(
                        config.clone(),
                        Box::new(store.clone()),
                        clock.clone(),
                        metrics.clone(),
                    );
                    (election, metrics)
                })
                .collect::<Vec<_>>();
            Sim {
                stats: Stats::default(),
                kept_back: vec![HashSet::new(); instances.len()],
                clock,
                store,
                instances,
                buffer_bytes,
                next_id: 1,
                origin: HashMap::new(),
                stored: HashSet::new(),
                deferred: Vec::new(),
            }
        }

        fn now(&self) -> i64 {
            self.clock.now_ms()
        }

        /// The data time the cluster's current lease starts at, in the store.
        fn lease_start(&self, cluster: &str) -> Option<i64> {
            self.store.db().leases.get(cluster).map(|l| l.start_ms)
        }

        fn advance(&self, ms: i64) {
            self.clock.0.fetch_add(ms, Ordering::SeqCst);
        }

        /// Labels a sample with a fresh id (its value) and remembers where it came from.
        fn sample(&mut self, origin: &Origin, timestamp: i64) -> proto::Sample {
            let id = self.next_id;
            self.next_id += 1;
            self.origin.insert(id, origin.clone());
            proto::Sample {
                value: id as f64,
                timestamp,
            }
        }

        /// Decodes (validates) a request and routes it on `instance`; commits now or later.
        fn send(&mut self, instance: usize, request: proto::WriteRequest, defer: bool) {
            let limits = Limits::new(32 << 20, i64::MAX);
            let Ok(batch) = decode::validate(request, limits, self.now()) else {
                return;
            };
            let sent: Vec<u64> = ids(&batch.series);
            let result = self.instances[instance].0.route(batch);
            match result {
                Ok(routed) => {
                    self.check_routed(instance, &sent, &routed);
                    if defer {
                        self.deferred.push((instance, routed));
                    } else {
                        self.commit_routed(instance, routed);
                    }
                }
                // A 503: the groups routed before the failure may have been buffered.
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    self.stats.failed_calls += 1;
                    self.kept_back[instance].extend(sent);
                }
            }
            self.check_buffer(instance);
        }

        /// Routing put each sample in exactly one place.
        fn check_routed(&mut self, instance: usize, sent: &[u64], routed: &Routed) {
            let sent_set: HashSet<u64> = sent.iter().copied().collect();
            assert_eq!(sent_set.len(), sent.len(), "ids are unique");
            let mut out = HashSet::new();
            for id in ids(&routed.plain.series)
                .into_iter()
                .chain(group_ids(&routed.fenced))
            {
                assert!(sent_set.contains(&id), "routing made up sample {id}");
                assert!(out.insert(id), "sample {id} routed to two places");
            }
            assert_eq!(
                out.len() + routed.not_stored,
                sent.len(),
                "stored + not stored != sent"
            );
            for &id in sent.iter().filter(|id| !out.contains(id)) {
                self.kept_back[instance].insert(id);
            }
            for s in &routed.plain.series {
                for id in ids(std::slice::from_ref(s)) {
                    let (cluster, replica) = &self.origin[&id];
                    if !cluster.is_empty() && !replica.is_empty() {
                        assert_eq!(s.labels.get(REPLICA), None, "backfill keeps the replica");
                        assert_eq!(s.labels.get(CLUSTER), Some(cluster.as_str()));
                    } else {
                        let label = |v: &str| (!v.is_empty()).then_some(v.to_string());
                        assert_eq!(s.labels.get(CLUSTER).map(str::to_string), label(cluster));
                        assert_eq!(s.labels.get(REPLICA).map(str::to_string), label(replica));
                    }
                }
            }
            for g in &routed.fenced {
                self.check_group(g);
            }
            self.check_flushes(instance, &routed.flushes);
        }

        /// A fenced group holds its replica's samples of its cluster, without the replica label.
        fn check_group(&self, g: &FencedGroup) {
            assert!(!g.cluster.is_empty() && !g.replica.is_empty());
            for s in &g.series {
                assert_eq!(
                    s.labels.get(REPLICA),
                    None,
                    "replica label in a fenced group"
                );
                assert_eq!(s.labels.get(CLUSTER), Some(g.cluster.as_str()));
                for id in ids(std::slice::from_ref(s)) {
                    let origin = &self.origin[&id];
                    assert_eq!(
                        (origin.0.as_str(), origin.1.as_str()),
                        (g.cluster.as_str(), g.replica.as_str()),
                        "sample {id} in another replica's group"
                    );
                }
            }
        }

        /// A flushed sample was kept back by this instance, and is flushed once.
        fn check_flushes(&mut self, instance: usize, flushes: &[FencedGroup]) {
            for g in flushes {
                self.check_group(g);
                for id in ids(&g.series) {
                    self.stats.flushed += 1;
                    assert!(
                        self.kept_back[instance].remove(&id),
                        "instance {instance} flushed sample {id}, which it did not keep back or flushed before"
                    );
                }
            }
        }

        fn check_buffer(&self, instance: usize) {
            let bytes = self.instances[instance].1.ha_buffer_bytes.get();
            assert!(
                (0..=self.buffer_bytes as i64).contains(&bytes),
                "standby buffer holds {bytes} bytes, limit {}",
                self.buffer_bytes
            );
        }

        /// What `Ingest::write` does after routing: flush, commit, re-route what the fence
        /// refused, commit that; refused twice is not stored.
        fn commit_routed(&mut self, instance: usize, routed: Routed) {
            self.commit(instance, &WriteBatch::default(), routed.flushes);
            for group in self.commit(instance, &routed.plain, routed.fenced) {
                self.stats.fenced_out += 1;
                let sent = group_ids(std::slice::from_ref(&group));
                match self.instances[instance].0.reroute_fenced_out(group) {
                    Ok(again) => {
                        self.check_routed(instance, &sent, &again);
                        self.commit(instance, &WriteBatch::default(), again.flushes);
                        self.commit(instance, &again.plain, again.fenced);
                    }
                    Err(_) => {
                        self.stats.failed_calls += 1;
                        self.kept_back[instance].extend(sent);
                    }
                }
            }
            self.check_buffer(instance);
        }

        /// The writer: stores plain series, and fenced groups whose fence holds; returns the
        /// groups fenced out. Writer id = instance.
        fn commit(
            &mut self,
            writer: usize,
            plain: &WriteBatch,
            fenced: Vec<FencedGroup>,
        ) -> Vec<FencedGroup> {
            let now = self.now();
            let db = self.store.db.clone();
            let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
            for s in &plain.series {
                for x in &s.samples {
                    let id = id_of(x.value);
                    let (cluster, replica) = self.origin[&id].clone();
                    if cluster.is_empty() || replica.is_empty() {
                        assert!(self.stored.insert(id), "sample {id} stored twice");
                        continue;
                    }
                    let in_past_lease = db.history.iter().any(|h| {
                        h.0 == cluster
                            && h.2 == replica
                            && h.4
                                .is_some_and(|end| h.3 <= x.timestamp && x.timestamp < end)
                    });
                    assert!(
                        in_past_lease,
                        "backfill of {replica:?} at {} outside its past leases: {:?}",
                        x.timestamp, db.history
                    );
                    self.stats.backfilled += 1;
                    self.store_moment(&mut db, &cluster, &replica, s, x.timestamp, id);
                }
            }
            let mut out = Vec::new();
            for g in fenced {
                let Some((lo, hi)) = bounds(&g.series) else {
                    continue;
                };
                let lease = db.leases[&g.cluster].clone();
                if lease.leader != g.replica || lo < lease.start_ms {
                    out.push(g);
                    continue;
                }
                for s in &g.series {
                    for x in &s.samples {
                        let id = id_of(x.value);
                        self.stats.leader_stored += 1;
                        self.store_moment(&mut db, &g.cluster, &g.replica, s, x.timestamp, id);
                    }
                }
                let p = db
                    .progress
                    .entry((g.cluster.clone(), writer))
                    .or_insert((lease.term, hi, now));
                if p.0 != lease.term {
                    *p = (lease.term, hi, now);
                }
                p.1 = p.1.max(hi);
                p.2 = now;
            }
            out
        }

        /// Stores one HA sample: the primary key keeps the first of a replica's re-sends;
        /// another replica's sample at the same moment is a broken lease.
        fn store_moment(
            &mut self,
            db: &mut FakeDb,
            cluster: &str,
            replica: &str,
            series: &SeriesSamples,
            timestamp: i64,
            id: u64,
        ) {
            let key = (cluster.to_string(), series.labels.to_json(), timestamp);
            match db.stored.get(&key) {
                Some(r) => assert_eq!(
                    r, replica,
                    "{key:?} stored from two replicas; history {:?}",
                    db.history
                ),
                None => {
                    db.stored.insert(key, replica.to_string());
                    assert!(self.stored.insert(id), "sample {id} stored twice");
                }
            }
        }

        fn tick(&mut self, instance: usize) {
            match self.instances[instance].0.tick() {
                Ok(flushes) => {
                    self.check_flushes(instance, &flushes);
                    self.commit(instance, &WriteBatch::default(), flushes);
                }
                Err(_) => self.stats.failed_calls += 1,
            }
            self.check_buffer(instance);
        }

        fn hand_over(&mut self, instance: usize, cluster: &str, replica: &str) {
            match self.instances[instance].0.hand_over(cluster, replica) {
                Ok((lease, flushes)) => {
                    assert_eq!(lease.cluster, cluster);
                    self.check_flushes(instance, &flushes);
                    self.commit(instance, &WriteBatch::default(), flushes);
                }
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    if matches!(e, promgres::ha::HandOverError::Store(_)) {
                        self.stats.failed_calls += 1;
                    }
                }
            }
            self.check_buffer(instance);
        }

        fn commit_deferred(&mut self) {
            for (instance, routed) in std::mem::take(&mut self.deferred) {
                self.commit_routed(instance, routed);
            }
        }
    }

    fn bounds(series: &[SeriesSamples]) -> Option<(i64, i64)> {
        let times = series
            .iter()
            .flat_map(|s| s.samples.iter().map(|x| x.timestamp));
        Some((times.clone().min()?, times.max()?))
    }

    fn label(name: &str, value: &str) -> proto::Label {
        proto::Label {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The first series of a decoded body, as labels and relative sample times.
    fn template(body: &[u8]) -> Vec<TemplateSeries> {
        let limits = Limits::new(super::SERVER_LIMITS.max_decoded_bytes, i64::MAX);
        let Ok(batch) = decode::decode_write(body, limits, i64::MAX / 2) else {
            return Vec::new();
        };
        let first = bounds(&batch.series).map_or(0, |(lo, _)| lo);
        batch
            .series
            .iter()
            .take(TEMPLATE_SERIES)
            .map(|s| {
                let labels = s
                    .labels
                    .labels()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect();
                let times = s
                    .samples
                    .iter()
                    .map(|x| x.timestamp.saturating_sub(first))
                    .collect();
                (labels, times)
            })
            .collect()
    }

    /// Runs one input; see the module's documentation.
    pub fn run(data: &[u8]) -> Stats {
        let (ops, body) = match data {
            [lo, hi, rest @ ..] => {
                let n = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
                rest.split_at(n)
            }
            _ => (data, &[][..]),
        };
        // Decoded at the first op that uses it.
        let mut decoded: Option<Vec<TemplateSeries>> = None;
        let mut script = Script { bytes: ops };
        let setup = script.byte();
        let instances = 1 + usize::from(setup % 3);
        let buffer_bytes = [1 << 20, 4096, 600, 0][usize::from(setup >> 2) % 4];
        let mut sim = Sim::new(instances, buffer_bytes);
        let mut ops_run = 0;
        while let Some(op) = script.next() {
            ops_run += 1;
            if ops_run > MAX_OPS {
                break;
            }
            match op % 10 {
                // A small request from one replica of one cluster.
                0 => {
                    let who = script.byte();
                    let instance = usize::from(who & 0x7f) % instances;
                    let pair = script.byte();
                    let cluster = CLUSTERS[usize::from(pair) % 3];
                    let replica = REPLICAS[usize::from(pair >> 2) % 4];
                    let origin = (cluster.to_string(), replica.to_string());
                    let n_series = 1 + script.byte() % 3;
                    let now = sim.now();
                    let mut timeseries = Vec::new();
                    for _ in 0..n_series {
                        let shape = script.byte();
                        let mut samples = Vec::new();
                        for _ in 0..1 + (shape >> 2) % 3 {
                            // Even: seconds from now; odd: milliseconds from the cluster's
                            // lease start, where one owner's samples end and the next's begin.
                            let time = script.byte() as i8;
                            let timestamp = if time & 1 == 0 {
                                now + i64::from(time >> 1) * 1000
                            } else {
                                let anchor = if cluster.is_empty() { "c0" } else { cluster };
                                sim.lease_start(anchor).unwrap_or(now) + i64::from(time >> 1)
                            };
                            samples.push(sim.sample(&origin, timestamp));
                        }
                        timeseries.push(proto::TimeSeries {
                            labels: vec![
                                label("__name__", METRICS[usize::from(shape) % 3]),
                                label(CLUSTER, cluster),
                                label(REPLICA, replica),
                            ],
                            samples,
                            ..Default::default()
                        });
                    }
                    let request = proto::WriteRequest {
                        timeseries,
                        metadata: vec![],
                    };
                    sim.send(instance, request, who & 0x80 != 0);
                }
                // The decoded body's series, as some replica of some cluster.
                1 => {
                    let who = script.byte();
                    let instance = usize::from(who & 0x7f) % instances;
                    let pair = script.byte();
                    let shift = i64::from(script.byte() as i8) * 1000;
                    let now = sim.now();
                    let mut timeseries = Vec::new();
                    for (labels, times) in decoded.get_or_insert_with(|| template(body)).iter() {
                        let value = |name: &str| {
                            labels
                                .iter()
                                .find(|(n, _)| n == name)
                                .map_or(String::new(), |(_, v)| v.clone())
                        };
                        let cluster = match pair % 3 {
                            0 => value(CLUSTER),
                            1 => "c0".to_string(),
                            _ => String::new(),
                        };
                        let replica = match (pair >> 2) % 4 {
                            0 => value(REPLICA),
                            1 => "a".to_string(),
                            2 => "b".to_string(),
                            _ => String::new(),
                        };
                        let mut out: Vec<proto::Label> = labels
                            .iter()
                            .filter(|(n, _)| n != CLUSTER && n != REPLICA)
                            .map(|(n, v)| label(n, v))
                            .collect();
                        out.push(label(CLUSTER, &cluster));
                        out.push(label(REPLICA, &replica));
                        let origin = (cluster, replica);
                        let samples = times
                            .iter()
                            .map(|t| sim.sample(&origin, now.saturating_add(shift + t)))
                            .collect();
                        timeseries.push(proto::TimeSeries {
                            labels: out,
                            samples,
                            ..Default::default()
                        });
                    }
                    let request = proto::WriteRequest {
                        timeseries,
                        metadata: vec![],
                    };
                    sim.send(instance, request, who & 0x80 != 0);
                }
                2 => sim.advance(i64::from(script.byte()) * 100),
                3 => sim.advance(i64::from(script.byte()) * 5_000),
                4 => {
                    let instance = usize::from(script.byte()) % instances;
                    sim.tick(instance);
                }
                5 => {
                    let instance = usize::from(script.byte()) % instances;
                    let pair = script.byte();
                    let cluster = CLUSTERS[usize::from(pair) % 3];
                    let replica = REPLICAS[usize::from(pair >> 2) % 4];
                    sim.hand_over(instance, cluster, replica);
                }
                6 => {
                    let n = u32::from(script.byte() % 4);
                    sim.store.failures.store(n, Ordering::SeqCst);
                }
                7 => sim.commit_deferred(),
                8 => {
                    let instance = usize::from(script.byte()) % instances;
                    let election = &sim.instances[instance].0;
                    assert!(election.state_json().starts_with("{\"clusters\":["));
                    for cluster in CLUSTERS {
                        let _ = election.leader_of(cluster);
                    }
                }
                // A scrape round: the replicas in the mask send "up" now, then a second passes.
                _ => {
                    let mask = script.byte();
                    let now = sim.now();
                    for (k, replica) in ["a", "b"].into_iter().enumerate() {
                        if mask & (1 << k) == 0 {
                            continue;
                        }
                        let origin = ("c0".to_string(), replica.to_string());
                        let offset = i64::from(mask >> 2) * 10;
                        let sample = sim.sample(&origin, now + offset);
                        let request = proto::WriteRequest {
                            timeseries: vec![proto::TimeSeries {
                                labels: vec![
                                    label("__name__", "up"),
                                    label(CLUSTER, "c0"),
                                    label(REPLICA, replica),
                                ],
                                samples: vec![sample],
                                ..Default::default()
                            }],
                            metadata: vec![],
                        };
                        let instance = (usize::from(mask >> 4) + k) % instances;
                        sim.send(instance, request, false);
                    }
                    sim.advance(1_000);
                }
            }
        }
        // Whatever is in flight commits, and every election ticks once more.
        sim.store.failures.store(0, Ordering::SeqCst);
        sim.commit_deferred();
        for instance in 0..instances {
            sim.tick(instance);
        }
        let db = sim.store.db();
        sim.stats.leader_changes = db.history.len() - db.leases.len();
        drop(db);
        sim.stats
    }
}

//! The standby buffer: the most recent samples of every non-leader replica, kept in memory so
//! that at a failover the new leader's samples from the hand-over time on can be stored and
//! the data gap stays within one scrape interval.
//!
//! Bounded three times: by data time (samples the leader has committed past can never be
//! stored), by age (a backstop for a leader that never overtakes them) and by bytes
//! (`--ha-standby-buffer-bytes`). Overflow evicts the oldest entries first and is reported, since
//! it widens the gap of a failover that happens next. Label text is shared with the request it
//! arrived in; an entry counts its own labels' share, which for a standby replica's request is
//! nearly all of it.

use crate::decode::{Exemplar, Histogram, HistogramCounts, SeriesSamples};
use std::collections::VecDeque;

/// One standby request's HA series, replica label already removed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub cluster: String,
    pub replica: String,
    /// Arrival on the receiver's clock, milliseconds.
    pub arrived_ms: i64,
    pub series: Vec<SeriesSamples>,
    bytes: usize,
}

/// What an eviction removed, for the metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evicted {
    /// (cluster, replica, samples)
    pub by_age: Vec<(String, String, usize)>,
    pub by_overflow: Vec<(String, String, usize)>,
}

pub struct StandbyBuffer {
    max_bytes: usize,
    bytes: usize,
    entries: VecDeque<Entry>,
}

fn entry_bytes(series: &[SeriesSamples]) -> usize {
    series
        .iter()
        .map(|s| {
            // The label text is shared with the request it came in; count this set's share.
            s.labels.text_bytes()
                + s.labels.len() * 16
                + 48
                + s.samples.len() * 16
                + s.histograms.iter().map(histogram_bytes).sum::<usize>()
                + s.exemplars.iter().map(exemplar_bytes).sum::<usize>()
        })
        .sum::<usize>()
        + 96
}

fn histogram_bytes(h: &Histogram) -> usize {
    let buckets = match &h.counts {
        HistogramCounts::Integer {
            negative, positive, ..
        } => negative.len() + positive.len(),
        HistogramCounts::Float {
            negative, positive, ..
        } => negative.len() + positive.len(),
    };
    160 + buckets * 8
        + (h.negative_spans.len() + h.positive_spans.len()) * 8
        + h.custom_values.len() * 8
}

fn exemplar_bytes(e: &Exemplar) -> usize {
    48 + e
        .labels
        .iter()
        .map(|(n, v)| n.len() + v.len() + 48)
        .sum::<usize>()
}

fn samples(series: &[SeriesSamples]) -> usize {
    series.iter().map(SeriesSamples::points).sum()
}

impl StandbyBuffer {
    pub fn new(max_bytes: usize) -> Self {
        StandbyBuffer {
            max_bytes,
            bytes: 0,
            entries: VecDeque::new(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds a standby request's series; returns what had to be evicted to make room.
    pub fn push(
        &mut self,
        cluster: &str,
        replica: &str,
        arrived_ms: i64,
        series: Vec<SeriesSamples>,
    ) -> Evicted {
        let bytes = entry_bytes(&series);
        let mut evicted = Evicted::default();
        while self.bytes + bytes > self.max_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            evicted
                .by_overflow
                .push((old.cluster, old.replica, samples(&old.series)));
        }
        if bytes > self.max_bytes {
            // Larger than the whole buffer: it cannot be kept.
            evicted
                .by_overflow
                .push((cluster.to_string(), replica.to_string(), samples(&series)));
            return evicted;
        }
        self.bytes += bytes;
        self.entries.push_back(Entry {
            cluster: cluster.to_string(),
            replica: replica.to_string(),
            arrived_ms,
            series,
            bytes,
        });
        evicted
    }

    /// Drops entries that arrived before `oldest_ms`.
    pub fn evict_older_than(&mut self, oldest_ms: i64) -> Evicted {
        let mut evicted = Evicted::default();
        while self
            .entries
            .front()
            .is_some_and(|e| e.arrived_ms < oldest_ms)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.bytes;
                evicted
                    .by_age
                    .push((old.cluster, old.replica, samples(&old.series)));
            }
        }
        evicted
    }

    /// Drops `cluster`'s samples older than `before_ms` (data time): the leader has committed
    /// past them, so no hand-over can give them to another replica.
    pub fn evict_superseded(&mut self, cluster: &str, before_ms: i64) -> Evicted {
        let mut evicted = Evicted::default();
        let mut remaining = VecDeque::with_capacity(self.entries.len());
        for mut e in self.entries.drain(..) {
            if e.cluster != cluster {
                remaining.push_back(e);
                continue;
            }
            let mut dropped = 0;
            for s in &mut e.series {
                dropped += s.retain_time(|t| t >= before_ms);
            }
            if dropped > 0 {
                e.series.retain(|s| !s.is_empty());
                self.bytes -= e.bytes;
                e.bytes = entry_bytes(&e.series);
                evicted
                    .by_age
                    .push((e.cluster.clone(), e.replica.clone(), dropped));
                if e.series.is_empty() {
                    continue;
                }
                self.bytes += e.bytes;
            }
            remaining.push_back(e);
        }
        self.entries = remaining;
        evicted
    }

    /// Removes every entry of (cluster, replica) and returns their samples at or after
    /// `from_ms` (the hand-over time), with the number of earlier samples discarded.
    pub fn take(
        &mut self,
        cluster: &str,
        replica: &str,
        from_ms: i64,
    ) -> (Vec<SeriesSamples>, usize) {
        let mut kept = Vec::new();
        let mut discarded = 0;
        let mut remaining = VecDeque::with_capacity(self.entries.len());
        for e in self.entries.drain(..) {
            if e.cluster == cluster && e.replica == replica {
                self.bytes -= e.bytes;
                for mut s in e.series {
                    discarded += s.retain_time(|t| t >= from_ms);
                    if !s.is_empty() {
                        kept.push(s);
                    }
                }
            } else {
                remaining.push_back(e);
            }
        }
        self.entries = remaining;
        (kept, discarded)
    }

    /// Samples held per (cluster, replica), for the state endpoint.
    pub fn held(&self, cluster: &str, replica: &str) -> usize {
        self.entries
            .iter()
            .filter(|e| e.cluster == cluster && e.replica == replica)
            .map(|e| samples(&e.series))
            .sum()
    }
}

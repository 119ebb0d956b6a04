//! Exemplars in the engine: a row of `promgres.exemplars` each, linked to its series,
//! written by the insert transaction. The primary key (series, time, exemplar labels) makes
//! a resent exemplar a no-op; the first value stored for a key stays.

use crate::db_error::Result;
use crate::decode::{self, Exemplar};

/// An exemplar on its way into the database.
#[derive(Debug, Clone, Copy)]
pub struct ExemplarRow<'a> {
    pub series_id: i64,
    pub exemplar: &'a Exemplar,
}

/// The exemplar's labels as a JSON object (names sorted and unique, as decoding left them).
pub fn labels_json(exemplar: &Exemplar) -> String {
    decode::labels_json(
        exemplar
            .labels
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
        exemplar.labels.len(),
    )
}

/// Inside the insert transaction: stores `rows`, keeping what a key holds already. Returns
/// how many were new.
pub fn insert(tx: &mut postgres::Transaction, rows: &[ExemplarRow]) -> Result<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let series: Vec<i64> = rows.iter().map(|r| r.series_id).collect();
    let times: Vec<i64> = rows.iter().map(|r| r.exemplar.timestamp).collect();
    let values: Vec<f64> = rows.iter().map(|r| r.exemplar.value).collect();
    let labels: Vec<String> = rows.iter().map(|r| labels_json(r.exemplar)).collect();
    // In key order, so writers holding the same keys lock them in the same order.
    let added = tx.execute(
        "INSERT INTO promgres.exemplars (series_id, time, value, labels)
         SELECT s, timestamptz 'epoch' + t * interval '1 millisecond', v, l::jsonb
           FROM unnest($1::int8[], $2::int8[], $3::float8[], $4::text[]) AS x(s, t, v, l)
          ORDER BY s, t, l::jsonb
         ON CONFLICT DO NOTHING",
        &[&series, &times, &values, &labels],
    )?;
    Ok(usize::try_from(added).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_become_an_escaped_json_object() {
        let e = Exemplar {
            labels: vec![("trace_id".into(), "a\"b".into()), ("z".into(), "".into())],
            value: 1.0,
            timestamp: 0,
        };
        assert_eq!(labels_json(&e), r#"{"trace_id":"a\"b","z":""}"#);
        let none = Exemplar {
            labels: vec![],
            ..e
        };
        assert_eq!(labels_json(&none), "{}");
    }
}

//! The `/ha` page: the HA state of this instance as plain server-side HTML for operators.
//!
//! A pure function of its input ([`render`]: [`PageState`] in, HTML out), so it is tested
//! without a server. Per cluster: the leader, term, lease start and leader-since, the replicas
//! this instance has seen (last write, newest sample, buffered samples), the newest leases of
//! `promgres.ha_lease_history`, and, when the caller may hand over, one `<form method="post">`
//! per non-leader replica posting `replica=<name>` to `/ha/clusters/<cluster>/leader`.
//!
//! Cluster and replica names come from the network (label values): every text and attribute
//! is HTML-escaped, and every name in a URL is percent-encoded. No JavaScript; the page
//! reloads itself every 10 seconds (`<meta http-equiv="refresh">`).

use crate::ha::{ClusterStatus, HaStatus, LeaseRecord, ReplicaStatus};
use std::fmt::Write;

/// How often the page reloads itself (seconds).
const REFRESH_SECS: u32 = 10;

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct PageState {
    /// The election's snapshot; its `now_ms` is the page's "now".
    pub status: HaStatus,
    /// The newest leases per cluster from the database, or why they could not be read.
    pub history: Result<Vec<LeaseRecord>, String>,
    /// How many leases per cluster `history` holds at most (said on the page).
    pub history_limit: usize,
    pub cluster_label: String,
    pub replica_label: String,
    pub failover_timeout_ms: i64,
}

/// The page. `can_hand_over`: the caller may hand a lease over (an admin), so the hand-over
/// forms are rendered; otherwise the page is read-only.
pub fn render(state: &PageState, can_hand_over: bool) -> String {
    let now = state.status.now_ms;
    let mut out = String::with_capacity(16 * 1024);
    head(&mut out, "promgres: HA clusters", true);
    out.push_str("<header><h1>promgres <span class=\"dim\">/</span> HA clusters</h1>");
    let _ = write!(
        out,
        "<p class=\"meta\">As of {} on this instance, refreshed every {REFRESH_SECS} s. \
         Cluster label <code>{}</code>, replica label <code>{}</code>; a leader silent for {} s \
         is failed over.{} <a href=\"/api/v1/ha/clusters\">JSON</a></p></header><main>",
        iso_html(now),
        escape(&state.cluster_label),
        escape(&state.replica_label),
        fmt_secs(state.failover_timeout_ms),
        if can_hand_over {
            " Make leader hands the lease over from the leader's newest committed sample + 1 ms \
             on, to a replica sending within the failover timeout."
        } else {
            ""
        },
    );
    let history = state.history.as_ref();
    if state.status.clusters.is_empty() {
        let _ = write!(
            out,
            "<p class=\"empty\">No HA cluster has sent samples to this promgres instance since it \
             started. A cluster appears here with its first remote-write request whose series \
             carry both <code>{}</code> and <code>{}</code>.</p>",
            escape(&state.cluster_label),
            escape(&state.replica_label)
        );
    }
    for (i, cluster) in state.status.clusters.iter().enumerate() {
        let leases: Vec<&LeaseRecord> = history
            .map(|h| {
                h.iter()
                    .filter(|l| l.cluster == cluster.lease.cluster)
                    .collect()
            })
            .unwrap_or_default();
        render_cluster(&mut out, state, i, cluster, &leases, can_hand_over);
    }
    match history {
        Ok(h) => render_unseen(&mut out, state, h),
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"warn\">The lease history could not be read from the database: {}</p>",
                escape(e)
            );
        }
    }
    out.push_str("</main></body></html>\n");
    out
}

/// A small page telling why a hand-over from the page failed, with a link back.
pub fn render_error(status: u16, message: &str) -> String {
    let mut out = String::with_capacity(2048);
    head(&mut out, "promgres: hand-over failed", false);
    let _ = writeln!(
        out,
        "<header><h1>promgres <span class=\"dim\">/</span> hand-over failed</h1></header><main>\
         <p class=\"warn\" id=\"error\" data-status=\"{status}\">{status}: {}</p>\
         <p><a href=\"/ha\">Back to the HA clusters</a></p></main></body></html>",
        escape(message)
    );
    out
}

fn head(out: &mut String, title: &str, refresh: bool) {
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    if refresh {
        let _ = write!(
            out,
            "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">"
        );
    }
    let _ = write!(
        out,
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    );
}

const STYLE: &str = "\
body{font-family:system-ui,'DejaVu Sans','Liberation Sans',sans-serif;margin:0;color:#1d2433;background:#f4f6f9;font-size:14px}\
header{background:#1d2433;color:#fff;padding:12px 24px}header h1{margin:0;font-size:20px}\
header .meta{margin:4px 0 0;color:#c5cbd6}header a{color:#9cc3ff}.dim{color:#7f8aa0}\
main{padding:8px 24px 24px}\
section.cluster{background:#fff;border:1px solid #d8dde6;border-radius:6px;margin:12px 0;padding:10px 16px}\
h2{margin:0 0 8px;font-size:17px}h3{margin:12px 0 4px;font-size:14px;color:#4a5468}h3 .dim{font-weight:400;font-size:12px}\
dl{display:grid;grid-template-columns:max-content 1fr max-content 1fr max-content 1fr;gap:2px 14px;margin:0}dt{color:#4a5468}dd{margin:0;white-space:nowrap}\
table{border-collapse:collapse;width:100%;table-layout:fixed}td{overflow-wrap:anywhere}\
table.replicas th:nth-child(1){width:12%}table.replicas th:nth-child(2){width:8%}table.replicas th:nth-child(3),table.replicas th:nth-child(4){width:24%}table.replicas th:nth-child(5){width:12%}\
table.history th:nth-child(1){width:5%}table.history th:nth-child(2){width:12%}table.history th:nth-child(3),table.history th:nth-child(4){width:18%}table.history th:nth-child(5){width:24%}\
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #e6e9ef;vertical-align:middle}\
th{font-weight:600;color:#4a5468;background:#f8f9fb}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.ago{color:#6b7489;white-space:nowrap}button{white-space:nowrap}time{font-variant-numeric:tabular-nums}\
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}\
.pill.leader{background:#d7f5df;color:#11632b}.pill.standby{background:#e3ecfb;color:#1d4f9c}.pill.silent{background:#fde4e1;color:#9b2216}\
tr.leader td{background:#f3fcf5}\
form{margin:0}button{font:inherit;padding:2px 10px;border:1px solid #1d4f9c;border-radius:4px;background:#fff;color:#1d4f9c;cursor:pointer}\
button:disabled{border-color:#c5cbd6;color:#9aa3b5;cursor:not-allowed}\
.warn{color:#9b2216}.empty{color:#4a5468}.note{color:#6b7489;margin:6px 0 0}code{font-size:13px}";

fn render_cluster(
    out: &mut String,
    state: &PageState,
    index: usize,
    cluster: &ClusterStatus,
    leases: &[&LeaseRecord],
    can_hand_over: bool,
) {
    let now = state.status.now_ms;
    let lease = &cluster.lease;
    let _ = write!(
        out,
        "<section class=\"cluster\" id=\"cluster-{index}\" data-cluster=\"{}\" data-leader=\"{}\" \
         data-term=\"{}\"><h2>{} <span class=\"pill leader\">leader: {}</span></h2><dl>",
        escape(&lease.cluster),
        escape(&lease.leader),
        lease.term,
        escape(&lease.cluster),
        escape(&lease.leader),
    );
    let _ = write!(
        out,
        "<dt>Leader</dt><dd class=\"leader\">{}</dd><dt>Term</dt><dd class=\"term\">{}</dd>\
         <dt>Previous leader</dt><dd>{}</dd>",
        escape(&lease.leader),
        lease.term,
        lease
            .previous_leader
            .as_deref()
            .map_or_else(|| "-".to_string(), escape),
    );
    let _ = write!(
        out,
        "<dt>Lease start (data time)</dt><dd>{}</dd><dt>Leader since</dt><dd>{}</dd>\
         <dt>Last failover gap</dt><dd>{}</dd></dl>",
        lease_start_html(lease.start_ms, now),
        time_html(lease.leader_since_ms, now),
        cluster
            .last_failover_gap_ms
            .map_or_else(|| "-".to_string(), |g| format!("{} s", fmt_secs(g))),
    );

    out.push_str(
        "<h3>Replicas seen by this instance</h3><table class=\"replicas\"><thead><tr>\
         <th>Replica</th><th>Role</th><th>Last write</th><th>Newest sample</th>\
         <th>Buffered samples</th>",
    );
    if can_hand_over {
        out.push_str("<th>Hand-over</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for r in &cluster.replicas {
        render_replica(out, state, cluster, r, can_hand_over);
    }
    if cluster.replicas.is_empty() {
        let cols = if can_hand_over { 6 } else { 5 };
        let _ = write!(
            out,
            "<tr><td colspan=\"{cols}\" class=\"empty\">No replica has sent samples to this \
             instance since the lease was read.</td></tr>"
        );
    }
    out.push_str("</tbody></table>");
    let _ = write!(
        out,
        "<h3>Lease history <span class=\"dim\">(the newest {}; all are in \
         <code>prom_ha_lease_history</code>)</span></h3>",
        state.history_limit
    );
    if state.history.is_err() {
        out.push_str("<p class=\"warn\">Not available (see below).</p></section>");
        return;
    }
    if leases.is_empty() {
        out.push_str("<p class=\"empty\">No lease recorded.</p></section>");
        return;
    }
    out.push_str(
        "<table class=\"history\"><thead><tr><th>Term</th><th>Leader</th>\
         <th>Owns data from</th><th>until</th><th>Began</th><th>Reason</th></tr></thead><tbody>",
    );
    for l in leases {
        let _ = write!(
            out,
            "<tr data-term=\"{}\" data-leader=\"{}\"><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            l.term,
            escape(&l.leader),
            l.term,
            escape(&l.leader),
            if l.start_ms == 0 {
                "the beginning".to_string()
            } else {
                iso_html(l.start_ms)
            },
            l.end_ms.map_or_else(|| "open (current)".to_string(), iso_html),
            time_html(l.started_at_ms, now),
            escape(&l.reason),
        );
    }
    out.push_str("</tbody></table></section>");
}

fn render_replica(
    out: &mut String,
    state: &PageState,
    cluster: &ClusterStatus,
    r: &ReplicaStatus,
    can_hand_over: bool,
) {
    let now = state.status.now_ms;
    let is_leader = r.name == cluster.lease.leader;
    let sending = now - r.last_write_ms <= state.failover_timeout_ms;
    let (class, role) = match (is_leader, sending) {
        (true, true) => ("leader", "leader"),
        (true, false) => ("silent", "leader, silent"),
        (false, true) => ("standby", "standby"),
        (false, false) => ("silent", "silent"),
    };
    let _ = write!(
        out,
        "<tr data-replica=\"{}\" class=\"{}\"><td>{}</td><td><span class=\"pill {class}\">{role}</span></td>\
         <td>{}</td><td>{}</td><td class=\"num\">{}</td>",
        escape(&r.name),
        if is_leader { "leader" } else { "replica" },
        escape(&r.name),
        time_html(r.last_write_ms, now),
        time_html(r.max_sample_time_ms, now),
        r.buffered_samples,
    );
    if can_hand_over {
        out.push_str("<td>");
        if !is_leader {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/ha/clusters/{}/leader\">\
                 <input type=\"hidden\" name=\"replica\" value=\"{}\">",
                escape(&percent_encode(&cluster.lease.cluster)),
                escape(&r.name)
            );
            if sending {
                out.push_str("<button type=\"submit\">Make leader</button>");
            } else {
                out.push_str(
                    "<button type=\"submit\" disabled title=\"not sending within the failover \
                     timeout\">Make leader</button>",
                );
            }
            out.push_str("</form>");
        }
        out.push_str("</td>");
    }
    out.push_str("</tr>");
}

/// Clusters whose leases the database holds but that have not sent to this instance (they
/// may be sending to another instance on the same database).
fn render_unseen(out: &mut String, state: &PageState, history: &[LeaseRecord]) {
    let seen = |c: &str| state.status.clusters.iter().any(|s| s.lease.cluster == c);
    let current: Vec<&LeaseRecord> = history
        .iter()
        .filter(|l| l.end_ms.is_none() && !seen(&l.cluster))
        .collect();
    if current.is_empty() {
        return;
    }
    out.push_str(
        "<section class=\"cluster unseen\"><h2>Clusters this instance has not seen</h2>\
         <p class=\"note\">Their leases are in the database (another instance may be receiving \
         them); their replicas appear here once they send to this instance.</p>\
         <table><thead><tr><th>Cluster</th><th>Leader</th><th>Term</th><th>Owns data from</th>\
         <th>Began</th></tr></thead><tbody>",
    );
    let now = state.status.now_ms;
    for l in current {
        let _ = write!(
            out,
            "<tr data-cluster=\"{}\"><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&l.cluster),
            escape(&l.cluster),
            escape(&l.leader),
            l.term,
            lease_start_html(l.start_ms, now),
            time_html(l.started_at_ms, now)
        );
    }
    out.push_str("</tbody></table></section>");
}

/// A lease start: the first lease starts at the epoch and covers all earlier data.
fn lease_start_html(start_ms: i64, now_ms: i64) -> String {
    if start_ms == 0 {
        format!(
            "{} <span class=\"ago\" title=\"a cluster's first lease covers all earlier data \
             too\">(first lease)</span>",
            iso_html(0)
        )
    } else {
        time_html(start_ms, now_ms)
    }
}

/// `<time>` in UTC ISO-8601 plus how long ago.
fn time_html(ms: i64, now_ms: i64) -> String {
    format!(
        "{} <span class=\"ago\">{}</span>",
        iso_html(ms),
        ago(ms, now_ms)
    )
}

fn iso_html(ms: i64) -> String {
    let iso = iso8601(ms);
    format!("<time datetime=\"{iso}\">{iso}</time>")
}

/// "12 s ago", "in 3 s"; past an hour also in hours or days: "7260 s ago (2.0 h)".
pub fn ago(ms: i64, now_ms: i64) -> String {
    let d = now_ms - ms;
    let secs = d.abs() / 1000;
    let rough = if secs >= 2 * 86_400 {
        format!(" ({:.1} d)", secs as f64 / 86_400.0)
    } else if secs >= 3_600 {
        format!(" ({:.1} h)", secs as f64 / 3_600.0)
    } else {
        String::new()
    };
    if d >= 0 {
        format!("{secs} s ago{rough}")
    } else {
        format!("in {secs} s{rough}")
    }
}

/// Milliseconds as seconds, without a trailing ".0": "30", "0.5", "1.25".
fn fmt_secs(ms: i64) -> String {
    let s = format!("{:.3}", ms as f64 / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Unix milliseconds as UTC ISO-8601 with milliseconds: "2024-02-29T13:05:09.042Z".
pub fn iso8601(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Days to civil date (Howard Hinnant's algorithm), valid for every i64 day count here.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// Escapes text for HTML content and double- or single-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a URL path segment: everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::Lease;

    const NOW: i64 = 1_733_500_000_000; // 2024-12-06T15:46:40Z

    fn state(clusters: Vec<ClusterStatus>, history: Vec<LeaseRecord>) -> PageState {
        PageState {
            status: HaStatus {
                now_ms: NOW,
                clusters,
            },
            history: Ok(history),
            history_limit: 10,
            cluster_label: "cluster".into(),
            replica_label: "__replica__".into(),
            failover_timeout_ms: 30_000,
        }
    }

    fn cluster(name: &str, leader: &str, term: i64, replicas: &[(&str, i64)]) -> ClusterStatus {
        ClusterStatus {
            lease: Lease {
                cluster: name.into(),
                leader: leader.into(),
                term,
                start_ms: if term == 1 { 0 } else { NOW - 60_000 },
                leader_since_ms: NOW - 60_000,
                previous_leader: None,
            },
            last_failover_gap_ms: None,
            replicas: replicas
                .iter()
                .map(|(r, age)| ReplicaStatus {
                    name: (*r).into(),
                    last_write_ms: NOW - age,
                    max_sample_time_ms: NOW - age - 500,
                    buffered_samples: 7,
                })
                .collect(),
        }
    }

    fn record(cluster: &str, term: i64, leader: &str, open: bool) -> LeaseRecord {
        LeaseRecord {
            cluster: cluster.into(),
            term,
            leader: leader.into(),
            start_ms: if term == 1 { 0 } else { NOW - 60_000 },
            end_ms: (!open).then_some(NOW - 60_000),
            started_at_ms: NOW - 120_000 + term,
            ended_at_ms: (!open).then_some(NOW - 60_000),
            reason: if term == 1 {
                "first writer".into()
            } else {
                "operator hand-over".into()
            },
        }
    }

    /// The part of the page about one cluster.
    fn section<'a>(page: &'a str, cluster: &str) -> &'a str {
        let start = page
            .find(&format!("data-cluster=\"{cluster}\""))
            .unwrap_or_else(|| panic!("no section for {cluster}: {page}"));
        let end = page[start..]
            .find("</section>")
            .map_or(page.len(), |e| start + e);
        &page[start..end]
    }

    #[test]
    fn escape_covers_markup_and_both_quotes() {
        assert_eq!(
            escape(r#"<script>alert('x')</script> & "y""#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        assert_eq!(escape("plain-name_1.é"), "plain-name_1.é");
        assert_eq!(percent_encode("a b/c?d&e%é"), "a%20b%2Fc%3Fd%26e%25%C3%A9");
        assert_eq!(percent_encode("eu-west_1.x~"), "eu-west_1.x~");
    }

    #[test]
    fn names_from_the_network_are_escaped_everywhere() {
        let evil_cluster = "<script>alert(1)</script>\"'&";
        let evil_replica = "\"><img src=x onerror=alert(2)>";
        let mut c = cluster(
            evil_cluster,
            "b<i>",
            2,
            &[(evil_replica, 1000), ("b<i>", 2000)],
        );
        c.lease.previous_leader = Some("<b>old</b>".into());
        let mut h = record(evil_cluster, 2, evil_replica, false);
        h.reason = "<u>why</u>".into();
        let mut s = state(vec![c], vec![h, record("<x>unseen</x>", 1, "<y>", true)]);
        s.cluster_label = "<cl>".into();
        let page = render(&s, true);
        for raw in [
            "<script>alert",
            "<img",
            "<b>old",
            "<i>",
            "<u>why",
            "<x>",
            "<y>",
            "<cl>",
            "\"'&\"",
        ] {
            assert!(!page.contains(raw), "{raw:?} unescaped in {page}");
        }
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert!(page.contains("value=\"&quot;&gt;&lt;img src=x onerror=alert(2)&gt;\""));
        // The form's action is the percent-encoded cluster name.
        assert!(
            page.contains(
                "action=\"/ha/clusters/%3Cscript%3Ealert%281%29%3C%2Fscript%3E%22%27%26/leader\""
            ),
            "{page}"
        );
        // The page's own markup is balanced: one <script>-free document.
        assert!(!page.to_ascii_lowercase().contains("<script"));
    }

    #[test]
    fn an_empty_state_says_so() {
        let page = render(&state(vec![], vec![]), true);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
        assert!(page.contains("No HA cluster has sent samples"));
        assert!(!page.contains("<section"));
        assert!(!page.contains("<form"));
        assert!(page.contains("2024-12-06T15:46:40.000Z"), "{page}");
        assert!(page.trim_end().ends_with("</html>"));
    }

    #[test]
    fn two_clusters_with_leaders_replicas_history_and_forms() {
        let s = state(
            vec![
                cluster(
                    "eu-west",
                    "prom-0",
                    1,
                    &[("prom-0", 2_000), ("prom-1", 3_000)],
                ),
                cluster(
                    "us-east",
                    "prom-b",
                    2,
                    &[("prom-a", 45_000), ("prom-b", 1_000)],
                ),
            ],
            vec![
                record("eu-west", 1, "prom-0", true),
                record("us-east", 2, "prom-b", true),
                record("us-east", 1, "prom-a", false),
            ],
        );
        let page = render(&s, true);
        let eu = section(&page, "eu-west");
        assert!(eu.contains("data-leader=\"prom-0\""));
        assert!(eu.contains("data-term=\"1\""));
        assert!(eu.contains("<tr data-replica=\"prom-0\" class=\"leader\">"));
        assert!(eu.contains("<tr data-replica=\"prom-1\" class=\"replica\">"));
        assert!(eu.contains(">(first lease)</span>"));
        assert!(eu.contains("2 s ago"), "{eu}");
        // One form, for the non-leader, enabled: it is sending.
        assert_eq!(eu.matches("<form method=\"post\"").count(), 1);
        assert!(eu.contains(
            "action=\"/ha/clusters/eu-west/leader\"><input type=\"hidden\" name=\"replica\" value=\"prom-1\"><button type=\"submit\">Make leader</button>"
        ));
        assert_eq!(eu.matches("<tr data-term=").count(), 1);

        let us = section(&page, "us-east");
        assert!(us.contains("data-leader=\"prom-b\""));
        // prom-a last wrote 45 s ago, past the 30 s failover timeout: shown silent, and its
        // button disabled.
        assert!(us.contains("<span class=\"pill silent\">silent</span>"));
        assert!(us.contains("disabled title="));
        assert!(us.contains("<tr data-term=\"2\" data-leader=\"prom-b\">"));
        assert!(us.contains("<tr data-term=\"1\" data-leader=\"prom-a\">"));
        assert!(us.contains("operator hand-over"));
        assert!(us.contains("open (current)"));
        assert!(!page.contains("has not seen"));

        // Without the right to hand over: the same page, no forms, no hand-over column.
        let read_only = render(&s, false);
        assert!(!read_only.contains("<form"));
        assert!(!read_only.contains("Hand-over</th>"));
        assert!(read_only.contains("data-leader=\"prom-b\""));
    }

    #[test]
    fn history_errors_and_clusters_only_the_database_knows() {
        let mut s = state(
            vec![cluster("eu-west", "prom-0", 1, &[("prom-0", 1000)])],
            vec![
                record("eu-west", 1, "prom-0", true),
                record("ap-south", 3, "p9", true),
            ],
        );
        let page = render(&s, true);
        assert!(page.contains("Clusters this instance has not seen"));
        assert!(page.contains("<tr data-cluster=\"ap-south\">"));
        s.history = Err("database error: <down>".into());
        let page = render(&s, true);
        assert!(page.contains("could not be read from the database: database error: &lt;down&gt;"));
        assert!(page.contains("data-leader=\"prom-0\""));
    }

    #[test]
    fn the_error_page_escapes_and_links_back() {
        let page = render_error(409, "replica <x> is not sending");
        assert!(page.contains("409: replica &lt;x&gt; is not sending"));
        assert!(page.contains("href=\"/ha\""));
        assert!(!page.contains("http-equiv=\"refresh\""));
    }

    #[test]
    fn times_are_utc_iso_8601_and_ages_in_seconds() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(NOW + 42), "2024-12-06T15:46:40.042Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(iso8601(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(ago(NOW - 12_400, NOW), "12 s ago");
        assert_eq!(ago(NOW + 3_000, NOW), "in 3 s");
        assert_eq!(ago(NOW - 7_260_000, NOW), "7260 s ago (2.0 h)");
        assert_eq!(ago(NOW - 3 * 86_400_000, NOW), "259200 s ago (3.0 d)");
        assert_eq!(fmt_secs(30_000), "30");
        assert_eq!(fmt_secs(1_250), "1.25");
    }
}

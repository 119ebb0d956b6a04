//! Command-line flags (argh) and their validation into a [`Config`] the server runs with.

use argh::FromArgs;
use std::net::SocketAddr;
use std::time::Duration;

pub const DEFAULT_DB_URI: &str = "postgresql://postgres@127.0.0.1:5432/postgres";

/// promgres: long-term storage for Prometheus in PostgreSQL (remote write).
#[derive(FromArgs, Debug)]
pub struct Args {
    /// command: "run" (default) serves remote write, "migrate" applies schema migrations and
    /// exits, "compact" migrates and folds closed windows into chunks now, with progress
    #[argh(positional)]
    pub command: Option<String>,

    /// address to listen on for HTTP (default 127.0.0.1:9201)
    #[argh(option, default = "String::from(\"127.0.0.1:9201\")")]
    pub web_listen_address: String,

    /// database URI or key=value string (default: $PROMGRES_DB_URI, else
    /// postgresql://postgres@127.0.0.1:5432/postgres)
    #[argh(option)]
    pub db_uri: Option<String>,

    /// file holding the database password (default: $PROMGRES_DB_PASSWORD_FILE); keeps the
    /// password off the command line
    #[argh(option)]
    pub db_password_file: Option<String>,

    /// maximum PostgreSQL connections this instance opens: writers + 1 control + 1
    /// maintenance (+ 1 for HA leases or the advisory lock); the rest serve remote reads (at
    /// least 1) (default 9)
    #[argh(option, default = "9")]
    pub db_connections_max: usize,

    /// writer threads, each with its own connection (default 4)
    #[argh(option, default = "4")]
    pub db_writers: usize,

    /// largest accepted decoded (uncompressed) request, in bytes (default 33554432 = 32 MiB)
    #[argh(option, default = "32 * 1024 * 1024")]
    pub max_request_bytes: usize,

    /// refuse (400) samples older than this; each day of data is a partition (default 30d)
    #[argh(option, default = "String::from(\"30d\")")]
    pub max_sample_age: String,

    /// drop sample data older than this (whole daily partitions, e.g. 90d); also caps
    /// --max-sample-age (default: keep everything)
    #[argh(option)]
    pub retention: Option<String>,

    /// series ids cached in memory (about 40 bytes each); past this the cache starts over
    /// (default 10000000)
    #[argh(option, default = "10_000_000")]
    pub series_cache_max: usize,

    /// write requests that may wait for a writer before new ones get 503 (default 64)
    #[argh(option, default = "64")]
    pub queue_capacity: usize,

    /// how long a write request waits for its commit before answering 503 (default 25s)
    #[argh(option, default = "String::from(\"25s\")")]
    pub write_timeout: String,

    /// a client that sends nothing for this long, mid-request or idle between requests, is
    /// disconnected (default 60s)
    #[argh(option, default = "String::from(\"60s\")")]
    pub http_read_timeout: String,

    /// remote read: most samples one read may return (default 50000000)
    #[argh(option, default = "50_000_000")]
    pub read_sample_limit: usize,

    /// remote read: most reads served at once, also bounded by the read connections left
    /// by --db-connections-max; others wait up to 30 s, then get 503 (default 10)
    #[argh(option, default = "10")]
    pub read_concurrent_limit: usize,

    /// a promgres database session that waits this long for promgres inside a transaction
    /// (a frozen, killed or cut-off instance) is ended: by PostgreSQL when idle in the
    /// transaction, by any running instance when stalled mid-statement (default 15s)
    #[argh(option, default = "String::from(\"15s\")")]
    pub db_stall_timeout: String,

    /// remote read: the longest one read may take, from its request to its last byte
    /// (default 2m)
    #[argh(option, default = "String::from(\"2m\")")]
    pub read_timeout: String,

    /// HTTP handler threads; each serves one request at a time (default 128)
    #[argh(option, default = "128")]
    pub http_threads: usize,

    /// most HTTP connections open at once (each has a thread); further connections are
    /// answered 503 and closed at once (default 1024)
    #[argh(option, default = "1024")]
    pub http_max_connections: usize,

    /// answer write requests once queued, before commit: faster, but samples acknowledged
    /// and not yet committed are lost if promgres or PostgreSQL crashes
    #[argh(switch)]
    pub async_acks: bool,

    /// run no background compaction in this instance: another instance (or `promgres
    /// compact`) must, or samples stay head rows (about 95 bytes each)
    #[argh(switch)]
    pub no_compaction: bool,

    /// log level: error, warn, info, debug or trace (default info; RUST_LOG overrides)
    #[argh(option, default = "String::from(\"info\")")]
    pub log_level: String,

    /// de-duplicate Prometheus HA pairs: store only the elected leader replica's samples of
    /// each cluster
    #[argh(switch)]
    pub high_availability: bool,

    /// HA: label naming the cluster of an HA pair; kept in storage (default cluster)
    #[argh(option, default = "String::from(\"cluster\")")]
    pub ha_cluster_label: String,

    /// HA: label naming the replica within the pair; dropped before storage (default
    /// __replica__)
    #[argh(option, default = "String::from(\"__replica__\")")]
    pub ha_replica_label: String,

    /// HA: a leader that has committed nothing this long is replaced (default 30s)
    #[argh(option, default = "String::from(\"30s\")")]
    pub ha_failover_timeout: String,

    /// HA: how often the election thread checks each cluster (default 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub ha_election_interval: String,

    /// HA: memory for standby replicas' recent samples, stored at a failover to avoid a gap
    /// (default 268435456 = 256 MiB)
    #[argh(option, default = "256 * 1024 * 1024")]
    pub ha_standby_buffer_bytes: usize,

    /// deprecated legacy leader election: advisory lock id shared by the promgres of one group
    /// (each paired with one Prometheus); only the lock holder stores data
    #[argh(option)]
    pub leader_election_pg_advisory_lock_id: Option<i64>,

    /// deprecated legacy leader election: the lock holder resigns when its Prometheus has sent
    /// nothing for this long (e.g. 30s; required with the lock id)
    #[argh(option)]
    pub leader_election_pg_advisory_lock_prometheus_timeout: Option<String>,

    /// deprecated legacy leader election: how often the lock is checked (default 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub leader_election_interval: String,

    /// TLS and basic auth, in the web configuration format of Prometheus's
    /// --web.config.file (tls_server_config, http_server_config, basic_auth_users); re-read
    /// on SIGHUP
    #[argh(option)]
    pub web_config_file: Option<String>,

    /// bearer tokens accepted (Prometheus's `authorization: credentials`): a file with one
    /// "ROLES TOKEN" per line, ROLES being write, read, admin or a comma list; re-read on SIGHUP
    #[argh(option)]
    pub web_tokens_file: Option<String>,

    /// roles of a basic_auth_users user, NAME=ROLES (e.g. prometheus=write,read); repeat per
    /// user; every user needs one
    #[argh(option)]
    pub web_user_role: Vec<String>,

    /// make /metrics need the read role when credentials are configured (default: open, like
    /// /healthz)
    #[argh(switch)]
    pub web_metrics_auth: bool,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    Migrate,
    /// Migrate, then fold every head row of closed windows into chunks, with progress.
    Compact,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub command: Command,
    pub listen: SocketAddr,
    /// The database and how sessions reach it (TLS: `sslmode`, `sslrootcert`).
    pub db: crate::pg_tls::DbConfig,
    pub db_writers: usize,
    pub max_request_bytes: usize,
    pub max_sample_age: Duration,
    pub retention: Option<Duration>,
    pub series_cache_max: usize,
    pub queue_capacity: usize,
    pub write_timeout: Duration,
    pub http_read_timeout: Duration,
    pub http_threads: usize,
    pub http_max_connections: usize,
    /// Bounds of every PostgreSQL session (stall timeout, read deadline).
    pub sessions: crate::pg_session::SessionBounds,
    pub async_acks: bool,
    pub log_level: String,
    /// Some with --high-availability.
    pub ha: Option<crate::ha::HaConfig>,
    pub read_sample_limit: usize,
    /// Connections (and so concurrent reads) for remote read.
    pub read_connections: usize,
    /// Some with --leader-election-pg-advisory-lock-id.
    pub advisory: Option<crate::advisory::AdvisoryConfig>,
    /// The host's clock; tests put a skewed one here.
    pub clock: LocalClock,
    /// How long after start the first compaction pass waits (30 s: a restarting fleet does
    /// not compact at the same moment it reconnects; tests that need it sooner set 0).
    pub compaction_delay: Duration,
    /// false with --no-compaction: this instance's maintenance thread never compacts.
    pub compaction: bool,
    /// Where TLS, users, tokens and roles come from (--web-config-file and friends).
    pub web: crate::web_config::AccessSources,
}

/// The receiver's clock a server runs with (the system clock outside tests).
#[derive(Clone)]
pub struct LocalClock(pub std::sync::Arc<dyn crate::clock::Clock>);

impl Default for LocalClock {
    fn default() -> Self {
        LocalClock(std::sync::Arc::new(crate::clock::SystemClock))
    }
}

impl std::fmt::Debug for LocalClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalClock({} ms)", self.0.now_ms())
    }
}

impl Config {
    /// Settings for tests and embedding: listen on an ephemeral port of 127.0.0.1. Sessions
    /// use no TLS; for TLS set `db` to a parsed [`crate::pg_tls::DbConfig`].
    pub fn for_database(db: postgres::Config) -> Config {
        let db = db.into();
        Config {
            command: Command::Run,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            db,
            db_writers: 2,
            max_request_bytes: 32 << 20,
            max_sample_age: Duration::from_secs(30 * 86_400),
            retention: None,
            series_cache_max: 10_000_000,
            queue_capacity: 64,
            write_timeout: Duration::from_secs(25),
            http_read_timeout: Duration::from_secs(60),
            http_threads: 32,
            http_max_connections: 1024,
            sessions: crate::pg_session::SessionBounds::default(),
            async_acks: false,
            log_level: "info".into(),
            ha: None,
            read_sample_limit: 50_000_000,
            read_connections: 2,
            advisory: None,
            clock: LocalClock::default(),
            compaction_delay: Duration::from_secs(30),
            compaction: true,
            web: crate::web_config::AccessSources::default(),
        }
    }
}

/// Turns flags and environment into a [`Config`], or a message for the operator.
pub fn from_args(args: Args, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
    let command = match args.command.as_deref() {
        None | Some("run") => Command::Run,
        Some("migrate") => Command::Migrate,
        Some("compact") => Command::Compact,
        Some(other) => {
            return Err(format!(
                "unknown command {other:?}: expected run, migrate or compact"
            ))
        }
    };
    let listen: SocketAddr = args
        .web_listen_address
        .parse()
        .map_err(|e| format!("--web-listen-address {:?}: {e}", args.web_listen_address))?;
    let uri = args
        .db_uri
        .or_else(|| env("PROMGRES_DB_URI"))
        .unwrap_or_else(|| DEFAULT_DB_URI.to_string());
    // Takes out and checks sslmode/sslrootcert (loading the CA file); errors never quote the
    // URI, which may hold a password.
    let mut db = crate::pg_tls::DbConfig::parse(&uri).map_err(|e| format!("--db-uri: {e}"))?;
    if let Some(path) = args
        .db_password_file
        .or_else(|| env("PROMGRES_DB_PASSWORD_FILE"))
    {
        let password = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read --db-password-file {path}: {e}"))?;
        db.password(password.trim_end_matches(['\n', '\r']));
    }
    if db.get_connect_timeout().is_none() {
        db.connect_timeout(Duration::from_secs(5));
    }
    if args.db_writers == 0 {
        return Err("--db-writers must be at least 1".into());
    }
    let ha = if args.high_availability {
        for (flag, name) in [
            ("--ha-cluster-label", &args.ha_cluster_label),
            ("--ha-replica-label", &args.ha_replica_label),
        ] {
            if !crate::decode::valid_label_name(name) {
                return Err(format!("{flag} {name:?} is not a valid label name"));
            }
        }
        if args.ha_cluster_label == args.ha_replica_label {
            return Err("--ha-cluster-label and --ha-replica-label must differ".into());
        }
        Some(crate::ha::HaConfig {
            cluster_label: args.ha_cluster_label,
            replica_label: args.ha_replica_label,
            failover_timeout_ms: positive_ms("--ha-failover-timeout", &args.ha_failover_timeout)?,
            interval_ms: positive_ms("--ha-election-interval", &args.ha_election_interval)?,
            buffer_bytes: args.ha_standby_buffer_bytes,
        })
    } else {
        None
    };
    let advisory = match (
        args.leader_election_pg_advisory_lock_id,
        args.leader_election_pg_advisory_lock_prometheus_timeout.as_deref(),
    ) {
        (None, None) => None,
        (Some(_), None) => {
            return Err("--leader-election-pg-advisory-lock-id needs --leader-election-pg-advisory-lock-prometheus-timeout (e.g. 30s)".into())
        }
        (None, Some(_)) => {
            return Err("--leader-election-pg-advisory-lock-prometheus-timeout needs --leader-election-pg-advisory-lock-id".into())
        }
        (Some(lock_id), Some(timeout)) => {
            if ha.is_some() {
                return Err("--leader-election-pg-advisory-lock-id and --high-availability exclude each other: use one election".into());
            }
            Some(crate::advisory::AdvisoryConfig {
                lock_id,
                prometheus_timeout_ms: positive_ms("--leader-election-pg-advisory-lock-prometheus-timeout", timeout)?,
                interval_ms: positive_ms("--leader-election-interval", &args.leader_election_interval)?,
            })
        }
    };
    if args.max_request_bytes == 0 {
        return Err("--max-request-bytes must be positive".into());
    }
    let write_timeout =
        parse_duration(&args.write_timeout).map_err(|e| format!("--write-timeout: {e}"))?;
    let http_read_timeout =
        parse_duration(&args.http_read_timeout).map_err(|e| format!("--http-read-timeout: {e}"))?;
    if http_read_timeout.is_zero() {
        return Err("--http-read-timeout must be positive".into());
    }
    let sessions = crate::pg_session::SessionBounds {
        stall: positive("--db-stall-timeout", &args.db_stall_timeout)?,
        read: positive("--read-timeout", &args.read_timeout)?,
    };
    // The lock session is pinged every second at most; it must not idle out in between.
    if sessions.stall < Duration::from_secs(2) {
        return Err("--db-stall-timeout must be at least 2s".into());
    }
    let max_sample_age =
        parse_duration(&args.max_sample_age).map_err(|e| format!("--max-sample-age: {e}"))?;
    let retention = match args.retention.as_deref() {
        None => None,
        Some(text) => {
            let d = parse_duration(text).map_err(|e| format!("--retention: {e}"))?;
            if d < Duration::from_secs(86_400) {
                return Err(
                    "--retention must be at least 1d (data is kept in daily partitions)".into(),
                );
            }
            Some(d)
        }
    };
    // The control and maintenance connections, and the HA or lock session.
    let extra = 2 + usize::from(ha.is_some()) + usize::from(advisory.is_some());
    // At least one connection must be left for remote read.
    let needed = args.db_writers + extra + 1;
    if needed > args.db_connections_max {
        return Err(format!(
            "--db-writers {} needs {needed} connections (writers + 1 control + 1 maintenance{} + 1 read), more than --db-connections-max {}",
            args.db_writers,
            if ha.is_some() { " + 1 HA" } else if advisory.is_some() { " + 1 lock session" } else { "" },
            args.db_connections_max
        ));
    }
    // Samples older than the retention would land in partitions about to be dropped.
    let max_sample_age = retention.map_or(max_sample_age, |r| max_sample_age.min(r));
    let web = crate::web_config::AccessSources {
        web_config_file: args.web_config_file.map(Into::into),
        tokens_file: args.web_tokens_file.map(Into::into),
        user_roles: crate::web_config::AccessSources::parse_user_roles(&args.web_user_role)?,
        metrics_auth: args.web_metrics_auth,
    };
    Ok(Config {
        command,
        listen,
        db,
        db_writers: args.db_writers,
        max_request_bytes: args.max_request_bytes,
        max_sample_age,
        retention,
        series_cache_max: args.series_cache_max.max(1),
        queue_capacity: args.queue_capacity.max(1),
        write_timeout,
        http_read_timeout,
        http_threads: args.http_threads.max(1),
        http_max_connections: args.http_max_connections.max(1),
        sessions,
        async_acks: args.async_acks,
        log_level: args.log_level,
        ha,
        read_sample_limit: args.read_sample_limit.max(1),
        read_connections: (args.db_connections_max - args.db_writers - extra)
            .min(args.read_concurrent_limit.max(1)),
        advisory,
        clock: LocalClock::default(),
        compaction_delay: Duration::from_secs(30),
        compaction: !args.no_compaction,
        web,
    })
}

/// A positive duration flag.
fn positive(flag: &str, text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| format!("{flag}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{flag} must be positive"));
    }
    Ok(d)
}

/// A positive duration flag in milliseconds.
fn positive_ms(flag: &str, text: &str) -> Result<i64, String> {
    let d = positive(flag, text)?;
    Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Parses durations such as `250ms`, `30s`, `5m`, `2h`, `90d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (ms, s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args = Args::from_args(&["promgres"], args).map_err(|e| e.output)?;
        from_args(args, |_| None)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86400)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3x").is_err());
    }

    #[test]
    fn defaults_and_connection_budget() {
        let c = parse(&[]).expect("defaults are valid");
        assert_eq!(c.command, Command::Run);
        assert_eq!(c.listen.to_string(), "127.0.0.1:9201");
        assert_eq!(c.max_request_bytes, 32 << 20);
        assert!(parse(&["--db-writers", "6", "--db-connections-max", "8"]).is_err());
        assert_eq!(c.read_connections, 3);
        assert!(parse(&["migrate"]).is_ok_and(|c| c.command == Command::Migrate));
        let ha = parse(&["--high-availability"]).expect("HA defaults are valid");
        let ha = ha.ha.expect("HA on");
        assert_eq!((ha.failover_timeout_ms, ha.interval_ms), (30_000, 10_000));
        assert_eq!(ha.replica_label, "__replica__");
        assert!(parse(&["--high-availability", "--db-writers", "6"]).is_err());
        assert!(parse(&["--high-availability", "--ha-replica-label", "cluster"]).is_err());
        let lock = ["--leader-election-pg-advisory-lock-id", "7"];
        let timeout = [
            "--leader-election-pg-advisory-lock-prometheus-timeout",
            "30s",
        ];
        assert!(parse(&lock).is_err_and(
            |e| e.contains("needs --leader-election-pg-advisory-lock-prometheus-timeout")
        ));
        assert!(parse(&timeout).is_err());
        let both = [&lock[..], &timeout[..]].concat();
        let c = parse(&both).expect("valid");
        assert_eq!(
            c.advisory.map(|a| (a.lock_id, a.prometheus_timeout_ms)),
            Some((7, 30_000))
        );
        let with_ha = [&both[..], &["--high-availability"][..]].concat();
        assert!(parse(&with_ha).is_err_and(|e| e.contains("exclude each other")));
        let kept = parse(&["--retention", "7d"]).expect("valid");
        assert_eq!(kept.retention, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(
            kept.max_sample_age,
            Duration::from_secs(7 * 86_400),
            "capped by retention"
        );
        assert!(parse(&["--retention", "2h"]).is_err());
    }

    #[test]
    fn uri_from_environment() {
        let args = Args::from_args(&["promgres"], &[]).expect("args");
        let c = from_args(args, |k| {
            (k == "PROMGRES_DB_URI").then(|| "postgresql://u@db.example:6543/x".to_string())
        })
        .expect("valid");
        assert_eq!(c.db.get_ports(), &[6543]);
        assert_eq!(c.db.get_dbname(), Some("x"));
        // A multi-host URI for PostgreSQL failover (docs/scaling.md).
        let args = Args::from_args(
            &["promgres"],
            &[
                "--db-uri",
                "postgresql://p@db1:5432,db2:5433/m?target_session_attrs=read-write",
            ],
        )
        .expect("args");
        let c = from_args(args, |_| None).expect("valid");
        assert_eq!(c.db.get_hosts().len(), 2);
        assert_eq!(c.db.get_ports(), &[5432, 5433]);
        assert_eq!(
            c.db.get_target_session_attrs(),
            postgres::config::TargetSessionAttrs::ReadWrite
        );
    }
}

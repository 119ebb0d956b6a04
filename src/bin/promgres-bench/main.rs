//! promgres-bench: sends pre-built remote-write requests to a running promgres and prints
//! samples/s, latency percentiles and non-2xx counts, as text and JSON.

use argh::FromArgs;
mod loadgen;
mod nodedata;
mod peers;
mod suite;

use loadgen::Workload;
use std::net::SocketAddr;

/// Remote-write load generator for promgres.
#[derive(FromArgs)]
struct Args {
    /// promgres address (default 127.0.0.1:9201)
    #[argh(option, default = "String::from(\"127.0.0.1:9201\")")]
    addr: String,
    /// distinct series (default 10000)
    #[argh(option, default = "10_000")]
    series: usize,
    /// scrapes, i.e. samples per series (default 60)
    #[argh(option, default = "60")]
    scrapes: usize,
    /// samples per request (default 500, like Prometheus 2.42; 2000 like 2.44+)
    #[argh(option, default = "500")]
    samples_per_request: usize,
    /// concurrent connections (default 4)
    #[argh(option, default = "4")]
    connections: usize,
    /// milliseconds between a series' samples (default 15000); the last scrape is now
    #[argh(option, default = "15_000")]
    scrape_interval_ms: i64,
    /// send as an HA pair: cluster name for the cluster label
    #[argh(option)]
    ha_cluster: Option<String>,
    /// replicas of the HA pair (default 2)
    #[argh(option, default = "2")]
    replicas: usize,
    /// print the report as JSON only
    #[argh(switch)]
    json: bool,
    /// run the whole benchmark suite (make bench) instead of one load
    #[argh(switch)]
    suite: bool,
    /// suite: smaller sizes for a quick look
    #[argh(switch)]
    quick: bool,
    /// suite: PostgreSQL server to create benchmark databases on (default
    /// postgresql://postgres@127.0.0.1:5432/postgres)
    #[argh(
        option,
        default = "String::from(\"postgresql://postgres@127.0.0.1:5432/postgres\")"
    )]
    admin_uri: String,
    /// suite: where to write the JSON results (default bench-results.json)
    #[argh(option, default = "String::from(\"bench-results.json\")")]
    json_out: String,
}

fn main() {
    promgres::sys::tune_allocator();
    let args: Args = argh::from_env();
    if args.suite {
        let options = suite::SuiteOptions {
            admin_uri: args.admin_uri,
            json_path: args.json_out,
            quick: args.quick,
        };
        if let Err(e) = suite::run(&options) {
            eprintln!("promgres-bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    let addr: SocketAddr = match args.addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("promgres-bench: --addr {:?}: {e}", args.addr);
            std::process::exit(2);
        }
    };
    let interval = args.scrape_interval_ms.max(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let workload = Workload {
        series: args.series,
        scrapes: args.scrapes,
        samples_per_request: args.samples_per_request,
        scrape_interval_ms: interval,
        // Recent past, so every timestamp is valid and strictly increasing per series.
        start_ms: now - args.scrapes as i64 * interval,
        ha_cluster: args.ha_cluster,
        replicas: args.replicas,
    };
    let bodies = loadgen::build_requests(&workload);
    let per_body: Vec<usize> = (0..bodies.len())
        .map(|i| {
            let replicas = if workload.ha_cluster.is_some() {
                workload.replicas.max(1)
            } else {
                1
            };
            let chunks = workload
                .series
                .div_ceil(workload.samples_per_request.max(1));
            let chunk = i / replicas % chunks;
            (workload.series - chunk * workload.samples_per_request)
                .min(workload.samples_per_request)
        })
        .collect();
    let report = loadgen::send_all(addr, &bodies, &per_body, args.connections);
    if args.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
        println!("{}", report.json());
    }
    if report.non_2xx() > 0 || report.transport_errors > 0 {
        std::process::exit(1);
    }
}

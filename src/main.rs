//! The promgres binary: parse flags, set up logging, then run the server or a migration.

use promgres::config::{self, Command};
use promgres::server::{self, Server};
use std::time::Duration;

/// How long a SIGTERM waits for the queue to drain before giving up.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

fn main() {
    promgres::sys::tune_allocator();
    let args: config::Args = argh::from_env();
    if args.version {
        println!("{}", promgres::version());
        return;
    }
    let level = args.log_level.clone();
    env_logger::Builder::new()
        .parse_filters(&level)
        .parse_env("RUST_LOG")
        .format_timestamp_millis()
        .init();
    let config = match config::from_args(args, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("promgres: {e}");
            std::process::exit(2);
        }
    };
    match config.command {
        Command::Migrate => match server::migrate_with(&config.db, &config.sessions) {
            Ok(n) => log::info!("schema is current ({n} migrations applied)"),
            Err(e) => {
                log::error!("migration failed: {e}");
                std::process::exit(1);
            }
        },
        Command::Compact => {
            if let Err(e) = server::compact_now(&config.db, &config.sessions) {
                log::error!("compaction failed: {e}");
                std::process::exit(1);
            }
        }
        Command::Run => {
            promgres::sys::install_signal_handlers();
            let server = match Server::start(&config) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("{e}");
                    std::process::exit(1);
                }
            };
            while !promgres::sys::signalled() {
                std::thread::sleep(Duration::from_millis(100));
                if promgres::sys::reload_requested() {
                    match server.reload_access() {
                        Ok(()) => log::info!(
                            "SIGHUP: web configuration, tokens and certificates reloaded"
                        ),
                        Err(e) => {
                            log::error!("SIGHUP: reload failed, the previous settings stay: {e}")
                        }
                    }
                }
            }
            log::info!("signal received: draining the write queue");
            if server.shutdown(SHUTDOWN_DEADLINE) {
                log::info!("stopped cleanly");
            } else {
                log::error!("queue not drained within {SHUTDOWN_DEADLINE:?}; exiting anyway");
                std::process::exit(1);
            }
        }
    }
}

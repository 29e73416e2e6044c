//! The `chronik-ingest` binary: a thin wrapper over `IngestServer` that reads
//! the configuration, logs, turns SIGINT/SIGTERM into a graceful stop and
//! SIGHUP into a TLS certificate reload.

use chronik_ingest::{IngestServer, LogFormat, ServerConfig, ServerError, Stopper, TlsReloader};
use clap::{Arg, Command};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// Exit status for a configuration the broker refuses (as clap uses for
/// bad arguments).
const EXIT_BAD_CONFIG: u8 = 2;
const EXIT_START_FAILED: u8 = 1;

fn main() -> ExitCode {
    let settings_help = ServerConfig::settings_help();
    let matches = Command::new("chronik-ingest")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A Kafka-wire-compatible, thread-per-core event ingest broker")
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML file of settings (keys: the lower-case names below); environment variables override it"),
        )
        .after_help(settings_help)
        .get_matches();

    chronik_ingest::tune_malloc_for_large_buffers();
    let config = match ServerConfig::load(matches.get_one::<PathBuf>("config").map(PathBuf::as_path)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("chronik-ingest: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let filter = match EnvFilter::try_new(&config.log_filter) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("chronik-ingest: invalid RUST_LOG: {:?}: {e}", config.log_filter);
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(true).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }

    // Registered before the shards start, so a signal during start-up is
    // not lost to the default action.
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            error!(error = %e, "cannot install signal handlers");
            return ExitCode::from(EXIT_START_FAILED);
        }
    };
    let data_dir = config.storage_path.clone();
    let handle = match IngestServer::new(config, data_dir).start() {
        Ok(handle) => handle,
        Err(e) => {
            error!("cannot start: {e}");
            eprintln!("chronik-ingest: cannot start: {e}");
            let code = match e {
                ServerError::Config(_) => EXIT_BAD_CONFIG,
                _ => EXIT_START_FAILED,
            };
            return ExitCode::from(code);
        }
    };
    let stopper = handle.stopper();
    let reloader = handle.tls_reloader();
    let signal_thread = std::thread::Builder::new()
        .name("chronik-signals".into())
        .spawn(move || handle_signals(&mut signals, &stopper, &reloader));
    if let Err(e) = signal_thread {
        error!(error = %e, "cannot start the signal thread");
        handle.stop();
    }
    match handle.join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::from(EXIT_START_FAILED)
        }
    }
}

/// SIGHUP reloads the TLS files; the first SIGINT/SIGTERM drains and stops,
/// a second one exits at once.
fn handle_signals(signals: &mut Signals, stopper: &Stopper, reloader: &TlsReloader) {
    let mut stopping = false;
    for signal in signals.forever() {
        if signal == SIGHUP {
            match reloader.reload() {
                Ok(true) => info!("SIGHUP: TLS certificates reloaded; new handshakes use them"),
                Ok(false) => info!("SIGHUP: no TLS configured; nothing to reload"),
                Err(e) => error!("SIGHUP: TLS reload failed, keeping the certificates in use: {e}"),
            }
            continue;
        }
        if stopping {
            // A second signal means "now": skip the drain.
            warn!(signal, "second signal; exiting without draining");
            std::process::exit(130);
        }
        info!(signal, "shutting down: draining connections");
        stopper.stop();
        stopping = true;
    }
}

//! `ha-ingestor`: every Home Assistant state change into SQLite. See `--help` and the README.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ha_ingestor::config::{Config, LogFormat, Overrides};

/// Exit codes: 0 ok, 1 runtime error, 2 configuration or usage error, 3 authentication failed,
/// 4 storage error.
#[derive(Parser)]
#[command(name = "ha-ingestor", version, about = "Lossless Home Assistant history into SQLite", long_about = None)]
struct Cli {
    /// A TOML config file (see the README's configuration reference).
    #[arg(long, global = true, env = "HA_INGESTOR_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, env = "HA_INGESTOR_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ConnectionArgs {
    /// Home Assistant's URL [env: HASS_SERVER].
    #[arg(long, env = "HASS_SERVER")]
    server: Option<String>,
    /// A file holding a long-lived access token [env: HASS_TOKEN_FILE]. The token itself can come
    /// from HASS_TOKEN; it is never accepted as a flag (flags are visible in `ps`).
    #[arg(long, env = "HASS_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Refused: a token on the command line is visible to every user through `ps`.
    #[arg(long, hide = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Offline demo: a simulated Home Assistant in-process, a few thousand events into SQLite, a
    /// summary. Takes seconds.
    Demo {
        /// The SQLite file (rows are added to what it holds).
        #[arg(long, env = "HA_INGESTOR_DB", default_value = "ha-ingestor-demo.db")]
        db: PathBuf,
        /// How many state changes to generate.
        #[arg(long, default_value_t = 5000)]
        events: u64,
        /// Where /metrics and /health listen while the demo runs (port 0 picks a free one).
        #[arg(long, env = "HA_INGESTOR_METRICS_ADDR", default_value = "127.0.0.1:0")]
        metrics_addr: std::net::SocketAddr,
    },
    /// Run the ingestor until SIGINT or SIGTERM, then flush and exit 0.
    Run {
        #[command(flatten)]
        conn: ConnectionArgs,
        /// The SQLite file [default: ha-ingestor.db].
        #[arg(long, env = "HA_INGESTOR_DB")]
        db: Option<PathBuf>,
        /// Where /metrics and /health listen [default: 127.0.0.1:9464].
        #[arg(long, env = "HA_INGESTOR_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ha-ingestor: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("ha-ingestor: {message}");
            ExitCode::from(code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), (u8, String)> {
    match cli.command {
        Command::Demo {
            db,
            events,
            metrics_addr,
        } => {
            init_logging(cli.log_format.unwrap_or_default(), "warn");
            let metrics = ha_ingestor::health::install_metrics().map_err(|e| (1, e))?;
            let options = ha_ingestor::demo::DemoOptions {
                db,
                events,
                metrics_addr,
            };
            let summary = ha_ingestor::demo::demo(options, metrics)
                .await
                .map_err(|e| (e.exit_code(), e.to_string()))?;
            println!("{summary}");
            Ok(())
        }
        Command::Run {
            conn,
            db,
            metrics_addr,
        } => {
            if conn.token.is_some() {
                return Err((
                    2,
                    "--token is refused: a token on the command line is visible to every user through `ps`. \
                     Put it in HASS_TOKEN, or in a file given by --token-file / HASS_TOKEN_FILE"
                        .into(),
                ));
            }
            let overrides = Overrides {
                db,
                metrics_addr,
                server: conn.server,
                token_file: conn.token_file,
                log_format: cli.log_format,
            };
            let config =
                Config::load(cli.config.as_deref(), overrides).map_err(|e| (2, e.to_string()))?;
            init_logging(config.log_format, "info");
            let metrics = ha_ingestor::health::install_metrics().map_err(|e| (1, e))?;
            ha_ingestor::run::run(config, metrics, shutdown_signal(), None)
                .await
                .map_err(|e| (e.exit_code(), e.to_string()))
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

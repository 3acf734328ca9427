//! `ha-ingestor`: every Home Assistant state change into SQLite. See `--help` and the README.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ha_ingestor::config::{Config, LogFormat, Overrides, SupervisorAccess};
use ha_ingestor::tools;

/// Exit codes: 0 ok, 1 runtime error, 2 configuration or usage error, 3 authentication failed,
/// 4 storage error.
#[derive(Parser)]
#[command(name = "ha-ingestor", version, about = "Lossless Home Assistant history into SQLite", long_about = None, after_help = CONNECTION_HELP)]
struct Cli {
    /// A TOML config file (see the README's configuration reference).
    #[arg(long, global = true, env = "HA_INGESTOR_CONFIG")]
    config: Option<PathBuf>,
    /// A config file read only when it exists and --config is not given (the container image
    /// sets /data/ha-ingestor.toml).
    #[arg(long, global = true, env = "HA_INGESTOR_CONFIG_IF_EXISTS")]
    config_if_exists: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, env = "HA_INGESTOR_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ConnectionArgs {
    /// Home Assistant's URL, e.g. http://homeassistant.local:8123.
    #[arg(long, env = "HASS_SERVER")]
    server: Option<String>,
    /// A file holding a long-lived access token. The token itself can come
    /// from HASS_TOKEN; it is never accepted as a flag (flags are visible in `ps`).
    #[arg(long, env = "HASS_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// A PEM file with the CA that signed HA's certificate (self-signed HA).
    #[arg(long, env = "HASS_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Do not verify HA's TLS certificate (dangerous: anyone on the path can read the token).
    #[arg(long)]
    insecure: bool,
    /// Refused: a token on the command line is visible to every user through `ps`.
    #[arg(long, hide = true)]
    token: Option<String>,
}

impl ConnectionArgs {
    fn refuse_token_flag(&self) -> Result<(), (u8, String)> {
        if self.token.is_some() {
            return Err((
                2,
                "--token is refused: a token on the command line is visible to every user through `ps`. \
                 Put it in HASS_TOKEN, or in a file given by --token-file / HASS_TOKEN_FILE"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The connection options of the setup tools: those of `run`, and which instance.
#[derive(clap::Args, Clone)]
struct ToolConnectionArgs {
    #[command(flatten)]
    conn: ConnectionArgs,
    /// Which [[instance]] of the config file, when it has several.
    #[arg(long)]
    instance: Option<String>,
}

impl ToolConnectionArgs {
    fn options(
        self,
        config: Option<PathBuf>,
        db: Option<PathBuf>,
    ) -> Result<tools::ConnectionOptions, (u8, String)> {
        self.conn.refuse_token_flag()?;
        Ok(tools::ConnectionOptions {
            config,
            server: self.conn.server,
            token_file: self.conn.token_file,
            ca_file: self.conn.ca_file,
            insecure: self.conn.insecure,
            instance: self.instance,
            db,
        })
    }
}

/// Naming and delivery of a new long-lived token.
#[derive(clap::Args, Clone)]
struct TokenOutArgs {
    /// The token's name, unique per user [default: ha-ingestor@<hostname>, with " (2)"... when taken].
    #[arg(long)]
    token_name: Option<String>,
    /// How long the token is valid, in days.
    #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    lifespan_days: u32,
    /// Write the token to this file, created with mode 0600.
    #[arg(long)]
    token_out: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
    /// Print the token on stdout (only then is it shown).
    #[arg(long)]
    print_token: bool,
}

impl From<TokenOutArgs> for tools::TokenOutput {
    fn from(a: TokenOutArgs) -> Self {
        tools::TokenOutput {
            name: a.token_name,
            lifespan_days: a.lifespan_days,
            out: a.token_out,
            force: a.force,
            print: a.print_token,
        }
    }
}

const CONNECTION_HELP: &str = "\
Connection (the same for every command): the URL comes from --server / HASS_SERVER or `url` in the
config file's [[instance]]; the token from --token-file / HASS_TOKEN_FILE, HASS_TOKEN, or the config
(token_file, token_env, oauth_state_file); never from a flag. --ca-file / HASS_CA_FILE trusts a
self-signed HA; --insecure turns verification off.

Exit codes: 0 ok, 1 runtime error, 2 configuration or usage error, 3 authentication failed,
4 storage error.";

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a long-lived token, authenticated with the configured token.
    #[command(after_help = CONNECTION_HELP)]
    Create {
        #[command(flatten)]
        conn: ToolConnectionArgs,
        #[command(flatten)]
        out: TokenOutArgs,
    },
    /// List the user's tokens (name, type, created, last used; never a secret).
    #[command(after_help = CONNECTION_HELP)]
    List {
        #[command(flatten)]
        conn: ToolConnectionArgs,
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by name or id (auth/delete_refresh_token), or the refresh token of an OAuth
    /// state file (/auth/revoke; the file is then removed).
    #[command(after_help = CONNECTION_HELP)]
    Revoke {
        #[command(flatten)]
        conn: ToolConnectionArgs,
        /// The token's name or id, as `token list` shows it.
        #[arg(required_unless_present = "oauth_state_file")]
        name_or_id: Option<String>,
        /// Revoke the OAuth refresh token kept in this file (from `login --oauth`).
        #[arg(long, conflicts_with = "name_or_id")]
        oauth_state_file: Option<PathBuf>,
    },
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
    /// Run the ingestor until SIGINT or SIGTERM, then flush and exit 0. SIGHUP reads the
    /// configuration again (instances added, removed or changed start, stop or restart).
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
    /// Run as a Home Assistant add-on: the options from /data/options.json (see
    /// packaging/addon/config.yaml), Home Assistant through the Supervisor (SUPERVISOR_TOKEN), the
    /// database in /data.
    Addon {
        /// The add-on's options file.
        #[arg(long, default_value = "/data/options.json")]
        options: PathBuf,
        /// The add-on's data folder (the database, private copies of the secrets).
        #[arg(long, default_value = "/data")]
        data: PathBuf,
        /// Where /metrics and /health listen [default: 0.0.0.0:9464, the add-on's port].
        #[arg(long, env = "HA_INGESTOR_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Import Home Assistant's recorded history (its recorder keeps 10 days by default) into the
    /// store, from where remote sinks receive it. Resumable: a second run skips the day slices the
    /// first one finished. A progress bar on a terminal, plain lines otherwise.
    Backfill {
        #[command(flatten)]
        conn: ConnectionArgs,
        /// The SQLite file [default: ha-ingestor.db].
        #[arg(long, env = "HA_INGESTOR_DB")]
        db: Option<PathBuf>,
        /// Start: a duration back from now (7d, 36h, 90min) or a UTC timestamp (2026-11-01,
        /// 2026-11-01T12:00:00Z).
        #[arg(long)]
        since: String,
        /// End, in the same formats [default: now].
        #[arg(long)]
        until: Option<String>,
        /// Entities per history request.
        #[arg(long, default_value_t = 50)]
        chunk: usize,
        /// Forget which slices earlier runs finished and read everything again.
        #[arg(long)]
        fresh: bool,
        /// Import HA's statistics (hourly rows, kept by HA forever, and 5-minute rows) instead of
        /// states, e.g. `--statistics --since 5y`; --chunk is then statistics per request.
        #[arg(long)]
        statistics: bool,
    },
    /// Import Home Assistant's own recorder database (the SQLite file home-assistant_v2.db,
    /// opened read-only: safe beside a running HA) into the store: states with attributes,
    /// times and context ids, and events, with the keys live ingestion writes, so rows the store
    /// holds already are not added again. Needs no connection to HA. Resumable: a second run
    /// continues after the last committed row (Ctrl-C stops after the chunk in hand).
    ImportRecorder {
        /// HA's recorder database: the path of home-assistant_v2.db (in HA's configuration
        /// folder), or its sqlite:/// URL. MariaDB/MySQL/PostgreSQL recorders are not supported
        /// (use `backfill`).
        #[arg(long, value_name = "PATH")]
        recorder_db: String,
        /// The SQLite file [default: ha-ingestor.db].
        #[arg(long, env = "HA_INGESTOR_DB")]
        db: Option<PathBuf>,
        /// Which [[instance]] of the config the rows belong to (required with several).
        #[arg(long)]
        instance: Option<String>,
        /// Only rows from this time on: a duration back from now (7d, 36h) or a UTC timestamp
        /// (2026-11-01, 2026-11-01T12:00:00Z) [default: everything].
        #[arg(long)]
        since: Option<String>,
        /// Only rows before this time, in the same formats [default: everything].
        #[arg(long)]
        until: Option<String>,
        /// Import the recorder's events too: `auto` when the instance has subscribe = "all"
        /// (as live ingestion stores them), `yes`, `no`.
        #[arg(long, value_enum, default_value_t = ha_ingestor::recorder::import::EventsChoice::Auto)]
        events: ha_ingestor::recorder::import::EventsChoice,
        /// Recorder rows per read and per store transaction.
        #[arg(long, default_value_t = 20_000)]
        chunk: usize,
        /// Forget how far earlier runs got and read everything again (rows stored already are
        /// still not added twice).
        #[arg(long)]
        fresh: bool,
    },
    /// Log in with a username and password (and a TOTP code when MFA is on), then create a
    /// long-lived token and write it to a 0600 file; or keep OAuth2 tokens (--oauth).
    #[command(after_help = CONNECTION_HELP)]
    Login {
        #[command(flatten)]
        conn: ToolConnectionArgs,
        /// The username (not the display name); asked for on a terminal when missing.
        #[arg(long, env = "HASS_USERNAME")]
        username: Option<String>,
        /// Read the password from the first line of stdin. Otherwise it comes from HASS_PASSWORD,
        /// or is asked for on the terminal without echo.
        #[arg(long)]
        password_stdin: bool,
        /// The current TOTP code, when the user has two-factor authentication (asked for on a
        /// terminal when missing).
        #[arg(long, env = "HASS_TOTP_CODE")]
        totp_code: Option<String>,
        #[command(flatten)]
        out: TokenOutArgs,
        /// Keep OAuth2 tokens (refresh token and client_id) instead of creating a long-lived token;
        /// use the file as `oauth_state_file` in the config.
        #[arg(long, conflicts_with_all = ["print_token", "token_out"])]
        oauth: bool,
        /// Where --oauth writes the tokens (mode 0600) [default: oauth_state_file of the config].
        #[arg(long, conflicts_with_all = ["print_token", "token_out"])]
        oauth_state_file: Option<PathBuf>,
        /// The OAuth client_id (an http(s) URL).
        #[arg(long, default_value = ha_ingestor::tools::login::DEFAULT_CLIENT_ID)]
        client_id: String,
    },
    /// From nothing to running: asks for HA's URL and a token (or logs in to create one), checks
    /// the connection, writes the token file (0600) and a commented config file, and prints how
    /// to start.
    Init(tools::init::InitOptions),
    /// Long-lived and login tokens of the user: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a signed URL for a path (e.g. /api/camera_proxy/camera.door) that a plain GET can
    /// read without a header until it expires.
    #[command(after_help = CONNECTION_HELP)]
    SignPath {
        #[command(flatten)]
        conn: ToolConnectionArgs,
        /// The path, from the root.
        path: String,
        /// How long the URL works: 30s, 5m, 1h...
        #[arg(long, default_value = "30s", value_parser = ha_ingestor::tools::sign_path::parse_expiry)]
        expires: std::time::Duration,
    },
    /// Ask a running ingestor's /health (a container's healthcheck): prints its JSON and exits 0
    /// when it answers 200 (every instance connected, the store writable), 1 otherwise.
    Health {
        /// Where the ingestor's /metrics and /health listen; 0.0.0.0 and [::] are asked on
        /// loopback [default: metrics_addr of the config, or 127.0.0.1:9464].
        #[arg(long, env = "HA_INGESTOR_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// How long to wait for the answer, e.g. 5s.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Diagnose the setup step by step (DNS/TCP, TLS, HTTP, token, user, HA state, subscription,
    /// round trip, database); exits non-zero at the first failure.
    #[command(after_help = CONNECTION_HELP)]
    Check {
        #[command(flatten)]
        conn: ToolConnectionArgs,
        /// One JSON document on stdout, for scripts.
        #[arg(long)]
        json: bool,
        /// The SQLite file to check [default: ha-ingestor.db, or `db` of the config].
        #[arg(long, env = "HA_INGESTOR_DB")]
        db: Option<PathBuf>,
    },
}

impl Cli {
    /// `--config-if-exists` becomes `--config` when the file is there and no --config is given. Only
    /// a missing file is skipped: one that cannot be read is still read, to report why.
    fn apply_config_if_exists(&mut self) -> Result<(), String> {
        let Some(path) = self.config_if_exists.take() else {
            return Ok(());
        };
        if self.config.is_some() {
            return Ok(());
        }
        match std::fs::symlink_metadata(&path) {
            Ok(_) => self.config = Some(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("--config-if-exists {}: {e}", path.display())),
        }
        Ok(())
    }
}

impl Command {
    /// The setup tools (`login`, `token`, `sign-path`, `check`) and `health`: one-shot, quiet logging.
    fn is_setup_tool(&self) -> bool {
        !matches!(
            self,
            Command::Demo { .. }
                | Command::Run { .. }
                | Command::Addon { .. }
                | Command::Backfill { .. }
                | Command::ImportRecorder { .. }
        )
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Err(message) = cli.apply_config_if_exists() {
        eprintln!("ha-ingestor: {message}");
        return ExitCode::from(2);
    }
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
    if cli.command.is_setup_tool() {
        // One-shot tools report their errors themselves; the client's reconnect warnings would
        // only be noise (RUST_LOG shows them).
        init_logging(cli.log_format.unwrap_or_default(), "error");
    }
    let config = cli.config.clone();
    let opts = |conn: ToolConnectionArgs| conn.options(config.clone(), None);
    let tool_error = |e: tools::ToolError| (e.code, e.message);
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
            ha_ingestor::outln!("{summary}");
            Ok(())
        }
        Command::Run {
            conn,
            db,
            metrics_addr,
        } => {
            conn.refuse_token_flag()?;
            let overrides = Overrides {
                db,
                metrics_addr,
                server: conn.server,
                token_file: conn.token_file,
                log_format: cli.log_format,
                supervisor: SupervisorAccess::from_env(),
            };
            // The same reading at start and at each SIGHUP: the file, the environment, the flags.
            let file = cli.config.clone();
            let load = move || -> Result<Config, String> {
                let mut config =
                    Config::load(file.as_deref(), overrides.clone()).map_err(|e| e.to_string())?;
                tools::apply_tls_overrides(&mut config, conn.ca_file.clone(), conn.insecure)
                    .map_err(|e| format!("configuration: {e}"))?;
                Ok(config)
            };
            let config = load().map_err(|e| (2, e))?;
            init_logging(config.log_format, "info");
            let metrics = ha_ingestor::health::install_metrics().map_err(|e| (1, e))?;
            let reloads =
                reload_on_sighup(move || load().map_err(ha_ingestor::config::ConfigError));
            ha_ingestor::run::run_with_reloads(config, metrics, shutdown_signal(), None, reloads)
                .await
                .map_err(|e| (e.exit_code(), e.to_string()))
        }
        Command::Addon {
            options,
            data,
            metrics_addr,
        } => {
            let Some(supervisor) = SupervisorAccess::from_env() else {
                return Err((
                    2,
                    "addon: SUPERVISOR_TOKEN is not set: the add-on's config.yaml needs \
                     homeassistant_api: true (outside an add-on, use `run`)"
                        .into(),
                ));
            };
            let paths = ha_ingestor::addon::AddonPaths { data };
            let file = ha_ingestor::addon::load(&options, &paths).map_err(|e| (2, e))?;
            let overrides = Overrides {
                supervisor: Some(supervisor),
                metrics_addr,
                log_format: cli.log_format,
                ..Overrides::default()
            };
            let config = Config::resolve(file, overrides).map_err(|e| (2, e.to_string()))?;
            init_logging(config.log_format, "info");
            let metrics = ha_ingestor::health::install_metrics().map_err(|e| (1, e))?;
            ha_ingestor::run::run(config, metrics, shutdown_signal(), None)
                .await
                .map_err(|e| (e.exit_code(), e.to_string()))
        }
        Command::Backfill {
            conn,
            db,
            since,
            until,
            chunk,
            fresh,
            statistics,
        } => {
            conn.refuse_token_flag()?;
            let overrides = Overrides {
                db,
                server: conn.server,
                token_file: conn.token_file,
                log_format: cli.log_format,
                supervisor: SupervisorAccess::from_env(),
                ..Overrides::default()
            };
            let mut config =
                Config::load(cli.config.as_deref(), overrides).map_err(|e| (2, e.to_string()))?;
            tools::apply_tls_overrides(&mut config, conn.ca_file, conn.insecure)
                .map_err(|e| (2, format!("configuration: {e}")))?;
            init_logging(config.log_format, "warn");
            let now = jiff::Timestamp::now().as_microsecond();
            let since_us = ha_ingestor::history::import::parse_since(&since, now)
                .map_err(|e| (2, format!("--since: {e}")))?;
            let until_us = until
                .map(|u| ha_ingestor::history::import::parse_since(&u, now))
                .transpose()
                .map_err(|e| (2, format!("--until: {e}")))?;
            let options = ha_ingestor::history::import::ImportOptions {
                since_us,
                until_us,
                chunk,
                fresh,
                progress_bar: None,
            };
            if statistics {
                let summary =
                    ha_ingestor::history::statistics_import::import_statistics(config, options)
                        .await
                        .map_err(|e| (e.exit_code(), e.to_string()))?;
                ha_ingestor::outln!("{summary}");
                return Ok(());
            }
            let summary = ha_ingestor::history::import::import(config, options)
                .await
                .map_err(|e| (e.exit_code(), e.to_string()))?;
            ha_ingestor::outln!("{summary}");
            Ok(())
        }
        Command::ImportRecorder {
            recorder_db,
            db,
            instance,
            since,
            until,
            events,
            chunk,
            fresh,
        } => {
            let overrides = Overrides {
                db,
                log_format: cli.log_format,
                ..Overrides::default()
            };
            let config = Config::load_offline(cli.config.as_deref(), overrides)
                .map_err(|e| (2, e.to_string()))?;
            init_logging(config.log_format, "warn");
            let now = jiff::Timestamp::now().as_microsecond();
            let parse = |flag: &str, text: Option<String>| {
                text.map(|t| ha_ingestor::history::import::parse_since(&t, now))
                    .transpose()
                    .map_err(|e| (2, format!("{flag}: {e}")))
            };
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let options = ha_ingestor::recorder::import::RecorderImportOptions {
                instance,
                since_us: parse("--since", since)?,
                until_us: parse("--until", until)?,
                events,
                fresh,
                chunk,
                stop: Some(stop.clone()),
                ..ha_ingestor::recorder::import::RecorderImportOptions::new(recorder_db)
            };
            // Ctrl-C or SIGTERM: stop after the chunk in hand is committed; the next run resumes.
            tokio::spawn(async move {
                shutdown_signal().await;
                eprintln!("ha-ingestor: stopping after the chunk in hand");
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let summary = tokio::task::spawn_blocking(move || {
                ha_ingestor::recorder::import::import(&config, &options)
            })
            .await
            .map_err(|e| (1, e.to_string()))?
            .map_err(|e| (e.exit_code(), e.to_string()))?;
            ha_ingestor::outln!("{summary}");
            if summary.interrupted {
                return Err((
                    1,
                    "interrupted; run the same command again to resume".into(),
                ));
            }
            Ok(())
        }
        Command::Init(opts) => tools::init::init(&opts).await.map_err(tool_error),
        Command::Login {
            conn,
            username,
            password_stdin,
            totp_code,
            out,
            oauth,
            oauth_state_file,
            client_id,
        } => {
            let login = tools::login::LoginOptions {
                username,
                password_stdin,
                totp_code,
                token: out.into(),
                oauth: oauth || oauth_state_file.is_some(),
                oauth_state_file,
                client_id: Some(client_id),
            };
            tools::login::login(&opts(conn)?, &login)
                .await
                .map_err(tool_error)
        }
        Command::Token(TokenCommand::Create { conn, out }) => {
            tools::token::create(&opts(conn)?, &out.into())
                .await
                .map_err(tool_error)
        }
        Command::Token(TokenCommand::List { conn, json }) => tools::token::list(&opts(conn)?, json)
            .await
            .map_err(tool_error),
        Command::Token(TokenCommand::Revoke {
            conn,
            name_or_id,
            oauth_state_file,
        }) => tools::token::revoke(
            &opts(conn)?,
            name_or_id.as_deref(),
            oauth_state_file.as_ref(),
        )
        .await
        .map_err(tool_error),
        Command::SignPath {
            conn,
            path,
            expires,
        } => tools::sign_path::sign_path(&opts(conn)?, &path, expires)
            .await
            .map_err(tool_error),
        Command::Health {
            metrics_addr,
            timeout,
        } => {
            let addr = match (metrics_addr, &config) {
                (Some(addr), _) => addr,
                (None, Some(path)) => {
                    Config::metrics_addr_of_file(path).map_err(|e| (2, e.to_string()))?
                }
                (None, None) => Config::DEFAULT_METRICS_ADDR,
            };
            let body = ha_ingestor::health::probe(addr, timeout)
                .await
                .map_err(|e| (1, e))?;
            ha_ingestor::outln!("{body}");
            Ok(())
        }
        Command::Check { conn, json, db } => {
            let conn = conn.options(config.clone(), db)?;
            tools::check::check(&conn, json).await.map_err(tool_error)
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

/// Reads the configuration again at each SIGHUP and hands it to the service (`None` where there
/// are no signals, or SIGHUP cannot be caught).
fn reload_on_sighup(
    load: impl Fn() -> Result<Config, ha_ingestor::config::ConfigError> + Send + 'static,
) -> Option<tokio::sync::mpsc::Receiver<ha_ingestor::run::Reload>> {
    #[cfg(unix)]
    {
        let mut hup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reading the configuration again");
                if tx.send(load()).await.is_err() {
                    return;
                }
            }
        });
        Some(rx)
    }
    #[cfg(not(unix))]
    {
        let _ = load;
        None
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

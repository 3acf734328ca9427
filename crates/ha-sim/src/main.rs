//! `ha-sim`: a simulated Home Assistant on one command, with load and fault switches.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ha_sim::{Sim, SimConfig};

/// A simulated Home Assistant (WebSocket + REST + OAuth) with a load generator and fault switches.
///
/// Users for the login flow: admin/admin-pass (admin), user/user-pass (non-admin),
/// mfa/mfa-pass (admin, TOTP).
#[derive(Parser, Debug)]
#[command(name = "ha-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "HA_SIM_BIND", default_value = "127.0.0.1:8123")]
    bind: SocketAddr,
    /// Static long-lived token of the admin user.
    #[arg(long, env = "HA_SIM_ADMIN_TOKEN", default_value = "sim-admin-token")]
    admin_token: String,
    /// Static long-lived token of the non-admin user.
    #[arg(long, env = "HA_SIM_USER_TOKEN", default_value = "sim-user-token")]
    user_token: String,
    /// Generated state_changed events per second (0 = as fast as subscribers take them; omit for none).
    #[arg(long)]
    rate: Option<u64>,
    /// Stop the generator after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// With --rate: replay the generator's sequence pre-serialized (`FirehoseTemplates`) instead of
    /// changing the world: far cheaper per event, for benchmarks (no history, get_states unchanged).
    #[arg(long)]
    firehose: bool,
    /// With --firehose: emit only as far as the last number read from stdin (one per line: the total
    /// events allowed so far). A benchmark uses it to start the load and to keep a bounded window.
    #[arg(long, requires = "firehose")]
    credit_stdin: bool,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Version reported to clients.
    #[arg(long, default_value = "2024.3.3")]
    ha_version: String,
    /// Lifetime of issued OAuth access tokens, in seconds.
    #[arg(long, default_value_t = 1800)]
    access_token_ttl: u64,
    /// Fault: drop every WebSocket connection (no close frame) after it was sent N messages.
    #[arg(long, value_name = "N")]
    drop_after: Option<u64>,
    /// Fault: go silent (half-open: nothing read or sent) SECS seconds after start.
    #[arg(long, value_name = "SECS")]
    silent_after: Option<u64>,
    /// Fault: answer every auth with auth_invalid.
    #[arg(long)]
    reject_auth: bool,
    /// Fault: wait this long before answering auth.
    #[arg(long, value_name = "MS")]
    auth_delay_ms: Option<u64>,
    /// Fault: restart (close all connections, NOT_RUNNING for 2 s) every SECS seconds.
    #[arg(long, value_name = "SECS")]
    restart_every: Option<u64>,
    /// Fault: the first N requests to /auth/token answer 500.
    #[arg(long, value_name = "N")]
    token_5xx: Option<u32>,
    /// Pending-message limit per connection before it is dropped.
    #[arg(long, default_value_t = 4096)]
    max_pending: usize,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let cfg = SimConfig {
        bind: a.bind,
        admin_token: a.admin_token,
        user_token: a.user_token,
        access_token_ttl: Duration::from_secs(a.access_token_ttl),
        seed: a.seed,
        ha_version: a.ha_version,
        max_pending: a.max_pending,
        drop_every_connection_after: a.drop_after,
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await?;
    println!("{}", sim.url());
    println!(
        "websocket: {}  admin token: {}  user token: {}",
        sim.ws_url(),
        sim.config().admin_token,
        sim.config().user_token
    );
    sim.set_reject_auth(a.reject_auth);
    if let Some(ms) = a.auth_delay_ms {
        sim.set_auth_delay(Duration::from_millis(ms));
    }
    if let Some(n) = a.token_5xx {
        sim.set_token_endpoint_failures(n);
    }
    let _generator = match a.rate {
        Some(r) if a.firehose => {
            let credit = a.credit_stdin.then(|| {
                let credit = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                let c = credit.clone();
                std::thread::spawn(move || {
                    for line in std::io::stdin().lines() {
                        let Ok(line) = line else { break };
                        if let Ok(n) = line.trim().parse::<u64>() {
                            c.store(n, std::sync::atomic::Ordering::Release);
                        }
                    }
                });
                credit
            });
            let templates = ha_sim::FirehoseTemplates::build(&sim.config().entities, a.seed, 4096);
            Some(sim.start_firehose(
                templates,
                ha_sim::FirehoseOptions {
                    rate: (r > 0).then_some(r),
                    count: a.count,
                    credit,
                },
            ))
        }
        Some(r) => Some(sim.start_generator((r > 0).then_some(r), a.count)),
        None => None,
    };
    let silent_at = a
        .silent_after
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut restart = a.restart_every.map(|s| {
        tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(s.max(1)),
            Duration::from_secs(s.max(1)),
        )
    });
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = async { tokio::time::sleep_until(silent_at.unwrap_or_else(tokio::time::Instant::now)).await }, if silent_at.is_some() && !silent_done(&sim) => {
                println!("going silent");
                sim.set_silent(true);
            }
            _ = async { if let Some(r) = restart.as_mut() { r.tick().await; } }, if restart.is_some() => {
                println!("restarting");
                sim.restart(Duration::from_secs(2));
            }
        }
    }
    sim.shutdown().await;
    Ok(())
}

fn silent_done(sim: &Sim) -> bool {
    sim.is_silent()
}

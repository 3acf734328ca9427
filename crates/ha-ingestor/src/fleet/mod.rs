//! Several ingestor processes sharing one list of instances (`[fleet]`), beyond one machine.
//!
//! Each instance is served by one process at a time: the one holding its PostgreSQL advisory
//! lock, taken on a session of its own ([`session`]) on the server of the fleet's PostgreSQL sink.
//! A process that dies or loses that connection loses its locks with it, and the others take its
//! instances within a few seconds. Each process keeps its own SQLite journal.
//!
//! **Balance.** Every process counts the members (each holds a shared lock on the fleet's key)
//! and serves at most its share, ⌈instances / members⌉: a process that joins is given instances by
//! the others letting go of their surplus, one that leaves has its instances shared out.
//!
//! **Nothing lost at a hand-over.** What the new owner must fill is what *PostgreSQL* lacks, not
//! what its own store lacks: a killed owner's journal may hold rows it never sent. So each owner
//! records, every few seconds, a watermark per instance in `ha_fleet_instances`: a time before
//! which every state of the instance is in `ha_states`. It is the oldest of: now minus 30 s
//! (changes still on their way from HA), the oldest gap not yet read back from HA's history, and
//! the oldest row the PostgreSQL sink has not acknowledged; and the minimum of those computed over
//! the last 10 s is what is published (rows a finished gap fill handed to the writer are committed
//! by then); none is published while the store cannot commit. A new owner fills from the watermark (HA's history, as after a reconnect); rows
//! read twice are stored once (the unique keys of SQLite and of `ha_states`).

mod session;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_client::RetryPolicy;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::health::{FleetHealth, Health};
use crate::history::now_us;
use crate::sink::postgres::Connector;
use session::Session;

/// How often the session is checked, watermarks published and shares rebalanced.
const TICK: Duration = Duration::from_secs(2);
/// Changes younger than this may still be on their way from HA to the store.
const IN_FLIGHT_US: i64 = 30_000_000;
/// A published watermark is the oldest computed over this long.
const HOLD: Duration = Duration::from_secs(10);
/// An instance given up is released this long after its source was told to stop, so that what
/// it had received is committed and counted in its last watermark.
const RELEASE_AFTER: Duration = Duration::from_secs(4);

/// What the fleet asks of the running instances.
#[derive(Debug, PartialEq, Eq)]
pub enum FleetCommand {
    /// This process now owns `instance`: start it, filling from `since_us` (from PostgreSQL's
    /// watermark; `None`: PostgreSQL holds nothing of it, so it starts like a first start).
    Start {
        /// The instance.
        instance: String,
        /// Where its gap fill starts, in microseconds.
        since_us: Option<i64>,
    },
    /// Stop `instance`: another process takes it (or the session is lost).
    Stop {
        /// The instance.
        instance: String,
    },
}

/// The running fleet membership. Dropping it leaves the fleet (the locks go with the session).
pub struct Fleet {
    /// What to start and stop.
    pub commands: mpsc::UnboundedReceiver<FleetCommand>,
    names: watch::Sender<Vec<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fleet {
    /// Joins the fleet of `config` (which has a checked `[fleet]`); instances start as commands
    /// arrive.
    pub fn start(config: &Config, health: Arc<Health>) -> Result<Fleet, String> {
        let fleet = config
            .fleet
            .clone()
            .ok_or("no [fleet] in the configuration")?;
        let sink = config
            .sinks
            .iter()
            .find(|s| s.name == fleet.sink)
            .ok_or_else(|| format!("fleet.sink: no [[sink]] is named '{}'", fleet.sink))?;
        let connector = crate::sink::postgres_connector(sink)?;
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (names, names_rx) = watch::channel(instance_names(config));
        let controller = Controller {
            name: fleet.name,
            sink: fleet.sink,
            db: config.db.clone(),
            connector,
            owner: owner_id(),
            names: names_rx,
            commands: commands_tx,
            health,
            owned: BTreeMap::new(),
            members: 0,
        };
        Ok(Fleet {
            commands,
            names,
            task: tokio::spawn(controller.run()),
        })
    }

    /// The instances of a reloaded configuration: new ones can be taken, removed ones are
    /// stopped and released.
    pub fn set_instances(&self, config: &Config) {
        self.names.send_replace(instance_names(config));
    }
}

fn instance_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config.instances.iter().map(|i| i.name.clone()).collect();
    names.sort();
    names
}

/// This process, as `ha_fleet_instances.owner` shows it: host and process id.
fn owner_id() -> String {
    format!("{}:{}", crate::tools::hostname(), std::process::id())
}

/// Joining again after a failure: 1 s doubling to 30 s, with jitter so that processes cut off
/// together do not retry in step (never given up: attempts are not counted).
fn rejoin_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: u32::MAX,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(30),
    }
}

/// An instance this process owns.
struct Owned {
    /// Watermarks computed in the last [`HOLD`], oldest first.
    marks: VecDeque<(Instant, i64)>,
    /// When its source was told to stop (it is being given up).
    releasing: Option<Instant>,
}

struct Controller {
    name: String,
    sink: String,
    db: PathBuf,
    connector: Connector,
    owner: String,
    names: watch::Receiver<Vec<String>>,
    commands: mpsc::UnboundedSender<FleetCommand>,
    health: Arc<Health>,
    owned: BTreeMap<String, Owned>,
    members: u32,
}

impl Controller {
    async fn run(mut self) {
        let policy = rejoin_policy();
        let mut failures = 0u32;
        let mut said = None::<String>;
        loop {
            let session = match Session::open(&self.connector, &self.name, &self.owner).await {
                Ok(s) => s,
                Err(e) => {
                    if said.as_deref() != Some(e.as_str()) {
                        tracing::error!(fleet = %self.name, error = %e, "cannot join the fleet; retrying (no instance is served until then)");
                        said = Some(e.clone());
                    }
                    self.report(false, Some(e));
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(policy.backoff(failures)).await;
                    continue;
                }
            };
            said = None;
            failures = 0;
            tracing::info!(fleet = %self.name, owner = %self.owner, "joined the fleet");
            self.report(true, None);
            // Processes started together join within a tick of each other: count them first.
            tokio::time::sleep(TICK).await;
            loop {
                if let Err(e) = self.tick(&session).await {
                    tracing::error!(fleet = %self.name, error = %e, owned = self.owned.len(), "lost the fleet's PostgreSQL session: stopping its instances (the other processes take them over); joining again");
                    self.stop_all();
                    self.report(false, Some(e));
                    break;
                }
                if self.commands.is_closed() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(TICK) => {}
                    _ = self.names.changed() => {}
                }
            }
            drop(session);
            tokio::time::sleep(policy.backoff(1)).await;
        }
    }

    /// One round: publish the watermarks, give up what is over this process's share, take
    /// unowned instances up to it.
    async fn tick(&mut self, session: &Session) -> Result<(), String> {
        let names = self.names.borrow_and_update().clone();
        self.members = session.members().await?;
        let share = names.len().div_ceil(self.members as usize);

        let now = Instant::now();
        let mut marks = Vec::with_capacity(self.owned.len());
        // While the store cannot commit (a full disk, a lock held elsewhere), received rows wait
        // in memory, counted nowhere: the watermarks stay where they were.
        let held = if self.health.store_ok() && !self.owned.is_empty() {
            crate::store::gaps::held_back(&self.db, &self.sink)
                .await
                .inspect_err(|e| {
                    // Not published: the last watermarks stay, which are only older.
                    tracing::warn!(error = %e, "cannot read the store for the fleet's watermarks");
                })
                .ok()
        } else {
            None
        };
        for (name, owned) in self.owned.iter_mut().filter(|_| held.is_some()) {
            let h = held
                .as_ref()
                .and_then(|h| h.get(name).copied())
                .unwrap_or_default();
            let mark = [Some(now_us() - IN_FLIGHT_US), h.gap, h.unsent]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_default();
            owned.marks.push_back((now, mark));
            while owned
                .marks
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > HOLD)
            {
                owned.marks.pop_front();
            }
            let oldest = owned.marks.iter().map(|m| m.1).min().unwrap_or(mark);
            marks.push((name.clone(), oldest));
        }
        session.publish(&marks).await?;

        // Released once stopped for a while (their last watermark was just published).
        let done: Vec<String> = self
            .owned
            .iter()
            .filter(|(_, o)| {
                o.releasing
                    .is_some_and(|at| now.duration_since(at) >= RELEASE_AFTER)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in done {
            session.release(&name).await?;
            self.owned.remove(&name);
            tracing::info!(fleet = %self.name, instance = %name, "released the instance to the fleet");
        }

        // Removed by a reload, or over the share (the last names first, so every process gives
        // up the same kind and the spread settles).
        let wanted: HashSet<&String> = names.iter().collect();
        let mut active: Vec<String> = self
            .owned
            .iter()
            .filter(|(_, o)| o.releasing.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        let mut surplus: Vec<String> = active
            .iter()
            .filter(|n| !wanted.contains(n))
            .cloned()
            .collect();
        active.retain(|n| wanted.contains(n));
        while active.len() > share {
            surplus.extend(active.pop());
        }
        for name in surplus {
            let _ = self.commands.send(FleetCommand::Stop {
                instance: name.clone(),
            });
            if let Some(o) = self.owned.get_mut(&name) {
                o.releasing = Some(now);
            }
        }

        // Take unowned instances up to the share, starting at a place of this process's own so
        // that processes do not all try the same names first.
        let offset = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.owner.hash(&mut h);
            (h.finish() as usize) % names.len().max(1)
        };
        let mut count = active.len();
        for i in 0..names.len() {
            if count >= share {
                break;
            }
            let name = &names[(offset + i) % names.len()];
            if self.owned.contains_key(name) || !session.try_own(name).await? {
                continue;
            }
            let since_us = session.start_of(name).await?;
            // On record before the source starts: until the fill covers it, this gap holds the
            // watermark back, whatever happens to the source (HA down, a restart).
            if let Some(since) = since_us
                && let Err(e) = crate::store::gaps::open_gap(&self.db, name, since).await
            {
                tracing::error!(instance = %name, error = %e, "cannot record the gap to fill; leaving the instance to the others");
                session.release(name).await?;
                continue;
            }
            tracing::info!(fleet = %self.name, instance = %name, from = %since_us.map(crate::history::iso).unwrap_or_else(|| "nothing stored yet".into()), "took the instance over");
            let _ = self.commands.send(FleetCommand::Start {
                instance: name.clone(),
                since_us,
            });
            self.owned.insert(
                name.clone(),
                Owned {
                    marks: VecDeque::new(),
                    releasing: None,
                },
            );
            count += 1;
        }
        self.report(true, None);
        Ok(())
    }

    /// The session is gone, and the locks with it: another process may own the instances now.
    fn stop_all(&mut self) {
        for (name, owned) in std::mem::take(&mut self.owned) {
            if owned.releasing.is_none() {
                let _ = self.commands.send(FleetCommand::Stop { instance: name });
            }
        }
    }

    fn report(&self, connected: bool, error: Option<String>) {
        let owned: Vec<String> = self
            .owned
            .iter()
            .filter(|(_, o)| o.releasing.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        metrics::gauge!("ha_ingestor_fleet_connected").set(if connected { 1.0 } else { 0.0 });
        metrics::gauge!("ha_ingestor_fleet_members").set(f64::from(self.members));
        metrics::gauge!("ha_ingestor_fleet_owned_instances").set(owned.len() as f64);
        self.health.set_fleet(FleetHealth {
            name: self.name.clone(),
            connected,
            members: if connected { self.members } else { 0 },
            owned,
            error,
        });
    }
}

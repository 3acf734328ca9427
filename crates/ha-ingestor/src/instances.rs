//! The running instances: one source task each, started, stopped and restarted one by one, so that
//! one instance's failure or a reload that changes it leaves the others running.
//!
//! Every task ends with its instance's name and the generation it was started as: a task that a
//! reload replaced (or removed) ends with a generation that is no longer current, and its result
//! is ignored.
//!
//! A changed instance restarts in one of two ways. With `backfill` on, the old connection stops
//! first and the new one reads the gap of the restart back from HA's history, under the new rules
//! throughout. With `backfill` off nothing would read that gap, so the old connection runs on until
//! the new subscription has been live for [`HANDOVER_OVERLAP`] (make before break): what HA sent
//! the old one before is stored, and a change in the overlap reaches both and is stored once (the
//! store's unique key), under the rules of whichever delivered it first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::{Config, ConfigError, InstanceConfig};
use crate::filter::{AttributeRules, EntityFilter};
use crate::health::Health;
use crate::history::gap_fill::BackfillConfig;
use crate::record::Record;
use crate::source::{SourceContext, SourceError, run_source};

/// An instance's entity filter and attribute rules (the global ones, then its own).
type Rules = (Arc<EntityFilter>, Arc<AttributeRules>);

/// How a source task ended: its instance, its generation, its result.
pub type Ended = (String, u64, Result<(), SourceError>);

/// How long a replaced connection may wait for its successor to be live (`backfill` off).
const HANDOVER_LIMIT: Duration = Duration::from_secs(60);

/// How long a replaced connection runs on once its successor is live: what HA sent it before the
/// new subscription may still be on its way (socket, client, source) and must reach the store.
const HANDOVER_OVERLAP: Duration = Duration::from_secs(2);

struct Running {
    inst: InstanceConfig,
    rules: Rules,
    generation: u64,
    stop: watch::Sender<bool>,
}

/// What every source shares, as of the last (re)load.
struct Shared {
    /// `None` once shutting down, so the writer sees every sender gone.
    tx: Option<mpsc::Sender<Record>>,
    health: Arc<Health>,
    db: PathBuf,
    backfill: Option<BackfillConfig>,
    /// The global `[filter]` and `[attributes]` as text of their config, to see that they changed.
    global_rules: String,
}

/// The set of running instances.
pub struct Instances {
    running: HashMap<String, Running>,
    /// Every configured instance and its rules, as of the last (re)load.
    configured: HashMap<String, (InstanceConfig, Rules)>,
    /// `[fleet]`: an instance runs only while this process owns it ([`Instances::start_owned`]).
    fleet: bool,
    tasks: JoinSet<Ended>,
    generation: u64,
    shared: Shared,
}

/// Each instance's rules; any error refuses the whole configuration.
fn rules_of(config: &Config) -> Result<HashMap<String, Rules>, ConfigError> {
    config
        .instances
        .iter()
        .map(|inst| {
            let (filter, attributes) = config.rules_for(inst)?;
            Ok((inst.name.clone(), (Arc::new(filter), Arc::new(attributes))))
        })
        .collect()
}

fn global_rules(config: &Config) -> String {
    format!("{:?}{:?}", config.filter, config.attributes)
}

fn backfill_of(config: &Config) -> Option<BackfillConfig> {
    config.backfill.then(|| BackfillConfig {
        fleet: config.fleet.is_some(),
        ..config.backfill_settings.clone()
    })
}

fn configured_of(
    config: &Config,
    mut rules: HashMap<String, Rules>,
) -> HashMap<String, (InstanceConfig, Rules)> {
    config
        .instances
        .iter()
        .filter_map(|i| Some((i.name.clone(), (i.clone(), rules.remove(&i.name)?))))
        .collect()
}

impl Instances {
    /// Starts every instance of `config` (with `[fleet]`, none: the fleet starts those this
    /// process owns).
    pub fn start(
        config: &Config,
        tx: mpsc::Sender<Record>,
        health: Arc<Health>,
    ) -> Result<Self, ConfigError> {
        let rules = rules_of(config)?;
        let mut me = Instances {
            running: HashMap::new(),
            configured: configured_of(config, rules),
            fleet: config.fleet.is_some(),
            tasks: JoinSet::new(),
            generation: 0,
            shared: Shared {
                tx: Some(tx),
                health,
                db: config.db.clone(),
                backfill: backfill_of(config),
                global_rules: global_rules(config),
            },
        };
        if !me.fleet {
            for inst in &config.instances {
                let rules = me.configured[&inst.name].1.clone();
                me.spawn(inst.clone(), rules, None, None);
            }
        }
        Ok(me)
    }

    /// `[fleet]`: this process took `name` over; its gap fill starts at `since_us`.
    pub fn start_owned(&mut self, name: &str, since_us: Option<i64>) {
        if self.running.contains_key(name) {
            return;
        }
        if let Some((inst, rules)) = self.configured.get(name).cloned() {
            self.spawn(inst, rules, since_us, None);
        }
    }

    /// `[fleet]`: `name` is given up (another process takes it over).
    pub fn stop_owned(&mut self, name: &str) {
        if self.running.contains_key(name) {
            self.stop(name);
            self.shared.health.forget(name);
            metrics::gauge!("ha_ingestor_instance_up", "instance" => name.to_string()).set(0.0);
        }
    }

    /// Starts a source task for `inst`. `replaces`: the stop of the connection it replaces, sent
    /// [`HANDOVER_OVERLAP`] after the new subscription is live, or when the new task ended, or
    /// after [`HANDOVER_LIMIT`].
    fn spawn(
        &mut self,
        inst: InstanceConfig,
        rules: Rules,
        fleet_start: Option<i64>,
        replaces: Option<watch::Sender<bool>>,
    ) {
        let Some(tx) = self.shared.tx.clone() else {
            if let Some(old) = replaces {
                let _ = old.send(true);
            }
            return;
        };
        self.generation += 1;
        let generation = self.generation;
        let (stop, stop_rx) = watch::channel(false);
        let live = replaces.map(|old| {
            let (live, live_rx) = oneshot::channel();
            let name = inst.name.clone();
            // Generation 0 is never current: run.rs ignores how this task ends.
            self.tasks.spawn(async move {
                match tokio::time::timeout(HANDOVER_LIMIT, live_rx).await {
                    Ok(Ok(())) => {
                        tokio::time::sleep(HANDOVER_OVERLAP).await;
                        tracing::info!(instance = %name, "the reloaded instance receives on its new connection; the old one stops");
                    }
                    // Stopped or failed before it was live (its own end is logged).
                    Ok(Err(_)) => {}
                    Err(_) => tracing::warn!(instance = %name, limit = ?HANDOVER_LIMIT, "the reloaded instance is not receiving yet; its old connection stops now, and changes until the new one receives are not stored (backfill is off)"),
                }
                let _ = old.send(true);
                (name, 0, Ok(()))
            });
            live
        });
        let ctx = SourceContext {
            filter: rules.0.clone(),
            attributes: rules.1.clone(),
            tx,
            health: self.shared.health.clone(),
            db: self.shared.db.clone(),
            backfill: self.shared.backfill.clone(),
            generation,
            fleet_start,
            live,
        };
        self.shared.health.register(&inst.name, generation);
        let name = inst.name.clone();
        metrics::gauge!("ha_ingestor_instance_up", "instance" => name.clone()).set(1.0);
        let task_inst = inst.clone();
        self.tasks.spawn(async move {
            let result = run_source(task_inst, ctx, stop_rx).await;
            (name, generation, result)
        });
        self.running.insert(
            inst.name.clone(),
            Running {
                inst,
                rules,
                generation,
                stop,
            },
        );
    }

    /// Stops an instance (removed or about to be restarted); its rows already handed over are
    /// committed.
    fn stop(&mut self, name: &str) {
        if let Some(r) = self.running.remove(name) {
            let _ = r.stop.send(true);
        }
    }

    /// The next task that ended, if any runs.
    pub async fn join_next(&mut self) -> Option<Result<Ended, tokio::task::JoinError>> {
        self.tasks.join_next().await
    }

    /// Whether a task that ended is the instance's current one (not one a reload replaced).
    pub fn is_current(&self, name: &str, generation: u64) -> bool {
        self.running
            .get(name)
            .is_some_and(|r| r.generation == generation)
    }

    /// After an instance's final failure: starts it again once its token file changes (never in
    /// a loop: HA bans addresses), or when a reload changes its configuration.
    pub fn restart_when_credentials_change(&mut self, name: &str, error: &SourceError) {
        let Some(r) = self.running.get(name) else {
            return;
        };
        self.shared.health.set_failed(name, error.to_string());
        metrics::gauge!("ha_ingestor_instance_up", "instance" => name.to_string()).set(0.0);
        let Some(tx) = self.shared.tx.clone() else {
            return;
        };
        let (inst, generation, stop) = (r.inst.clone(), r.generation, r.stop.subscribe());
        let rules = r.rules.clone();
        let shared = (self.shared.health.clone(), self.shared.db.clone());
        let backfill = self.shared.backfill.clone();
        self.tasks.spawn(async move {
            let name = inst.name.clone();
            if !wait_for_new_credentials(&inst, stop.clone()).await {
                return (name, generation, Ok(()));
            }
            tracing::info!(instance = %name, "its token file changed: starting it again");
            metrics::gauge!("ha_ingestor_instance_up", "instance" => name.clone()).set(1.0);
            let ctx = SourceContext {
                filter: rules.0,
                attributes: rules.1,
                tx,
                health: shared.0,
                db: shared.1,
                backfill,
                generation,
                fleet_start: None,
                live: None,
            };
            (name, generation, run_source(inst, ctx, stop).await)
        });
    }

    /// Applies a reloaded configuration: instances that are new start, removed ones stop, changed
    /// ones restart (and fill their gap from HA's history, with `backfill` on); the others run on.
    /// With `[fleet]`, new instances start only when this process takes them (the fleet is told
    /// of them by its caller).
    pub fn reload(&mut self, config: &Config) -> Result<ReloadSummary, ConfigError> {
        let rules = rules_of(config)?;
        let globals_changed = global_rules(config) != self.shared.global_rules
            || config.backfill != self.shared.backfill.is_some();
        self.shared.global_rules = global_rules(config);
        self.shared.backfill = backfill_of(config);
        self.configured = configured_of(config, rules);
        let mut summary = ReloadSummary::default();
        let wanted: HashMap<&str, &InstanceConfig> = config
            .instances
            .iter()
            .map(|i| (i.name.as_str(), i))
            .collect();
        let mut gone: Vec<String> = self
            .running
            .keys()
            .filter(|n| !wanted.contains_key(n.as_str()))
            .cloned()
            .collect();
        gone.sort();
        for name in gone {
            self.stop(&name);
            self.shared.health.forget(&name);
            metrics::gauge!("ha_ingestor_instance_up", "instance" => name.clone()).set(0.0);
            summary.removed.push(name);
        }
        for inst in &config.instances {
            match self.running.get(&inst.name) {
                Some(r) if r.inst.same_as(inst) && !globals_changed => {}
                Some(_) => {
                    let replaces = if self.shared.backfill.is_some() {
                        self.stop(&inst.name);
                        None
                    } else {
                        self.running.remove(&inst.name).map(|old| old.stop)
                    };
                    let rules = self.configured[&inst.name].1.clone();
                    self.spawn(inst.clone(), rules, None, replaces);
                    summary.restarted.push(inst.name.clone());
                }
                None if self.fleet => summary.added.push(inst.name.clone()),
                None => {
                    let rules = self.configured[&inst.name].1.clone();
                    self.spawn(inst.clone(), rules, None, None);
                    summary.added.push(inst.name.clone());
                }
            }
        }
        Ok(summary)
    }

    /// Stops every instance and drops the shared sender; returns the first final failure of a
    /// current instance, if any, once every task has ended.
    pub async fn shut_down(mut self) -> Option<SourceError> {
        self.shared.tx = None;
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        let mut failure = None;
        while let Some(done) = self.tasks.join_next().await {
            if let Ok((name, generation, Err(e))) = done
                && failure.is_none()
                && self.is_current(&name, generation)
            {
                failure = Some(e);
            }
        }
        failure
    }
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Instances started.
    pub added: Vec<String>,
    /// Instances stopped.
    pub removed: Vec<String>,
    /// Instances stopped and started again with their new configuration.
    pub restarted: Vec<String>,
}

/// Waits until the instance's token file (or OAuth state file) changes: `true` then, `false` when
/// it is stopped first. An instance whose token has no file (an environment variable) can only be
/// fixed by a restart or a reload, and waits for the stop.
async fn wait_for_new_credentials(inst: &InstanceConfig, mut stop: watch::Receiver<bool>) -> bool {
    let files: Vec<PathBuf> = [&inst.token_file, &inst.oauth_state_file]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if files.is_empty() {
        tracing::warn!(instance = %inst.name, "its token comes from no file: restart the ingestor (or reload it with SIGHUP) once it is fixed");
    }
    let stamp = |files: &[PathBuf]| -> Vec<Option<(SystemTime, u64)>> {
        files
            .iter()
            .map(|f| {
                let m = std::fs::metadata(f).ok()?;
                Some((m.modified().ok()?, m.len()))
            })
            .collect()
    };
    let before = stamp(&files);
    loop {
        tokio::select! {
            _ = stop.changed() => return false,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                if !files.is_empty() && stamp(&files) != before {
                    return true;
                }
            }
        }
    }
}

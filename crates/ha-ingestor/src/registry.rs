//! Keeping HA's registries (areas, floors, labels, devices, entities) current in the store, per
//! instance: every registry is read at start and after every reconnect, and a registry is read
//! again after its `*_registry_updated` event (the event's `changes` holds old values, so the
//! entry must be re-read anyway; registries are small, so the whole list is). Storage is
//! [`crate::store::registry`]'s.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use ha_client::Error as ClientError;
use ha_client::ws::WsClient;
use tokio::sync::mpsc;

use crate::store::registry::RegistryList;

/// Events of a burst (an integration adding fifty entities) are read together: a read starts
/// this long after the first event of a burst.
const DEBOUNCE: Duration = Duration::from_secs(1);

/// A registry whose event this user may not subscribe to (floors and labels for a non-admin on
/// HA 2024.3.3) is read this often instead.
const UNANNOUNCED_READ: Duration = Duration::from_secs(60);

/// A failed read is tried again after this long.
const RETRY: Duration = Duration::from_secs(10);

/// One of HA's registries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registry {
    /// Areas.
    Area,
    /// Floors (absent on older HA).
    Floor,
    /// Labels (absent on older HA).
    Label,
    /// Devices.
    Device,
    /// Entities.
    Entity,
}

impl Registry {
    /// Every registry, in the order they are read.
    pub const ALL: [Registry; 5] = [
        Registry::Floor,
        Registry::Label,
        Registry::Area,
        Registry::Device,
        Registry::Entity,
    ];

    /// The event HA fires when it changes.
    pub fn event_type(self) -> &'static str {
        match self {
            Registry::Area => "area_registry_updated",
            Registry::Floor => "floor_registry_updated",
            Registry::Label => "label_registry_updated",
            Registry::Device => "device_registry_updated",
            Registry::Entity => "entity_registry_updated",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Reads it. `None`: this HA has no such registry (floors and labels on older HA).
    async fn read(self, ws: &WsClient) -> Result<Option<RegistryList>, ClientError> {
        let list = match self {
            Registry::Area => ws.list_areas().await.map(RegistryList::Areas),
            Registry::Floor => ws.list_floors().await.map(RegistryList::Floors),
            Registry::Label => ws.list_labels().await.map(RegistryList::Labels),
            Registry::Device => ws.list_devices().await.map(RegistryList::Devices),
            Registry::Entity => ws.list_entity_registry().await.map(RegistryList::Entities),
        };
        match list {
            Ok(list) => Ok(Some(list)),
            Err(ClientError::Command { code, .. }) if code == "unknown_command" => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The set of registries to read next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pending(u8);

impl Pending {
    fn all() -> Self {
        Pending(Registry::ALL.iter().fold(0, |m, r| m | r.bit()))
    }
    fn add(&mut self, r: Registry) {
        self.0 |= r.bit();
    }
    fn extend(&mut self, other: Pending) {
        self.0 |= other.0;
    }
    fn is_empty(self) -> bool {
        self.0 == 0
    }
    fn iter(self) -> impl Iterator<Item = Registry> {
        Registry::ALL
            .into_iter()
            .filter(move |r| self.0 & r.bit() != 0)
    }
}

/// The live copy of one instance's registries.
pub struct RegistryMirror {
    /// The instance's client.
    pub ws: WsClient,
    /// The instance's name.
    pub instance: Arc<str>,
    /// The database.
    pub db: PathBuf,
}

type Changes = futures_util::stream::SelectAll<Pin<Box<dyn Stream<Item = Registry> + Send>>>;

impl RegistryMirror {
    /// Reads every registry, then each one again after its change event, and all of them after
    /// every message on `reconnected`, until `reconnected` closes.
    pub async fn run(self, mut reconnected: mpsc::Receiver<()>) {
        let name = self.instance.clone();
        // Subscribed before the first read, so that no change is missed.
        let mut changes = Changes::default();
        let mut unannounced = Pending::default();
        for registry in Registry::ALL {
            match self.ws.subscribe_events(Some(registry.event_type())).await {
                Ok(sub) => changes.push(Box::pin(sub.map(move |_| registry))),
                // HA 2024.3.3 refuses a non-admin the floor and label events (not in its
                // allowlist), though it lists both registries: those are read periodically.
                Err(e) => {
                    unannounced.add(registry);
                    tracing::debug!(instance = %name, event = registry.event_type(), %e, "cannot subscribe; this registry is read every minute instead")
                }
            }
        }
        let mut pending = Pending::all();
        let mut unannounced_reads = tokio::time::interval(UNANNOUNCED_READ);
        unannounced_reads.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        unannounced_reads.reset(); // the first read is the one below
        let mut missing_logged = false;
        loop {
            let mut retry = false;
            if !pending.is_empty() {
                match self.read(pending, &mut missing_logged).await {
                    Ok(()) => pending = Pending::default(),
                    Err(e) => {
                        tracing::warn!(instance = %name, %e, "reading HA's registries failed; trying again");
                        retry = true;
                    }
                }
            }
            tokio::select! {
                Some(registry) = changes.next() => {
                    pending.add(registry);
                    // The rest of the burst.
                    let until = tokio::time::Instant::now() + DEBOUNCE;
                    while let Ok(Some(r)) = tokio::time::timeout_at(until, changes.next()).await {
                        pending.add(r);
                    }
                }
                r = reconnected.recv() => match r {
                    Some(()) => pending = Pending::all(),
                    None => return,
                },
                _ = tokio::time::sleep(RETRY), if retry => {}
                _ = unannounced_reads.tick(), if !unannounced.is_empty() => pending.extend(unannounced),
            }
        }
    }

    /// Reads the `pending` registries and replaces the stored ones in one transaction.
    async fn read(&self, pending: Pending, missing_logged: &mut bool) -> Result<(), String> {
        let mut lists = Vec::new();
        for registry in pending.iter() {
            match registry.read(&self.ws).await {
                Ok(Some(list)) => lists.push(list),
                Ok(None) => {
                    // Stored as empty: the view then has no floors or label names.
                    if !*missing_logged {
                        tracing::debug!(instance = %self.instance, event = registry.event_type(), "this Home Assistant has no such registry (an older release); stored as empty");
                        *missing_logged = true;
                    }
                    lists.push(match registry {
                        Registry::Floor => RegistryList::Floors(Vec::new()),
                        Registry::Label => RegistryList::Labels(Vec::new()),
                        Registry::Area => RegistryList::Areas(Vec::new()),
                        Registry::Device => RegistryList::Devices(Vec::new()),
                        Registry::Entity => RegistryList::Entities(Vec::new()),
                    });
                }
                Err(e) => return Err(format!("{}: {e}", registry.event_type())),
            }
        }
        let db = self.db.clone();
        let instance = self.instance.clone();
        let counts: Vec<(&'static str, usize)> =
            lists.iter().map(|l| (l.table(), l.len())).collect();
        crate::store::on_db(&db, crate::store::Access::WriteExisting, move |conn| {
            crate::store::registry::replace(conn, &instance, &lists).map_err(|e| e.to_string())
        })
        .await?;
        tracing::debug!(instance = %self.instance, ?counts, "registries stored");
        Ok(())
    }
}

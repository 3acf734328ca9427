//! The Home Assistant source: one WebSocket subscription per instance, events turned into records.

use std::sync::Arc;
use std::time::SystemTime;

use ha_client::Error as ClientError;
use ha_client::ws::{ConnectionEvent, Event, WsClient};
use tokio::sync::{mpsc, watch};

use crate::config::{InstanceConfig, Subscribe};
use crate::credentials::{tls_options, token_source};
use crate::filter::{AttributeRules, EntityFilter};
use crate::health::Health;
use crate::record::{EventRow, Record, StateChangedRef, StateRow, numeric_value, parse_time_us};

/// Why a source stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Bad token or credentials; not retried.
    #[error("instance '{instance}': {source}")]
    Auth {
        /// Instance name.
        instance: String,
        /// The client error.
        source: ClientError,
    },
    /// Misconfiguration found at start-up.
    #[error("instance '{instance}': {message}")]
    Config {
        /// Instance name.
        instance: String,
        /// What and how to fix it.
        message: String,
    },
}

impl SourceError {
    /// The instance it is about.
    pub fn instance(&self) -> &str {
        match self {
            SourceError::Auth { instance, .. } | SourceError::Config { instance, .. } => instance,
        }
    }
}

/// What the source needs besides its instance.
pub struct SourceContext {
    /// Entity filter.
    pub filter: Arc<EntityFilter>,
    /// Attribute rules.
    pub attributes: Arc<AttributeRules>,
    /// Where records go.
    pub tx: mpsc::Sender<Record>,
    /// Health state.
    pub health: Arc<Health>,
    /// The database, for the newest stored row of the instance (gap backfill).
    pub db: std::path::PathBuf,
    /// Gap backfill settings; `None` turns it off.
    pub backfill: Option<crate::history::gap_fill::BackfillConfig>,
    /// Which start of the instance this is ([`Health::register`]; 0 when not registered).
    pub generation: u64,
    /// `[fleet]`: this process took the instance over; the gap to fill starts here (what
    /// PostgreSQL holds, see [`crate::fleet`]), already on record in the store's gaps.
    pub fleet_start: Option<i64>,
    /// Told once the subscription is live (dropped unsent if the source ends first): a reload
    /// keeps the connection this one replaces until then (see [`crate::instances`]).
    pub live: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Runs one instance until `stop` turns true. Reconnects are handled by the client; only final
/// failures end it early.
pub async fn run_source(
    inst: InstanceConfig,
    mut ctx: SourceContext,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let name: Arc<str> = Arc::from(inst.name.as_str());
    let auth_err = |source: ClientError| SourceError::Auth {
        instance: inst.name.clone(),
        source,
    };
    let tokens = token_source(&inst)?;
    let tls = tls_options(&inst).map_err(|e| SourceError::Config {
        instance: inst.name.clone(),
        message: e.to_string(),
    })?;
    let url = crate::credentials::ha_url(&inst).map_err(|e| SourceError::Config {
        instance: inst.name.clone(),
        message: e.to_string(),
    })?;
    let mut builder = WsClient::builder(url)
        .shared_token_source(tokens)
        .tls(tls)
        .retry_initial_connect(true);
    if let Some(bytes) = inst.event_buffer_bytes {
        builder = builder.event_buffer_bytes(bytes);
    }
    let connect = builder.connect();
    let ws = tokio::select! {
        // Transient failures are retried by the client; what comes back is final: a refused
        // token (exit 3), or a problem only the configuration can fix, such as a certificate
        // that does not verify (exit 2).
        r = connect => r.map_err(|e| {
            if e.is_final() {
                auth_err(e)
            } else {
                SourceError::Config {
                    instance: inst.name.clone(),
                    message: e.to_string(),
                }
            }
        })?,
        _ = stop.changed() => return Ok(()),
    };
    tracing::info!(instance = %name, ha_version = ?ws.ha_version(), "connected to Home Assistant");
    let event_type = match inst.subscribe {
        Subscribe::StateChanged => Some("state_changed"),
        Subscribe::All => None,
    };
    // The gap at start runs from the newest row stored before subscribing: read after, it could
    // be a live row of this run, and a long downtime would go unfilled. It is put on record
    // before any live row can be stored, for the same reason (see `store::gaps::open_gap`).
    // With nothing stored yet (a first start) and no gap on record there is nothing to fill: a
    // start gap "measured when filled" would run from this run's own first live rows and read
    // them again.
    let mut start_gap = None;
    if let (Some(since), Some(_)) = (ctx.fleet_start, &ctx.backfill) {
        start_gap = Some(Some(since));
    } else if ctx.backfill.is_some() {
        start_gap = match crate::store::gaps::newest_stored(&ctx.db, &name).await {
            Ok(Some(since)) => {
                record_gap(&ctx, &name, since).await;
                Some(Some(since))
            }
            Ok(None) => match crate::store::gaps::open_gaps(&ctx.db, &name).await {
                Ok((None, _)) => None,
                _ => Some(None),
            },
            Err(e) => {
                tracing::warn!(instance = %name, %e, "cannot read the newest stored row; the gap at start is measured when it is filled");
                Some(None)
            }
        };
    }
    let mut conn = ws.connection_events();
    let mut events = ws.subscribe_events(event_type).await.map_err(|e| match e {
        ClientError::CommandUnauthorized { .. } => SourceError::Config {
            instance: inst.name.clone(),
            message: "subscribe = \"all\" needs an admin user; use subscribe = \"state_changed\" \
                      (the default) with a non-admin user, or a token of an admin"
                .into(),
        },
        other => auth_err(other),
    })?;
    // Connected means receiving: only now is every new change on its way to the store.
    ctx.health
        .set_connected_as(&name, ctx.generation, true, ws.ha_version());
    if let Some(live) = ctx.live.take() {
        let _ = live.send(());
    }
    // Subscribed first, so nothing new is missed; then the gap since the last stored row is read.
    let (gap_tx, gap_rx) = mpsc::channel::<crate::history::gap_fill::Gap>(16);
    // A set, so that it is aborted on every way out, early returns included: the worker holds a
    // sender of the writer's queue, and the writer ends only when every sender is gone.
    let mut backfill_task = tokio::task::JoinSet::new();
    if let Some(config) = ctx.backfill.clone() {
        let backfiller = crate::history::gap_fill::Backfiller {
            ws: ws.clone(),
            instance: name.clone(),
            db: ctx.db.clone(),
            filter: ctx.filter.clone(),
            attributes: ctx.attributes.clone(),
            tx: ctx.tx.clone(),
            config,
        };
        backfill_task.spawn(backfiller.run(gap_rx));
        if let Some(since_us) = start_gap {
            let _ = gap_tx.try_send(crate::history::gap_fill::Gap { since_us });
        }
    }
    // HA's statistics: read the gap now, then after each compilation (see
    // `history::statistics`). Its wake-up channel tells it of reconnects.
    let (stats_wake, stats_wake_rx) = mpsc::channel(4);
    if inst.mirrors_statistics() {
        let mirror = crate::history::statistics::StatisticsMirror {
            ws: ws.clone(),
            instance: name.clone(),
            db: ctx.db.clone(),
            tx: ctx.tx.clone(),
        };
        backfill_task.spawn(mirror.run(stats_wake_rx));
    }
    // HA's registries: read now, after each change and after each reconnect.
    let (registry_wake, registry_wake_rx) = mpsc::channel(4);
    if inst.keeps_registry() {
        let mirror = crate::registry::RegistryMirror {
            ws: ws.clone(),
            instance: name.clone(),
            db: ctx.db.clone(),
        };
        backfill_task.spawn(mirror.run(registry_wake_rx));
    }
    let received =
        metrics::counter!("ha_ingestor_events_received_total", "instance" => name.to_string());
    let filtered = metrics::counter!("ha_ingestor_events_dropped_total", "instance" => name.to_string(), "reason" => "filtered");
    let invalid = metrics::counter!("ha_ingestor_events_dropped_total", "instance" => name.to_string(), "reason" => "invalid");
    let mut burst = Vec::with_capacity(256);
    // When the last connection event was read: connection events that were missed (a lagging
    // reader) happened after it, so a gap from there is safe.
    let mut conn_read_at = SystemTime::now();
    let stopped = loop {
        tokio::select! {
            // Connection events first: a gap is put on record before any event from after it.
            biased;
            _ = stop.changed() => break true,
            change = conn.recv() => match change.inspect(|_| conn_read_at = SystemTime::now()) {
                Ok(ConnectionEvent::Disconnected { reason, .. }) => {
                    ctx.health.set_connected_as(&name, ctx.generation, false, None);
                    tracing::warn!(instance = %name, %reason, "disconnected from Home Assistant");
                }
                Ok(ConnectionEvent::Reconnected { gap_start, gap_end }) => {
                    ctx.health.set_connected_as(&name, ctx.generation, true, ws.ha_version());
                    metrics::counter!("ha_ingestor_reconnects_total", "instance" => name.to_string()).increment(1);
                    metrics::counter!("ha_ingestor_gaps_detected_total", "instance" => name.to_string()).increment(1);
                    let secs = gap_end.duration_since(gap_start).unwrap_or_default().as_secs_f64();
                    let since = gap_start.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as i64).ok();
                    gap_found(&ctx, &name, &gap_tx, since).await;
                    let _ = stats_wake.try_send(crate::history::statistics::Wake::Reconnected);
                    let _ = registry_wake.try_send(());
                    tracing::warn!(instance = %name, gap_seconds = secs, "reconnected; events in the gap were not received");
                }
                Ok(ConnectionEvent::EventsDropped { total, .. }) => {
                    // The dropped events are the newest at the time of the report, but rows stored
                    // after them could make the newest stored row misleading: read a minute back.
                    let since = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_micros() as i64 - 60_000_000)
                        .ok();
                    gap_found(&ctx, &name, &gap_tx, since).await;
                    metrics::counter!("ha_ingestor_events_dropped_total", "instance" => name.to_string(), "reason" => "buffer_overflow").absolute(total);
                    metrics::counter!("ha_ingestor_gaps_detected_total", "instance" => name.to_string()).increment(1);
                }
                Ok(ConnectionEvent::AuthFailed { message }) => {
                    ctx.health.set_connected_as(&name, ctx.generation, false, None);
                    return Err(auth_err(ClientError::AuthInvalid { message }));
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(instance = %name, missed = n, "connection events were missed; reading the time since back from HA's history");
                    let since = conn_read_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as i64).ok();
                    gap_found(&ctx, &name, &gap_tx, since).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
            // A burst of events costs one wake-up, not one per event.
            n = events.recv_many(&mut burst, 256) => {
                if n == 0 {
                    // The client stopped for good (auth revoked): the state says why.
                    return Err(auth_err(ClientError::AuthInvalid { message: "the subscription ended".into() }));
                }
                received.increment(n as u64);
                if !forward(&name, &ctx, &mut burst, &filtered, &invalid).await {
                    break false; // the writer is gone: shutting down
                }
            }
        }
    };
    // Rows it already handed over are in the writer's queue and get committed.
    backfill_task.abort_all();
    ws.close();
    if stopped {
        // So are the events the subscription received and had not passed on yet (the writer may
        // have been slow): after a reload's hand-over they came before the new subscription,
        // which never sees them. The closed connection ends the stream once they are taken.
        let drain = async {
            loop {
                let n = events.recv_many(&mut burst, 256).await;
                received.increment(n as u64);
                if n == 0 || !forward(&name, &ctx, &mut burst, &filtered, &invalid).await {
                    break;
                }
            }
        };
        if tokio::time::timeout(DRAIN_LIMIT, drain).await.is_err() {
            tracing::warn!(instance = %name, "the closed subscription did not end in time; events still in it are not stored");
        }
    }
    ctx.health
        .set_connected_as(&name, ctx.generation, false, None);
    Ok(())
}

/// How long a stopped source may take to pass on what its subscription still holds.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Converts and hands `burst`'s events to the writer, emptying it; false when the writer is gone.
async fn forward(
    name: &Arc<str>,
    ctx: &SourceContext,
    burst: &mut Vec<ha_client::ws::Event>,
    filtered: &metrics::Counter,
    invalid: &metrics::Counter,
) -> bool {
    for event in burst.drain(..) {
        match to_record(name, &event, ctx) {
            Ok(Some(record)) => {
                if ctx.tx.send(record).await.is_err() {
                    return false;
                }
            }
            Ok(None) => filtered.increment(1),
            Err(e) => {
                invalid.increment(1);
                tracing::warn!(instance = %name, %e, "skipping an event that cannot be parsed");
            }
        }
    }
    true
}

/// A gap that began at `since_us`: put on record, then handed to the backfill worker.
async fn gap_found(
    ctx: &SourceContext,
    name: &str,
    gaps: &mpsc::Sender<crate::history::gap_fill::Gap>,
    since_us: Option<i64>,
) {
    if let (Some(since), Some(_)) = (since_us, &ctx.backfill) {
        record_gap(ctx, name, since).await;
    }
    let _ = gaps.try_send(crate::history::gap_fill::Gap { since_us });
}

/// Puts a gap on record (see `store::gaps::open_gap`). A failure is logged: the fill still runs now,
/// only a restart before it ends would not know of the gap.
async fn record_gap(ctx: &SourceContext, name: &str, since_us: i64) {
    if let Err(e) = crate::store::gaps::open_gap(&ctx.db, name, since_us).await {
        tracing::error!(instance = %name, %e, "cannot record the gap; if the ingestor stops before it is filled, run `ha-ingestor backfill --since` for that time");
    }
}

/// Turns an event into a record; `None` when filtered out.
pub fn to_record(
    instance: &Arc<str>,
    event: &Event,
    ctx: &SourceContext,
) -> Result<Option<Record>, String> {
    convert(instance, event.raw(), &ctx.filter, &ctx.attributes)
}

/// The conversion itself, on the event's JSON text.
pub fn convert(
    instance: &Arc<str>,
    raw: &str,
    filter: &EntityFilter,
    attributes: &AttributeRules,
) -> Result<Option<Record>, String> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        event_type: &'a str,
    }
    // One pass over the JSON for the common case: a `state_changed` event parses straight into the
    // borrowed type. Only when that fails is the event type read on its own (a separate pre-parse
    // of the type would scan every event twice).
    let e = match serde_json::from_str::<StateChangedRef<'_>>(raw) {
        Ok(e) => e,
        Err(parse_error) => {
            let head: Head<'_> = serde_json::from_str(raw).map_err(|e| e.to_string())?;
            if head.event_type != "state_changed" {
                return other_event(instance, raw).map(Some);
            }
            return Err(parse_error.to_string());
        }
    };
    if !filter.allows(e.entity_id) {
        return Ok(None);
    }
    let Some(s) = e.new_state else {
        return Ok(None); // the entity was removed; there is no state to store
    };
    let policy = attributes.for_entity(e.entity_id);
    let attrs_text = match s.attributes {
        None => "{}".to_string(),
        Some(raw_attrs) => policy
            .retain_json(raw_attrs.get())
            .map_err(|e| e.to_string())?
            .into_owned(),
    };
    let time = |t: &str, what: &str| parse_time_us(t).ok_or_else(|| format!("bad {what} '{t}'"));
    let context = s.context;
    Ok(Some(Record::State(StateRow {
        instance: instance.clone(),
        entity_id: e.entity_id.to_string(),
        value: numeric_value(&s.state),
        state: s.state.into_owned(),
        attributes: attrs_text,
        last_changed_us: time(s.last_changed, "last_changed")?,
        last_updated_us: time(s.last_updated, "last_updated")?,
        time_fired_us: e.time_fired.and_then(parse_time_us),
        context_id: context.map(|c| c.id.to_owned()),
        context_user_id: context.and_then(|c| c.user_id).map(str::to_owned),
        context_parent_id: context.and_then(|c| c.parent_id).map(str::to_owned),
    })))
}

fn other_event(instance: &Arc<str>, raw: &str) -> Result<Record, String> {
    let e: ha_client::ws::HaEvent = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    let fired = e
        .time_fired
        .as_deref()
        .and_then(parse_time_us)
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or_default()
        });
    Ok(Record::Event(EventRow {
        instance: instance.clone(),
        event_type: e.event_type,
        data: e.data.to_string(),
        time_fired_us: fired,
        context_id: e.context.map(|c| c.id),
        origin: e.origin,
    }))
}

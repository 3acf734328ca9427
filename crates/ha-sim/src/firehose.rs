//! The firehose: the generator's `state_changed` sequence, serialized once, replayed with fresh
//! timestamps. It costs the simulator a copy and three timestamps per event instead of a world
//! update, a history record and a JSON build, so a benchmark measures the client, not the simulator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::EntitySeed;
use crate::generator::{GeneratorHandle, next_state, world_targets};
use crate::hub::compressed_change;
use crate::time::{epoch_f64, now_us, write_iso};
use crate::world::{Attrs, Context, Rng, World, push_f64, state_changed_body};
use crate::{Inner, lock};

/// Placeholder clock of the templates: event `i` is built at `BASE_US + i`, whose ISO and epoch
/// forms occur nowhere else in its JSON, so they mark where the send time goes.
const BASE_US: i64 = 1_600_000_000_000_001;
/// The longest sequence (keeps `BASE_US + i` inside one second).
const MAX_LEN: usize = 900_000;

/// One event as text pieces with the time slots between them.
struct Pieces {
    parts: Vec<String>,
    len: usize,
}

impl Pieces {
    fn split(text: &str, marker: &str) -> Pieces {
        let parts: Vec<String> = text.split(marker).map(str::to_owned).collect();
        Pieces {
            len: parts.iter().map(String::len).sum(),
            parts,
        }
    }

    fn render(&self, time: &str) -> String {
        let mut s = String::with_capacity(self.len + time.len() * (self.parts.len() - 1));
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                s.push_str(time);
            }
            s.push_str(p);
        }
        s
    }
}

struct Template {
    entity_id: Arc<str>,
    /// The `state_changed` event; slots: `time_fired`, the new state's `last_changed` and
    /// `last_updated`.
    full: Pieces,
    /// The `subscribe_entities` diff; slot: `lc`.
    compressed: Pieces,
}

/// A seeded `state_changed` sequence, pre-serialized. It is a closed loop: after the generator's
/// steps, every entity is set back to its initial state, so replaying it again and again keeps
/// `subscribe_entities` diffs consistent with the full events. Build it from the same entities as
/// the simulator it runs on, and start it before anything else changes that simulator's world.
pub struct FirehoseTemplates {
    events: Vec<Template>,
}

impl FirehoseTemplates {
    /// Runs the generator for `steps` events (at most 900,000) over `entities`, then closes the
    /// loop. Same inputs, same sequence.
    pub fn build(entities: &[EntitySeed], seed: u64, steps: usize) -> Arc<FirehoseTemplates> {
        let steps = steps.clamp(1, MAX_LEN - entities.len());
        // The seeds are set before the templates' own clock starts (BASE_US).
        let mut w = World::new_at(entities, seed, 1, BASE_US - 1_000_000);
        let initial = w.states.clone();
        let mut targets = world_targets(&w);
        let mut rng = Rng(seed);
        let mut events = Vec::with_capacity(steps + targets.len());
        let mut push = |w: &mut World, entity_id: &str, state: String, attrs: Arc<Attrs>| {
            let at = BASE_US + events.len() as i64;
            let ctx = w.new_context(at, None);
            let Some(ch) = w.set(entity_id, state, attrs, true, ctx, at) else {
                return;
            };
            let mut iso = String::new();
            write_iso(&mut iso, at);
            let mut epoch = String::new();
            push_f64(&mut epoch, epoch_f64(at));
            let new = ch.new.as_deref();
            let empty = Context {
                id: String::new(),
                parent_id: None,
                user_id: None,
            };
            let full = state_changed_body(
                &ch.entity_id,
                ch.old.as_deref(),
                new,
                at,
                new.map_or(&empty, |s| &s.context),
            );
            events.push(Template {
                entity_id: ch.entity_id.clone(),
                full: Pieces::split(&full, &iso),
                compressed: Pieces::split(&compressed_change(&ch), &epoch),
            });
        };
        if !targets.is_empty() {
            for _ in 0..steps {
                let i = (rng.next_u64() % targets.len() as u64) as usize;
                let t = &mut targets[i];
                let Some(cur) = w.states.get(t.entity_id.as_str()).cloned() else {
                    continue;
                };
                let (state, attrs) = next_state(t, &cur, &mut rng);
                push(&mut w, &t.entity_id, state, attrs);
            }
        }
        for t in &targets {
            let (Some(cur), Some(first)) = (
                w.states.get(t.entity_id.as_str()).cloned(),
                initial.get(t.entity_id.as_str()),
            ) else {
                continue;
            };
            if cur.state != first.state || cur.attrs.map != first.attrs.map {
                push(
                    &mut w,
                    &t.entity_id,
                    first.state.clone(),
                    first.attrs.clone(),
                );
            }
        }
        Arc::new(FirehoseTemplates { events })
    }

    /// Events in one round of the loop.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are none (no entity the generator changes).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The entity of event `i` (counted from the start of the replay).
    pub fn entity_id(&self, i: u64) -> &str {
        &self.events[(i % self.events.len() as u64) as usize].entity_id
    }

    /// Event `i`'s `state_changed` body with `time_us` as its time (for tests and benchmarks).
    pub fn event_json(&self, i: u64, time_us: i64) -> String {
        let mut iso = String::new();
        write_iso(&mut iso, time_us);
        self.events[(i % self.events.len() as u64) as usize]
            .full
            .render(&iso)
    }

    /// Average size of a `state_changed` body, in bytes.
    pub fn average_event_bytes(&self) -> usize {
        self.events.iter().map(|t| t.full.len + 96).sum::<usize>() / self.events.len().max(1)
    }
}

/// How a firehose runs.
#[derive(Clone, Debug, Default)]
pub struct FirehoseOptions {
    /// Events per second; `None`: as fast as the subscribers' sockets take them (pausing while a
    /// connection's queue is over half of `max_pending`).
    pub rate: Option<u64>,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// Flow control from outside: never emit more events in all than this counter says (a consumer
    /// raises it as it catches up). Pacing by `rate` starts when the first credit arrives.
    pub credit: Option<Arc<AtomicU64>>,
}

pub(crate) fn start(
    inner: Arc<Inner>,
    templates: Arc<FirehoseTemplates>,
    opts: FirehoseOptions,
) -> GeneratorHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let emitted = Arc::new(AtomicU64::new(0));
    let (done_tx, done) = watch::channel(false);
    let (s, e) = (stop.clone(), emitted.clone());
    let rt = inner.rt.clone();
    rt.spawn(async move {
        run(&inner, &templates, &opts, &s, &e).await;
        let _ = done_tx.send(true);
    });
    GeneratorHandle::new(stop, emitted, done)
}

async fn run(
    inner: &Inner,
    templates: &FirehoseTemplates,
    opts: &FirehoseOptions,
    stop: &AtomicBool,
    emitted: &AtomicU64,
) {
    if templates.is_empty() {
        return;
    }
    let limit = opts.count.unwrap_or(u64::MAX);
    let high = (inner.cfg.max_pending / 2).max(1);
    // Pacing restarts from (instant, events) whenever credit held the firehose back.
    let mut paced_from: Option<(Instant, u64)> = None;
    let mut n = 0u64;
    let mut last_us = 0i64;
    let (mut iso, mut epoch) = (String::new(), String::new());
    while n < limit && !stop.load(Ordering::Acquire) && !inner.stopped.load(Ordering::Acquire) {
        let allowed = opts
            .credit
            .as_ref()
            .map_or(u64::MAX, |c| c.load(Ordering::Acquire));
        if allowed <= n {
            paced_from = None;
            tokio::time::sleep(Duration::from_micros(500)).await;
            continue;
        }
        let batch = match opts.rate {
            Some(r) => {
                let (t0, n0) = *paced_from.get_or_insert((Instant::now(), n));
                let due = n0 + (t0.elapsed().as_secs_f64() * r as f64) as u64;
                if due <= n {
                    let next = Duration::from_secs_f64((n - n0 + 1) as f64 / r.max(1) as f64);
                    tokio::time::sleep_until((t0 + next).into()).await;
                    continue;
                }
                (due - n).min(1024)
            }
            None => {
                if inner.hub.max_pending() > high {
                    let wait = inner.drained.notified();
                    if inner.hub.max_pending() > high {
                        let _ = tokio::time::timeout(Duration::from_millis(5), wait).await;
                    }
                    continue;
                }
                256
            }
        }
        .min(limit - n)
        .min(allowed - n);
        {
            // Dispatch order is event order, as the world lock guarantees for the generator.
            let _w = lock(&inner.world);
            for _ in 0..batch {
                let t = &templates.events[(n % templates.events.len() as u64) as usize];
                // Strictly increasing per firehose: every (entity, last_updated) is unique.
                last_us = now_us().max(last_us + 1);
                iso.clear();
                write_iso(&mut iso, last_us);
                let (iso, epoch) = (&iso, &mut epoch);
                inner.hub.dispatch_prebuilt(
                    || t.full.render(iso),
                    || {
                        epoch.clear();
                        push_f64(epoch, epoch_f64(last_us));
                        t.compressed.render(epoch)
                    },
                    &t.entity_id,
                );
                n += 1;
            }
        }
        emitted.store(n, Ordering::Release);
        inner.stats.add(&inner.stats.events_generated, batch);
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_seeded_closed_and_carry_the_send_time() {
        let entities = crate::default_entities();
        let a = FirehoseTemplates::build(&entities, 7, 500);
        let b = FirehoseTemplates::build(&entities, 7, 500);
        assert!(a.len() >= 500);
        assert_eq!(a.len(), b.len());
        let new_state = |t: &FirehoseTemplates, i: u64| -> serde_json::Value {
            let v: serde_json::Value = serde_json::from_str(&t.event_json(i, BASE_US)).unwrap();
            v["data"]["new_state"].clone()
        };
        for i in 0..a.len() as u64 {
            assert_eq!(a.entity_id(i), b.entity_id(i));
            assert_eq!(new_state(&a, i), new_state(&b, i));
        }
        let body: serde_json::Value =
            serde_json::from_str(&a.event_json(3, 1_700_000_000_123_456)).unwrap();
        let iso = "2023-11-14T22:13:20.123456+00:00";
        assert_eq!(body["time_fired"], iso);
        assert_eq!(body["data"]["new_state"]["last_updated"], iso);
        assert_eq!(body["data"]["new_state"]["last_changed"], iso);
        assert_eq!(body["data"]["entity_id"], a.entity_id(3));
        // Closed loop: the last change of each entity in a round ends where the round started.
        let initial = World::new(&entities, 7, 1).states;
        let mut last = std::collections::HashMap::new();
        for i in 0..a.len() as u64 {
            let v: serde_json::Value = serde_json::from_str(&a.event_json(i, BASE_US)).unwrap();
            last.insert(a.entity_id(i).to_string(), v["data"]["new_state"].clone());
        }
        for (id, s) in last {
            let first = &initial[id.as_str()];
            assert_eq!(s["state"], first.state.as_str(), "{id}");
            assert_eq!(
                s["attributes"],
                serde_json::Value::Object(first.attrs.map.clone()),
                "{id}"
            );
        }
        let avg = a.average_event_bytes();
        assert!((400..2000).contains(&avg), "{avg}");
    }
}

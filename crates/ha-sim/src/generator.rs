//! A seeded `state_changed` generator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use crate::world::{Attrs, Rng};
use crate::{Inner, lock};

/// Controls a running generator. Dropping it does not stop the generator; [`GeneratorHandle::stop`]
/// or stopping the simulator does.
pub struct GeneratorHandle {
    stop: Arc<AtomicBool>,
    emitted: Arc<AtomicU64>,
    done: watch::Receiver<bool>,
}

impl GeneratorHandle {
    pub(crate) fn new(
        stop: Arc<AtomicBool>,
        emitted: Arc<AtomicU64>,
        done: watch::Receiver<bool>,
    ) -> Self {
        GeneratorHandle {
            stop,
            emitted,
            done,
        }
    }

    /// Stops the generator.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Events emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Acquire)
    }

    /// Whether it has finished (count reached or stopped).
    pub fn is_finished(&self) -> bool {
        *self.done.borrow()
    }

    /// Waits until it has finished.
    pub async fn wait(&self) {
        let mut rx = self.done.clone();
        let _ = rx.wait_for(|d| *d).await;
    }
}

pub(crate) enum Kind {
    /// The value times 10^decimals.
    Numeric {
        scaled: i64,
        decimals: u32,
    },
    Binary,
    Light,
    Climate,
}

pub(crate) struct Target {
    pub entity_id: String,
    pub kind: Kind,
}

fn targets(inner: &Inner) -> Vec<Target> {
    world_targets(&lock(&inner.world))
}

/// The entities the generator changes, with what kind of change each gets.
pub(crate) fn world_targets(w: &crate::world::World) -> Vec<Target> {
    w.states
        .values()
        .filter_map(|s| {
            let kind = match s.domain() {
                "sensor" => {
                    let value: f64 = s.state.parse().ok()?;
                    let decimals =
                        s.state.split_once('.').map_or(0, |(_, f)| f.len()).min(6) as u32;
                    let scaled = (value * 10f64.powi(decimals as i32)).round() as i64;
                    Kind::Numeric { scaled, decimals }
                }
                "binary_sensor" => Kind::Binary,
                "light" => Kind::Light,
                "climate" => Kind::Climate,
                _ => return None,
            };
            Some(Target {
                entity_id: s.entity_id.to_string(),
                kind,
            })
        })
        .collect()
}

/// `scaled / 10^decimals` as a decimal string, without float formatting.
fn format_scaled(scaled: i64, decimals: u32) -> String {
    let mut digits = scaled.unsigned_abs().to_string();
    let d = decimals as usize;
    while digits.len() <= d {
        digits.insert(0, '0');
    }
    let mut s = String::with_capacity(digits.len() + 2);
    if scaled < 0 {
        s.push('-');
    }
    let (int, frac) = digits.split_at(digits.len() - d);
    s.push_str(int);
    if d > 0 {
        s.push('.');
        s.push_str(frac);
    }
    s
}

/// One event: picks a target and sets its next state in the locked world.
fn step(inner: &Inner, w: &mut crate::world::World, t: &mut Target, rng: &mut Rng) {
    let now = crate::time::now_us();
    let Some(cur) = w.states.get(t.entity_id.as_str()).cloned() else {
        return;
    };
    let (state, attrs) = next_state(t, &cur, rng);
    let ctx = w.new_context(now, None);
    inner.apply_locked(w, &t.entity_id, state, attrs, true, ctx);
}

/// The next state and attributes of a target whose current state is `cur`.
pub(crate) fn next_state(
    t: &mut Target,
    cur: &crate::world::State,
    rng: &mut Rng,
) -> (String, Arc<Attrs>) {
    match &mut t.kind {
        Kind::Numeric { scaled, decimals } => {
            let delta = (rng.next_u64() % 5) as i64 + 1;
            *scaled += if rng.next_u64() & 1 == 0 {
                delta
            } else {
                -delta
            };
            (format_scaled(*scaled, *decimals), cur.attrs.clone())
        }
        Kind::Binary => (
            (if cur.state == "on" { "off" } else { "on" }).to_string(),
            cur.attrs.clone(),
        ),
        Kind::Light => {
            if cur.state != "on" {
                let mut a = cur.attrs.map.clone();
                a.insert("brightness".into(), 128.into());
                a.insert("color_mode".into(), "color_temp".into());
                ("on".to_string(), Attrs::new(Value::Object(a)))
            } else if rng.next_u64().is_multiple_of(8) {
                let mut a = cur.attrs.map.clone();
                a.insert("brightness".into(), Value::Null);
                a.insert("color_mode".into(), Value::Null);
                ("off".to_string(), Attrs::new(Value::Object(a)))
            } else {
                let mut a = cur.attrs.map.clone();
                a.insert("brightness".into(), (1 + rng.next_u64() % 255).into());
                ("on".to_string(), Attrs::new(Value::Object(a)))
            }
        }
        Kind::Climate => {
            let mut a = cur.attrs.map.clone();
            let t = a
                .get("current_temperature")
                .and_then(Value::as_f64)
                .unwrap_or(20.0);
            let nt = ((t * 10.0).round() + if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 }) / 10.0;
            a.insert("current_temperature".into(), nt.into());
            (cur.state.clone(), Attrs::new(Value::Object(a)))
        }
    }
}

/// Starts a generator task on the simulator's runtime.
pub fn start(inner: Arc<Inner>, rate: Option<u64>, count: Option<u64>) -> GeneratorHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let emitted = Arc::new(AtomicU64::new(0));
    let (done_tx, done) = watch::channel(false);
    let (s, e) = (stop.clone(), emitted.clone());
    let rt = inner.rt.clone();
    rt.spawn(async move {
        run(&inner, rate, count, &s, &e).await;
        let _ = done_tx.send(true);
    });
    GeneratorHandle {
        stop,
        emitted,
        done,
    }
}

async fn run(
    inner: &Inner,
    rate: Option<u64>,
    count: Option<u64>,
    stop: &AtomicBool,
    emitted: &AtomicU64,
) {
    let mut ts = targets(inner);
    if ts.is_empty() {
        return;
    }
    let mut rng = Rng(inner.cfg.seed);
    let limit = count.unwrap_or(u64::MAX);
    let started = Instant::now();
    let mut n = 0u64;
    let high = (inner.cfg.max_pending / 2).max(1);
    while n < limit && !stop.load(Ordering::Acquire) && !inner.stopped.load(Ordering::Acquire) {
        let batch = match rate {
            Some(r) => {
                let due = (started.elapsed().as_secs_f64() * r as f64) as u64;
                if due <= n {
                    let next = Duration::from_secs_f64((n + 1) as f64 / r.max(1) as f64);
                    tokio::time::sleep_until((started + next).into()).await;
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
        .min(limit - n);
        {
            let mut w = lock(&inner.world);
            for _ in 0..batch {
                let i = (rng.next_u64() % ts.len() as u64) as usize;
                step(inner, &mut w, &mut ts[i], &mut rng);
            }
        }
        n += batch;
        emitted.store(n, Ordering::Release);
        inner.stats.add(&inner.stats.events_generated, batch);
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn scaled_numbers() {
        assert_eq!(super::format_scaled(205, 1), "20.5");
        assert_eq!(super::format_scaled(-5, 1), "-0.5");
        assert_eq!(super::format_scaled(1234567, 2), "12345.67");
        assert_eq!(super::format_scaled(48, 0), "48");
    }
}

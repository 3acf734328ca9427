//! Measures `state_changed` events per second delivered by the simulator (on one single-threaded
//! runtime, i.e. one core) to one subscribed tokio-tungstenite client (on another thread) over
//! loopback.
//!
//! `cargo run --release -p ha-sim --example throughput -- [EVENTS] [coalesce|plain] [small|house]`
//!
//! `small` (the default) uses ten sensors with two attributes each (events of about 500 bytes);
//! `house` uses the default entities (lights and climate make events of about 1 kB).

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use ha_sim::{Sim, SimConfig};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let coalesce = args.next().as_deref() != Some("plain");
    let small = args.next().as_deref() != Some("house");
    let mut config = SimConfig::default();
    if small {
        config.entities = (0..10)
            .map(|i| ha_sim::EntitySeed {
                entity_id: format!("sensor.s{i}"),
                state: "20.5".into(),
                attributes: json!({"unit_of_measurement": "°C", "device_class": "temperature"}),
            })
            .collect();
    }

    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let sim = Sim::start(config).await.expect("start");
            addr_tx.send(sim.ws_url()).expect("send url");
            let _ = go_rx.await;
            let _g = sim.start_generator(None, Some(n));
            let _ = stop_rx.await;
            let stats = sim.stats();
            sim.shutdown().await;
            stats
        })
    });
    let url = addr_rx.recv().expect("url");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (elapsed, bytes, frames) = rt.block_on(async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("connect");
        ws.next().await.expect("auth_required").expect("frame");
        ws.send(Message::Text(json!({"type": "auth", "access_token": "sim-admin-token"}).to_string().into())).await.expect("send");
        ws.next().await.expect("auth_ok").expect("frame");
        if coalesce {
            ws.send(Message::Text(json!({"id": 1, "type": "supported_features", "features": {"coalesce_messages": 1}}).to_string().into()))
                .await
                .expect("send");
            ws.next().await.expect("result").expect("frame");
        }
        ws.send(Message::Text(json!({"id": 2, "type": "subscribe_events", "event_type": "state_changed"}).to_string().into()))
            .await
            .expect("send");
        ws.next().await.expect("result").expect("frame");
        go_tx.send(()).expect("go");
        let (mut got, mut bytes, mut frames) = (0u64, 0u64, 0u64);
        let mut t0 = None;
        while got < n {
            match ws.next().await.expect("stream ended").expect("ws error") {
                Message::Text(t) => {
                    t0.get_or_insert_with(Instant::now);
                    let s = t.as_str();
                    bytes += s.len() as u64;
                    frames += 1;
                    got += s.matches("{\"type\":\"event\"").count() as u64;
                }
                _ => continue,
            }
        }
        (t0.map(|t| t.elapsed()).unwrap_or_default(), bytes, frames)
    });
    let _ = stop_tx.send(());
    let stats = server.join().expect("server thread");
    let secs = elapsed.as_secs_f64();
    println!(
        "{n} events in {secs:.3} s = {:.0} events/s ({:.1} MB/s, {frames} frames, avg event {} bytes, coalesce={coalesce}, small={small}); sim sent {} events",
        n as f64 / secs,
        bytes as f64 / secs / 1e6,
        bytes / n.max(1),
        stats.events_sent
    );
}

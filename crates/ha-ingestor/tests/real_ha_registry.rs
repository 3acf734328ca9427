//! HA's registries against a real HA, with the ingestor running as a non-admin user: an admin
//! creates an area (on a new floor, on 2026.2.3) and an `input_boolean` (through `input_boolean/create`, so it
//! is in the entity registry) and puts the entity in the area; the ingestor stores them and
//! `entity_metadata` shows the entity's area (and floor); the admin renames the area and the new
//! name arrives within seconds.
//!
//! Run against HA 2024.3.3 (the harness) and 2026.2.3 (the current release). Both list floors and
//! labels to a non-admin; 2024.3.3 puts no area on a floor and refuses a non-admin the `floor_registry_updated` and
//! `label_registry_updated` events (its allowlist predates them), 2026.2.3 allows them.
#![cfg(feature = "real-ha")]

use std::path::Path;
use std::time::Duration;

use ha_client::Secret;
use ha_client::auth::StaticToken;
use ha_client::ws::WsClient;
use ha_ingestor::config::{Config, FileConfig, InstanceConfig, Overrides};
use ha_testenv::HaTarget;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_area_and_its_rename_reach_the_view_on_the_harness_ha() {
    let ha = HaTarget::harness();
    assert_eq!(ha.version, "2024.3.3");
    let admin = admin(&ha).await;
    let user = user(&ha).await;
    user.list_floors()
        .await
        .expect("floors listed to a non-admin");
    user.list_labels()
        .await
        .expect("labels listed to a non-admin");
    for event in ["floor_registry_updated", "label_registry_updated"] {
        match user.subscribe_events(Some(event)).await {
            Err(ha_client::Error::CommandUnauthorized { .. }) => {}
            other => panic!(
                "HA 2024.3.3, {event} as a non-admin: {:?}",
                other.map(|_| "subscribed")
            ),
        }
    }
    area_round_trip(&ha, admin, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_area_and_its_rename_reach_the_view_on_the_current_ha() {
    let ha = HaTarget::current();
    assert!(ha.version.starts_with("2026."), "HA {}", ha.version);
    let admin = admin(&ha).await;
    let user = user(&ha).await;
    user.list_floors()
        .await
        .expect("floors listed to a non-admin");
    user.list_labels()
        .await
        .expect("labels listed to a non-admin");
    for event in ["floor_registry_updated", "label_registry_updated"] {
        user.subscribe_events(Some(event)).await.expect(event);
    }
    area_round_trip(&ha, admin, true).await;
}

async fn admin(ha: &HaTarget) -> WsClient {
    WsClient::builder(ha.url.as_str())
        .token_source(StaticToken::new(ha.admin_token.clone()))
        .connect()
        .await
        .unwrap()
}

async fn user(ha: &HaTarget) -> WsClient {
    WsClient::builder(ha.url.as_str())
        .token_source(StaticToken::new(ha.user_token.clone()))
        .connect()
        .await
        .unwrap()
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{}", n % 1_000_000_000)
}

/// (entity_id, area_id, area, floor) of `entity_id` in `entity_metadata`, if there.
type Meta = (String, Option<String>, Option<String>, Option<String>);

fn metadata_of(db: &Path, entity_id: &str) -> Option<Meta> {
    if !db.exists() {
        return None;
    }
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row(
        "SELECT entity_id, area_id, area, floor FROM entity_metadata
         WHERE instance = 'real' AND entity_id = ?1",
        [entity_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .ok()
}

async fn wait_for(db: &Path, entity_id: &str, want: Meta) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = metadata_of(db, entity_id);
        if got.as_ref() == Some(&want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "entity_metadata of {entity_id}: got {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With `floors`, the area is put on a new floor (HA 2024.3.3 lists floors but its
/// `config/area_registry/create` takes no `floor_id`: `extra keys not allowed`).
async fn area_round_trip(ha: &HaTarget, admin: WsClient, floors: bool) {
    let tag = unique("reg");
    let floor_id = match floors {
        true => {
            let floor: Value = admin
                .command(
                    json!({"type": "config/floor_registry/create", "name": format!("Floor {tag}")}),
                )
                .await
                .unwrap();
            Some(floor["floor_id"].as_str().unwrap().to_string())
        }
        false => None,
    };
    let mut create_area =
        json!({"type": "config/area_registry/create", "name": format!("Probe {tag}")});
    if let Some(floor_id) = &floor_id {
        create_area["floor_id"] = json!(floor_id);
    }
    let area: Value = admin.command(create_area).await.unwrap();
    let area_id = area["area_id"].as_str().unwrap().to_string();
    let helper: Value = admin
        .command(json!({"type": "input_boolean/create", "name": format!("Switch {tag}")}))
        .await
        .unwrap();
    let entity_id = format!("input_boolean.{}", helper["id"].as_str().unwrap());
    let _: Value = admin
        .command(json!({"type": "config/entity_registry/update", "entity_id": entity_id, "area_id": area_id}))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let instance = InstanceConfig::with_token("real", &ha.url, Secret::new(ha.user_token.clone()));
    let config = Config::resolve(
        FileConfig {
            instances: vec![instance],
            statistics: Some(false),
            ..FileConfig::default()
        },
        Overrides {
            db: Some(db.clone()),
            metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Overrides::default()
        },
    )
    .unwrap();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(ha_ingestor::run::run(
        config,
        metrics,
        async {
            let _ = stop_rx.await;
        },
        Some(ready_tx),
    ));
    ready_rx.await.expect("service started");

    wait_for(
        &db,
        &entity_id,
        (
            entity_id.clone(),
            Some(area_id.clone()),
            Some(format!("Probe {tag}")),
            floor_id.as_ref().map(|_| format!("Floor {tag}")),
        ),
    )
    .await;
    let _: Value = admin
        .command(json!({"type": "config/area_registry/update", "area_id": area_id, "name": format!("Renamed {tag}")}))
        .await
        .unwrap();
    wait_for(
        &db,
        &entity_id,
        (
            entity_id.clone(),
            Some(area_id.clone()),
            Some(format!("Renamed {tag}")),
            floor_id.as_ref().map(|_| format!("Floor {tag}")),
        ),
    )
    .await;

    stop.send(()).unwrap();
    handle.await.unwrap().expect("clean shutdown");
    let _: Value = admin
        .command(json!({"type": "input_boolean/delete", "input_boolean_id": helper["id"]}))
        .await
        .unwrap();
    let _: Value = admin
        .command(json!({"type": "config/area_registry/delete", "area_id": area_id}))
        .await
        .unwrap();
    if let Some(floor_id) = floor_id {
        let _: Value = admin
            .command(json!({"type": "config/floor_registry/delete", "floor_id": floor_id}))
            .await
            .unwrap();
    }
}

//! HA's registries against the simulator, with the ingestor running as a non-admin user: the
//! registries are stored at start and the `entity_metadata` view gives each entity its area (its
//! own, else its device's), floor, device and labels; a rename or a new area reaches the view
//! within seconds of HA's event; a reconnect reads everything again (changes missed while away);
//! an HA without floor and label registries works; an instance with `registry = false` stores
//! nothing. An InfluxDB sink (clean schema) with `metadata_tags` tags each point with the
//! entity's area, floor, device, labels and name, and a rename in HA reaches the next points.

use std::path::Path;
use std::time::Duration;

use ha_client::Secret;
use ha_ingestor::config::{Config, FileConfig, InstanceConfig, Overrides};
use ha_sim::registry::Kind;
use ha_sim::{Sim, SimConfig};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

struct Service {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), ha_ingestor::run::RunError>>,
}

fn instance(sim: &Sim, name: &str, registry: Option<bool>) -> InstanceConfig {
    let mut instance = InstanceConfig::with_token(
        name,
        &sim.url(),
        Secret::new(sim.config().user_token.clone()),
    );
    instance.registry = registry;
    instance
}

async fn start(sim: &Sim, db: &Path) -> Service {
    start_instances(db, vec![instance(sim, "sim", None)]).await
}

async fn start_instances(db: &Path, instances: Vec<InstanceConfig>) -> Service {
    start_file(
        db,
        FileConfig {
            instances,
            ..FileConfig::default()
        },
    )
    .await
}

async fn start_file(db: &Path, mut file: FileConfig) -> Service {
    file.statistics = Some(false);
    let config = Config::resolve(
        file,
        Overrides {
            db: Some(db.to_path_buf()),
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
    Service { stop, handle }
}

async fn stop(service: Service) {
    service.stop.send(()).unwrap();
    service.handle.await.unwrap().expect("clean shutdown");
}

/// One row of `entity_metadata` as a user reads it: entity, name, area id, area, floor, device,
/// labels (JSON).
type Row = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

fn row(
    entity_id: &str,
    name: Option<&str>,
    area: Option<(&str, &str)>,
    floor: Option<&str>,
    device: Option<&str>,
    labels: &str,
) -> Row {
    (
        entity_id.into(),
        name.map(Into::into),
        area.map(|a| a.0.into()),
        area.map(|a| a.1.into()),
        floor.map(Into::into),
        device.map(Into::into),
        labels.into(),
    )
}

fn view(db: &Path) -> Vec<Row> {
    if !db.exists() {
        return Vec::new();
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    let Ok(mut stmt) = conn.prepare(
        "SELECT entity_id, name, area_id, area, floor, device, labels FROM entity_metadata
         WHERE instance = 'sim' ORDER BY entity_id",
    ) else {
        return Vec::new(); // not migrated yet
    };
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Polls until the view shows exactly `want`.
async fn wait_view(db: &Path, want: &[Row]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = view(db);
        if got == want {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("entity_metadata:\n got  {got:?}\n want {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A home: a floor, two labels, two areas, a device in the kitchen, an entity in the kitchen
/// through its device, one with its own area, one with neither.
fn furnish(sim: &Sim, floors_and_labels: bool) {
    if floors_and_labels {
        sim.set_registry_entry(
            Kind::Floor,
            "ground",
            json!({"name": "Ground floor", "level": 0}),
        );
        sim.set_registry_entry(Kind::Label, "heat", json!({"name": "Heating"}));
        sim.set_registry_entry(Kind::Label, "crit", json!({"name": "Critical"}));
        sim.set_registry_entry(
            Kind::Area,
            "kitchen",
            json!({"name": "Kitchen", "floor_id": "ground"}),
        );
    } else {
        sim.set_area("kitchen", "Kitchen");
    }
    sim.set_area("hall", "Hall");
    sim.set_registry_entry(
        Kind::Device,
        "dev1",
        json!({"name": "TH-1", "name_by_user": "Kitchen thermometer", "area_id": "kitchen",
               "manufacturer": "Acme", "model": "TH"}),
    );
    let labels = if floors_and_labels {
        json!(["heat", "crit"])
    } else {
        json!(null)
    };
    let mut temp = json!({"original_name": "Temperature", "device_id": "dev1", "platform": "acme"});
    if floors_and_labels {
        temp["labels"] = labels;
    }
    sim.set_registry_entry(Kind::Entity, "sensor.kitchen_temp", temp);
    sim.set_registry_entry(
        Kind::Entity,
        "sensor.kitchen_humidity",
        json!({"original_name": "Humidity", "device_id": "dev1", "area_id": "hall", "platform": "acme"}),
    );
    sim.set_registry_entry(
        Kind::Entity,
        "input_boolean.guest",
        json!({"original_name": "Guest mode"}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_reach_the_view_at_start_and_each_change_within_seconds() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    furnish(&sim, true);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let service = start(&sim, &db).await;
    let guest = row(
        "input_boolean.guest",
        Some("Guest mode"),
        None,
        None,
        None,
        "[]",
    );
    let humidity = |area: (&str, &str)| {
        row(
            "sensor.kitchen_humidity",
            Some("Humidity"),
            Some(area),
            None,
            Some("Kitchen thermometer"),
            "[]",
        )
    };
    wait_view(
        &db,
        &[
            guest.clone(),
            humidity(("hall", "Hall")),
            row(
                "sensor.kitchen_temp",
                Some("Temperature"),
                Some(("kitchen", "Kitchen")),
                Some("Ground floor"),
                Some("Kitchen thermometer"),
                r#"["Heating","Critical"]"#,
            ),
        ],
    )
    .await;

    // The user renames the kitchen, names the sensor, moves the humidity sensor back to its
    // device's area and renames a label.
    sim.set_area("kitchen", "Cooking");
    sim.rename_entity("sensor.kitchen_temp", Some("Stove temperature"));
    sim.set_registry_entry(
        Kind::Entity,
        "sensor.kitchen_humidity",
        json!({"area_id": null}),
    );
    sim.set_registry_entry(Kind::Label, "crit", json!({"name": "Important"}));
    wait_view(
        &db,
        &[
            guest.clone(),
            row(
                "sensor.kitchen_humidity",
                Some("Humidity"),
                Some(("kitchen", "Cooking")),
                Some("Ground floor"),
                Some("Kitchen thermometer"),
                "[]",
            ),
            row(
                "sensor.kitchen_temp",
                Some("Stove temperature"),
                Some(("kitchen", "Cooking")),
                Some("Ground floor"),
                Some("Kitchen thermometer"),
                r#"["Heating","Important"]"#,
            ),
        ],
    )
    .await;

    // The device moves to the hall, the guest switch is removed from the registry.
    sim.set_registry_entry(Kind::Device, "dev1", json!({"area_id": "hall"}));
    sim.remove_registry_entry(Kind::Entity, "input_boolean.guest");
    wait_view(
        &db,
        &[
            humidity(("hall", "Hall")),
            row(
                "sensor.kitchen_temp",
                Some("Stove temperature"),
                Some(("hall", "Hall")),
                None,
                Some("Kitchen thermometer"),
                r#"["Heating","Important"]"#,
            ),
        ],
    )
    .await;
    stop(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_reads_every_registry_again() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    furnish(&sim, true);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let service = start(&sim, &db).await;
    let home = |guest: &str| {
        vec![
            row("input_boolean.guest", Some(guest), None, None, None, "[]"),
            row(
                "sensor.kitchen_humidity",
                Some("Humidity"),
                Some(("hall", "Hall")),
                None,
                Some("Kitchen thermometer"),
                "[]",
            ),
            row(
                "sensor.kitchen_temp",
                Some("Temperature"),
                Some(("kitchen", "Kitchen")),
                Some("Ground floor"),
                Some("Kitchen thermometer"),
                r#"["Heating","Critical"]"#,
            ),
        ]
    };
    wait_view(&db, &home("Guest mode")).await;

    // A change the ingestor never hears of (made while it was away)...
    sim.set_registry_entry_unannounced(
        Kind::Entity,
        "input_boolean.guest",
        json!({"name": "Visitors"}),
    );
    // ...is not read on another registry's event (that reads the area registry only)...
    sim.set_area("attic", "Attic");
    let conn_areas = |db: &Path| -> Vec<String> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut stmt = conn
            .prepare("SELECT area_id FROM registry_areas WHERE instance = 'sim' ORDER BY area_id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while conn_areas(&db) != ["attic", "hall", "kitchen"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new area never arrived: {:?}",
            conn_areas(&db)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(view(&db), home("Guest mode"));
    // ...but after a reconnect.
    sim.drop_connections();
    wait_view(&db, &home("Visitors")).await;
    stop(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_without_floor_and_label_registries_gets_areas_and_devices() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    sim.set_without_floors_and_labels(true);
    furnish(&sim, false);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let service = start(&sim, &db).await;
    wait_view(
        &db,
        &[
            row(
                "input_boolean.guest",
                Some("Guest mode"),
                None,
                None,
                None,
                "[]",
            ),
            row(
                "sensor.kitchen_humidity",
                Some("Humidity"),
                Some(("hall", "Hall")),
                None,
                Some("Kitchen thermometer"),
                "[]",
            ),
            row(
                "sensor.kitchen_temp",
                Some("Temperature"),
                Some(("kitchen", "Kitchen")),
                None,
                Some("Kitchen thermometer"),
                "[]",
            ),
        ],
    )
    .await;
    // Changes still arrive.
    sim.set_area("kitchen", "Cooking");
    wait_view(
        &db,
        &[
            row(
                "input_boolean.guest",
                Some("Guest mode"),
                None,
                None,
                None,
                "[]",
            ),
            row(
                "sensor.kitchen_humidity",
                Some("Humidity"),
                Some(("hall", "Hall")),
                None,
                Some("Kitchen thermometer"),
                "[]",
            ),
            row(
                "sensor.kitchen_temp",
                Some("Temperature"),
                Some(("kitchen", "Cooking")),
                None,
                Some("Kitchen thermometer"),
                "[]",
            ),
        ],
    )
    .await;
    stop(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_registry_false_stores_none_while_its_neighbour_does() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    furnish(&sim, true);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    // Two instances of the same HA in one process: "sim" keeps the registries (the default),
    // "off" does not.
    let service = start_instances(
        &db,
        vec![
            instance(&sim, "sim", None),
            instance(&sim, "off", Some(false)),
        ],
    )
    .await;
    // Both are connected once each has stored a state (set again until then: a state set before
    // the subscription is not an event anyone receives).
    let stored_instances = |db: &Path| -> Vec<String> {
        if !db.exists() {
            return Vec::new();
        }
        let conn = rusqlite::Connection::open(db).unwrap();
        let Ok(mut stmt) = conn.prepare(
            "SELECT DISTINCT instance FROM states_view WHERE entity_id = 'sensor.probe' ORDER BY 1",
        ) else {
            return Vec::new();
        };
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 0;
    while stored_instances(&db) != ["off", "sim"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "states never arrived: {:?}",
            stored_instances(&db)
        );
        n += 1;
        sim.set_state("sensor.probe", &n.to_string(), json!({}));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A change after both are connected reaches "sim"...
    sim.set_area("kitchen", "Cooking");
    let kitchen = |db: &Path| -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT instance, name FROM registry_areas WHERE area_id = 'kitchen' ORDER BY 1",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while kitchen(&db) != [("sim".to_string(), "Cooking".to_string())] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rename never arrived: {:?}",
            kitchen(&db)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and "off" has nothing in any registry table.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let counts: Vec<i64> = [
        "registry_areas",
        "registry_floors",
        "registry_labels",
        "registry_devices",
        "registry_entities",
    ]
    .iter()
    .map(|t| {
        conn.query_row(
            &format!("SELECT count(*) FROM {t} WHERE instance = 'off'"),
            [],
            |r| r.get(0),
        )
        .unwrap()
    })
    .collect();
    assert_eq!(counts, vec![0, 0, 0, 0, 0]);
    stop(service).await;
}

/// An InfluxDB write endpoint on a free loopback port that keeps every line it is sent.
async fn fake_influx() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = lines.clone();
    let app = axum::Router::new()
        .route(
            "/write",
            axum::routing::post(move |body: String| {
                let kept = kept.clone();
                async move {
                    kept.lock()
                        .unwrap()
                        .extend(body.lines().map(str::to_string));
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
        .route(
            "/ping",
            axum::routing::get(|| async { axum::http::StatusCode::NO_CONTENT }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, lines)
}

/// The tags of the points of `entity_id` the sink was sent, in order (the measurement and the
/// fields and time cut off).
fn tags_of(lines: &std::sync::Mutex<Vec<String>>, entity_id: &str) -> Vec<String> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("states,") && l.contains(&format!(",entity_id={entity_id},")))
        .map(|l| series_key(l).to_string())
        .collect()
}

/// A line up to its first unescaped space: measurement and tags.
fn series_key(line: &str) -> &str {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ' ' => return &line[..i],
            _ => {}
        }
    }
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_tags_reach_influx_points_and_a_rename_reaches_the_next_points() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    furnish(&sim, true);
    let (url, lines) = fake_influx().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let mut file: FileConfig = toml::from_str(&format!(
        r#"
[[sink]]
name = "influx"
[sink.influxdb]
url = "{url}"
gzip = false
schema = "clean"
metadata_tags = ["name", "area", "floor", "device", "labels"]
[sink.filter.include]
entities = ["sensor.kitchen_temp", "sensor.unregistered"]
"#
    ))
    .unwrap();
    file.instances = vec![instance(&sim, "sim", None)];
    let service = start_file(&db, file).await;
    let in_kitchen = r#"["Heating","Critical"]"#;
    wait_view(
        &db,
        &[
            row(
                "input_boolean.guest",
                Some("Guest mode"),
                None,
                None,
                None,
                "[]",
            ),
            row(
                "sensor.kitchen_humidity",
                Some("Humidity"),
                Some(("hall", "Hall")),
                None,
                Some("Kitchen thermometer"),
                "[]",
            ),
            row(
                "sensor.kitchen_temp",
                Some("Temperature"),
                Some(("kitchen", "Kitchen")),
                Some("Ground floor"),
                Some("Kitchen thermometer"),
                in_kitchen,
            ),
        ],
    )
    .await;
    let kitchen = "states,domain=sensor,entity_id=sensor.kitchen_temp,instance=sim,\
                   name=Temperature,area=Kitchen,floor=Ground\\ floor,\
                   device=Kitchen\\ thermometer,labels=Heating\\,Critical";
    // Set until a point arrives (a state set before the subscription is no event).
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tags_of(&lines, "sensor.kitchen_temp").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no point arrived");
        n += 1;
        sim.set_state("sensor.kitchen_temp", &format!("{n}"), json!({}));
        sim.set_state("sensor.unregistered", &format!("{n}"), json!({}));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kitchen_tags = tags_of(&lines, "sensor.kitchen_temp");
    assert_eq!(kitchen_tags, vec![kitchen.to_string(); kitchen_tags.len()]);
    // An entity not in the registry gets no metadata tags.
    let deadline = tokio::time::Instant::now() + WAIT;
    while tags_of(&lines, "sensor.unregistered").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no point of sensor.unregistered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bare = tags_of(&lines, "sensor.unregistered");
    assert_eq!(
        bare,
        vec![
            "states,domain=sensor,entity_id=sensor.unregistered,instance=sim".to_string();
            bare.len()
        ]
    );

    // The kitchen is renamed: once the view has the new name, the next point carries it.
    sim.set_area("kitchen", "Cooking");
    wait_view(
        &db,
        &[
            row(
                "input_boolean.guest",
                Some("Guest mode"),
                None,
                None,
                None,
                "[]",
            ),
            row(
                "sensor.kitchen_humidity",
                Some("Humidity"),
                Some(("hall", "Hall")),
                None,
                Some("Kitchen thermometer"),
                "[]",
            ),
            row(
                "sensor.kitchen_temp",
                Some("Temperature"),
                Some(("kitchen", "Cooking")),
                Some("Ground floor"),
                Some("Kitchen thermometer"),
                in_kitchen,
            ),
        ],
    )
    .await;
    let before = tags_of(&lines, "sensor.kitchen_temp").len();
    sim.set_state("sensor.kitchen_temp", "renamed", json!({}));
    let deadline = tokio::time::Instant::now() + WAIT;
    while tags_of(&lines, "sensor.kitchen_temp").len() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no point after the rename"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        tags_of(&lines, "sensor.kitchen_temp")[before..],
        [kitchen.replace("area=Kitchen", "area=Cooking")]
    );
    stop(service).await;
}

//! Statistics over WS: who may do what, HA's answers and errors.

use serde_json::json;

use super::*;

fn energy_import() -> Value {
    json!({"type": "recorder/import_statistics",
           "metadata": {"has_mean": false, "mean_type": 0, "has_sum": true, "name": "Probe energy",
                        "source": "probe", "statistic_id": "probe:energy", "unit_class": "energy",
                        "unit_of_measurement": "kWh"},
           "stats": [{"start": "2026-12-06T14:00:00+00:00", "state": 10, "sum": 0.0},
                     {"start": "2026-12-06T15:00:00+00:00", "state": 12, "sum": 2.0}]})
}

#[tokio::test]
async fn a_user_reads_what_an_admin_imported_and_may_not_import() {
    let sim = sim().await;
    let mut admin = Client::admin(&sim).await;
    let mut user = Client::auth(&sim, &sim.config().user_token.clone()).await;
    assert_eq!(
        user.cmd(energy_import()).await["error"],
        json!({"code": "unauthorized", "message": "Unauthorized"})
    );
    assert_eq!(admin.cmd(energy_import()).await["result"], Value::Null);
    let listed = user
        .cmd(json!({"type": "recorder/list_statistic_ids"}))
        .await;
    assert_eq!(
        listed["result"],
        json!([{"statistic_id": "probe:energy", "display_unit_of_measurement": "kWh",
                "has_mean": false, "mean_type": 0, "has_sum": true, "name": "Probe energy",
                "source": "probe", "statistics_unit_of_measurement": "kWh", "unit_class": "energy"}])
    );
    // end_time is exclusive: the 15:00 row is left out.
    let rows = user
        .cmd(json!({"type": "recorder/statistics_during_period",
                    "start_time": "2026-12-06T14:00:00Z", "end_time": "2026-12-06T15:00:00Z",
                    "statistic_ids": ["probe:energy"], "period": "hour"}))
        .await;
    assert_eq!(
        rows["result"],
        json!({"probe:energy": [{"start": 1_796_565_600_000_i64, "end": 1_796_569_200_000_i64,
               "last_reset": null, "state": 10.0, "sum": 0.0, "change": 0.0}]})
    );
    let subscribed = user
        .cmd(
            json!({"type": "subscribe_events", "event_type": "recorder_5min_statistics_generated"}),
        )
        .await;
    assert_eq!(subscribed["success"], true, "{subscribed}");
}

#[tokio::test]
async fn bad_statistics_queries_get_ha_error_codes() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    let q = |extra: Value| {
        let mut m = json!({"type": "recorder/statistics_during_period",
                           "start_time": "2026-12-06T14:00:00Z", "statistic_ids": ["a:b"], "period": "hour"});
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        m
    };
    let code = |v: Value| v["error"]["code"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        code(c.cmd(q(json!({"start_time": "yesterday"}))).await),
        "invalid_start_time"
    );
    assert_eq!(
        code(c.cmd(q(json!({"statistic_ids": []}))).await),
        "invalid_format"
    );
    assert_eq!(
        code(c.cmd(q(json!({"period": "minute"}))).await),
        "invalid_format"
    );
    let mut import = energy_import();
    import["stats"][0]["start"] = json!("2026-12-06T14:30:00+00:00");
    let e = c.cmd(import).await;
    assert_eq!(code(e.clone()), "home_assistant_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("top of the hour"),
        "{e}"
    );
}

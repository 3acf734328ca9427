#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/seeds/<target>/, from payloads a real Home
Assistant sent (shared/reference/real-ha-observed.md, crates/ha-client/tests/fixtures) and the
README's config examples. The committed corpora (fuzz/corpus/) grew from these seeds and were then
minimised with `cargo fuzz cmin`; run this only to start a corpus afresh."""
import hashlib
import json
import os
import re
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def dumps(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


ctx = {"id": "01M81EYBV34M798ERKRM15551T", "parent_id": None, "user_id": "c38bfac0d5a84d9c9f6e3b1c4e8f1a2b"}
new_state = {
    "entity_id": "sensor.realha_probe", "state": "42",
    "attributes": {"unit_of_measurement": "W", "friendly_name": "Probe", "device_class": "power"},
    "last_changed": "2026-11-22T11:05:59.395949+00:00", "last_reported": "2026-11-22T11:05:59.395949+00:00",
    "last_updated": "2026-11-22T11:05:59.395949+00:00", "context": ctx,
}
state_changed = {
    "event_type": "state_changed",
    "data": {"entity_id": "sensor.realha_probe", "old_state": None, "new_state": new_state},
    "origin": "LOCAL", "time_fired": "2026-11-22T11:05:59.395949+00:00", "context": ctx,
}
light = dict(new_state, entity_id="light.kitchen_main", state="on",
             attributes={"brightness": 255, "color_mode": "brightness", "supported_color_modes": ["brightness"],
                         "friendly_name": "Kitchen", "rgb_color": [255, 200, 10], "zone": "north"},
             last_changed="2026-11-22T11:05:59+00:00")
removed = {"event_type": "state_changed", "data": {"entity_id": "sensor.gone", "old_state": new_state, "new_state": None},
           "origin": "LOCAL", "time_fired": "2026-11-22T11:05:59.395949+00:00", "context": ctx}
call_service = {"event_type": "call_service", "data": {"domain": "input_number", "service": "set_value",
                "service_data": {"entity_id": "input_number.test_level", "value": 7}},
                "origin": "REMOTE", "time_fired": "2026-11-22T11:05:59.401901+00:00", "context": ctx}
entities_add = {"a": {"input_number.test_level": {"s": "0.0", "a": {"initial": None, "friendly_name": "Test level"},
                "c": "01M81EXMYD0AX5X1M7SNKY53J5", "lc": 1795345535.9496338}}}
entities_change = {"c": {"input_number.test_level": {"+": {"s": "7.0", "lc": 1795345559.401901,
                   "c": {"user_id": "c38b", "id": "01M81EYBV9Z62YYE4QMSBQ9TVE"}}, "-": {"a": ["initial"]}}}, "r": ["sensor.old"]}

# ws_frame: frames as HA sends them, alone and coalesced.
msgs = [
    {"type": "auth_required", "ha_version": "2026.2.3"},
    {"type": "auth_ok", "ha_version": "2026.2.3"},
    {"id": 14, "type": "result", "success": True, "result": None},
    {"id": 2, "type": "result", "success": True, "result": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"},
    {"id": 1, "type": "result", "success": False, "error": {"code": "id_reuse", "message": "Identifier values have to increase."}},
    {"id": None, "type": "result", "success": False, "error": {"code": "invalid_format", "message": "Message incorrectly formatted."}},
    {"id": "seven", "type": "result", "success": False, "error": {"code": "invalid_format", "message": "Message incorrectly formatted."}},
    {"id": 6, "type": "pong"},
    {"type": "event", "event": state_changed, "id": 14},
    {"type": "event", "event": call_service, "id": 15},
    {"id": 20, "type": "event", "event": entities_add},
    {"id": 20, "type": "event", "event": entities_change},
    {"id": 9, "type": "result", "success": True, "result": {"state": "RUNNING", "version": "2026.2.3", "time_zone": "UTC"}},
]
for m in msgs:
    write("ws_frame", dumps(m))
write("ws_frame", dumps(msgs))
write("ws_frame", dumps(msgs[8:12]))
write("ws_frame", "[" + dumps(msgs[8]) + ',{"id":"x","type":"event"},' + dumps(msgs[7]) + "]")

# event_record: event bodies, and the time strings alone.
for e in [state_changed, removed, call_service,
          dict(state_changed, data=dict(state_changed["data"], new_state=light, entity_id="light.kitchen_main")),
          dict(state_changed, data={"entity_id": "sensor.x", "old_state": None, "new_state": dict(new_state, entity_id="sensor.x", state="unavailable", attributes={})})]:
    write("event_record", dumps(e))
for t in ["2026-11-22T11:05:59.395949+00:00", "2026-11-22T11:05:59+00:00", "2026-11-22T12:05:59.395949+01:00",
          "2026-11-22T11:05:59Z", "2024-02-29T23:59:59.999999+00:00", "1970-01-01T00:00:00+00:00"]:
    write("event_record", t)

# history: WS history results, float seconds of real HA (raw bits), `--since` texts.
pairs = json.load(open(os.path.join(ROOT, "crates/ha-client/tests/fixtures/ha_time_pairs.json")))["pairs"]
secs = [p["seconds"] for p in pairs]
write("history", '{"input_number.test_level":[{"s":"7.0","a":{"initial":null,"friendly_name":"Test level"},"lu":1795345559.428451},{"s":"11.0","a":{"initial":null,"friendly_name":"Test level"},"lu":1795345559.6295934}],"sensor.realha_probe":[{"s":"42","lu":1795345559.401901}]}')
write("history", '{"sensor.realha_probe":[{"s":"43","a":{"unit_of_measurement":"W","friendly_name":"Probe"},"lu":1795346986.787867},{"s":"43","a":{"unit_of_measurement":"W","friendly_name":"Probe","extra":1},"lu":1795346986.7889647,"lc":1795346986.787867}]}')
write("history", '{"input_number.test_level":[{"s":"7.0","lc":1795345559.428451},{"s":"11.0","lc":1795345559.6295934}]}')
write("history", '{}')
write("history", dumps({"sensor.fixture": [{"s": str(i), "lu": s} for i, s in enumerate(secs[:40])]}))
for s in secs[:8] + [0.0, -1.5, 2.5e-6, 1.9999996, 1e300]:
    write("history", struct.pack("<d", s))
write("history", struct.pack("<dd", secs[0], secs[1]))
for t in ["7d", "36h", "90min", "1h", "2026-11-01", "2026-11-01T12:00:00Z", "2023-11-14T22:13:20Z", "yesterday"]:
    write("history", t)

# config: the README's examples.
readme = open(os.path.join(ROOT, "README.md")).read()
for block in re.findall(r"```toml\n(.*?)```", readme, re.S):
    write("config", block)
write("config", '[[instance]]\nname = "home"\nurl = "http://homeassistant.local:8123"\ntoken_file = "/run/token"\n')

# influx_line: option byte, then entity_id \n state \n attributes.
rows = [
    ("sensor.realha_probe", "42", new_state["attributes"]),
    ("light.kitchen_main", "on", light["attributes"]),
    ("sensor.order", "5", {"zone_str": 5, "zone": "north", "icon": "mdi:x", "unit_of_measurement": "W", "friendly_name": "Order"}),
    ("input_number.test_level", "7.0", {"initial": None, "min": 0.0, "max": 1000000.0, "step": 1.0, "mode": "slider", "friendly_name": "Test level"}),
    ("binary_sensor.door", "off", {"device_class": "door", "friendly_name": "Front door"}),
    ("sensor.temp", "21.5", {"unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement", "temperature": "21,5 C", "version": "v1.2"}),
    ("weather.home", "sunny", {"forecast": [{"datetime": "2026-11-23T00:00:00+00:00", "temperature": 3.1}], "attribution": "x\ny \"q\" \\"}),
    ("sensor.unknown", "unknown", {}),
]
for choice in [0, 1, 2, 3, 0x81, 0x42]:
    for entity, state, attrs in rows:
        write("influx_line", bytes([choice]) + f"{entity}\n{state}\n{dumps(attrs)}".encode())

# python_str: floats as raw bits, float() texts, JSON values.
for f in [21.0, 0.1, 1e16, 9999999999999998.0, 1e-4, 1e-5, 5e-324, 1.7976931348623157e308, -0.0, 1795345559.6295934]:
    write("python_str", struct.pack("<d", f))
for t in [" 5 ", "1_000", "1e1_0", "inf", "-Infinity", "nan", "\u0663\u0664", "4 2", "21,5 C", "v1.2", "1.2.3",
          '["a", 1, 2.5, true, null, {"k": "v"}]', '"it\'s"', '{"a\\n": [1e-7, 1e16]}', '"\\u0000\\u2028x"']:
    write("python_str", t)

# glob: pattern \n text.
for p, t in [("sensor.*", "sensor.a"), ("*.kitchen_?", "light.kitchen_1"), ("a*b*c", "axxbxxbc"), ("[a-c]", "B"),
             ("light.[!k]*", "light.desk"), ("[a!]", "!"), ("[b-a!c]", "c"), ("[c-b-a]", "-"), ("[!]", "[!]"),
             ("[]a]", "]"), ("[!]a]", "b"), ("*", "sensor.x\ny"), ("[z-a]", "a"), ("sensor.*_rssi", "sensor.ap_rssi")]:
    write("glob", f"{p}\n{t}")
# statistics: list_statistic_ids / get_statistics_metadata results, statistics_during_period
# answers (shared/reference/ha-history-beyond-states.md), and list NUL answer pairs.
meta_energy = {"statistic_id": "probe:energy", "display_unit_of_measurement": "kWh", "has_mean": False, "mean_type": 0,
               "has_sum": True, "name": "Probe energy", "source": "probe", "statistics_unit_of_measurement": "kWh",
               "unit_class": "energy"}
meta_temp_old = {"statistic_id": "sensor.t", "display_unit_of_measurement": "°C", "has_mean": True, "has_sum": False,
                 "name": None, "source": "recorder", "statistics_unit_of_measurement": "°C", "unit_class": "temperature"}
meta_power = {"statistic_id": "sensor.probe_imported", "display_unit_of_measurement": "W", "has_mean": True,
              "mean_type": 1, "has_sum": False, "name": None, "source": "recorder",
              "statistics_unit_of_measurement": "W", "unit_class": "power"}
meta_wind = {"statistic_id": "sensor.wind_bearing", "display_unit_of_measurement": "°", "mean_type": 2,
             "has_sum": False, "name": None, "source": "recorder", "statistics_unit_of_measurement": "°", "unit_class": None}
energy_rows = [{"start": 1796565600000 + h * 3600000, "end": 1796569200000 + h * 3600000, "mean": None, "max": None,
                "min": None, "state": 10.0 + h, "sum": float(h), "last_reset": None, "change": 1.0 if h else 0.0}
               for h in range(3)]
temp_rows = [{"start": 1796565600000.0 + m * 300000, "end": 1796565900000 + m * 300000, "mean": 20.0 + m / 10,
              "max": 21.0, "min": 19.0, "state": None, "sum": None, "last_reset": None, "change": None} for m in range(3)]
answer = {"probe:energy": energy_rows, "sensor.t": temp_rows}
metas = [meta_energy, meta_temp_old, meta_power, meta_wind]
write("statistics", dumps(metas))
write("statistics", dumps([meta_energy]))
write("statistics", "[]")
write("statistics", dumps(answer))
write("statistics", dumps({"probe:energy": energy_rows[:1]}))
write("statistics", dumps({"sensor.t": [{"start": 1796565600000, "end": 1796569200000, "mean": 20.0, "max": 21.0,
                                         "min": 19.0, "last_reset": 1796565600000}]}))
write("statistics", "{}")
write("statistics", dumps(metas) + "\0" + dumps(answer))
write("statistics", dumps([meta_energy]) + "\0" + dumps(answer))
write("statistics", dumps([meta_temp_old, meta_temp_old]) + "\0" + dumps({"sensor.t": temp_rows + temp_rows[:1]}))
write("statistics", dumps([meta_power]) + "\0" + dumps({"sensor.probe_imported": [
    {"start": 1796565600000.123, "mean": 100, "min": 90, "max": 110, "last_reset": 1.7965656e12},
    {"start": -1, "mean": -0.0, "min": 1e-320, "max": 1.7976931348623157e308}]}))
print("seeds written to", OUT, file=sys.stderr)

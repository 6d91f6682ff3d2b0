"""Settings through the JSON API of `dbe run`: the same validation as the config file, an atomic save that keeps
the user's comments and a backup, and the daemon starting again from the saved file."""
import json
import urllib.error
import urllib.request

from conftest import free_port, http_json, wait_for

CONFIG = """# my gateway: keep this comment
autostart = true
[battery]
type = "nissan-leaf"
port = "sim:"
[inverter]
protocol = "pylon-can"
port = "sim:"
[limits]
# gentle on an old pack
max_charge_current_a = 20.0
max_charge_power_w = 20000
[web]
bind = "127.0.0.1:{port}"
"""


def post(url, body):
    data = json.dumps(body).encode()
    origin = url.split("/api/")[0]
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "Origin": origin})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_settings_are_validated_saved_atomically_and_applied(proc, tmp_path):
    port = free_port()
    cfg = tmp_path / "dbe.toml"
    original = CONFIG.format(port=port)
    cfg.write_text(original)
    p = proc("run", "--config", str(cfg), "--json")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: p.json_lines() and p.json_lines()[-1]["limits"]["charge_current_a"] > 0, 60, "bridging")
    assert p.json_lines()[-1]["limits"]["charge_current_a"] <= 20.0

    got = http_json(f"{url}/api/config")
    assert got["values"]["limits.max_charge_current_a"] == 20.0
    keys = {f["key"] for f in got["schema"]}
    assert {"battery.type", "inverter.protocol", "rs485.baud", "mqtt.host", "web.bind", "record.dir"} <= keys
    # Each driver's options, with the bounds and help its own table of settings gives them.
    address = next(f for f in got["schema"] if f["key"] == "inverter.pylon_can.address")
    assert (address["type"], address["min"], address["max"], address["group"]) == ("integer", 0, 15, "inverter.pylon_can")
    assert address["help"]
    assert {"battery.nissan_leaf.interlock", "inverter.byd_modbus.slave", "inverter.pylontech_rs485.modules"} <= keys
    assert got["values"]["inverter.pylon_can.byte_order"] == "big-endian"

    # Refused: named, nothing saved, nothing restarted.
    status, body = post(f"{url}/api/config", {"limits.max_charge_current_a": 5000, "limits.max_discharge_current_a": 12})
    assert status == 422, body
    assert [f["key"] for f in body["fields"]] == ["limits.max_charge_current_a"]
    status, body = post(f"{url}/api/config", {"inverter.pylon_can.address": 16})
    assert status == 422 and body["fields"][0]["key"] == "inverter.pylon_can.address", body
    assert "0 to 15" in body["fields"][0]["message"], body
    status, body = post(f"{url}/api/config", {"limits.nonsense": 1})
    assert status == 422 and body["fields"][0]["key"] == "limits.nonsense"
    status, body = post(f"{url}/api/config", ["not", "an", "object"])
    assert status == 400, body
    assert cfg.read_text() == original
    assert not (tmp_path / "dbe.toml.bak").exists()

    # Accepted: saved with the comments kept, the old file kept as .bak, and in force after the restart.
    status, body = post(f"{url}/api/config", {"limits.max_charge_current_a": 7.5})
    assert status == 200, body
    saved = cfg.read_text()
    assert "# gentle on an old pack\nmax_charge_current_a = 7.5" in saved
    assert saved.startswith("# my gateway: keep this comment")
    assert (tmp_path / "dbe.toml.bak").read_text() == original
    p.wait_line(lambda l: "starting again from" in l, 30, "the daemon to start again from the saved file")

    def new_limit_in_force():
        try:
            s = http_json(f"{url}/api/status")
        except OSError:  # the web server is being started again
            return False
        return s["data_valid"] and 0 < s["limits"]["charge_current_a"] <= 7.5

    wait_for(new_limit_in_force, 60, "the new limit in force after the restart")
    assert http_json(f"{url}/api/config")["values"]["limits.max_charge_current_a"] == 7.5

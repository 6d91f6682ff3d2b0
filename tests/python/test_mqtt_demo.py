"""`dbe demo --mqtt`: the demo's telemetry on a real broker, and commands from an independent client changing what
the simulated inverter is told."""
import json
import signal

from conftest import Mqtt, wait_for


def told(p):
    lines = p.json_lines()
    return lines[-1]["simulated_inverter"] if lines else None


def test_demo_publishes_battery_emulator_topics_and_obeys_commands(mosquitto, proc):
    client = Mqtt(mosquitto)
    try:
        p = proc("demo", "--http", "127.0.0.1:0", "--json", "--speed", "5", "--mqtt", f"127.0.0.1:{mosquitto}")
        wait_for(lambda: client.last("BE/status") == "online", 30, "BE/status online")
        # Values DBE does not know yet are left out, and cell voltages come from polls a few seconds after the start:
        # wait for an info that has them rather than taking the first one.
        def info_with_cells():
            raw = client.last("BE/info")
            info = json.loads(raw) if raw else {}
            return info if "cell_max_voltage" in info else None

        info = wait_for(info_with_cells, 30, "BE/info with the cell voltages")
        for key in ("SOC", "SOC_real", "battery_voltage", "battery_current", "cell_max_voltage", "bms_status",
                    "event_level", "emulator_status", "software_version"):
            assert key in info, key
        assert info["event_level"] in ("INFO", "WARNING", "ERROR")
        wait_for(lambda: any(t.startswith("homeassistant/button/") for t, _, _ in client.messages), 20, "discovery")
        # A client that connects later gets the discovery configs as retained messages, as Home Assistant does.
        late = Mqtt(mosquitto)
        try:
            wait_for(lambda: any(t.startswith("homeassistant/sensor/") and r for t, _, r in late.messages), 10,
                     "retained sensor configs")
            configs = [json.loads(pl) for t, pl, r in late.messages if t.startswith("homeassistant/") and r and pl]
            assert configs and all("unique_id" in c and "availability" in c and "device" in c for c in configs)
            # One `dbe_` prefix, and a device name a person would choose (DBE and the battery type).
            assert all(c["unique_id"].startswith("dbe_") and not c["unique_id"].startswith("dbe_dbe_") for c in configs)
            assert all(c["device"]["name"].startswith("DBE Nissan LEAF") for c in configs), configs[0]["device"]
            # Buttons only for the commands allowed by default: those that can only make things safer. The retained
            # configs arrive one by one (the sensors first): wait for the buttons rather than reading them early.
            def buttons():
                return sorted(t.split("/")[3] for t, pl, r in list(late.messages)
                              if t.startswith("homeassistant/button/") and r and pl)

            wait_for(lambda: len(buttons()) >= 3, 10, "the retained button configs")
            assert buttons() == ["PAUSE", "RESUME", "STOP"], buttons()
        finally:
            late.close()

        wait_for(lambda: (told(p) or {}).get("told_discharge_limit_a", 0) > 0, 60, "the inverter to be told a limit")
        client.publish("BE/command/PAUSE", "")
        wait_for(lambda: told(p)["told_charge_limit_a"] == 0 and told(p)["told_discharge_limit_a"] == 0, 30,
                 "the paused inverter to be told 0 A")
        assert json.loads(wait_for(lambda: client.last("BE/info"), 10, "info"))
        client.publish("BE/command/RESUME", "")
        wait_for(lambda: told(p)["told_discharge_limit_a"] > 0, 30, "limits restored after RESUME")

        client.publish("BE/command/SET_LIMITS", json.dumps({"max_charge": 55, "max_discharge": 40, "timeout": 600}))
        wait_for(lambda: told(p)["told_discharge_limit_a"] == 4.0 and told(p)["told_charge_limit_a"] <= 5.5, 30,
                 "SET_LIMITS in deci-amps to reach the inverter")
        before = told(p)
        for bad in ("not json", '{"max_charge": -5}', '{"max_charge": "ten"}', '{"max_charge": 1e9}'):
            client.publish("BE/command/SET_LIMITS", bad)
        wait_for(lambda: sum(1 for t, _, _ in client.messages if t == "BE/command_result") >= 7, 20,
                 "a command_result for every command")
        results = [json.loads(pl) for t, pl, _ in client.messages if t == "BE/command_result"]
        assert sum(1 for r in results if not r["ok"]) >= 4
        assert told(p)["told_discharge_limit_a"] == before["told_discharge_limit_a"], "bad payloads changed nothing"

        # START, RESTART and BMSRESET must be enabled by name: by default they are refused, and say why.
        for name in ("START", "RESTART", "BMSRESET"):
            client.publish(f"BE/command/{name}", "PRESS")
            refusal = wait_for(lambda: next((json.loads(pl) for t, pl, _ in client.messages
                                            if t == "BE/command_result" and json.loads(pl)["command"] == name), None),
                               20, f"the answer to {name}")
            assert refusal["ok"] is False and "allowed_commands" in refusal["error"], refusal

        # Killed without a goodbye: the broker publishes the last will.
        p.terminate(signal.SIGKILL)
        wait_for(lambda: client.last("BE/status") == "offline", 30, "the last will 'offline'")
    finally:
        client.close()

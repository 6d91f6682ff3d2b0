"""Faults the daemon must survive, end to end: a corrupt config on start, SIGTERM mid-run, the RS485 adapter
unplugged and back, the MQTT broker gone and back, the disk full while recording. For each: the event, the safe
state, the recovery, and that nothing already written is lost. (The same faults in simulated time, with exact
bounds, are in crates/dbe-sim/tests.)"""
import threading
import os
import signal
import subprocess
import time

import pytest
from conftest import Mqtt, dbe, free_port, http_json, start_broker, wait_for


def sim_config(tmp_path, web_port, extra=""):
    cfg = tmp_path / "dbe.toml"
    cfg.write_text(
        'autostart = true\n[battery]\ntype = "nissan-leaf"\nport = "sim:"\n'
        '[inverter]\nprotocol = "pylon-can"\nport = "sim:"\n'
        f'[web]\nbind = "127.0.0.1:{web_port}"\n' + extra
    )
    return cfg


def events(url):
    return {e["event_type"]: e for e in http_json(f"{url}/api/events")["events"]}


def safe(fn):
    """fn() or None while the daemon is not answering."""
    try:
        return fn()
    except OSError:
        return None


def bridging(url):
    s = safe(lambda: http_json(f"{url}/api/status"))
    return s if s and s["data_valid"] and s["limits"]["charge_current_a"] > 0 else None


def test_a_corrupt_config_starts_nothing_and_says_where(tmp_path):
    port = free_port()
    cfg = tmp_path / "dbe.toml"
    text = f'[web]\nbind = "127.0.0.1:{port}"\n[limits]\nmax_charge_current_a = = 5\n'
    cfg.write_text(text)
    r = dbe("run", "--config", str(cfg), check=False, timeout=30)
    assert r.returncode != 0
    assert "line 4" in r.stderr, r.stderr
    import socket

    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    assert cfg.read_text() == text, "a refused file is never rewritten"


def test_sigterm_mid_run_tells_the_inverter_zero_and_exits(proc, tmp_path):
    port = free_port()
    p = proc("run", "--config", str(sim_config(tmp_path, port)), "--json")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: bridging(url), 60, "bridging")
    p.p.send_signal(signal.SIGTERM)
    # The grace period is 3 s (run.rs SHUTDOWN_GRACE); the bound here only proves it ends by itself.
    p.p.wait(15)
    assert p.p.returncode == 0, p.err_lines[-10:]
    p.terminate()
    last = p.json_lines()[-1]
    assert last["stopped"] is True
    assert last["limits"]["charge_current_a"] == 0 and last["limits"]["discharge_current_a"] == 0
    assert last["contactor_request"] == "open"
    log = "\n".join(p.err_lines)
    assert "BRIDGE_STOPPED" in log


def test_rs485_adapter_unplugged_and_back(proc, socat, tmp_path):
    from pymodbus.client import ModbusSerialClient

    dbe_side, client_side = str(tmp_path / "adapter"), str(tmp_path / "inverter")

    def plug_in():
        return socat(f"pty,raw,echo=0,link={dbe_side}", f"pty,raw,echo=0,link={client_side}",
                     wait_paths=(dbe_side, client_side))

    adapter = plug_in()
    port = free_port()
    cfg = tmp_path / "dbe.toml"
    cfg.write_text(
        'autostart = true\n[battery]\ntype = "nissan-leaf"\nport = "sim:"\n'
        '[inverter]\nprotocol = "byd-modbus"\nport = ""\n'
        f'[rs485]\nport = "{dbe_side}"\n[limits]\ninverter_timeout_s = 3\n'
        f'[web]\nbind = "127.0.0.1:{port}"\n'
    )
    proc("run", "--config", str(cfg))
    url = f"http://127.0.0.1:{port}"

    def poll_once(path):
        c = ModbusSerialClient(port=path, baudrate=9600, timeout=1, retries=0)
        try:
            if not c.connect():
                return None
            r = c.read_holding_registers(300, count=24, device_id=21)
            return None if r.isError() else r.registers
        except Exception:
            return None
        finally:
            c.close()

    wait_for(lambda: poll_once(client_side), 60, "a first answer")
    # A real inverter keeps polling; limits come only once every reading of the pack is in (fail-closed).
    wait_for(lambda: poll_once(client_side) and bridging(url), 30, "limits with the inverter present")

    # Unplug: the pty pair disappears (socat removes its links when told to stop).
    adapter.terminate()
    adapter.wait(5)
    wait_for(lambda: not os.path.lexists(dbe_side), 10, "the device to disappear")
    wait_for(lambda: events(url).get("PORT_DOWN", {}).get("active"), 20, "PORT_DOWN")
    s = wait_for(lambda: (lambda s: s if s["limits"]["charge_current_a"] == 0 else None)(http_json(f"{url}/api/status")),
                 20, "0 A once the inverter is missing")
    assert s["limits"]["charge_limited_by"] == "inverter_missing"
    assert events(url)["CAN_INVERTER_MISSING"]["active"]

    # Plugged back in (same device path): reopened with backoff, answered again, limits back.
    plug_in()
    wait_for(lambda: poll_once(client_side), 30, "answers after the adapter is back")
    wait_for(lambda: not events(url)["PORT_DOWN"]["active"], 20, "PORT_DOWN cleared")
    wait_for(lambda: poll_once(client_side) and bridging(url), 20, "limits back")
    assert events(url)["PORT_DOWN"]["count"] >= 1


def test_mqtt_broker_gone_and_back(proc, tmp_path):
    mport, wport = free_port(), free_port()
    broker = start_broker(mport, tmp_path)
    try:
        cfg = sim_config(tmp_path, wport, f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {mport}\n'
                                           "publish_interval_ms = 500\n")
        proc("run", "--config", str(cfg))
        url = f"http://127.0.0.1:{wport}"
        m = Mqtt(mport)
        wait_for(lambda: m.last("BE/status") == "online" and m.last("BE/info"), 60, "online and info")
        m.close()
        broker.terminate()
        broker.wait(5)
        # The bridge does not care: the pack stays bridged while the broker is away.
        time_gone = time.monotonic()
        wait_for(lambda: bridging(url) and time.monotonic() - time_gone > 2, 20, "bridging with the broker gone")
        broker = start_broker(mport, tmp_path)
        m = Mqtt(mport)
        wait_for(lambda: m.last("BE/status") == "online", 60, "DBE back online on the broker")
        n = len([t for t, _, _ in m.messages if t == "BE/info"])
        wait_for(lambda: len([t for t, _, _ in m.messages if t == "BE/info"]) > n, 20, "info published again")
        m.close()
    finally:
        broker.terminate()
        broker.wait(5)


def test_disk_full_while_recording(proc, tmp_path):
    import can

    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.decode().strip()}); the disk-full path needs one")
    try:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (512 * 1024 - 96 * 1024))  # leave about 96 KiB for the logs
        rec = disk / "rec"
        port = free_port()
        cfg = sim_config(tmp_path, port, f'[record]\ndir = "{rec}"\nmax_file_mb = 1\nmax_total_mb = 16\n')
        proc("run", "--config", str(cfg))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: safe(lambda: events(url).get("RECORDING_FAILED", {}).get("active")), 60, "RECORDING_FAILED")
        # The disk may fill before every reading of the pack is in (limits come only then): wait for it.
        wait_for(lambda: bridging(url), 30, "the bridge going on while recording fails")
        filler.unlink()
        wait_for(lambda: not events(url)["RECORDING_FAILED"]["active"], 30, "recording again once there is room")
        logs = sorted(rec.glob("dbe-*.log"))
        assert len(logs) >= 2, logs
        # Everything written before the disk filled is still there and readable by an independent parser
        # (python-can), except at most the last line of the file that hit the full disk.
        first = logs[0].read_text(errors="replace").splitlines()
        whole = tmp_path / "whole.log"
        whole.write_text("\n".join(first[:-1]) + "\n")  # the last line may have been cut by the full disk
        good = list(can.CanutilsLogReader(str(whole)))
        assert len(good) == len(first) - 1 > 100
        assert {m.arbitration_id for m in good} >= {0x1DB}
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_adapter_errors_become_can_bus_error_events(proc, socat, tmp_path):
    """An slcan adapter that refuses frames (BEL: its buffer is full or the bus is off) raises CAN_BUS_ERROR."""
    import serial

    dbe_side, adapter_side = str(tmp_path / "dbe"), str(tmp_path / "adapter")
    socat(f"pty,raw,echo=0,link={dbe_side}", f"pty,raw,echo=0,link={adapter_side}", wait_paths=(dbe_side, adapter_side))
    port = free_port()
    cfg = tmp_path / "dbe.toml"
    cfg.write_text(
        'autostart = true\n[battery]\ntype = "nissan-leaf"\n'
        f'port = "slcan:{dbe_side}?bitrate=500000"\n'
        '[inverter]\nprotocol = "pylon-can"\nport = "sim:"\n'
        f'[web]\nbind = "127.0.0.1:{port}"\n'
    )
    proc("run", "--config", str(cfg))
    url = f"http://127.0.0.1:{port}"
    with serial.Serial(adapter_side, 500000, timeout=0.1) as adapter:
        # Play the adapter: answer the set-up commands (C, S6, O) with CR, then refuse whatever DBE sends.
        seen = b""

        def opened():
            nonlocal seen
            data = adapter.read(256)
            seen += data
            for _ in range(data.count(b"\r")):
                adapter.write(b"\r")
            # Open once DBE sends frames after `O`: its port is past the set-up (a refusal written while it still
            # waits for an answer would be taken as that answer, and the port would go round again).
            after = seen.split(b"O\r", 1)[1] if b"O\r" in seen else b""
            return b"t" in after or b"T" in after

        wait_for(opened, 30, "DBE to open the slcan adapter and send a frame")
        # A real adapter keeps reading what the host sends, even while it refuses it: so does this one (one that
        # reads nothing fills the pty until DBE's writes stall, which DBE counts as an overflow).
        stop = threading.Event()
        reader = threading.Thread(target=lambda: [adapter.read(4096) for _ in iter(stop.is_set, True)], daemon=True)
        reader.start()
        try:
            wait_for(lambda: safe(lambda: events(url).get("PORT_DOWN", {"active": False})["active"] is False), 10,
                     "port up")
            assert "CAN_BUS_ERROR" not in {k for k, e in events(url).items() if e["count"] > 0}
            adapter.write(b"\x07\x07\x07")
            wait_for(lambda: safe(lambda: events(url).get("CAN_BUS_ERROR", {}).get("count", 0) >= 1), 10,
                     "CAN_BUS_ERROR")
        finally:
            stop.set()
            reader.join(5)
        assert events(url)["CAN_BUS_ERROR"]["data"] == 1, "the battery port"

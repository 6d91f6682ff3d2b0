"""Real links end to end: the simulated LEAF behind an slcan adapter on a socat pty pair, the simulated Pylon inverter
behind a socketcand server on loopback (both from `dbe simulate`), `dbe run` bridging them over those wires, and
python-can as an independent client of DBE's sharing server and of the simulated adapter. Unplugging either wire
must bring the inverter to 0 A (or take the port down) within a bounded time, and replugging must bring the bridge
back without a restart. Faults put on the simulators through their standard input (the slcan adapter going bus-off, a
cell over its limit) must reach the inverter, measured at the inverter's end of its wire, within their bounds."""
import json
import urllib.request
import pathlib
import re
import shutil
import signal
import subprocess
import time

import can
import pytest

from conftest import dbe, free_port, http_json, wait_for

SOCAT = shutil.which("socat")
pytestmark = pytest.mark.skipif(SOCAT is None, reason="socat is not installed (scripts/setup installs it)")

# The bridge must tell the inverter 0 A this long after the pack goes quiet (battery_stale_timeout_s), plus margin
# for the 1 s status lines and a busy machine.
STALE_S = 2.0
SAFE_WITHIN_S = STALE_S + 8


class PtyPair:
    """Two linked ptys from socat, as `a` and `b` symlinks; kill() is an unplugged cable, start() a replug."""

    def __init__(self, folder: pathlib.Path):
        self.a = folder / "adapter"
        self.b = folder / "host"
        self.p = None

    def start(self):
        for link in (self.a, self.b):
            link.unlink(missing_ok=True)
        self.p = subprocess.Popen([SOCAT, f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.a.exists() and self.b.exists(), 10, "socat to create the pty links")

    def kill(self):
        if self.p and self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)


@pytest.fixture
def ptys(tmp_path):
    pair = PtyPair(tmp_path)
    pair.start()
    yield pair
    pair.kill()


def plain(line):
    """A log line without its colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", line)


def port_down_event(line, which):
    """dbe run's PORT_DOWN event for port 1 (battery) or 2 (inverter)."""
    line = plain(line)
    return 'event="PORT_DOWN"' in line and f"data={which}" in line


def ready(p):
    """The `dbe simulate` ready line."""
    line = p.wait_line(lambda l: l.startswith('{"event":"ready"'), 15, "dbe simulate to be ready")
    return json.loads(line)


def last(p, event):
    for obj in reversed(p.json_lines()):
        if obj.get("event") == event:
            return obj
    return None


def newest_status(run):
    for obj in reversed(run.json_lines()):
        if "limits" in obj:
            return obj
    return None


def bridging(run, pack, inverter):
    """Both ends agree the bridge is up: DBE asks for closed contactors and gives non-zero limits, the simulated pack
    has its relays closed (a LEAF's are hardwired: here manual switches, `contactors.mode = "none"`, which DBE says
    it cannot open), and the simulated inverter runs on non-zero limits (it gets DBE's answers over socketcand)."""
    s = newest_status(run)
    p = last(pack, "pack")
    inv = last(inverter, "inverter")
    return (s is not None and s["contactor_request"] == "closed" and s["limits"]["charge_current_a"] > 0
            and p is not None and p["contactors_closed"]
            and inv is not None and inv["state"] == "running" and inv["charge_limit_a"] > 0
            and inv["discharge_limit_a"] > 0)


def collect_ids(bus, want, timeout):
    seen = set()
    deadline = time.monotonic() + timeout
    while not want <= seen and time.monotonic() < deadline:
        msg = bus.recv(0.2)
        if msg is not None:
            seen.add(msg.arbitration_id)
    return seen


def gvret_sees(port, want, timeout=10):
    """Connects as SavvyCAN does (binary mode, then the query burst) and returns the ids of the frames streamed, once
    the bus parameters reply has come (what marks a SavvyCAN connection as connected)."""
    import socket
    import struct

    s = socket.create_connection(("127.0.0.1", port), timeout=1)
    s.sendall(bytes([0xE7, 0xE7, 0xF1, 0x0C, 0xF1, 0x06, 0xF1, 0x07, 0xF1, 0x01, 0xF1, 0x09]))
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                buf += s.recv(65536)
            except socket.timeout:
                continue
            # Bus 0 enabled and listen-only (share.allow_transmit is off) at 500 kbit/s.
            if b"\xf1\x06\x11\x20\xa1\x07" not in buf:
                continue
            seen = set()
            i = 0
            while (i := buf.find(b"\xf1\x00", i)) >= 0 and i + 11 <= len(buf):
                can_id = struct.unpack_from("<I", buf, i + 6)[0] & 0x1FFFFFFF
                seen.add(can_id)
                i += 11 + (buf[i + 10] & 0x0F)
            if want <= seen:
                return seen
        return None
    finally:
        s.close()


def test_simulated_adapter_speaks_real_slcan_and_socketcand(proc, ptys):
    """python-can's own slcan host drives `dbe simulate`'s adapter; a frame it sends comes out of the socketcand
    server of the same simulated bus, and a LEAF frame on the bus reaches both."""
    sim = proc("simulate", "--pack", "--slcan", str(ptys.a), "--socketcand", "127.0.0.1:0")
    host, port = ready(sim)["socketcand"].rsplit(":", 1)
    slcan_bus = can.Bus(interface="slcan", channel=str(ptys.b), bitrate=500000, sleep_after_open=0)
    net_bus = can.Bus(interface="socketcand", host=host, port=int(port), channel="can0")
    try:
        assert slcan_bus.get_serial_number(2) == "DBE0"
        assert collect_ids(slcan_bus, {0x1DB, 0x55B}, 10) >= {0x1DB, 0x55B}
        assert collect_ids(net_bus, {0x1DB, 0x55B}, 10) >= {0x1DB, 0x55B}
        sent = can.Message(arbitration_id=0x18FF50E5, is_extended_id=True, data=[1, 2, 3])

        def arrived():
            slcan_bus.send(sent)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                m = net_bus.recv(0.1)
                if m is not None and m.arbitration_id == sent.arbitration_id:
                    return m
            return None

        got = wait_for(arrived, 10, "the frame sent over slcan to come out of socketcand")
        assert got.is_extended_id and bytes(got.data) == b"\x01\x02\x03"
    finally:
        slcan_bus.shutdown()
        net_bus.shutdown()


def test_bridge_over_real_links_survives_unplugging(proc, ptys, tmp_path):
    share_port = free_port()
    gvret_port = free_port()
    run, pack, inverter, _ = start_wired(proc, ptys, tmp_path, web=False, extra=f"""
[share]
socketcand_bind = "{share_port}"
gvret_bind = "127.0.0.1:{gvret_port}"
""")
    inverter_port = int(ready(inverter)["socketcand"].rsplit(":", 1)[1])

    # python-can on DBE's sharing server sees the pack's frames that the bridge decodes.
    shared = can.Bus(interface="socketcand", host="127.0.0.1", port=share_port, channel="can0")
    try:
        assert collect_ids(shared, {0x1DB, 0x55B}, 10) >= {0x1DB, 0x55B}
        # Without share.allow_transmit a client's frame never reaches the pack's bus: DBE refuses it and says so.
        shared.send(can.Message(arbitration_id=0x1F2, data=b"\x00" * 8, is_extended_id=False))
        run.wait_line(lambda l: "refused a frame" in plain(l) and "listen-only here" in plain(l), 10,
                      "DBE to refuse the client's frame")
    finally:
        shared.shutdown()
    assert gvret_sees(gvret_port, {0x1DB, 0x55B})

    # Unplug the slcan cable: the port goes down and the inverter is told 0 A within the stale timeout + margin.
    ptys.kill()
    run.wait_line(lambda l: port_down_event(l, 1), 10, "dbe run to raise PORT_DOWN for the slcan port")

    def safe():
        inv = last(inverter, "inverter")
        return inv is not None and inv["charge_limit_a"] == 0 and inv["discharge_limit_a"] == 0

    wait_for(safe, SAFE_WITHIN_S, "the inverter to be told 0 A after the pack link was cut")
    def zero_in_status():
        s = newest_status(run)
        return s["limits"]["charge_current_a"] == 0 and s["limits"]["discharge_current_a"] == 0

    wait_for(zero_in_status, SAFE_WITHIN_S, "dbe run's status to show 0 A")
    wait_for(lambda: asked_open(run), 15, "DBE to ask the contactors open")

    # Replug: both sides reopen the new ptys behind the same links and the bridge comes back by itself.
    ptys.start()
    wait_for(lambda: bridging(run, pack, inverter), 30, "the bridge back after replugging the slcan cable")

    # The socketcand peer goes away: the inverter port goes down; a new inverter on the same address is served.
    down_lines = len(run.err_lines)
    inverter.terminate(signal.SIGKILL)
    wait_for(lambda: any(port_down_event(l, 2) for l in run.err_lines[down_lines:]), 15,
             "dbe run to raise PORT_DOWN for the socketcand port")
    inverter2 = proc("simulate", "--inverter", "pylon-can", "--socketcand", f"127.0.0.1:{inverter_port}")
    ready(inverter2)
    wait_for(lambda: bridging(run, pack, inverter2), 30, "the bridge back with the new inverter")


def line_event(run, name, since=0):
    """dbe run's log line raising event `name`, after the first `since` lines."""
    return next((plain(l) for l in run.err_lines[since:] if f'event="{name}"' in plain(l)), None)


def start_wired(proc, ptys, tmp_path, web=True, extra=""):
    """The pack behind slcan, the inverter behind socketcand, `dbe run` between them (its web API on unless `web`
    is false; `extra` config appended); returns (run, pack, inverter, url) once the bridge is up."""
    inverter_port, web_port = free_port(), free_port()
    pack = proc("simulate", "--pack", "--slcan", str(ptys.a))
    ready(pack)
    inverter = proc("simulate", "--inverter", "pylon-can", "--socketcand", f"127.0.0.1:{inverter_port}")
    ready(inverter)
    web_section = f'bind = "127.0.0.1:{web_port}"' if web else "enabled = false"
    config = tmp_path / "dbe.toml"
    config.write_text(f"""
[battery]
type = "nissan-leaf"
port = "slcan:{ptys.b}?bitrate=500000"
[inverter]
protocol = "pylon-can"
port = "socketcand:127.0.0.1:{inverter_port}/can0"
[limits]
battery_stale_timeout_s = {STALE_S}
[web]
{web_section}
""" + extra)
    dbe("check-config", str(config))
    run = proc("run", "--config", str(config), "--json")
    wait_for(lambda: bridging(run, pack, inverter), 30, "the bridge up over slcan and socketcand (contactors closed, "
             "the inverter told non-zero limits)")
    return run, pack, inverter, f"http://127.0.0.1:{web_port}"


def asked_open(run):
    """DBE asks the contactors open, and says plainly it cannot open them itself (mode "none": manual switches)."""
    s = newest_status(run)
    return s is not None and s["contactor_request"] == "open" and s["contactor_mode"] == "none" \
        and not s["can_open_pack"]


def inverter_at_zero(inverter):
    inv = last(inverter, "inverter")
    return inv is not None and inv["charge_limit_a"] == 0 and inv["discharge_limit_a"] == 0


def test_slcan_bus_off_and_recovery(proc, ptys, tmp_path):
    """The pack's adapter goes bus-off (refuses every frame with BEL, receives nothing) and recovers by itself, as a
    controller with automatic restart does. The port stays open: this is not an unplugged cable."""
    run, pack, inverter, url = start_wired(proc, ptys, tmp_path)
    since = len(run.err_lines)
    pack.control("bus-off on")
    t0 = time.monotonic()
    wait_for(lambda: line_event(run, "CAN_BUS_ERROR", since), 10, "CAN_BUS_ERROR from the adapter's refusals")
    assert "data=1" in line_event(run, "CAN_BUS_ERROR", since), "raised for the battery port"
    wait_for(lambda: inverter_at_zero(inverter), SAFE_WITHIN_S, "the inverter told 0 A after the bus went off")
    print(f"bus-off -> inverter at 0 A in {time.monotonic() - t0:.2f} s (stale timeout {STALE_S} s)")
    # The required readings went stale first (1 s); ten seconds without a frame make the battery missing.
    wait_for(lambda: events_of(url).get("CAN_BATTERY_MISSING", {}).get("active"), STALE_S + 5, "CAN_BATTERY_MISSING")
    wait_for(lambda: asked_open(run), 15, "DBE to ask the contactors open")
    assert line_event(run, "PORT_DOWN", since) is None, "the adapter still answers: the port is up"

    pack.control("bus-off off")
    wait_for(lambda: bridging(run, pack, inverter), 30, "the bridge back after the controller's recovery")
    ev = events_of(url)
    assert not ev["CAN_BATTERY_MISSING"]["active"]
    assert ev["CAN_BATTERY_MISSING"]["count"] == 1 and ev["CAN_BUS_ERROR"]["count"] >= 1


def events_of(url):
    return {e["event_type"]: e for e in http_json(f"{url}/api/events")["events"]}


def post(url, command):
    req = urllib.request.Request(f"{url}/api/commands/{command}", data=b"", method="POST",
                                 headers={"Origin": url})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_cell_over_voltage_reaches_the_inverter_and_latches(proc, ptys, tmp_path):
    """A cell far over its limit on the real wire: the inverter is told 0 A both ways within one cell report and one
    inverter poll (the bound faults.rs asserts in simulated time, plus margin for a busy machine), the contactors are
    asked open, and nothing closes again until `start`, even once the cell is back."""
    run, pack, inverter, url = start_wired(proc, ptys, tmp_path)
    pack.control("cell 8 4240")
    t0 = time.monotonic()
    # 9 s cell report bound + 1 s inverter poll (crates/dbe-sim/tests/faults.rs), + margin.
    wait_for(lambda: inverter_at_zero(inverter), 9 + 1 + 5, "the inverter told 0 A after the cell went over")
    print(f"cell over-voltage -> inverter at 0 A in {time.monotonic() - t0:.2f} s")
    ev = events_of(url)
    assert ev["CELL_CRITICAL_OVER_VOLTAGE"]["active"] and ev["CELL_OVER_VOLTAGE"]["active"]
    assert ev["CELL_OVER_VOLTAGE"]["data"] >> 16 == 8, "the event names cell 8"
    wait_for(lambda: asked_open(run), 15, "DBE to ask the contactors open")

    # The cell comes back; once DBE has seen it back, the fault is still latched.
    pack.control("cell 8 normal")
    wait_for(lambda: (newest_status(run)["battery"].get("cell_max_mv") or 9999) < 4200, 30,
             "dbe run to see the cell back to normal")
    assert inverter_at_zero(inverter) and newest_status(run)["limits"]["charge_current_a"] == 0
    assert newest_status(run)["contactor_request"] == "open", "a critical fault must latch"

    assert post(url, "start")["ok"] is True
    wait_for(lambda: bridging(run, pack, inverter), 30, "the bridge back after start")
    assert events_of(url)["CELL_CRITICAL_OVER_VOLTAGE"]["count"] == 1

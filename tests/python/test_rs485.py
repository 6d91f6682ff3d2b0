"""RS485 inverter protocols end to end: `dbe run` with a simulated LEAF behind it answers on a pseudo-terminal, and
clients nobody here wrote (PyPI `pylontech`, `pymodbus`) decode the same values the battery model holds.

The values are compared with the dashboard's JSON API read just before and just after each client query: the pack
sits at rest (nobody draws current), so they change slowly, and a value must lie between the two readings within
one least significant digit of the protocol."""
import random
import time

import pytest
from conftest import dashboard_url, free_port, http_json, pty_pair, wait_for

SLAVE = 21


def write_config(tmp_path, protocol, pty, **options):
    """`options` go into the protocol's own table (`[inverter.pylontech_rs485]`)."""
    extra = "".join(f"{k} = {v}\n" for k, v in options.items())
    if extra:
        extra = f"[inverter.{protocol.replace('-', '_')}]\n{extra}"
    cfg = tmp_path / "dbe.toml"
    cfg.write_text(
        "autostart = true\n"
        '[battery]\ntype = "nissan-leaf"\nport = "sim:"\n'
        f'[inverter]\nprotocol = "{protocol}"\nport = ""\n{extra}'
        f'[rs485]\nport = "{pty}"\nbaud = 9600\n'
        '[web]\nenabled = true\nbind = "127.0.0.1:0"\n'
    )
    return cfg


def started(proc, cfg):
    """Starts `dbe run` and waits until the simulated pack is bridged (contactors closed, data valid)."""
    p = proc("run", "--config", str(cfg))
    url = dashboard_url(p)

    def ready():
        s = http_json(f"{url}/api/status")
        return s if s["data_valid"] and s["battery"]["cell_count"] == 96 else None

    wait_for(ready, 60, "the simulated LEAF to be bridged")
    return p, url


def between(value, a, b, lsd):
    lo, hi = min(a, b), max(a, b)
    return lo - lsd - 1e-9 <= value <= hi + lsd + 1e-9


def read_around(url, query):
    """Model values before, the client's answer, model values after."""
    before = (http_json(f"{url}/api/status"), http_json(f"{url}/api/cells"))
    answer = query()
    after = (http_json(f"{url}/api/status"), http_json(f"{url}/api/cells"))
    return before, answer, after


# ---------------------------------------------------------------------------------------------------- BYD Modbus


def modbus_client(port):
    from pymodbus.client import ModbusSerialClient

    c = ModbusSerialClient(port=port, baudrate=9600, bytesize=8, parity="N", stopbits=1, timeout=2, retries=1)
    assert c.connect(), f"pymodbus could not open {port}"
    return c


def test_pymodbus_reads_the_byd_registers_of_the_simulated_leaf(proc, socat, tmp_path):
    dbe_side, client_side = pty_pair(socat, tmp_path)
    _, url = started(proc, write_config(tmp_path, "byd-modbus", dbe_side))
    c = modbus_client(client_side)
    try:
        ident = c.read_holding_registers(100, count=68, device_id=SLAVE)
        assert not ident.isError(), ident
        text = b"".join(r.to_bytes(2, "big") for r in ident.registers[2:18]).rstrip(b"\0")
        assert text == b"BYD"

        def live():
            r = c.read_holding_registers(300, count=24, device_id=SLAVE)
            assert not r.isError(), r
            return r.registers

        live()  # the first request makes the inverter present; wait until the published status says so
        wait_for(lambda: http_json(f"{url}/api/status")["inverter"]["present"], 10, "the inverter to be present")
        before, regs, after = read_around(url, live)
        (s0, _), (s1, _) = before, after
        # 303: reported SOC in 0.01 %; 310: pack voltage in 0.1 V; 312/313: min/max temperature in 0.1 C (signed);
        # 323: SOH in 0.01 %; 304/305: total/remaining energy in Wh; 306/307: discharge/charge power limit in W.
        signed = lambda v: v - 0x10000 if v & 0x8000 else v
        assert between(regs[3] / 100, s0["reported"]["soc_pct"], s1["reported"]["soc_pct"], 0.01)
        assert between(regs[10] / 10, s0["battery"]["voltage_v"], s1["battery"]["voltage_v"], 0.1)
        assert between(signed(regs[12]) / 10, s0["battery"]["temperature_min_c"], s1["battery"]["temperature_min_c"], 0.1)
        assert between(signed(regs[13]) / 10, s0["battery"]["temperature_max_c"], s1["battery"]["temperature_max_c"], 0.1)
        assert between(regs[23] / 100, s0["battery"]["soh_pct"], s1["battery"]["soh_pct"], 0.01)
        assert between(regs[4], s0["reported"]["total_energy_wh"], s1["reported"]["total_energy_wh"], 1)
        assert between(regs[5], s0["reported"]["remaining_energy_wh"], s1["reported"]["remaining_energy_wh"], 1)
        assert between(regs[6], s0["limits"]["discharge_power_w"], s1["limits"]["discharge_power_w"], 1)
        assert between(regs[7], s0["limits"]["charge_power_w"], s1["limits"]["charge_power_w"], 1)
        assert regs[6] > 0 and regs[7] > 0, "a healthy pack at rest may be charged and discharged"
        assert regs[0] == 3, f"system status should be active (3), is {regs[0]}"
        # At rest: 302 idle (Battery-Emulator's 128; 129 charging, 130 discharging), 309/311 no power (W, charging
        # negative), 322 the max temperature again.
        assert regs[2] == 128, f"302 should be idle (128) at rest, is {regs[2]}"
        assert signed(regs[9]) == 0 and signed(regs[11]) == 0, (regs[9], regs[11])
        assert between(signed(regs[22]) / 10, s0["battery"]["temperature_max_c"], s1["battery"]["temperature_max_c"], 0.1)

        # Outside the map but below 30000: zeros, as Battery-Emulator answers (a Gen24 reading a wider span must not
        # be faulted). From 30000 on: an exception. Another slave address: silence.
        wide = c.read_holding_registers(1000, count=2, device_id=SLAVE)
        assert not wide.isError() and wide.registers == [0, 0], wide
        assert c.read_holding_registers(168, count=32, device_id=SLAVE).registers == [0] * 32
        bad = c.read_holding_registers(29999, count=2, device_id=SLAVE)
        assert bad.isError()
        # The first read outside the map is logged once, with its start address.
        def outside_map_event():
            e = {e["event_type"]: e for e in http_json(f"{url}/api/events")["events"]}.get("MODBUS_READ_OUTSIDE_MAP")
            return e if e and e["count"] else None

        e = wait_for(outside_map_event, 10, "the MODBUS_READ_OUTSIDE_MAP event")
        assert (e["count"], e["data"]) == (1, 1000), e
        from pymodbus.exceptions import ModbusIOException

        try:
            other = c.read_holding_registers(300, count=1, device_id=SLAVE + 1)
            assert other.isError()
        except ModbusIOException:
            pass
        # The inverter's keep-alive write is accepted and reads back.
        w = c.write_register(401, 0x00FF, device_id=SLAVE)
        assert not w.isError(), w
        assert c.read_holding_registers(401, count=1, device_id=SLAVE).registers == [0x00FF]
    finally:
        c.close()


def crc16_modbus(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def read_frame(ser, first_byte_timeout, gap=0.05):
    """Reads whatever the slave sends: bytes until the line is quiet for `gap` seconds (Modbus RTU frames end in
    silence). The timeouts here are protocol timing, not synchronisation."""
    ser.timeout = first_byte_timeout
    out = ser.read(1)
    if not out:
        return out
    ser.timeout = gap
    while True:
        more = ser.read(256)
        if not more:
            return out
        out += more


def test_random_bytes_between_modbus_requests_never_lose_a_good_request(proc, socat, tmp_path):
    import serial

    dbe_side, client_side = pty_pair(socat, tmp_path)
    started(proc, write_config(tmp_path, "byd-modbus", dbe_side))
    rng = random.Random(485)
    req = bytes([SLAVE, 0x03, 0x01, 0x2C, 0x00, 0x18])  # read 24 registers from 300
    req += crc16_modbus(req).to_bytes(2, "little")
    with serial.Serial(client_side, 9600, timeout=1) as ser:
        for i in range(40):
            garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
            if i % 4 == 3:
                garbage = req[: rng.randrange(1, len(req))]  # a request cut short
            ser.write(garbage)
            # An RTU frame ends with 3.5 character times of silence; whatever the garbage provoked is read here.
            read_frame(ser, 0.1)
            ser.reset_input_buffer()
            ser.write(req)
            reply = read_frame(ser, 2)
            assert len(reply) == 3 + 48 + 2, f"round {i}: garbage {garbage.hex()} then a good request got {reply.hex()}"
            assert reply[:3] == bytes([SLAVE, 0x03, 48])
            assert crc16_modbus(reply[:-2]).to_bytes(2, "little") == reply[-2:]


# ------------------------------------------------------------------------------------------------ Pylontech RS485


def pylontech_client(socat, tmp_path, dbe_side_name="pylon"):
    """The PyPI `pylontech` client drives the RTS line of a USB RS485 adapter, which a pseudo-terminal refuses; it
    also speaks `socket://` for RS485-to-Ethernet converters, so socat plays that converter in front of DBE's pty."""
    from pylontech import PylontechRS485

    pty = tmp_path / f"{dbe_side_name}-pty"
    port = free_port()
    socat(f"pty,raw,echo=0,link={pty}", f"tcp-listen:{port},bind=127.0.0.1,reuseaddr", wait_paths=(pty,))
    client = {}

    def connect():
        try:
            client["c"] = PylontechRS485(f"socket://127.0.0.1:{port}", 9600)
            return True
        except Exception:
            return False

    return str(pty), lambda: wait_for(connect, 10, "the RS485-to-TCP converter (socat)") and client["c"]


def query(client, frame, decoder):
    from pylontech import PylontechDecode

    client.send(frame)
    raws = client.receive(3)
    d = PylontechDecode()
    d.decode_header(raws[0])
    return getattr(d, decoder)()


# Pylontech RS485 is a 48 V protocol: its voltages are 16-bit millivolts (at most 65.535 V). DBE's only battery
# driver so far is the LEAF (up to 405.5 V), which the protocol cannot carry, so `dbe run`, `dbe demo` and
# `dbe check-config` refuse the combination (issue 14) instead of answering "disabled" for ever. The client tests
# below need a pack the protocol can carry; they come back with the first low-voltage battery driver.
NO_LOW_VOLTAGE_PACK = pytest.mark.skip(
    reason="no battery driver at or below 65.535 V yet: DBE refuses pylontech-rs485 for the LEAF")


def test_run_refuses_pylontech_rs485_for_the_leaf_naming_both_keys(tmp_path):
    from conftest import dbe

    cfg = write_config(tmp_path, "pylontech-rs485", tmp_path / "unused-pty")
    r = dbe("run", "--config", str(cfg), check=False, timeout=30)
    assert r.returncode != 0
    assert "line 6: inverter.protocol" in r.stderr, r.stderr
    assert 'battery.type = "nissan-leaf" (line 3)' in r.stderr and "65.535 V" in r.stderr, r.stderr
    r = dbe("demo", "--inverter", "pylontech-rs485", "--serial", str(tmp_path / "unused-pty"), check=False, timeout=30)
    assert r.returncode != 0 and "65.535 V" in r.stderr, r.stderr


@NO_LOW_VOLTAGE_PACK
def test_pylontech_client_reads_every_module_of_a_six_module_stack(proc, socat, tmp_path):
    from pylontech import PylontechEncode

    pty, connect = pylontech_client(socat, tmp_path)
    cfg = write_config(tmp_path, "pylontech-rs485", pty, modules=6, cells_per_module=16)
    _, url = started(proc, cfg)
    client = connect()
    enc = PylontechEncode()

    assert query(client, enc.getProtocolVersion(), "decodePotocolVersion")["VER"] == 0x20
    info = query(client, enc.getManufacturerInfo(), "decodeManufacturerInfo")
    assert info["RTN"] == 0 and info["BatteryName"]

    cells_seen = []
    for module in range(6):
        before, a, after = read_around(url, lambda: query(client, enc.getAnalogValue(battNumber=module), "decodeAnalogValue"))
        assert a["RTN"] == 0 and a["ADR"] == 2 + module
        assert a["CellCount"] == 16
        (s0, c0), (s1, c1) = before, after
        for k, v in enumerate(a["CellVoltages"]):
            n = module * 16 + k
            assert between(v * 1000, c0["voltages_mv"][n], c1["voltages_mv"][n], 1), f"module {module} cell {k}"
        cells_seen += a["CellVoltages"]
        # Temperatures: the BMS first, then cell groups; all between the pack's min and max.
        lo = min(s0["battery"]["temperature_min_c"], s1["battery"]["temperature_min_c"]) - 0.1
        hi = max(s0["battery"]["temperature_max_c"], s1["battery"]["temperature_max_c"]) + 0.1
        assert a["Temperatures"] and all(lo <= t <= hi for t in a["Temperatures"]), a["Temperatures"]
        # There is no SOC field: clients compute remaining / total, which must be the reported SOC.
        soc = 100 * a["RemainCapacity"] / a["ModuleTotalCapacity"]
        assert between(soc, s0["reported"]["soc_pct"], s1["reported"]["soc_pct"], 0.1)
        assert a["Current"] == 0.0  # at rest
    assert len(cells_seen) == 96

    m = query(client, enc.getChargeDischargeManagement(battNumber=0), "decodeChargeDischargeManagementInfo")
    assert m["RTN"] == 0

    serial_no = query(client, enc.getSerialNumber(battNumber=5), "decodeSerialNumber")
    assert serial_no["RTN"] == 0 and serial_no["ModuleSerialNumber"]
    alarms = query(client, enc.getAlarmInfo(battNumber=2), "decodeAlarmInfo")
    assert alarms["RTN"] == 0 and alarms["CellCount"] == 16

    # A module we do not have: the protocol's address error, not silence and not module 1's data.
    from pylontech import PylontechDecode

    frame = enc.genFrame(2, 0x42, 4, "0901")  # ADR 2 asked for the module at address 9 (we are 2..7)
    client.send(frame)
    d = PylontechDecode()
    h = d.decode_header(client.receive(3)[0])
    assert h["RTN"] == 0x90


def drain(ser, quiet=0.1):
    ser.timeout = quiet
    while ser.read(512):
        pass


@NO_LOW_VOLTAGE_PACK
def test_random_bytes_between_pylontech_requests_never_lose_a_good_request(proc, socat, tmp_path):
    from pylontech import PylontechEncode

    pty, connect = pylontech_client(socat, tmp_path)
    started(proc, write_config(tmp_path, "pylontech-rs485", pty))
    client = connect()
    enc = PylontechEncode()
    rng = random.Random(42)
    alphabet = b"~\r0123456789ABCDEF" + bytes(range(256))
    good = enc.getAnalogValue(battNumber=0)
    for i in range(40):
        garbage = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 60)))
        if i % 5 == 4:
            garbage = b"~" + good[: rng.randrange(1, len(good))]  # a request cut short, no end byte
        client.rs485.ser.write(garbage)
        # Garbage that happens to look like a frame for us may be answered with an error reply, as the protocol
        # says; read it off the line before the good request.
        drain(client.rs485.ser)
        a = query(client, good, "decodeAnalogValue")  # the client itself skips anything before its reply
        assert a["RTN"] == 0 and a["CellCount"] == 16, f"round {i}: after {garbage!r}: {a}"
        assert len(a["CellVoltages"]) == 16 and all(3.0 < v < 4.3 for v in a["CellVoltages"])


def test_demo_answers_on_a_serial_port_for_any_client(proc, socat, tmp_path):
    """`dbe demo --serial`: the simulated pack answers a real client on a pty, without writing a config."""
    dbe_side, client_side = pty_pair(socat, tmp_path)
    p = proc("demo", "--inverter", "byd-modbus", "--serial", dbe_side, "--baud", "9600", "--http", "127.0.0.1:0")
    url = dashboard_url(p)
    wait_for(lambda: http_json(f"{url}/api/status")["data_valid"], 60, "the simulated pack's data")
    c = modbus_client(client_side)
    try:
        regs = wait_for(lambda: (lambda r: None if r.isError() else r.registers)(
            c.read_holding_registers(300, count=24, device_id=SLAVE)), 20, "an answer from the demo")
        s = http_json(f"{url}/api/status")
        assert abs(regs[10] / 10 - s["battery"]["voltage_v"]) <= 0.5
        assert 100 <= regs[3] <= 10000
    finally:
        c.close()


def test_demo_refuses_serial_for_a_can_protocol():
    from conftest import dbe

    r = dbe("demo", "--inverter", "pylon-can", "--serial", "/dev/null", check=False)
    assert r.returncode != 0 and "RS485 protocol" in r.stderr

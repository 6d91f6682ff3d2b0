"""`dbe demo`, `dbe list` and `dbe decode` as a new user runs them."""
import json

from conftest import ARTIFACTS, dbe


def test_list_names_the_leaf_and_pylon():
    out = dbe("list").stdout
    assert "nissan-leaf" in out and "pylon-can" in out
    assert "supports:" in out


def test_demo_json_bridges_a_leaf_to_a_pylon_inverter():
    r = dbe("demo", "--http", "off", "--json", "--speed", "600", "--duration", "20m", timeout=120)
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert lines, r.stderr
    last = lines[-1]
    assert last["time_ms"] == 20 * 60 * 1000
    b = last["battery"]
    assert b["contactors"] != "open", last
    assert 200 < b["voltage_v"] < 420
    assert b["cell_count"] == 96
    assert 3000 <= b["cell_min_mv"] <= b["cell_max_mv"] <= 4250
    assert last["data_valid"] is True
    assert last["contactor_request"] == "closed"
    inv = last["simulated_inverter"]
    assert inv["state"] == "Running"
    # What the simulated inverter decoded from the wire equals what the supervisor decided.
    assert abs(inv["told_charge_limit_a"] - last["limits"]["charge_current_a"]) <= 0.1
    assert abs(inv["told_discharge_limit_a"] - last["limits"]["discharge_current_a"]) <= 0.1
    assert abs(inv["told_voltage_v"] - b["voltage_v"]) <= 0.2
    (ARTIFACTS / "demo.jsonl").write_text(r.stdout)


def test_demo_json_bridges_a_tesla_model3_with_96_cells():
    r = dbe("demo", "--battery", "tesla-model3", "--http", "off", "--json", "--speed", "600", "--duration", "5m",
            timeout=120)
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert lines, r.stderr
    last = lines[-1]
    assert last["time_ms"] == 5 * 60 * 1000
    assert last["contactor_mode"] == "can", last
    b = last["battery"]
    assert b["type"] == "tesla-model3"
    assert b["contactors"] == "closed", last
    assert b["cell_count"] == 96
    assert 2950 <= b["cell_min_mv"] <= b["cell_max_mv"] <= 4250
    assert 285 < b["voltage_v"] < 403
    assert last["data_valid"] is True
    assert last["contactor_request"] == "closed"
    inv = last["simulated_inverter"]
    assert inv["state"] == "Running"
    assert inv["told_charge_limit_a"] > 0 and inv["told_discharge_limit_a"] > 0
    assert abs(inv["told_voltage_v"] - b["voltage_v"]) <= 0.2


def _listed(section):
    """The names `dbe list` gives under `section` ("Batteries:", "Inverter protocols:")."""
    names, inside = [], False
    for line in dbe("list").stdout.splitlines():
        if not line.startswith(" "):
            inside = line.strip() == section
        elif inside and line.startswith("  ") and not line.startswith("   "):
            names.append(line.split()[0])
    return names


def test_every_listed_protocol_bridges_every_listed_pack_in_the_demo():
    """A new user picks any pair from `dbe list`: the demo either bridges it (the simulated inverter running and
    told exactly what the supervisor decided) or refuses it up front with the reason."""
    packs, protocols = _listed("Batteries:"), _listed("Inverter protocols:")
    assert {"nissan-leaf", "tesla-model3"} <= set(packs), packs
    assert {"pylon-can", "byd-can", "solax-can", "foxess-can", "ferroamp-can", "solxpow-can", "sofar-can",
            "growatt-hv-can"} <= set(protocols)
    bridged = []
    for pack in packs:
        for protocol in protocols:
            r = dbe("demo", "--battery", pack, "--inverter", protocol, "--http", "off", "--json", "--speed", "600",
                    "--duration", "3m", check=False, timeout=120)
            if r.returncode != 0:
                assert "cannot carry this pack" in r.stderr, (pack, protocol, r.stderr[-2000:])
                continue
            lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
            assert lines, (pack, protocol, r.stderr[-2000:])
            last = lines[-1]
            inv = last["simulated_inverter"]
            what = (pack, protocol, last)
            assert inv["state"] == "Running", what
            assert last["battery"]["contactors"] == "closed", what
            assert inv["told_charge_limit_a"] > 0 and inv["told_discharge_limit_a"] > 0, what
            # Never more than decided; less only by the protocol's resolution (whole amps, or power over voltage).
            for told, decided in ((inv["told_charge_limit_a"], last["limits"]["charge_current_a"]),
                                  (inv["told_discharge_limit_a"], last["limits"]["discharge_current_a"])):
                assert decided - 1.0 <= told <= decided + 1e-6, what
            bridged.append((pack, protocol))
    # Only the 48 V protocol may refuse the HV packs.
    for pack in packs:
        assert {p for (k, p) in bridged if k == pack} >= set(protocols) - {"pylontech-rs485"}, (pack, bridged)


def test_demo_status_lines_are_readable():
    r = dbe("demo", "--http", "off", "--speed", "120", "--duration", "2m", timeout=60)
    lines = [l for l in r.stdout.splitlines() if "SOC" in l]
    assert lines, r.stdout + r.stderr
    assert "contactors" in lines[-1] and "limits" in lines[-1]


def test_demo_rejects_bad_arguments_clearly():
    r = dbe("demo", "--speed", "fast", check=False)
    assert r.returncode != 0 and "speed" in r.stderr
    r = dbe("demo", "--battery", "tesla-roadster", check=False)
    assert r.returncode != 0 and "nissan-leaf" in r.stderr


def test_decode_reports_malformed_lines_with_their_number(tmp_path):
    log = tmp_path / "leaf.log"
    log.write_text(
        "(1700000000.000000) can0 1DB#FFFFFFFFFFFFFFFF\n"
        "this is not a candump line\n"
        "(1700000000.010000) can0 5BC#\n"
    )
    r = dbe("decode", "--battery", "nissan-leaf", str(log))
    assert ":2:" in r.stderr and "skipped" in r.stderr
    final = json.loads(r.stdout.splitlines()[-1])
    assert final["lines_malformed"] == 1
    assert final["frames"] == 2

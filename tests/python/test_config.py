"""`dbe check-config` and `dbe config-example`: every error class names the key and the line."""
from conftest import dbe


def check(tmp_path, text):
    f = tmp_path / "dbe.toml"
    f.write_text(text)
    return dbe("check-config", str(f), check=False)


def test_the_example_is_complete_and_valid(tmp_path):
    example = dbe("config-example").stdout
    for section in ("[battery]", "[inverter]", "[rs485]", "[limits]", "[web]", "[record]", "[mqtt]"):
        assert section in example
    r = check(tmp_path, example)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_unknown_key_is_named_with_its_line(tmp_path):
    r = check(tmp_path, "[limits]\nmax_charge_current_a = 10.0\nmax_dischrge_current_a = 10.0\n")
    assert r.returncode != 0
    assert "line 3" in r.stderr and "max_dischrge_current_a" in r.stderr


def test_wrong_type_is_named_with_its_line(tmp_path):
    r = check(tmp_path, "autostart = true\n[limits]\nsoc_min_pct = \"low\"\n")
    assert r.returncode != 0
    assert "line 3" in r.stderr


def test_out_of_range_values_are_all_reported(tmp_path):
    r = check(tmp_path, "[limits]\nmax_charge_current_a = 5000\nsoc_min_pct = 95\nsoc_max_pct = 90\n[battery]\ntype = \"nope\"\n")
    assert r.returncode != 0
    assert "line 2: limits.max_charge_current_a" in r.stderr
    assert "limits.soc_max_pct" in r.stderr
    assert "line 6: battery.type" in r.stderr and "nissan-leaf" in r.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    r = dbe("check-config", str(tmp_path / "absent.toml"), check=False)
    assert r.returncode != 0 and "cannot read" in r.stderr


def test_pylontech_rs485_with_a_high_voltage_pack_names_both_keys(tmp_path):
    r = check(tmp_path, '[battery]\ntype = "nissan-leaf"\n[inverter]\nprotocol = "pylontech-rs485"\n'
                        '[rs485]\nport = "/dev/ttyUSB0"\n')
    assert r.returncode != 0
    assert "line 4: inverter.protocol" in r.stderr, r.stderr
    assert 'battery.type = "nissan-leaf" (line 2)' in r.stderr and "65.535 V" in r.stderr, r.stderr


def test_the_demo_refuses_pylontech_rs485_with_the_same_message():
    r = dbe("demo", "--inverter", "pylontech-rs485", "--duration", "1s", "--http", "off", check=False)
    assert r.returncode != 0
    assert "inverter.protocol" in r.stderr and "65.535 V" in r.stderr, r.stderr


def test_sharing_with_transmit_off_loopback_is_refused(tmp_path):
    r = check(tmp_path, '[share]\nallow_transmit = true\ngvret_bind = "0.0.0.0:2323"\n')
    assert r.returncode != 0
    assert "line 3: share.gvret_bind" in r.stderr and "allow_transmit" in r.stderr, r.stderr
    r = check(tmp_path, '[share]\ngvret_bind = "0.0.0.0:2323"\n')
    assert r.returncode == 0, r.stderr


def test_a_cell_limit_set_alone_is_checked_against_the_chemistrys_other(tmp_path):
    r = check(tmp_path, "[limits]\nmin_cell_voltage_mv = 4100\n")
    assert r.returncode != 0 and "line 2: limits.min_cell_voltage_mv" in r.stderr, r.stderr
    r = check(tmp_path, "[limits]\nmax_cell_voltage_mv = 42\n")
    assert r.returncode != 0 and "line 2: limits.max_cell_voltage_mv" in r.stderr, r.stderr


def test_every_drivers_options_round_trip_through_the_example(tmp_path):
    """Each driver's table is in the example; each option set to another valid value still checks, and one out of
    its bounds is refused at its key and line."""
    import re
    example = dbe("config-example").stdout
    tables = re.findall(r"^\[((?:battery|inverter)\.[a-z0-9_]+)\]$", example, re.M)
    assert {"battery.nissan_leaf", "inverter.pylon_can", "inverter.pylontech_rs485", "inverter.byd_modbus"} <= set(tables)
    changed = (example.replace('interlock = "auto"', 'interlock = "required"')
               .replace('byte_order = "big-endian"', 'byte_order = "little-endian"')
               .replace("primo_gen24 = false", "primo_gen24 = true")
               .replace("cells_per_module = 16", "cells_per_module = 15"))
    assert changed != example
    r = check(tmp_path, changed)
    assert r.returncode == 0, r.stderr
    bad = changed.replace("slave = 21", "slave = 300")
    line = bad.splitlines().index("slave = 300") + 1
    r = check(tmp_path, bad)
    assert r.returncode != 0
    assert f"line {line}: inverter.byd_modbus.slave: 300 is out of range, expected 1 to 247" in r.stderr, r.stderr


def test_an_old_flat_file_still_loads_and_warns_naming_the_new_key(tmp_path):
    r = check(tmp_path, '[inverter]\nprotocol = "pylon-can"\npylon_little_endian = true\nbyd_slave = 7\n')
    assert r.returncode == 0, r.stderr
    assert "line 3: inverter.pylon_little_endian: deprecated, write it as inverter.pylon_can.byte_order" in r.stderr, r.stderr
    assert "line 4: inverter.byd_slave: deprecated, write it as inverter.byd_modbus.slave" in r.stderr, r.stderr


def test_every_error_of_a_file_is_reported_in_one_pass_sorted_by_line(tmp_path):
    r = check(tmp_path, '[limits]\nsoc_min_pct = "low"\ncolour = "blue"\n'
                        '[battery]\nport = "slcan:/dev/ttyACM0?bitrate=12345"\n'
                        '[inverter]\nprotocol = "sma-can"\n')
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.startswith("line ")]
    assert [l.split(":")[0] for l in lines] == ["line 2", "line 3", "line 5", "line 7"], r.stderr
    assert "limits.soc_min_pct" in lines[0]
    assert "limits.colour" in lines[1] and "unknown field" in lines[1]
    assert "battery.port" in lines[2] and "slcan cannot set bitrate 12345" in lines[2]
    assert "inverter.protocol" in lines[3] and "'sma-can' is not an inverter protocol" in lines[3]

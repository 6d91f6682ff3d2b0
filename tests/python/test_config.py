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

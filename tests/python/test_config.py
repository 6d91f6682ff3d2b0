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

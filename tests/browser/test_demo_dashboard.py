"""The dashboard of the real `dbe demo` (simulated LEAF, bridge, simulated Pylon inverter) in headless Chromium.

Where `test_dashboard.py` pins the page against a scripted fake, this proves the whole chain: what the browser
does reaches the bridge, and the simulated inverter on the other side of the bus is told the result. The demo
prints one JSON status line per second on stdout, including what the simulated inverter decoded from the wire.
"""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

REPO = Path(__file__).resolve().parents[2]
DBE = os.environ.get("DBE_BIN", str(REPO / "target" / "debug" / "dbe"))
CHROMIUM = os.environ.get("DBE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("DBE_ARTIFACTS", REPO / "artifacts")) / "screenshots"
PASSWORD = "correct horse battery"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Demo:
    """`dbe demo --json` with its JSON lines and log lines collected."""

    def __init__(self, *args):
        self.port = free_port()
        bind = "0.0.0.0" if "--password" in args else "127.0.0.1"
        self.p = subprocess.Popen(
            [DBE, "demo", "--json", "--http", f"{bind}:{self.port}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.status, self.log = [], []
        threading.Thread(target=self._read, args=(self.p.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.p.stderr, False), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: any("dashboard at" in l for l in self.log), 60, "the demo's dashboard")

    def _read(self, stream, is_json):
        for line in stream:
            if is_json and line.startswith("{"):
                self.status.append(json.loads(line))
            else:
                self.log.append(line.rstrip("\n"))

    def wait_status(self, pred, timeout, what):
        start = len(self.status)
        return wait_for(lambda: next((s for s in self.status[start:] if pred(s)), None), timeout, what)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def demo():
    d = Demo("--speed", "60")
    yield d
    d.stop()


def shoot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"demo-{name}.png"), full_page=True)


def test_status_values_appear_and_change(browser, demo):
    page = browser.new_page()
    page.goto(demo.url + "/")
    expect(page.locator("#soc-reported")).to_have_text(re.compile(r"\d+(\.\d)? %"), timeout=15_000)
    expect(page.locator("#voltage")).to_have_text(re.compile(r"\d{3}\.\d V"))
    expect(page.locator("#state-inverter")).to_contain_text(re.compile("pylon", re.I))
    # The simulated Pylon inverter sends its 0x8210 charge/discharge request: what it asks is shown.
    expect(page.locator("#state-inverter")).to_contain_text("asks to charge, asks to discharge", timeout=15_000)
    # The simulated household draws or feeds power all the time: pack values move without a reload.
    values = "() => ['current', 'voltage', 'energy', 'soc-real'].map((i) => document.getElementById(i).textContent).join('|')"
    first = page.evaluate(values)
    page.wait_for_function(f"(t) => ({values})() !== t", arg=first, timeout=30_000)
    shoot(page, "status")
    page.close()


def test_cells_page_shows_the_96_leaf_cells(browser, demo):
    page = browser.new_page()
    page.goto(demo.url + "/cells")
    expect(page.locator("#cell-bars .bar")).to_have_count(96, timeout=15_000)
    expect(page.locator("#cell-bars .bar.min")).not_to_have_count(0)
    expect(page.locator("#cell-bars .bar.max")).not_to_have_count(0)
    expect(page.locator("#cell-min")).to_have_text(re.compile(r"^3,?\d{3} mV"))
    shoot(page, "cells")
    page.close()


def test_pause_tells_the_simulated_inverter_zero_amps(browser, demo):
    demo.wait_status(lambda s: (s["simulated_inverter"]["told_charge_limit_a"] or 0) > 0, 30, "non-zero limits first")
    page = browser.new_page()
    page.goto(demo.url + "/controls")
    expect(page.locator("#ctl-state")).to_have_text("bridging", timeout=15_000)
    page.click("#btn-pause")
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-ok")
    expect(page.locator("#ctl-state")).to_have_text("paused", timeout=5_000)
    told = demo.wait_status(
        lambda s: s["paused"] and s["simulated_inverter"]["told_charge_limit_a"] == 0
        and s["simulated_inverter"]["told_discharge_limit_a"] == 0,
        15, "the simulated inverter to be told 0 A",
    )
    assert told["limits"]["charge_current_a"] == 0 and told["limits"]["discharge_current_a"] == 0
    page.goto(demo.url + "/")
    expect(page.locator("#lim-charge")).to_have_text(re.compile(r"^0(\.0)? A"), timeout=5_000)
    expect(page.locator("#lim-discharge")).to_have_text(re.compile(r"^0(\.0)? A"))
    expect(page.locator("#state-badge")).to_have_text("paused")
    shoot(page, "paused")
    page.goto(demo.url + "/controls")
    page.click("#btn-resume")
    expect(page.locator("#ctl-state")).to_have_text("bridging", timeout=5_000)
    demo.wait_status(lambda s: not s["paused"] and (s["simulated_inverter"]["told_charge_limit_a"] or 0) > 0, 15,
                     "limits back after resume")
    page.close()


def test_settings_refuse_a_bad_value_and_apply_a_good_one(browser, demo):
    page = browser.new_page()
    page.goto(demo.url + "/settings")
    field = page.locator("input[name='limits.max_charge_current_a']")
    expect(field).to_have_value("30", timeout=15_000)
    field.fill("5000")
    page.click("#settings-save")
    expect(page.locator("[data-error-for='limits.max_charge_current_a']")).to_contain_text("5000")
    shoot(page, "settings-error")
    config = page.request.get(demo.url + "/api/config").json()
    assert config["values"]["limits.max_charge_current_a"] == 30, "a refused value must not be saved"
    # The power limit binds first in the default config; lower both so the current limit is what shows.
    field.fill("8")
    page.locator("input[name='limits.max_charge_power_w']").fill("20000")
    page.click("#settings-save")
    expect(page.locator("#settings-msg")).to_have_text("Saved.", timeout=10_000)
    s = demo.wait_status(lambda s: 0 < s["limits"]["charge_current_a"] <= 8.0, 20, "the new charge limit in force")
    assert s["simulated_inverter"]["told_charge_limit_a"] is not None
    demo.wait_status(lambda s: 0 < (s["simulated_inverter"]["told_charge_limit_a"] or 0) <= 8.0, 20,
                     "the simulated inverter to be told the new limit")
    page.close()


def test_login_is_required_off_loopback(browser):
    d = Demo("--password", PASSWORD)
    try:
        ctx = browser.new_context()
        page = ctx.new_page()
        url = f"http://127.0.0.2:{d.port}"
        assert page.request.get(url + "/api/status").status == 401
        page.goto(url + "/")
        expect(page).to_have_url(url + "/login")
        page.fill("#password", "wrong")
        page.click("#login-submit")
        expect(page.locator("#login-error")).to_have_text("Wrong password.")
        page.fill("#password", PASSWORD)
        page.click("#login-submit")
        expect(page.locator("#soc-reported")).to_have_text(re.compile(r"%"), timeout=15_000)
        ctx.close()
    finally:
        d.stop()


def test_demo_refuses_to_expose_the_dashboard_without_a_password():
    r = subprocess.run([DBE, "demo", "--http", "0.0.0.0:0", "--duration", "1s"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "password" in r.stderr

"""The web dashboard in real headless Chromium (Debian's /usr/bin/chromium), driven by Playwright.

The server under test is a command that prints its URL (`http://...`) on stdout and one `request: NAME` line per
command it receives. By default that is the `web_fake` example; `DBE_WEB_CMD` replaces it (e.g. `dbe demo ...`).
The test appends `--bind ADDR` and, for the login test, `--password PW`.

Screenshots of every page at desktop and phone width go to `artifacts/screenshots/` (or `$DBE_ARTIFACTS/screenshots`).
"""

import os
import queue
import re
import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CMD = "cargo run -q -p dbe-services --example web_fake --"
CHROMIUM = os.environ.get("DBE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("DBE_ARTIFACTS", REPO / "artifacts")) / "screenshots"
PAGES = ["status", "cells", "pack", "events", "controls", "can", "settings"]
PASSWORD = "correct horse battery"


class Server:
    """A dashboard process; its stdout lines are kept in a queue so the test can wait on them."""

    def __init__(self, extra_args, start_timeout=600):
        cmd = shlex.split(os.environ.get("DBE_WEB_CMD", DEFAULT_CMD)) + extra_args
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        line = self.wait_line(r"http://\S+", start_timeout)  # the first run may build the example
        self.url = re.search(r"http://\S+", line).group(0).rstrip("/")

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; got {seen[-20:]}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"server exited ({self.proc.wait()}) before {pattern!r}; output: {seen[-20:]}")
            seen.append(line)
            if re.search(pattern, line):
                return line

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server():
    s = Server(["--bind", "127.0.0.1:0"])
    yield s
    s.stop()


def shoot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_status_values_appear_and_change(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/")
    soc = page.locator("#soc-reported")
    expect(soc).to_have_text(re.compile(r"\d+(\.\d)? %"), timeout=10_000)
    expect(page.locator("#voltage")).to_have_text(re.compile(r"\d+\.\d V"))
    expect(page.locator("#conn")).to_have_class(re.compile("live"))
    # The fake's power swings continuously: a new value must show up without reloading.
    first = page.locator("#current").text_content()
    page.wait_for_function("(t) => document.getElementById('current').textContent !== t", arg=first, timeout=10_000)
    expect(page.locator("#state-inverter")).to_contain_text("PYLON_CAN")
    expect(page.locator("#chart svg path.series")).to_have_count(3, timeout=15_000)
    page.close()


def test_cells_page_has_a_bar_per_cell(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/cells")
    expect(page.locator("#cell-bars .bar")).to_have_count(96, timeout=10_000)
    expect(page.locator("#cell-bars .bar.min")).not_to_have_count(0)
    expect(page.locator("#cell-bars .bar.max")).not_to_have_count(0)
    expect(page.locator("#cell-bars .bar.bal")).to_have_count(6)
    page.locator("#cell-bars .bar").nth(4).click()
    expect(page.locator("#cell-tip")).to_contain_text("Cell 5: ")
    page.close()


def test_pack_page_lists_the_known_values_with_their_labels_and_units(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/pack")
    rows = page.locator("#pack-extras tr")
    expect(rows).not_to_have_count(0, timeout=10_000)
    expect(page.locator("#pack-extras tr[data-key=leaf_hx] th")).to_have_text("Hx")
    expect(page.locator("#pack-extras tr[data-key=leaf_hx] td")).to_have_text("87.51 %")
    expect(page.locator("#pack-extras tr[data-key=insulation_resistance] td")).to_have_text(re.compile(r"^5.?000 kΩ$"))
    expect(page.locator("#pack-extras tr[data-key=generation] td")).to_have_text("AZE0")
    expect(page.locator("#pack-extras tr[data-key=interlock] td")).to_have_text("yes")
    expect(page.locator("#pack-extras tr[data-key=gids] td")).to_have_text(re.compile(r"^\d+$"))
    # Never reported by the fake: not shown at all (no 0, no dash).
    expect(page.locator("#pack-extras tr[data-key=failsafe_status]")).to_have_count(0)
    expect(page.locator("#pack-empty")).to_be_hidden()
    expect(page.locator("nav a[data-page=pack]")).to_have_class(re.compile("on"))
    page.close()


def test_events_filter_by_level(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/events")
    rows = page.locator("#event-rows tr")
    expect(rows).not_to_have_count(0, timeout=10_000)
    page.click("#level-filter button[data-level=ERROR]")
    expect(rows).to_have_count(1)
    expect(page.locator("#event-rows tr[data-level=ERROR]")).to_have_count(1)
    page.click("#level-filter button[data-level='']")
    expect(page.locator("#event-rows tr[data-level=WARNING]")).to_have_count(2)
    page.close()


def test_pause_asks_then_sends_pause_and_shows_it(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/controls")
    expect(page.locator("#ctl-state")).to_have_text("bridging", timeout=10_000)
    page.click("#btn-pause")
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-cancel")
    expect(page.locator("#confirm")).to_be_hidden()
    page.click("#btn-pause")
    page.click("#confirm-ok")
    server.wait_line(r"^request: PAUSE$", 10)
    expect(page.locator("#ctl-state")).to_have_text("paused", timeout=5_000)
    expect(page.locator("#state-badge")).to_have_text("paused")
    page.click("#btn-resume")  # resuming is not dangerous: no confirmation
    server.wait_line(r"^request: RESUME$", 10)
    expect(page.locator("#ctl-state")).to_have_text("bridging", timeout=5_000)
    page.close()


def test_bad_limits_are_refused_with_the_reason(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/controls")
    page.fill("#limits-form input[name=charge_a]", "-5")
    page.click("#limits-form button[type=submit]")
    page.click("#confirm-ok")
    expect(page.locator("#toast")).to_contain_text("charge_a is -5")
    page.close()


def test_settings_errors_show_next_to_the_field(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/settings")
    field = page.locator("input[name='limits.max_charge_a']")
    expect(field).to_have_value("50", timeout=10_000)
    field.fill("999")
    page.click("#settings-save")
    expect(page.locator("[data-error-for='limits.max_charge_a']")).to_contain_text("out of range")
    field.fill("40")
    page.click("#settings-save")
    expect(page.locator("#settings-msg")).to_have_text("Saved.")
    page.close()


def test_can_page_shows_frames_and_filters(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/can")
    expect(page.locator("#can-rows tr")).not_to_have_count(0, timeout=10_000)
    page.fill("#can-ids", "1DB")
    page.press("#can-ids", "Enter")
    page.click("#can-clear")
    expect(page.locator("#can-rows tr")).not_to_have_count(0, timeout=10_000)
    ids = page.locator("#can-rows tr td:nth-child(4)").all_text_contents()
    assert set(ids) == {"1DB"}, ids
    dirs = page.locator("#can-rows tr td:nth-child(3)").all_text_contents()
    assert set(dirs) == {"R"}, f"the pack's frames are marked received: {dirs}"
    page.click("#rec-start")
    expect(page.locator("#rec-status")).to_contain_text("Recording", timeout=5_000)
    page.click("#rec-stop")
    expect(page.locator("#rec-download")).to_be_visible(timeout=5_000)
    page.close()


@pytest.mark.parametrize("width,height,tag", [(1280, 900, "desktop"), (390, 844, "phone")])
def test_screenshots(browser, server, width, height, tag):
    ctx = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    page = ctx.new_page()
    for name in PAGES:
        page.goto(server.url + ("/" if name == "status" else "/" + name))
        expect(page.locator("#state-badge")).not_to_have_text("…", timeout=10_000)
        if name == "status":
            expect(page.locator("#chart svg")).to_have_count(1)
        if name == "cells":
            expect(page.locator("#cell-bars .bar")).to_have_count(96)
        if name == "pack":
            expect(page.locator("#pack-extras tr")).not_to_have_count(0, timeout=10_000)
        if name == "can":
            expect(page.locator("#can-rows tr")).not_to_have_count(0, timeout=10_000)
        if name == "settings":
            expect(page.locator("#settings-form label")).not_to_have_count(0, timeout=10_000)
        shoot(page, f"{name}-{tag}")
    ctx.close()


def test_login_required_off_loopback(browser):
    s = Server(["--bind", "0.0.0.0:0", "--password", PASSWORD])
    try:
        port = s.url.rsplit(":", 1)[1]
        url = f"http://127.0.0.2:{port}"  # any address on this machine; the server listens on all
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        page = ctx.new_page()
        page.goto(url + "/controls")
        expect(page).to_have_url(url + "/login")
        r = page.request.get(url + "/api/status")
        assert r.status == 401, r.status
        page.fill("#password", "wrong password")
        page.click("#login-submit")
        expect(page.locator("#login-error")).to_have_text("Wrong password.")
        shoot(page, "login-desktop")
        page.fill("#password", PASSWORD)
        page.click("#login-submit")
        expect(page).to_have_url(url + "/")
        expect(page.locator("#soc-reported")).to_have_text(re.compile(r"%"), timeout=10_000)
        cookie = [c for c in ctx.cookies() if c["name"] == "dbe_session"][0]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
        assert page.request.get(url + "/api/status").status == 200
        page.click("#logout button")
        expect(page).to_have_url(url + "/login")
        ctx.close()
    finally:
        s.stop()

"""Shared helpers for the end-to-end tests: where the dbe binary is, where artifacts go, and a way to run it as a
child process that is always cleaned up."""
import json
import os
import pathlib
import signal
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DBE = os.environ.get("DBE_BIN", str(ROOT / "target" / "debug" / "dbe"))
ARTIFACTS = pathlib.Path(os.environ.get("DBE_ARTIFACTS", ROOT / "artifacts"))
ARTIFACTS.mkdir(parents=True, exist_ok=True)


def dbe(*args, timeout=120, check=True, **kw):
    """Runs dbe to completion and returns the CompletedProcess (text mode)."""
    return subprocess.run([DBE, *args], capture_output=True, text=True, timeout=timeout, check=check, **kw)


def wait_for(cond, timeout, what, interval=0.05):
    """Polls cond() until it is truthy or the deadline passes; returns its value or fails naming what it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A dbe child process whose stdout lines are collected by a reader thread."""

    def __init__(self, *args, env=None):
        import threading

        self.lines = []
        self.err_lines = []
        self.p = subprocess.Popen([DBE, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self._t = threading.Thread(target=self._read, args=(self.p.stdout, self.lines), daemon=True)
        self._e = threading.Thread(target=self._read, args=(self.p.stderr, self.err_lines), daemon=True)
        self._t.start()
        self._e.start()

    @staticmethod
    def _read(stream, out):
        for line in stream:
            out.append(line.rstrip("\n"))

    def json_lines(self):
        out = []
        for l in list(self.lines):
            try:
                out.append(json.loads(l))
            except json.JSONDecodeError:
                pass
        return out

    def control(self, line, timeout=10):
        """Sends a fault line to `dbe simulate` and returns its answer once it has taken effect."""
        n = len(self.lines)
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

        def answered():
            for l in self.lines[n:]:
                if '"control"' in l:
                    return json.loads(l)
            return None

        answer = wait_for(answered, timeout, f"dbe simulate to take `{line}`")
        assert "error" not in answer, answer
        return answer

    def wait_line(self, pred, timeout, what):
        return wait_for(lambda: next((l for l in list(self.lines) + list(self.err_lines) if pred(l)), None), timeout, what)

    def terminate(self, sig=signal.SIGTERM, timeout=10):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._t.join(2)
        self._e.join(2)
        return self.p.returncode


@pytest.fixture
def proc():
    procs = []

    def start(*args, env=None):
        p = Proc(*args, env=env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.terminate(signal.SIGKILL)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(port, conf_dir):
    """A real Mosquitto broker listening on loopback `port` (its config written into `conf_dir`), once it listens."""
    import shutil
    import socket

    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = pathlib.Path(conf_dir) / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    p = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(up, 10, "mosquitto to listen")
    return p


@pytest.fixture
def mosquitto(tmp_path):
    """A real Mosquitto broker on a free loopback port, for this test only."""
    port = free_port()
    p = start_broker(port, tmp_path)
    yield port
    p.terminate()
    p.wait(5)


class Mqtt:
    """An independent MQTT client (paho) that records every message it sees."""

    def __init__(self, port):
        import paho.mqtt.client as mqtt

        self.messages = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload.decode(errors="replace"), m.retain))
        self.c.connect("127.0.0.1", port)
        self.c.subscribe("#")
        self.c.loop_start()

    def last(self, topic):
        for t, p, _ in reversed(list(self.messages)):
            if t == topic:
                return p
        return None

    def publish(self, topic, payload):
        self.c.publish(topic, payload).wait_for_publish(5)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def socat(tmp_path):
    """Starts socat with two addresses and waits until the given paths exist (pty links) or ports listen.

    Returns a function `start(addr1, addr2, wait_paths=(), wait_port=None)`; every socat started is killed at the
    end of the test. Pseudo-terminals stand in for RS485 adapters; a TCP side stands in for an RS485-to-Ethernet
    converter."""
    import shutil
    import socket

    exe = shutil.which("socat") or "/usr/bin/socat"
    started = []

    def start(a, b, wait_paths=(), wait_port=None):
        p = subprocess.Popen([exe, a, b], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(p)
        for path in wait_paths:
            wait_for(lambda: pathlib.Path(path).exists(), 10, f"socat to create {path}")
        if wait_port is not None:
            def up():
                try:
                    socket.create_connection(("127.0.0.1", wait_port), timeout=0.2).close()
                    return True
                except OSError:
                    return False
            # A probing connection would end a single-shot TCP-LISTEN; callers use `fork` or wait on the path.
            wait_for(up, 10, f"socat to listen on {wait_port}")
        return p

    yield start
    for p in started:
        p.kill()
        p.wait(5)


def pty_pair(socat, tmp_path, name="pty"):
    """A connected pair of pseudo-terminals (raw, no echo); returns their two paths."""
    a, b = tmp_path / f"{name}-a", tmp_path / f"{name}-b"
    socat(f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}", wait_paths=(a, b))
    return str(a), str(b)


def http_json(url, timeout=5):
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def dashboard_url(p, timeout=60):
    """The dashboard URL a dbe child process printed on stderr."""
    line = p.wait_line(lambda l: "dashboard at http" in l, timeout, "the dashboard URL")
    return line[line.index("http"):].strip().rstrip("/")

"""The figures behind `scripts/bench`: the whole daemon (release build) at full bus load over slcan on a pty and over
socketcand on loopback, its footprint, its start-up and its reaction to a silent pack. Writes a Markdown table.

Every figure is measured on the machine it runs on and printed, never compared with a threshold: the point is
that anyone can reproduce them with one command. CPU is the dbe process's own utime+stime from /proc, as % of one
core; peak RSS is VmHWM; frames are the bridge's own counters (`frames_battery.rx` in `dbe run --json`).
"""
import json
import os
import pathlib
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
DBE = str(ROOT / "target" / "release" / "dbe")
TICK = os.sysconf("SC_CLK_TCK")
LOAD_SECONDS = float(os.environ.get("DBE_BENCH_SECONDS", "20"))
RATE = 4000  # filler frames/s: the full frame rate of a 500 kbit/s bus (about 4000 8-byte frames/s)


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
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.02)


def cpu_seconds(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def status_kib(pid, key):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Daemon:
    """`dbe run --json` with its status lines collected."""

    def __init__(self, config_text, folder, realtime=False):
        self.web = free_port()
        cfg = pathlib.Path(folder) / "dbe.toml"
        cfg.write_text(config_text + f'\n[web]\nbind = "127.0.0.1:{self.web}"\n')
        self.started = time.monotonic()
        extra = ["--realtime"] if realtime else []
        self.p = subprocess.Popen([DBE, "run", "--config", str(cfg), "--json", "--log-level", "warn", *extra],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            if line.startswith("{"):
                self.lines.append((time.monotonic(), json.loads(line)))

    def status(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web}/api/status", timeout=2) as r:
            return json.loads(r.read())

    def bridging(self):
        try:
            s = self.status()
        except OSError:
            return None
        return s if s["data_valid"] and s["limits"]["charge_current_a"] > 0 else None

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


class Arrivals:
    """An independent client (python-can, socketcand) on the simulator's bus, timestamping arrivals of the frames
    DBE sends to the pack. Measured at the receiver, so the figures include the pty, the simulator and this
    client: an upper bound on DBE's own jitter. Both run SCHED_FIFO (when allowed) so CPU hogs mostly disturb DBE."""

    def __init__(self, port, nominal_ms):
        import can

        self.nominal = nominal_ms
        self.times = {i: [] for i in nominal_ms}
        self.bus = can.Bus(interface="socketcand", host="127.0.0.1", port=port, channel="can0")
        self.running = True
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        # The observer and the simulator run real-time themselves, so the hogs disturb only what is measured: DBE.
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(45))
        except OSError:
            pass
        while self.running:
            m = self.bus.recv(0.2)
            if m is not None and m.arbitration_id in self.times and not m.is_extended_id:
                self.times[m.arbitration_id].append(time.perf_counter())

    def stop(self):
        self.running = False
        self.t.join(2)
        self.bus.shutdown()

    def jitter(self, fid):
        ts = self.times[fid]
        dev = sorted(abs((b - a) * 1000 - self.nominal[fid]) for a, b in zip(ts, ts[1:]))
        if not dev:
            return 0.0, 0.0, 0.0, 0
        pick = lambda q: dev[min(len(dev) - 1, int(q * len(dev)))]
        return pick(0.5), pick(0.99), dev[-1], len(dev)


def spawn(*args):
    return subprocess.Popen([DBE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure_load(d, seconds):
    """CPU % of one core, peak RSS and battery frames/s of the daemon over `seconds` of steady state."""
    wait_for(d.bridging, 60, "the bridge to come up")
    c0, s0, t0 = cpu_seconds(d.p.pid), d.status(), time.monotonic()
    time.sleep(seconds)  # the measurement window itself, not synchronisation
    c1, s1, t1 = cpu_seconds(d.p.pid), d.status(), time.monotonic()
    rx = s1["frames_battery"]["rx"] - s0["frames_battery"]["rx"]
    tx = s1["frames_battery"]["tx"] - s0["frames_battery"]["tx"] + s1["frames_inverter"]["tx"] - s0["frames_inverter"]["tx"]
    return {
        "cpu": 100 * (c1 - c0) / (t1 - t0),
        "rss": status_kib(d.p.pid, "VmHWM"),
        "rx_per_s": rx / (t1 - t0),
        "tx_per_s": tx / (t1 - t0),
    }


def socat_pair(folder):
    a, b = pathlib.Path(folder) / "adapter", pathlib.Path(folder) / "host"
    p = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: a.exists() and b.exists(), 10, "socat")
    return p, str(a), str(b)


INVERTER_SIM = '[inverter]\nprotocol = "pylon-can"\nport = "sim:"\n'


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "artifacts" / "bench.md")
    core_lines = pathlib.Path(sys.argv[2]).read_text().splitlines() if len(sys.argv) > 2 else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Footprint and start-up: simulated pack and inverter inside the daemon.
        d = Daemon('[battery]\ntype = "nissan-leaf"\nport = "sim:"\n' + INVERTER_SIM, tmp)
        wait_for(d.bridging, 60, "the bridge to come up")
        startup = time.monotonic() - d.started
        idle = measure_load(d, min(LOAD_SECONDS, 10))
        d.stop()
        stripped = pathlib.Path(tmp) / "dbe.stripped"
        subprocess.run(["strip", "-o", str(stripped), DBE], check=True)
        rows.append(("release binary size (as built / stripped)",
                     f"{os.path.getsize(DBE) / 1e6:.1f} MB / {os.path.getsize(stripped) / 1e6:.1f} MB"))
        rows.append(("start-up to bridging (sim pack closes its contactors, inverter gets non-zero limits)",
                     f"{startup:.2f} s"))
        rows.append(("`dbe run` with simulated pack and inverter inside it: CPU / peak RSS",
                     f"{idle['cpu']:.1f} % of one core / {idle['rss'] / 1024:.1f} MiB"))

        # Full bus load over socketcand on loopback, and the reaction to the pack going silent.
        port = free_port()
        sim = spawn("simulate", "--pack", "--rate", str(RATE), "--socketcand", f"127.0.0.1:{port}")
        wait_for(lambda: _listening(port), 20, "the simulator's socketcand server")
        d = Daemon(f'[battery]\ntype = "nissan-leaf"\nport = "socketcand:127.0.0.1:{port}/can0"\n'
                   '[limits]\nbattery_stale_timeout_s = 2\n' + INVERTER_SIM, tmp)
        m = measure_load(d, LOAD_SECONDS)
        rows.append((f"full 500 kbit/s bus over socketcand (pack + {RATE} filler frames/s): CPU / peak RSS",
                     f"{m['cpu']:.1f} % of one core / {m['rss'] / 1024:.1f} MiB"))
        rows.append(("  frames in / out per second (bridge counters; offered: the filler plus about 230 pack frames/s)", f"{m['rx_per_s']:.0f} / {m['tx_per_s']:.0f}"))
        sim.kill()
        t0 = time.monotonic()
        wait_for(lambda: (lambda s: s and s["limits"]["charge_current_a"] == 0)(_try(d.status)), 30, "0 A")
        rows.append(("reaction: pack silent → inverter told 0 A (stale timeout 2 s)", f"{time.monotonic() - t0:.2f} s"))
        d.stop()

        # Full bus load over slcan on a pty; the keep-alive timing seen by a client of the simulator's own bus
        # (its socketcand server), idle and with two CPU hogs, without and with real-time mode.
        for label, stress, realtime in [("", False, False), (", 2 CPU hogs running", True, False),
                                        (", 2 CPU hogs, `--realtime`", True, True)]:
            socat, adapter, host = socat_pair(tmp)
            port = free_port()
            sim = subprocess.Popen(["chrt", "-f", "45", DBE, "simulate", "--pack", "--rate", str(RATE), "--slcan", adapter,
                                    "--socketcand", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            wait_for(lambda: _listening(port), 20, "the simulator's socketcand server")
            d = Daemon(f'[battery]\ntype = "nissan-leaf"\nport = "slcan:{host}?bitrate=500000"\n' + INVERTER_SIM, tmp,
                       realtime=realtime)
            wait_for(d.bridging, 60, "the bridge to come up")
            hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(2 if stress else 0)]
            watch = Arrivals(port, {0x1D4: 10, 0x50B: 100})
            m = measure_load(d, LOAD_SECONDS)
            watch.stop()
            for h in hogs:
                h.kill()
            if not stress:
                rows.append((f"full 500 kbit/s bus over slcan on a pty (pack + {RATE} filler frames/s): CPU / peak RSS",
                             f"{m['cpu']:.1f} % of one core / {m['rss'] / 1024:.1f} MiB"))
                rows.append(("  frames in / out per second (bridge counters; offered: the filler plus about 230 pack frames/s)",
                             f"{m['rx_per_s']:.0f} / {m['tx_per_s']:.0f}"))
            for fid, nominal in watch.nominal.items():
                p50, p99, worst, n = watch.jitter(fid)
                rows.append((f"keep-alive 0x{fid:X} ({nominal} ms) period deviation p50 / p99 / max{label}",
                             f"{p50:.2f} / {p99:.2f} / {worst:.2f} ms ({n} periods)"))
            d.stop()
            sim.kill()
            socat.kill()
            socat.wait(5)

    cpu = next((l.split(":", 1)[1].strip() for l in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    text = [f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} × {cpu}, Linux {platform.release()} "
            "(a shared, noisy VM: figures, not guarantees).", "", "| what | figure |", "|---|---|"]
    for line in core_lines:
        if " on one core" in line:
            name, rest = line.split(":", 1)
            text.append(f"| core path `{name}` | {rest.split(' = ', 1)[1].split(' on one core')[0]} per core |")
    text += [f"| {k} | {v} |" for k, v in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text) + "\n")
    print("\n".join(text))


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _try(fn):
    try:
        return fn()
    except OSError:
        return None


if __name__ == "__main__":
    main()

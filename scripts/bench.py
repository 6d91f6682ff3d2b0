"""The figures behind `scripts/bench`: the whole daemon (release build) at full bus load over slcan on a pty and over
socketcand on loopback, frames lost (counted by sequence number in DBE's own recording), its footprint, its start-up,
the timing of the pack keep-alives and of the inverter answers, and its reaction to a cell over-voltage and to a
silent pack. Writes a Markdown table.

Every figure is measured on the machine it runs on and printed, never compared with a threshold: the point is
that anyone can reproduce them with one command. CPU is the dbe process's own utime+stime from /proc, as % of one
core; peak RSS is VmHWM; frames are the bridge's own counters (`frames_battery.rx` in `dbe run --json`).
"""
import json
import logging
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
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
DBE = str(TARGET / "release" / "dbe")
DBE_LTO = TARGET / "release-lto" / "dbe"  # the `release-lto` profile (Cargo.toml), built by scripts/bench
LEAF_LOG = str(TARGET / "release" / "examples" / "leaf_log")
LOG_FRAMES = 400_000
TICK = os.sysconf("SC_CLK_TCK")
LOAD_SECONDS = float(os.environ.get("DBE_BENCH_SECONDS", "20"))
# The timing run with two CPU hogs under `--realtime`: long enough for 10 000 periods of the 10 ms keep-alive and,
# with the simulated inverter polling every TIMING_POLL_MS, 1 000 inverter answers.
TIMING_SECONDS = float(os.environ.get("DBE_BENCH_TIMING_SECONDS", "110"))
TIMING_POLL_MS = 100
RATE = 4000  # filler frames/s: the full frame rate of a 500 kbit/s bus (about 4000 8-byte frames/s)
FILLER_ID = 0x1FFFFFF0  # `dbe simulate --rate`'s frames (crates/dbe/src/sim/simulate.rs)


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
        self.log = pathlib.Path(folder) / f"dbe-{self.web}.err"
        with open(self.log, "w") as err:
            self.p = subprocess.Popen([DBE, "run", "--config", str(cfg), "--json", "--log-level", "warn", *extra],
                                      stdout=subprocess.PIPE, stderr=err, text=True)
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
    """An independent client (python-can, socketcand) on a simulator's bus, timestamping arrivals of the frames
    `watch` names (CAN id → nominal period in ms; ids above 0x7FF are extended). Measured at the receiver, so the
    figures include the pty, the simulator and this client: an upper bound on DBE's own jitter. Both run
    SCHED_FIFO (when allowed) so CPU hogs mostly disturb DBE."""

    def __init__(self, port, nominal_ms, also=()):
        import can

        self.nominal = nominal_ms
        self.times = {i: [] for i in [*nominal_ms, *also]}
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
            if m is not None and m.arbitration_id in self.times and m.is_extended_id == (m.arbitration_id > 0x7FF):
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
        return quantiles(dev)

    def latency(self, request, answer):
        """Delay from each `request` to the first `answer` after it, in ms."""
        answers = self.times[answer]
        out, j = [], 0
        for t in self.times[request]:
            while j < len(answers) and answers[j] < t:
                j += 1
            if j < len(answers) and answers[j] - t < 0.5:
                out.append((answers[j] - t) * 1000)
        return quantiles(sorted(out))


def quantiles(values):
    """p50, p99, max and count of sorted `values`."""
    if not values:
        return 0.0, 0.0, 0.0, 0
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return pick(0.5), pick(0.99), values[-1], len(values)


def spawn(*args, realtime=False):
    """`dbe simulate`, taking faults on its standard input (`control`)."""
    prefix = ["chrt", "-f", "45"] if realtime else []
    return subprocess.Popen([*prefix, DBE, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def control(sim, line):
    """Puts a fault on a simulator and returns once it has taken effect (its `control` answer)."""
    sim.stdin.write(line + "\n")
    sim.stdin.flush()
    for out in sim.stdout:
        if '"control"' in out:
            answer = json.loads(out)
            if "error" in answer:
                raise SystemExit(f"bench: the simulator refused `{line}`: {answer['error']}")
            return


def drain(sim):
    """Reads a simulator's status lines in the background, so its output pipe never fills."""
    threading.Thread(target=lambda: [None for _ in sim.stdout], daemon=True).start()


def reaction(d, what):
    """Seconds until the daemon's status shows 0 A both ways (polled every 20 ms: figures within about 20 ms)."""
    t0 = time.monotonic()
    zero = lambda s: s and s["limits"]["charge_current_a"] == 0 and s["limits"]["discharge_current_a"] == 0
    wait_for(lambda: zero(_try(d.status)), 60, what)
    return time.monotonic() - t0


def lost_in_recording(folder):
    """Filler frames (extended id FILLER_ID, a little-endian sequence number as data) missing from DBE's candump
    recording between the first and the last it holds, and how many it holds."""
    seqs = set()
    for log in pathlib.Path(folder).glob("dbe-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            _, _, rest = line.partition(" battery ")
            frame = rest.split(" ")[0]  # without the direction suffix (R/T)
            if frame.startswith(f"{FILLER_ID:08X}#") and len(frame) == 9 + 16:
                seqs.add(int.from_bytes(bytes.fromhex(frame[9:]), "little"))
    if not seqs:
        return None, 0
    return (max(seqs) - min(seqs) + 1) - len(seqs), len(seqs)


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


def per_frame_us(m):
    """The daemon's CPU per frame it received, in µs (its whole CPU over the battery frames it read)."""
    return m["cpu"] / 100 * 1e6 / m["rx_per_s"] if m["rx_per_s"] else 0.0


def socat_pair(folder, name):
    a, b = pathlib.Path(folder) / f"{name}-adapter", pathlib.Path(folder) / f"{name}-host"
    for link in (a, b):
        link.unlink(missing_ok=True)
    # Real-time like the simulators and the observer: the pty relay is part of the measuring apparatus, and the
    # hogs are meant to disturb only DBE.
    rt = ["chrt", "-f", "45"] if os.environ.get("DBE_BENCH_SOCAT_RT", "1") == "1" else []
    p = subprocess.Popen([*rt, "socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: a.exists() and b.exists(), 10, "socat")
    return p, str(a), str(b)


def child_cpu(cmd):
    """CPU seconds (user + system) of one run of `cmd`, output discarded; the best of three runs."""
    best = None
    for _ in range(3):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        if status != 0 and "--compare" not in cmd:
            raise SystemExit(f"bench: {' '.join(cmd)} failed")
        cpu = ru.ru_utime + ru.ru_stime
        best = cpu if best is None else min(best, cpu)
    return best


def own_cpu(fn):
    """CPU seconds of `fn()` in this process, the best of three runs."""
    best = None
    for _ in range(3):
        t = time.process_time()
        fn()
        cpu = time.process_time() - t
        best = cpu if best is None else min(best, cpu)
    return best


def log_rows(folder):
    """The 400 000-frame LEAF recording (the simulated pack, DBE and a Pylon inverter, as DBE's recorder writes
    it), read by `dbe decode`, `dbe replay`, `dbe replay --compare`, python-can's `CanutilsLogReader` and cantools
    (python-can's reader plus `decode_message` for the frames its DBC knows): frames per CPU second, one core."""
    import can
    import cantools

    log = str(pathlib.Path(folder) / "leaf.log")
    subprocess.run([LEAF_LOG, log, str(LOG_FRAMES)], check=True)
    db = cantools.database.load_file(str(ROOT / "scripts" / "leaf-bench.dbc"))
    known = {m.frame_id for m in db.messages}

    def python_can():
        for _ in can.CanutilsLogReader(log):
            pass

    def with_cantools():
        for m in can.CanutilsLogReader(log):
            if m.arbitration_id in known:
                db.decode_message(m.arbitration_id, m.data)

    lto = []
    if DBE_LTO.exists():
        lto = [
            ("`dbe decode`, `release-lto` build (LTO, one codegen unit)",
             child_cpu([str(DBE_LTO), "decode", "--battery", "nissan-leaf", log])),
            ("`dbe replay`, `release-lto` build", child_cpu([str(DBE_LTO), "replay", "--battery", "nissan-leaf", log])),
        ]
    runs = [
        ("`dbe decode --battery nissan-leaf`", child_cpu([DBE, "decode", "--battery", "nissan-leaf", log])),
        *lto,
        ("`dbe replay --battery nissan-leaf` (the whole bridge)", child_cpu([DBE, "replay", "--battery", "nissan-leaf", log])),
        ("`dbe replay --compare`", child_cpu([DBE, "replay", "--battery", "nissan-leaf", "--compare", log])),
        ("python-can `CanutilsLogReader` (reading only)", own_cpu(python_can)),
        ("cantools 0x1DB/0x1DC/0x55B (`decode_message` on python-can's reader)", own_cpu(with_cantools)),
    ]
    base = LOG_FRAMES / runs[-1][1]
    return [(f"LEAF log ({LOG_FRAMES} frames): {name}", f"{LOG_FRAMES / cpu / 1e6:.2f} M frames/s ({LOG_FRAMES / cpu / base:.1f} × cantools)")
            for name, cpu in runs]


INVERTER_SIM = '[inverter]\nprotocol = "pylon-can"\nport = "sim:"\n'


def main():
    logging.getLogger("can").setLevel(logging.ERROR)  # python-can's socketcand client chatters about partial reads
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "artifacts" / "bench.md")
    core_lines = pathlib.Path(sys.argv[2]).read_text().splitlines() if len(sys.argv) > 2 else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += log_rows(tmp)
        if os.environ.get("DBE_BENCH_ONLY_LOGS"):
            print("\n".join(f"| {k} | {v} |" for k, v in rows))
            return
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
        if DBE_LTO.exists():
            stripped_lto = pathlib.Path(tmp) / "dbe-lto.stripped"
            subprocess.run(["strip", "-o", str(stripped_lto), str(DBE_LTO)], check=True)
            rows.append(("`release-lto` binary size (LTO, one codegen unit; as built / stripped)",
                         f"{os.path.getsize(DBE_LTO) / 1e6:.1f} MB / {os.path.getsize(stripped_lto) / 1e6:.1f} MB"))
        rows.append(("start-up to bridging (sim pack closes its contactors, inverter gets non-zero limits)",
                     f"{startup:.2f} s"))
        rows.append(("`dbe run` with simulated pack and inverter inside it: CPU / peak RSS",
                     f"{idle['cpu']:.1f} % of one core / {idle['rss'] / 1024:.1f} MiB"))

        # Full bus load over socketcand on loopback with every frame recorded: frames lost by sequence number; then
        # the reaction to a cell over-voltage and to the pack going silent.
        port = free_port()
        sim = spawn("simulate", "--pack", "--rate", str(RATE), "--socketcand", f"127.0.0.1:{port}")
        wait_for(lambda: _listening(port), 20, "the simulator's socketcand server")
        rec = pathlib.Path(tmp) / "rec"
        d = Daemon(f'[battery]\ntype = "nissan-leaf"\nport = "socketcand:127.0.0.1:{port}/can0"\n'
                   f'[limits]\nbattery_stale_timeout_s = 2\n[record]\ndir = "{rec}"\nmax_total_mb = 1024\n'
                   + INVERTER_SIM, tmp)
        m = measure_load(d, LOAD_SECONDS)
        rows.append((f"full 500 kbit/s bus over socketcand (pack + {RATE} filler frames/s), recording every frame: "
                     "CPU / CPU per frame / peak RSS", f"{m['cpu']:.1f} % of one core / {per_frame_us(m):.1f} µs / "
                     f"{m['rss'] / 1024:.1f} MiB"))
        rows.append(("  frames in / out per second (bridge counters; offered: the filler plus about 230 pack frames/s)",
                     f"{m['rx_per_s']:.0f} / {m['tx_per_s']:.0f}"))
        control(sim, "cell 8 4240")
        took = reaction(d, "0 A after the cell over-voltage")
        rows.append(("reaction: cell 8 at 4.24 V on the pack → inverter told 0 A (includes waiting for the cell group's "
                     "turn: one of four groups polled every 2 s, so up to 8 s)", f"{took:.2f} s"))
        control(sim, "cell 8 normal")
        drain(sim)
        wait_for(lambda: (_try(d.status) or {}).get("battery", {}).get("cell_max_mv", 9999) < 4200, 60,
                 "DBE to see the cell back")  # or `start` finds the fault still there and latches it again
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{d.web}/api/commands/start", data=b"",
                                                      headers={"Origin": f"http://127.0.0.1:{d.web}"}), timeout=5)
        wait_for(d.bridging, 60, "the bridge back after start")
        sim.kill()
        took = reaction(d, "0 A after the pack went silent")
        rows.append(("reaction: pack silent → inverter told 0 A (stale timeout 2 s)", f"{took:.2f} s"))
        d.stop()
        lost, held = lost_in_recording(rec)
        lag = sum(int(l.split("recorder lost ")[1].split()[0]) for l in d.log.read_text().splitlines()
                  if "recorder lost " in l)
        rows.append(("  filler frames lost between the simulator and DBE, counted by sequence number in DBE's "
                     "recording", f"{lost} of {held + (lost or 0)} (recorder fell behind by {lag})"))

        # Full bus load over slcan on a pty, the inverter on a second slcan pty; the timing seen by a client of each
        # simulator's own bus (its socketcand server): the pack keep-alives, and the inverter's requests and DBE's
        # answers. Idle and with two CPU hogs, without and with real-time mode.
        for label, stress, realtime in [("", False, False), (", 2 CPU hogs running", True, False),
                                        (", 2 CPU hogs, `--realtime`", True, True)]:
            socat, adapter, host = socat_pair(tmp, "pack")
            socat2, inv_adapter, inv_host = socat_pair(tmp, "inverter")
            port, inv_port = free_port(), free_port()
            sim = spawn("simulate", "--pack", "--rate", str(RATE), "--slcan", adapter, "--socketcand",
                        f"127.0.0.1:{port}", realtime=True)
            inv = spawn("simulate", "--inverter", "pylon-can", "--poll-ms", str(TIMING_POLL_MS), "--slcan",
                        inv_adapter, "--socketcand", f"127.0.0.1:{inv_port}", realtime=True)
            drain(sim)
            drain(inv)
            wait_for(lambda: _listening(port) and _listening(inv_port), 20, "the simulators' socketcand servers")
            rec = pathlib.Path(tmp) / f"rec-slcan{len(label)}"
            d = Daemon(f'[battery]\ntype = "nissan-leaf"\nport = "slcan:{host}?bitrate=500000"\n'
                       f'[inverter]\nprotocol = "pylon-can"\nport = "slcan:{inv_host}?bitrate=500000"\n'
                       f'[record]\ndir = "{rec}"\nmax_total_mb = 1024\n', tmp, realtime=realtime)
            wait_for(d.bridging, 60, "the bridge up")
            hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(2 if stress else 0)]
            watch = Arrivals(port, {0x1D4: 10, 0x50B: 100})
            inv_watch = Arrivals(inv_port, {0x4210: TIMING_POLL_MS}, also=[0x4200])
            m = measure_load(d, TIMING_SECONDS if realtime else LOAD_SECONDS)
            watch.stop()
            inv_watch.stop()
            for h in hogs:
                h.kill()
            if not stress:
                rows.append((f"full 500 kbit/s bus over slcan on a pty (pack + {RATE} filler frames/s; the inverter on "
                             "a second slcan pty), recording every frame: CPU / CPU per frame / peak RSS",
                             f"{m['cpu']:.1f} % of one core / {per_frame_us(m):.1f} µs / {m['rss'] / 1024:.1f} MiB"))
                rows.append(("  frames in / out per second (bridge counters; offered: the filler plus about 230 pack frames/s)",
                             f"{m['rx_per_s']:.0f} / {m['tx_per_s']:.0f}"))
            for fid, nominal in watch.nominal.items():
                p50, p99, worst, n = watch.jitter(fid)
                rows.append((f"keep-alive 0x{fid:X} ({nominal} ms) period deviation p50 / p99 / max{label}",
                             f"{p50:.2f} / {p99:.2f} / {worst:.2f} ms ({n} periods)"))
            p50, p99, worst, n = inv_watch.latency(0x4200, 0x4210)
            rows.append((f"inverter: Pylon 0x4200 request → 0x4210 answer (polled every {TIMING_POLL_MS} ms), "
                         f"p50 / p99 / max{label}",
                         f"{p50:.2f} / {p99:.2f} / {worst:.2f} ms ({n} answers)"))
            p50, p99, worst, n = inv_watch.jitter(0x4210)
            rows.append((f"inverter: 0x4210 period deviation from the inverter's {TIMING_POLL_MS} ms poll, "
                         f"p50 / p99 / max{label}", f"{p50:.2f} / {p99:.2f} / {worst:.2f} ms ({n} periods)"))
            d.stop()
            for p in (sim, inv, socat, socat2):
                p.kill()
                p.wait(5)

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

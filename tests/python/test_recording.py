"""`dbe run --record`: the recording holds both sides of the conversation, marked as python-can marks them, and
`dbe replay --compare` proves the bridge still says the same thing (or shows where it does not)."""
import re
import signal
import statistics


from conftest import dbe, free_port, http_json, wait_for

POLL = 0x4200
# Pylon CAN: the answers to an ensemble-info poll (0x4200 with byte 0 = 0), 0x4210 ... 0x4290.
ANSWERS = {0x4210, 0x4220, 0x4230, 0x4240, 0x4250, 0x4260, 0x4270, 0x4280, 0x4290}
KEEPALIVE = 0x1D4


def suffixes(path):
    """The direction suffix of every frame line, as written (None where there is none)."""
    out = []
    for line in path.read_text().splitlines():
        m = re.search(r" ([RT])$", line)
        out.append(m.group(1) if m else None)
    return out


def record_session(proc, tmp_path, answers=4):
    rec = tmp_path / "rec"
    port = free_port()
    cfg = tmp_path / "dbe.toml"
    cfg.write_text(
        'autostart = true\n[battery]\ntype = "nissan-leaf"\nport = "sim:"\n'
        '[inverter]\nprotocol = "pylon-can"\nport = "sim:"\n'
        f'[web]\nbind = "127.0.0.1:{port}"\n'
    )
    p = proc("run", "--config", str(cfg), "--record", str(rec))
    url = f"http://127.0.0.1:{port}"

    def closed():
        try:
            s = http_json(f"{url}/api/status")
        except OSError:
            return None
        return s if s["contactor_request"] == "closed" and s["limits"]["charge_current_a"] > 0 else None

    wait_for(closed, 60, "the bridge to ask the contactors closed and give the inverter current")

    def answered():
        logs = list(rec.glob("dbe-*.log"))
        text = logs[0].read_text() if logs else ""
        return text.count("00004210#") >= answers and text.count("1D4#") >= 100

    wait_for(answered, 60, f"{answers} Pylon answers and 100 keep-alives in the recording")
    assert p.terminate(signal.SIGTERM, timeout=20) == 0
    logs = sorted(rec.glob("dbe-*.log"))
    assert len(logs) == 1, logs
    return logs[0]


def test_the_recording_holds_what_dbe_sends_marked_as_python_can_reads_it(proc, tmp_path):
    import can

    log = record_session(proc, tmp_path)
    msgs = list(can.CanutilsLogReader(str(log)))
    marks = suffixes(log)
    assert len(msgs) == len(marks) > 500
    assert None not in marks, "every line says its direction"
    assert [m.is_rx for m in msgs] == [s == "R" for s in marks], "python-can reads is_rx as written"
    assert [m.timestamp for m in msgs] == sorted(m.timestamp for m in msgs), "lines in time order"

    by_id = {}
    for m in msgs:
        by_id.setdefault(m.arbitration_id, set()).add(m.is_rx)
    assert by_id[0x1DB] == {True}, "the pack's frames are received"
    assert by_id[POLL] == {True}, "the inverter's polls are received"
    for i in [KEEPALIVE, 0x1F2, 0x79B, *ANSWERS]:
        assert by_id.get(i) == {False}, f"DBE's {i:#x} is in the recording, marked T"

    # The keep-alive at its 10 ms period while the contactors are requested closed (the median is robust to the
    # odd late turn on a loaded machine; the period itself is anchored, see time::Periodic).
    keep = [m.timestamp for m in msgs if m.arbitration_id == KEEPALIVE]
    gaps = [b - a for a, b in zip(keep, keep[1:])]
    assert 0.008 <= statistics.median(gaps) <= 0.012, statistics.median(gaps)

    # Every ensemble poll is followed by the whole answer, sent, before the next poll.
    polls = [k for k, m in enumerate(msgs) if m.arbitration_id == POLL and m.is_rx and m.data[0] == 0]
    assert len(polls) >= 4
    last = msgs[-1].timestamp
    for k, nxt in zip(polls, polls[1:] + [len(msgs)]):
        if nxt == len(msgs) and last - msgs[k].timestamp < 0.1:
            continue  # the last poll may come as the daemon ends
        sent = {m.arbitration_id for m in msgs[k + 1:nxt] if not m.is_rx}
        assert ANSWERS <= sent, f"poll at {msgs[k].timestamp}: answered {sorted(map(hex, sent & ANSWERS))}"


def test_replay_compare_finds_no_difference_in_a_recording_and_the_one_altered_frame(proc, tmp_path):
    log = record_session(proc, tmp_path)
    r = dbe("replay", "--battery", "nissan-leaf", "--inverter", "pylon-can", "--compare", str(log), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no difference" in r.stdout, r.stdout
    compared = int(re.search(r"compared (\d+) sent frames in the log", r.stdout).group(1))
    assert compared > 300, r.stdout

    # Change the data of the second 0x4210 answer (well inside the compared span).
    lines = log.read_text().splitlines()
    answers = [k for k, l in enumerate(lines) if " 00004210#" in l and l.endswith(" T")]
    k = answers[1]
    stamp, iface, frame, mark = lines[k].split()
    altered_frame = "00004210#" + ("00" if frame[9:11] != "00" else "11") + frame[11:]
    lines[k] = " ".join([stamp, iface, altered_frame, mark])
    altered = tmp_path / "altered.log"
    altered.write_text("\n".join(lines) + "\n")
    r = dbe("replay", "--battery", "nissan-leaf", "--compare", str(altered), check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    report = [l for l in r.stdout.splitlines() if l.startswith("(")]
    assert len(report) == 1, r.stdout
    assert report[0].startswith(stamp[:-1]) or stamp in report[0], (stamp, report[0])
    assert "00004210" in report[0] and "frame #2" in report[0], report[0]
    assert altered_frame in report[0] and frame in report[0], report[0]

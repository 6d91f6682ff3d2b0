"""Contactor relay outputs end to end: a Modbus RTU relay board played by pymodbus's own server (not DBE's code) on a
pseudo-terminal, and `dbe contactors open`, the command `ExecStopPost=` runs after the daemon stopped, crashed or
was killed.

The board holds 8 coils and 8 discrete inputs like the cheap DIN-rail boards; DBE's outputs are coils 0-2
(negative, precharge, positive) and 3 (BMS power). Coils DBE was not given must never be touched."""
import asyncio
import signal
import threading

import pytest
from conftest import dbe, pty_pair, wait_for

UNIT = 1


class RelayBoard:
    """A Modbus RTU relay board on one end of a pty pair, served by pymodbus in a thread of this process.

    `stuck` lists coils whose relay does not follow writes (their coil keeps its value): the fault a read-back must
    catch. `refuse_writes` answers every write with exception 4 (server device failure). `frames` records every request frame the board received, in order, so a test can check the sequence of
    writes (function code, address, value)."""

    def __init__(self, port, unit=UNIT, coils=(1,) * 8, stuck=(), refuse_writes=False):
        from pymodbus.server import ModbusSerialServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self.unit = unit
        self.stuck = set(stuck)
        self.refuse_writes = refuse_writes
        self.frames = []
        bits = lambda values: [SimData(0, count=len(values), values=[bool(v) for v in values], datatype=DataType.BITS)]
        regs = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        device = SimDevice(id=unit, simdata=(bits(coils), bits([1] * 8), regs, regs), action=self._action)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.error = None

        def trace(sending, data):
            if not sending:
                self.frames.append(bytes(data))
            return data

        async def serve():
            self.server = ModbusSerialServer(device, port=port, baudrate=9600, trace_packet=trace)
            await self.server.serve_forever(background=True)
            ready.set()
            await self.server.serving

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(serve())
            except Exception as e:  # reported by the fixture instead of a silent dead thread
                self.error = e
                ready.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10), "pymodbus's server did not start"
        assert self.error is None, self.error

    async def _action(self, function_code, start_address, address, count, current_registers, set_values):
        from pymodbus.constants import ExcCodes

        if self.refuse_writes and function_code in (5, 15):
            return ExcCodes.DEVICE_FAILURE
        # A stuck relay: a write to its coil leaves the coil as it was.
        if set_values is not None and function_code in (5, 15):
            for i in range(len(set_values)):
                if address + i in self.stuck:
                    set_values[i] = current_registers[address + i - start_address]
        return None

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)

    def coils(self, n=8):
        return [bool(v) for v in self._call(self.server.context.async_getValues(self.unit, 1, 0, n))]

    def set_coils(self, values):
        self._call(self.server.context.async_setValues(self.unit, 15, 0, [bool(v) for v in values]))

    def set_input(self, address, closed):
        """A discrete input (function 2's table): an equipment-stop loop closed or open."""
        self._call(self.server.context.async_setValues(self.unit, 2, address, [bool(closed)]))

    def inputs(self, n=8):
        return [bool(v) for v in self._call(self.server.context.async_getValues(self.unit, 2, 0, n))]

    def writes(self):
        """(function, address) of every write request received."""
        return [(f[1], int.from_bytes(f[2:4], "big")) for f in self.frames if len(f) >= 4 and f[1] in (5, 15)]

    def close(self):
        if self.thread.is_alive():
            self._call(self.server.shutdown())
            self.thread.join(5)


@pytest.fixture
def relay_board(socat, tmp_path):
    """Starts a simulated relay board: `start(**kw)` returns (board, dbe_side_pty); kw go to RelayBoard."""
    boards = []

    def start(**kw):
        dbe_side, board_side = pty_pair(socat, tmp_path, name=f"board{len(boards)}")
        b = RelayBoard(board_side, **kw)
        boards.append(b)
        return b, dbe_side

    yield start
    for b in boards:
        b.close()


def write_config(tmp_path, device, unit=UNIT, extra=""):
    cfg = tmp_path / "dbe.toml"
    cfg.write_text(
        "autostart = true\n"
        '[battery]\ntype = "nissan-leaf"\nport = "sim:"\n'
        '[inverter]\nprotocol = "pylon-can"\nport = "sim:"\n'
        "[contactors]\n"
        'mode = "relays"\n'
        f'outputs = "modbus:{device}?baud=9600&unit={unit}"\n'
        "negative = 0\nprecharge = 1\npositive = 2\nbms_power = 3\n"
        f"{extra}"
    )
    return cfg


def test_contactors_open_turns_every_configured_coil_off_and_no_other(relay_board, tmp_path):
    board, port = relay_board()
    assert board.coils() == [True] * 8, "every relay starts closed"
    r = dbe("contactors", "open", "--config", str(write_config(tmp_path, port)), check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    assert board.coils() == [False, False, False, False, True, True, True, True]
    assert "opened negative, precharge, positive, bms_power (read back: open)" in r.stdout, r.stdout
    # Coils 0-3 are contiguous: one write-multiple frame opens them all, then the coils are read back.
    assert board.writes() == [(0x0F, 0)], board.frames
    assert board.frames[-1][1] == 0x01


def test_contactors_open_writes_single_coils_when_they_are_not_contiguous(relay_board, tmp_path):
    board, port = relay_board()
    cfg = tmp_path / "dbe.toml"
    cfg.write_text(f'[contactors]\nmode = "relays"\noutputs = "modbus:{port}"\nnegative = 0\npositive = 5\n')
    r = dbe("contactors", "open", "--config", str(cfg), check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    assert board.coils() == [False, True, True, True, True, False, True, True]
    assert board.writes() == [(0x05, 5), (0x05, 0)], "positive first, then negative"


def test_contactors_open_fails_loudly_when_the_board_does_not_answer(socat, tmp_path):
    dbe_side, _nobody = pty_pair(socat, tmp_path)
    r = dbe("contactors", "open", "--config", str(write_config(tmp_path, dbe_side)), check=False, timeout=60)
    assert r.returncode != 0
    assert "did not answer" in r.stderr and dbe_side in r.stderr, r.stderr


def test_a_board_that_refuses_the_writes_is_an_error(relay_board, tmp_path):
    board, port = relay_board(refuse_writes=True)
    r = dbe("contactors", "open", "--config", str(write_config(tmp_path, port)), check=False, timeout=60)
    assert r.returncode != 0
    assert "refused function 0x05" in r.stderr, r.stderr
    # Write-multiple refused, then one write-single per coil tried, positive first.
    assert board.writes() == [(0x0F, 0), (0x05, 2), (0x05, 1), (0x05, 0), (0x05, 3)], board.frames
    assert board.coils() == [True] * 8


def test_a_relay_that_does_not_follow_is_an_error(relay_board, tmp_path):
    board, port = relay_board(stuck={2})
    r = dbe("contactors", "open", "--config", str(write_config(tmp_path, port)), check=False, timeout=30)
    assert r.returncode != 0
    assert "positive did not open" in r.stderr, r.stderr
    assert board.coils()[:4] == [False, False, True, False], "the others are open all the same"


def test_contactors_open_still_works_when_another_section_is_broken(relay_board, tmp_path):
    board, port = relay_board()
    cfg = write_config(tmp_path, port)
    cfg.write_text(cfg.read_text() + '[limits]\nmax_charge_current_a = "a lot"\n')
    r = dbe("contactors", "open", "--config", str(cfg), check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "invalid elsewhere" in r.stderr
    assert board.coils()[:4] == [False] * 4


def test_no_outputs_configured_says_so():
    r = dbe("contactors", "open", "--config", "/dev/null", check=False)
    assert r.returncode == 0, r.stderr
    assert "DBE cannot open this pack" in r.stdout, r.stdout


def test_a_bad_outputs_device_is_refused_with_key_and_line(tmp_path):
    cfg = tmp_path / "dbe.toml"
    cfg.write_text('[contactors]\nmode = "relays"\noutputs = "usb:/dev/x"\nnegative = 0\npositive = 1\n')
    r = dbe("check-config", str(cfg), check=False)
    assert r.returncode != 0
    assert "line 3: contactors.outputs: 'usb' is not an outputs device kind" in r.stderr, r.stderr


def test_dbe_run_closes_in_sequence_and_a_killed_daemon_is_opened_after(relay_board, proc, tmp_path):
    board, port = relay_board(coils=(0,) * 8)
    cfg = write_config(tmp_path, port, extra='[web]\nenabled = false\n')
    p = proc("run", "--config", str(cfg))

    def closed():
        return board.coils()[:3] == [True, False, True]

    try:
        wait_for(closed, 60, "the sequence to close negative and positive and drop precharge")
    except pytest.fail.Exception:
        pytest.fail(f"never closed: coils {board.coils()}, last writes {board.writes()[-12:]}, "
                    f"frames {len(board.frames)}, dbe's log: {p.err_lines[-40:]}")
    # Negative first, precharge next, positive last; precharge released once positive is in.
    order = [(a, f) for f, a in board.writes() if f == 0x05]
    firsts = [a for a, _ in order]
    assert firsts.index(0) < firsts.index(1) < firsts.index(2), order
    p.terminate(signal.SIGKILL)
    assert board.coils()[:3] == [True, False, True], "a killed daemon leaves the relays as they were"
    r = dbe("contactors", "open", "--config", str(cfg), check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    assert board.coils()[:4] == [False] * 4


def test_an_equipment_stop_opens_positive_first_then_negative(relay_board, proc, tmp_path):
    """A fault decision under `dbe run`: the equipment-stop loop (a discrete input of the board) opens. The coils
    go positive first, negative after it (never breaking current on the negative), nothing is closed again."""
    board, port = relay_board(coils=(0,) * 8)
    cfg = write_config(tmp_path, port, extra='equipment_stop = 0\n[web]\nenabled = false\n')
    p = proc("run", "--config", str(cfg))
    assert board.inputs()[0], "the loop starts closed"

    def closed():
        return board.coils()[:3] == [True, False, True]

    try:
        wait_for(closed, 60, "the sequence to close")
    except pytest.fail.Exception:
        pytest.fail(f"never closed: coils {board.coils()}, writes {board.writes()[-12:]}, log: {p.err_lines[-30:]}")
    seen = len(board.writes())
    board.set_input(0, False)
    wait_for(lambda: board.coils()[:3] == [False, False, False], 30, "every contactor coil open after the stop")
    after = [(a, f) for f, a in board.writes()[seen:]]
    opened = [a for a, f in after]
    assert 2 in opened and 0 in opened, after
    assert opened.index(2) < opened.index(0), f"positive before negative: {after}"
    assert all(f in (0x05, 0x0F) for _, f in after), after
    # The loop closed again: a latching stop keeps everything open until START.
    board.set_input(0, True)
    wait_for(lambda: any("equipment stop" in l for l in p.err_lines), 10, "the stop in the log")
    later = len(board.writes())
    import time
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert board.coils()[:3] == [False, False, False], "nothing closes again without START"
        time.sleep(0.1)
    assert board.writes()[later:] == [], "no write after the stop"

//! Relay outputs and inputs: the main contactors, the precharge relay and the BMS power output DBE drives, and
//! the equipment-stop and inverter-enable inputs it reads, on a GPIO chip ([`gpio`]), a Modbus RTU relay board
//! ([`modbus`]) or simulated ([`sim`]).
//!
//! # Sync or async
//! A GPIO write is one ioctl (microseconds); a relay board on a serial line takes a request and an answer, tens of
//! ms, and seconds when it does not answer. The bridge loop must never wait for either, so every device is owned
//! by one task ([`Outputs::spawn`]) and the loop talks to it through two watch channels: the wanted state goes
//! in ([`Outputs::set`], which never blocks, and where a newer state replaces one not yet written instead of
//! queueing behind it), what the hardware reports comes out ([`Outputs::state`]). The device trait
//! ([`RelayDevice`]) is async so the slow board can await its serial port; the GPIO backend simply completes at
//! once.
//!
//! # What the task guarantees
//! - Opening is written before closing, in the order positive, precharge, negative, BMS power (closing: BMS
//!   power, negative, precharge, positive). When nothing is wanted closed, every output is opened at once
//!   ([`RelayDevice::open_all`]: one frame on a relay board).
//! - A newer wanted state is taken between two writes, so an open decision does not wait for a close sequence
//!   to finish.
//! - A write toward open that failed, or an output read back closed when it should be open, is written open
//!   again at every poll. A write toward closed is made once per change of the wanted state and never repeated on
//!   its own: a relay that did not follow, or a board that reset (its watchdog), is reported
//!   ([`OutputsState::not_following`], [`OutputsState::device_error`]), never silently closed again without the
//!   sequencer.
//! - Every write is read back where the hardware can ([`RelayDevice::can_read_back`]); read-backs and inputs are
//!   also polled every [`POLL_EVERY`], which also keeps a relay board's communication watchdog fed.
//! - When the bridge drops its handle, or calls [`Outputs::shutdown`], everything is opened.

pub mod gpio;
pub mod modbus;
pub mod sim;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use dbe_core::inverter::modbus::ExceptionCode;
use dbe_services::contactors::{parse_line, ContactorsSection, LineRef, OutputsSpec};
use tokio::sync::watch;

/// A relay output.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    Negative,
    Precharge,
    Positive,
    /// Powers the BMS: on = powered (the only output whose safe state is not obvious: off stops the BMS, which
    /// is also safe, so "all off" includes it).
    BmsPower,
}

impl Output {
    pub const COUNT: usize = 4;
    pub const ALL: [Output; Output::COUNT] = [Output::Negative, Output::Precharge, Output::Positive, Output::BmsPower];
    /// Positive first (Battery-Emulator's sequence and issue 13: positive, then negative).
    pub const OPENING_ORDER: [Output; Output::COUNT] =
        [Output::Positive, Output::Precharge, Output::Negative, Output::BmsPower];
    /// The BMS is powered before any contactor closes; positive last.
    pub const CLOSING_ORDER: [Output; Output::COUNT] =
        [Output::BmsPower, Output::Negative, Output::Precharge, Output::Positive];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The config key (`[contactors]`) naming the output's line.
    pub fn name(self) -> &'static str {
        match self {
            Output::Negative => "negative",
            Output::Precharge => "precharge",
            Output::Positive => "positive",
            Output::BmsPower => "bms_power",
        }
    }
}

/// An input circuit. Both are read as "closed circuit = active", so a broken wire reads as the safe side.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Normally closed: open = stop.
    EquipmentStop,
    /// Closed = the inverter allows the contactors to close.
    InverterEnable,
}

impl Input {
    pub const COUNT: usize = 2;
    pub const ALL: [Input; Input::COUNT] = [Input::EquipmentStop, Input::InverterEnable];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Input::EquipmentStop => "equipment_stop",
            Input::InverterEnable => "inverter_enable",
        }
    }
}

/// A set of outputs: the ones wanted on (energised), or the ones fitted. Empty = everything open.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct OutputSet(u8);

impl OutputSet {
    /// Every output open.
    pub const OPEN: OutputSet = OutputSet(0);

    pub fn from_fn(mut f: impl FnMut(Output) -> bool) -> Self {
        Output::ALL.into_iter().fold(OutputSet(0), |s, o| s.with(o, f(o)))
    }

    pub fn get(self, o: Output) -> bool {
        self.0 & (1 << o.index()) != 0
    }

    #[must_use]
    pub fn with(self, o: Output, on: bool) -> Self {
        if on {
            OutputSet(self.0 | (1 << o.index()))
        } else {
            OutputSet(self.0 & !(1 << o.index()))
        }
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Output> {
        Output::ALL.into_iter().filter(move |o| self.get(*o))
    }

    #[must_use]
    pub fn intersection(self, other: OutputSet) -> OutputSet {
        OutputSet(self.0 & other.0)
    }
}

impl fmt::Display for OutputSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Output::name).collect();
        f.write_str(&names.join(", "))
    }
}

/// Per output, what the hardware reports: `Some(on)`, or `None` (not fitted, or the device cannot tell).
pub type Levels = [Option<bool>; Output::COUNT];

/// Why a device failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("the relay board on {device} (unit {unit}) did not answer")]
    NoAnswer { device: String, unit: u8 },
    #[error("the relay board refused function 0x{function:02X}: exception {code:?}")]
    Exception { function: u8, code: ExceptionCode },
    #[error("the relay board's answer was unusable: {0}")]
    BadReply(String),
    #[error("{0}")]
    Port(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("{0} did not open: the read-back still shows it closed")]
    StillClosed(OutputSet),
}

/// A device that drives relay outputs and reads inputs. Its calls may take a serial round trip: they are made
/// only by the task that owns it ([`Outputs`]) and by `dbe contactors open`, never by the bridge loop.
pub trait RelayDevice: Send + 'static {
    /// The outputs fitted.
    fn outputs(&self) -> OutputSet;
    /// The inputs fitted, by [`Input::index`].
    fn inputs(&self) -> [bool; Input::COUNT];
    /// Whether [`read_back`](Self::read_back) reports the outputs (a relay board's coils) or cannot (GPIO).
    fn can_read_back(&self) -> bool;
    /// Drives one output; an output not fitted is ignored.
    fn set(&mut self, output: Output, on: bool) -> impl Future<Output = Result<(), DeviceError>> + Send;
    /// Opens every output, as fast as the device allows. Tries every output even when one fails.
    fn open_all(&mut self) -> impl Future<Output = Result<(), DeviceError>> + Send {
        async move {
            let mut result = Ok(());
            let fitted = self.outputs();
            for o in Output::OPENING_ORDER.into_iter().filter(|o| fitted.get(*o)) {
                if let Err(e) = self.set(o, false).await {
                    result = Err(e);
                }
            }
            result
        }
    }
    /// What every output is doing, as far as the hardware can tell.
    fn read_back(&mut self) -> impl Future<Output = Result<Levels, DeviceError>> + Send;
    /// Every fitted input: `Some(true)` = circuit closed.
    fn read_inputs(&mut self) -> impl Future<Output = Result<[Option<bool>; Input::COUNT], DeviceError>> + Send;
}

/// Any of the backends, chosen by `contactors.outputs`.
pub enum Device {
    Sim(sim::SimDevice),
    Gpio(gpio::GpioDevice),
    Modbus(modbus::ModbusBoard),
}

impl RelayDevice for Device {
    fn outputs(&self) -> OutputSet {
        match self {
            Device::Sim(d) => d.outputs(),
            Device::Gpio(d) => d.outputs(),
            Device::Modbus(d) => d.outputs(),
        }
    }
    fn inputs(&self) -> [bool; Input::COUNT] {
        match self {
            Device::Sim(d) => d.inputs(),
            Device::Gpio(d) => d.inputs(),
            Device::Modbus(d) => d.inputs(),
        }
    }
    fn can_read_back(&self) -> bool {
        match self {
            Device::Sim(d) => d.can_read_back(),
            Device::Gpio(d) => d.can_read_back(),
            Device::Modbus(d) => d.can_read_back(),
        }
    }
    async fn set(&mut self, output: Output, on: bool) -> Result<(), DeviceError> {
        match self {
            Device::Sim(d) => d.set(output, on).await,
            Device::Gpio(d) => d.set(output, on).await,
            Device::Modbus(d) => d.set(output, on).await,
        }
    }
    async fn open_all(&mut self) -> Result<(), DeviceError> {
        match self {
            Device::Sim(d) => d.open_all().await,
            Device::Gpio(d) => d.open_all().await,
            Device::Modbus(d) => d.open_all().await,
        }
    }
    async fn read_back(&mut self) -> Result<Levels, DeviceError> {
        match self {
            Device::Sim(d) => d.read_back().await,
            Device::Gpio(d) => d.read_back().await,
            Device::Modbus(d) => d.read_back().await,
        }
    }
    async fn read_inputs(&mut self) -> Result<[Option<bool>; Input::COUNT], DeviceError> {
        match self {
            Device::Sim(d) => d.read_inputs().await,
            Device::Gpio(d) => d.read_inputs().await,
            Device::Modbus(d) => d.read_inputs().await,
        }
    }
}

/// The line of `o` in the config.
pub fn output_line(cfg: &ContactorsSection, o: Output) -> Option<LineRef> {
    parse_line(match o {
        Output::Negative => &cfg.negative,
        Output::Precharge => &cfg.precharge,
        Output::Positive => &cfg.positive,
        Output::BmsPower => &cfg.bms_power,
    })
}

/// The line of `i` in the config.
pub fn input_line(cfg: &ContactorsSection, i: Input) -> Option<LineRef> {
    parse_line(match i {
        Input::EquipmentStop => &cfg.equipment_stop,
        Input::InverterEnable => &cfg.inverter_enable,
    })
}

/// An opened device, and for `sim:` the handle that plays its hardware (for the simulated pack and tests).
pub struct Opened {
    pub device: Device,
    pub sim: Option<sim::SimBoard>,
}

/// Opens the device `contactors.outputs` names (`None` when it names none). Call on a validated config, inside
/// a tokio runtime (a relay board's serial port is a task).
pub fn open(cfg: &ContactorsSection) -> Result<Option<Opened>, DeviceError> {
    let spec = OutputsSpec::parse(&cfg.outputs).map_err(DeviceError::Io)?;
    let outputs = Output::ALL.map(|o| output_line(cfg, o));
    let inputs = Input::ALL.map(|i| input_line(cfg, i));
    Ok(match spec {
        None => None,
        Some(OutputsSpec::Sim { .. }) => {
            let board = sim::SimBoard::new(
                OutputSet::from_fn(|o| outputs[o.index()].is_some()),
                inputs.clone().map(|i| i.is_some()),
            );
            Some(Opened { device: Device::Sim(board.device()), sim: Some(board) })
        }
        Some(OutputsSpec::Gpio { chip }) => {
            let g = gpio::GpioConfig {
                chip,
                outputs,
                inputs,
                active_low: cfg.active_low,
                inputs_active_low: cfg.inputs_active_low,
            };
            Some(Opened { device: Device::Gpio(gpio::GpioDevice::open(&g)?), sim: None })
        }
        Some(OutputsSpec::Modbus { device, baud, parity, unit }) => {
            let address = |l: &Option<LineRef>| match l {
                Some(LineRef::Offset(n)) => u16::try_from(*n).ok(),
                _ => None,
            };
            let port = crate::ports::serial::open(crate::ports::serial::SerialSpec::new(&device, baud, &parity));
            let board = modbus::ModbusBoard::new(
                port,
                &device,
                unit,
                outputs.each_ref().map(address),
                inputs.each_ref().map(address),
            );
            Some(Opened { device: Device::Modbus(board), sim: None })
        }
    })
}

/// How often read-backs and inputs are polled.
pub const POLL_EVERY: Duration = Duration::from_millis(200);
/// How long [`Outputs::shutdown`] waits for the device to open everything.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// What the outputs task knows, published after every round of writes and reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputsState {
    /// The outputs fitted.
    pub fitted: OutputSet,
    /// The inputs fitted.
    pub inputs_fitted: [bool; Input::COUNT],
    /// Whether the device reads outputs back (a relay board: yes; GPIO: no).
    pub can_read_back: bool,
    /// What the bridge asked for last.
    pub wanted: OutputSet,
    /// What was last written to each output and accepted (`None`: not yet, or the write failed).
    pub written: [Option<bool>; Output::COUNT],
    /// What the hardware last reported (`None`: cannot tell, or the last read failed).
    pub read_back: Levels,
    /// Each input: `Some(true)` = circuit closed; `None` = not fitted or unknown (the device failed).
    pub inputs: [Option<bool>; Input::COUNT],
    /// The last exchange that failed in the latest round; `None` when the whole round succeeded.
    pub device_error: Option<String>,
}

impl OutputsState {
    fn new(dev: &impl RelayDevice) -> Self {
        OutputsState {
            fitted: dev.outputs(),
            inputs_fitted: dev.inputs(),
            can_read_back: dev.can_read_back(),
            wanted: OutputSet::OPEN,
            written: [None; Output::COUNT],
            read_back: [None; Output::COUNT],
            inputs: [None; Input::COUNT],
            device_error: None,
        }
    }

    /// Outputs whose read-back differs from what was written: the relay did not follow.
    pub fn not_following(&self) -> OutputSet {
        OutputSet::from_fn(
            |o| matches!((self.written[o.index()], self.read_back[o.index()]), (Some(w), Some(r)) if w != r),
        )
    }

    /// Every fitted output has been written as wanted and, where the device can tell, reads back so.
    pub fn settled(&self) -> bool {
        self.fitted.iter().all(|o| {
            let want = Some(self.wanted.get(o));
            self.written[o.index()] == want && (!self.can_read_back || self.read_back[o.index()] == want)
        })
    }

    /// The device failed or a relay did not follow: the contactors are to be treated as failed.
    pub fn failed(&self) -> bool {
        self.device_error.is_some() || !self.not_following().is_empty()
    }

    /// `Some(true)` when the equipment stop is active: its circuit open, or unknown. `None`: not fitted.
    pub fn equipment_stop(&self) -> Option<bool> {
        self.inputs_fitted[Input::EquipmentStop.index()]
            .then(|| self.inputs[Input::EquipmentStop.index()] != Some(true))
    }

    /// The equipment stop is fitted but its state is not known (not read yet, or the device did not answer).
    pub fn equipment_stop_unknown(&self) -> bool {
        self.inputs_fitted[Input::EquipmentStop.index()] && self.inputs[Input::EquipmentStop.index()].is_none()
    }

    /// `Some(true)` when the inverter's enable circuit is closed; unknown is `Some(false)`. `None`: not fitted.
    pub fn inverter_allows_closing(&self) -> Option<bool> {
        self.inputs_fitted[Input::InverterEnable.index()]
            .then(|| self.inputs[Input::InverterEnable.index()] == Some(true))
    }
}

/// The bridge loop's handle on the outputs task.
pub struct Outputs {
    want: watch::Sender<OutputSet>,
    state: watch::Receiver<OutputsState>,
    task: tokio::task::JoinHandle<()>,
}

impl Outputs {
    /// Starts the task that owns `device`. Its first act is to open every output.
    pub fn spawn<D: RelayDevice>(device: D) -> Outputs {
        let (want, want_rx) = watch::channel(OutputSet::OPEN);
        let (state_tx, state) = watch::channel(OutputsState::new(&device));
        let task = tokio::spawn(run(device, want_rx, state_tx));
        Outputs { want, state, task }
    }

    /// Asks for the outputs in `want` on and every other off; returns at once. Asking again for the same set does
    /// nothing (in particular it does not close again a relay that dropped out).
    pub fn set(&self, want: OutputSet) {
        self.want.send_if_modified(|w| std::mem::replace(w, want) != want);
    }

    /// What the hardware reports, updated after every round.
    pub fn state(&self) -> watch::Receiver<OutputsState> {
        self.state.clone()
    }

    /// Opens everything and waits (at most [`SHUTDOWN_TIMEOUT`]) until the device has done it; the last state.
    pub async fn shutdown(self) -> OutputsState {
        let Outputs { want, state, task } = self;
        drop(want);
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, task).await;
        let last = state.borrow().clone();
        last
    }
}

async fn run<D: RelayDevice>(
    mut dev: D,
    mut want_rx: watch::Receiver<OutputSet>,
    state_tx: watch::Sender<OutputsState>,
) {
    let mut st = OutputsState::new(&dev);
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut close = true;
    // A change seen here is a request to close too: one that arrived while the last round was reading back can be
    // taken on a poll tick (both ready at once), and reading it without `close` left it unclosed for ever (the
    // BMS-power relay of a starting daemon, found end to end).
    while let Ok(changed) = want_rx.has_changed() {
        close |= changed;
        st.wanted = *want_rx.borrow_and_update();
        let mut error = apply(&mut dev, &mut st, close, &want_rx).await;
        if !interrupted(&want_rx) {
            if let Err(e) = refresh(&mut dev, &mut st).await {
                error = Some(e);
            }
        }
        st.device_error = error.map(|e| e.to_string());
        state_tx.send_replace(st.clone());
        close = false;
        tokio::select! {
            r = want_rx.changed() => match r {
                Ok(()) => close = true,
                Err(_) => break,
            },
            _ = poll.tick() => {}
        }
    }
    // The bridge is gone: open everything.
    st.wanted = OutputSet::OPEN;
    let mut error = match dev.open_all().await {
        Ok(()) => {
            for o in st.fitted.iter() {
                st.written[o.index()] = Some(false);
            }
            None
        }
        Err(e) => Some(e),
    };
    if let Err(e) = refresh(&mut dev, &mut st).await {
        error = error.or(Some(e));
    }
    st.device_error = error.map(|e| e.to_string());
    state_tx.send_replace(st);
}

fn interrupted(want_rx: &watch::Receiver<OutputSet>) -> bool {
    want_rx.has_changed().unwrap_or(true)
}

/// Writes what differs from `st.wanted` (see the module doc for the order and the rules); the last error.
async fn apply<D: RelayDevice>(
    dev: &mut D,
    st: &mut OutputsState,
    close: bool,
    want_rx: &watch::Receiver<OutputSet>,
) -> Option<DeviceError> {
    let wanted = st.wanted.intersection(st.fitted);
    let to_open: Vec<Output> = Output::OPENING_ORDER
        .into_iter()
        .filter(|&o| st.fitted.get(o) && !wanted.get(o))
        .filter(|&o| st.written[o.index()] != Some(false) || st.read_back[o.index()] == Some(true))
        .collect();
    let mut error = None;
    if wanted.is_empty() && to_open.len() > 1 {
        match dev.open_all().await {
            Ok(()) => to_open.iter().for_each(|o| st.written[o.index()] = Some(false)),
            Err(e) => {
                to_open.iter().for_each(|o| st.written[o.index()] = None);
                error = Some(e);
            }
        }
    } else {
        for o in to_open {
            match dev.set(o, false).await {
                Ok(()) => st.written[o.index()] = Some(false),
                Err(e) => {
                    st.written[o.index()] = None;
                    error = Some(e);
                }
            }
            if interrupted(want_rx) {
                return error;
            }
        }
    }
    if !close || error.is_some() {
        return error;
    }
    let to_close: Vec<Output> =
        Output::CLOSING_ORDER.into_iter().filter(|&o| wanted.get(o) && st.written[o.index()] != Some(true)).collect();
    for o in to_close {
        match dev.set(o, true).await {
            Ok(()) => st.written[o.index()] = Some(true),
            Err(e) => {
                // Never go on closing the next relay of a sequence after one failed.
                st.written[o.index()] = None;
                return Some(e);
            }
        }
        if interrupted(want_rx) {
            return None;
        }
    }
    None
}

/// Reads back the outputs and reads the inputs; on failure both become unknown.
async fn refresh<D: RelayDevice>(dev: &mut D, st: &mut OutputsState) -> Result<(), DeviceError> {
    let back =
        if st.can_read_back && !st.fitted.is_empty() { dev.read_back().await } else { Ok([None; Output::COUNT]) };
    let inputs = if st.inputs_fitted.iter().any(|&f| f) { dev.read_inputs().await } else { Ok([None; Input::COUNT]) };
    st.read_back = back.as_ref().copied().unwrap_or([None; Output::COUNT]);
    st.inputs = inputs.as_ref().copied().unwrap_or([None; Input::COUNT]);
    back.and(inputs).map(|_| ())
}

/// Opens every fitted output and checks it where the device can: what `dbe contactors open` does.
pub async fn force_open<D: RelayDevice>(dev: &mut D) -> Result<Levels, DeviceError> {
    dev.open_all().await?;
    if !dev.can_read_back() {
        return Ok([None; Output::COUNT]);
    }
    let back = dev.read_back().await?;
    let closed = OutputSet::from_fn(|o| back[o.index()] == Some(true));
    if closed.is_empty() {
        Ok(back)
    } else {
        Err(DeviceError::StillClosed(closed))
    }
}

/// `dbe contactors open --config FILE`: opens every configured output and says what it did. The config's
/// `[contactors]` section is used even when another section is invalid (a bad edit must not keep the pack
/// closed after DBE stopped).
pub fn open_command(path: &std::path::Path) -> anyhow::Result<String> {
    let src = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let section = match dbe_services::config::Config::from_toml(&src) {
        Ok(cfg) => cfg.contactors,
        Err(errors) => {
            let s = dbe_services::contactors::section_from_toml(&src)
                .map_err(|e| anyhow::anyhow!("{}: invalid config:\n{errors}\n[contactors]: {e}", path.display()))?;
            let problems = s.problems(None);
            if !problems.is_empty() {
                let list: Vec<String> = problems.into_iter().map(|(k, m)| format!("{k}: {m}")).collect();
                anyhow::bail!("{}: invalid [contactors] section:\n{}", path.display(), list.join("\n"));
            }
            eprintln!(
                "dbe contactors open: {} is invalid elsewhere ({errors}); opening the outputs of its [contactors] section",
                path.display()
            );
            s
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let Some(mut opened) = open(&section).map_err(|e| anyhow::anyhow!("{}: {e}", section.outputs))? else {
            return Ok(format!(
                "no relay outputs configured (contactors.mode = \"{}\"): nothing to open{}",
                section.mode,
                if section.mode == "none" {
                    "; DBE cannot open this pack, its contactors are on manual switches"
                } else {
                    ""
                }
            ));
        };
        let fitted = opened.device.outputs();
        match force_open(&mut opened.device).await {
            Ok(_) if fitted.is_empty() => Ok(format!("{}: no outputs configured: nothing to open", section.outputs)),
            Ok(_) if opened.device.can_read_back() => {
                Ok(format!("{}: opened {fitted} (read back: open)", section.outputs))
            }
            Ok(_) => Ok(format!("{}: opened {fitted} (GPIO lines cannot be read back)", section.outputs)),
            Err(e) => Err(anyhow::anyhow!("{}: could not open {fitted}: {e}", section.outputs)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim::SimBoard;

    const MAINS: OutputSet = OutputSet(0b0111);

    async fn settled(
        rx: &mut watch::Receiver<OutputsState>,
        what: &str,
        f: impl Fn(&OutputsState) -> bool,
    ) -> OutputsState {
        let r =
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| f(s))).await.map(|r| r.map(|s| s.clone()));
        match r {
            Ok(Ok(s)) => s,
            _ => panic!("timed out waiting for {what}: {:?}", rx.borrow()),
        }
    }

    /// The first state published from now on that satisfies `f`.
    async fn next_state(
        rx: &mut watch::Receiver<OutputsState>,
        what: &str,
        f: impl Fn(&OutputsState) -> bool,
    ) -> OutputsState {
        rx.borrow_and_update();
        let wait = async {
            loop {
                rx.changed().await.ok()?;
                let s = rx.borrow_and_update().clone();
                if f(&s) {
                    return Some(s);
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), wait).await {
            Ok(Some(s)) => s,
            _ => panic!("timed out waiting for {what}"),
        }
    }

    #[test]
    fn output_sets_name_their_outputs() {
        let s = OutputSet::OPEN.with(Output::Negative, true).with(Output::Positive, true);
        assert!(s.get(Output::Negative) && !s.get(Output::Precharge));
        assert_eq!(s.to_string(), "negative, positive");
        assert_eq!(s.with(Output::Negative, false).iter().collect::<Vec<_>>(), [Output::Positive]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_closes_in_sequence_and_opens_everything_at_once() {
        let board = SimBoard::new(MAINS, [false; 2]);
        let mut relays = board.relays();
        let outputs = Outputs::spawn(board.device());
        let mut st = outputs.state();
        let s = settled(&mut st, "all open", |s| s.settled()).await;
        assert_eq!(s.written, [Some(false), Some(false), Some(false), None]);
        outputs.set(OutputSet::OPEN.with(Output::Negative, true));
        settled(&mut st, "negative closed", |s| s.settled() && s.read_back[0] == Some(true)).await;
        outputs.set(OutputSet::OPEN.with(Output::Negative, true).with(Output::Precharge, true));
        outputs.set(MAINS);
        let s = settled(&mut st, "all closed", |s| s.settled() && s.wanted == MAINS).await;
        assert_eq!(s.read_back, [Some(true), Some(true), Some(true), None]);
        assert!(!s.failed());
        assert_eq!(*relays.borrow_and_update(), [true, true, true, false]);
        outputs.set(OutputSet::OPEN);
        let s = settled(&mut st, "all open again", |s| s.settled() && s.wanted.is_empty()).await;
        assert_eq!(s.read_back, [Some(false), Some(false), Some(false), None]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_that_does_not_follow_is_reported_and_never_closed_again_on_its_own() {
        let board = SimBoard::new(MAINS, [false; 2]);
        let outputs = Outputs::spawn(board.device());
        let mut st = outputs.state();
        board.stick(Output::Positive, Some(false));
        outputs.set(MAINS);
        let s = settled(&mut st, "the fault", |s| !s.not_following().is_empty()).await;
        assert_eq!(s.not_following(), OutputSet::OPEN.with(Output::Positive, true));
        assert!(s.failed());
        // Freed, the relay stays open: the task does not write closed again by itself.
        board.stick(Output::Positive, None);
        for _ in 0..3 {
            next_state(&mut st, "a poll", |_| true).await;
        }
        assert!(!board.relays().borrow()[Output::Positive.index()]);
        // A relay stuck closed while open is wanted is written open again at every poll.
        outputs.set(OutputSet::OPEN);
        settled(&mut st, "open", |s| s.settled() && s.wanted.is_empty()).await;
        board.stick(Output::Negative, Some(true));
        settled(&mut st, "stuck closed", |s| s.not_following().get(Output::Negative)).await;
        board.stick(Output::Negative, None);
        settled(&mut st, "reopened", |s| s.settled() && !s.failed()).await;
        assert!(!board.relays().borrow()[Output::Negative.index()]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_board_is_a_device_error_and_its_inputs_become_unknown() {
        let board = SimBoard::new(MAINS, [true, true]);
        let outputs = Outputs::spawn(board.device());
        let mut st = outputs.state();
        let s = settled(&mut st, "inputs", |s| s.settled() && s.inputs == [Some(true), Some(true)]).await;
        assert_eq!((s.equipment_stop(), s.inverter_allows_closing()), (Some(false), Some(true)));
        board.set_input(Input::EquipmentStop, false);
        let s = settled(&mut st, "the stop", |s| s.equipment_stop() == Some(true)).await;
        assert_eq!(s.inputs[0], Some(false));
        board.set_input(Input::EquipmentStop, true);
        board.set_answering(false);
        let s = settled(&mut st, "the error", |s| s.device_error.is_some()).await;
        assert!(s.device_error.as_deref().unwrap().contains("did not answer"));
        assert_eq!(s.equipment_stop(), Some(true), "unknown is a stop");
        assert_eq!(s.inverter_allows_closing(), Some(false), "unknown is not a permission");
        // A close wanted while the board is silent is not retried when it answers again.
        outputs.set(MAINS);
        settled(&mut st, "the failed close", |s| s.wanted == MAINS && s.written[0].is_none()).await;
        board.set_answering(true);
        let s = settled(&mut st, "answering again", |s| s.device_error.is_none()).await;
        assert_eq!(s.read_back, [Some(false), Some(false), Some(false), None]);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_or_shutting_down_opens_everything() {
        let board = SimBoard::new(MAINS, [false; 2]);
        let outputs = Outputs::spawn(board.device());
        let mut st = outputs.state();
        outputs.set(MAINS);
        settled(&mut st, "closed", |s| s.settled() && s.wanted == MAINS).await;
        let last = outputs.shutdown().await;
        assert_eq!(last.read_back, [Some(false), Some(false), Some(false), None]);
        assert_eq!(*board.relays().borrow(), [false; 4]);
    }

    /// A device that logs every write and takes `delay` for each (a slow board).
    struct Logged {
        inner: sim::SimDevice,
        log: watch::Sender<Vec<(Output, bool)>>,
        delay: Duration,
        read_delay: Duration,
    }

    impl RelayDevice for Logged {
        fn outputs(&self) -> OutputSet {
            self.inner.outputs()
        }
        fn inputs(&self) -> [bool; Input::COUNT] {
            self.inner.inputs()
        }
        fn can_read_back(&self) -> bool {
            true
        }
        async fn set(&mut self, output: Output, on: bool) -> Result<(), DeviceError> {
            tokio::time::sleep(self.delay).await;
            self.log.send_modify(|l| l.push((output, on)));
            self.inner.set(output, on).await
        }
        async fn read_back(&mut self) -> Result<Levels, DeviceError> {
            tokio::time::sleep(self.read_delay).await;
            self.inner.read_back().await
        }
        async fn read_inputs(&mut self) -> Result<[Option<bool>; Input::COUNT], DeviceError> {
            self.inner.read_inputs().await
        }
    }

    type Log = watch::Receiver<Vec<(Output, bool)>>;

    fn logged(delay: Duration) -> (Outputs, Log) {
        logged_with(delay, Duration::ZERO)
    }

    fn logged_with(delay: Duration, read_delay: Duration) -> (Outputs, Log) {
        let board = SimBoard::new(OutputSet::from_fn(|_| true), [false; 2]);
        let (log, rx) = watch::channel(Vec::new());
        (Outputs::spawn(Logged { inner: board.device(), log, delay, read_delay }), rx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_that_arrives_during_a_read_back_is_still_closed() {
        // The change and the poll tick are then ready together and `select!` picks either at random: 16 rounds
        // leave the old bug one chance in 65 536 of going unseen.
        for round in 0..16 {
            let (outputs, mut log) = logged_with(Duration::from_millis(10), Duration::from_millis(100));
            let mut st = outputs.state();
            // The first round: four writes (40 ms), then the read-back (100 ms): ask for BMS power inside it.
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert_eq!(log.borrow().len(), 4, "round {round}: the opening writes are done");
            outputs.set(OutputSet::OPEN.with(Output::BmsPower, true));
            settled(&mut st, "BMS power written on", |s| s.written[Output::BmsPower.index()] == Some(true)).await;
            assert_eq!(log.borrow_and_update().last(), Some(&(Output::BmsPower, true)), "round {round}");
        }
    }

    /// The writes logged since the last call.
    fn take(log: &mut Log, seen: &mut usize) -> Vec<(Output, bool)> {
        let l = log.borrow_and_update();
        let new = l[*seen..].to_vec();
        *seen = l.len();
        new
    }

    #[tokio::test(start_paused = true)]
    async fn writes_go_out_in_the_safe_order() {
        use Output::*;
        let (outputs, mut log) = logged(Duration::ZERO);
        let mut seen = 0;
        let mut st = outputs.state();
        settled(&mut st, "open", |s| s.settled()).await;
        assert_eq!(
            take(&mut log, &mut seen),
            [(Positive, false), (Precharge, false), (Negative, false), (BmsPower, false)]
        );
        let all = OutputSet::from_fn(|_| true);
        outputs.set(all);
        settled(&mut st, "closed", |s| s.settled() && s.wanted == all).await;
        assert_eq!(
            take(&mut log, &mut seen),
            [(BmsPower, true), (Negative, true), (Precharge, true), (Positive, true)]
        );
        let bms_and_negative = OutputSet::OPEN.with(BmsPower, true).with(Negative, true);
        outputs.set(bms_and_negative);
        settled(&mut st, "two open", |s| s.settled() && s.wanted == bms_and_negative).await;
        assert_eq!(take(&mut log, &mut seen), [(Positive, false), (Precharge, false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_decision_interrupts_a_close_between_two_writes() {
        use Output::*;
        let (outputs, mut log) = logged(Duration::from_millis(50));
        let mut seen = 0;
        let mut st = outputs.state();
        settled(&mut st, "open", |s| s.settled()).await;
        take(&mut log, &mut seen);
        outputs.set(OutputSet::from_fn(|_| true));
        // The first write (BMS power) is made and the second (negative) under way: open everything.
        tokio::time::timeout(Duration::from_secs(10), log.wait_for(|l| l.len() == seen + 1)).await.unwrap().unwrap();
        outputs.set(OutputSet::OPEN);
        next_state(&mut st, "open again", |s| s.settled() && s.wanted.is_empty()).await;
        let writes = take(&mut log, &mut seen);
        assert_eq!(&writes[..2], &[(BmsPower, true), (Negative, true)], "the write under way completes");
        assert!(!writes.contains(&(Positive, true)) && !writes.contains(&(Precharge, true)), "{writes:?}");
        assert_eq!(&writes[2..], &[(Positive, false), (Precharge, false), (Negative, false), (BmsPower, false)]);
    }

    #[tokio::test]
    async fn force_open_reports_a_relay_that_stays_closed() {
        let board = SimBoard::new(MAINS, [false; 2]);
        let mut dev = board.device();
        dev.set(Output::Negative, true).await.unwrap();
        board.stick(Output::Negative, Some(true));
        assert_eq!(
            force_open(&mut dev).await,
            Err(DeviceError::StillClosed(OutputSet::OPEN.with(Output::Negative, true)))
        );
        board.stick(Output::Negative, None);
        assert_eq!(force_open(&mut dev).await, Ok([Some(false), Some(false), Some(false), None]));
    }
}

//! Simulated relay outputs (`sim:`), for the demo and the tests: a relay board in the process, read back like a
//! Modbus board's coils.
//!
//! Like real hardware it can fail: an output can be stuck (it keeps its state whatever is written, and the
//! read-back shows it: the "relay does not follow" fault), and the whole board can stop answering. Inputs are
//! circuits, closed unless a test opens them (a pressed equipment stop, a broken wire).

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{DeviceError, Input, Levels, Output, OutputSet, RelayDevice};

struct State {
    stuck: [Option<bool>; Output::COUNT],
    inputs: [bool; Input::COUNT],
    answering: bool,
}

/// A handle on the simulated board, for whoever plays the hardware (a test, the simulated pack).
#[derive(Clone)]
pub struct SimBoard {
    state: Arc<Mutex<State>>,
    relays: watch::Sender<[bool; Output::COUNT]>,
    outputs: OutputSet,
    inputs: [bool; Input::COUNT],
}

impl SimBoard {
    /// A board with the given outputs and inputs fitted; every relay open, every input circuit closed.
    pub fn new(outputs: OutputSet, inputs: [bool; Input::COUNT]) -> Self {
        SimBoard {
            state: Arc::new(Mutex::new(State {
                stuck: [None; Output::COUNT],
                inputs: [true; Input::COUNT],
                answering: true,
            })),
            relays: watch::Sender::new([false; Output::COUNT]),
            outputs,
            inputs,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The relays' actual states (what the pack's contactors see), indexed by [`Output::index`].
    pub fn relays(&self) -> watch::Receiver<[bool; Output::COUNT]> {
        self.relays.subscribe()
    }

    /// Sticks an output in a state (`None` frees it): it no longer follows what is written.
    pub fn stick(&self, output: Output, state: Option<bool>) {
        self.lock().stuck[output.index()] = state;
        if let Some(s) = state {
            self.relays.send_modify(|r| r[output.index()] = s);
        }
    }

    /// Opens (`false`) or closes an input's circuit.
    pub fn set_input(&self, input: Input, closed: bool) {
        self.lock().inputs[input.index()] = closed;
    }

    /// Makes the board stop (or start again) answering.
    pub fn set_answering(&self, answering: bool) {
        self.lock().answering = answering;
    }

    pub fn device(&self) -> SimDevice {
        SimDevice(self.clone())
    }

    fn check(&self) -> Result<(), DeviceError> {
        if self.lock().answering {
            Ok(())
        } else {
            Err(DeviceError::NoAnswer { device: "sim:".into(), unit: 0 })
        }
    }
}

/// The device end of a [`SimBoard`].
pub struct SimDevice(SimBoard);

impl RelayDevice for SimDevice {
    fn outputs(&self) -> OutputSet {
        self.0.outputs
    }

    fn inputs(&self) -> [bool; Input::COUNT] {
        self.0.inputs
    }

    fn can_read_back(&self) -> bool {
        true
    }

    async fn set(&mut self, output: Output, on: bool) -> Result<(), DeviceError> {
        self.0.check()?;
        if self.0.outputs.get(output) && self.0.lock().stuck[output.index()].is_none() {
            self.0.relays.send_if_modified(|r| std::mem::replace(&mut r[output.index()], on) != on);
        }
        Ok(())
    }

    async fn read_back(&mut self) -> Result<Levels, DeviceError> {
        self.0.check()?;
        let r = *self.0.relays.borrow();
        Ok(Output::ALL.map(|o| self.0.outputs.get(o).then_some(r[o.index()])))
    }

    async fn read_inputs(&mut self) -> Result<[Option<bool>; Input::COUNT], DeviceError> {
        self.0.check()?;
        let closed = self.0.lock().inputs;
        Ok(std::array::from_fn(|i| self.0.inputs[i].then_some(closed[i])))
    }
}

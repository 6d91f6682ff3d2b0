//! `sim:NAME` ports: in-process CAN buses. Every port and simulator attached to the same name sees every frame the
//! others send (never its own, like a real controller without loopback).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dbe_core::CanFrame;
use tokio::sync::broadcast;

use super::{PortCounters, PortIo, RX_CAPACITY};

/// A frame on a simulated bus and who put it there.
#[derive(Copy, Clone, Debug)]
pub struct BusFrame {
    pub sender: u64,
    pub frame: CanFrame,
}

/// One simulated bus.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<BusFrame>,
    next_id: Arc<Mutex<u64>>,
}

impl Bus {
    fn new() -> Self {
        Bus { tx: broadcast::channel(RX_CAPACITY).0, next_id: Arc::new(Mutex::new(1)) }
    }

    /// A new attachment: an id to send under and a receiver of everything on the bus.
    pub fn attach(&self) -> (u64, broadcast::Receiver<BusFrame>) {
        let mut id = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
        *id += 1;
        (*id, self.tx.subscribe())
    }

    pub fn send(&self, sender: u64, frame: CanFrame) {
        let _ = self.tx.send(BusFrame { sender, frame });
    }
}

/// The buses of one process, by name.
#[derive(Clone, Default)]
pub struct Buses {
    map: Arc<Mutex<HashMap<String, Bus>>>,
}

impl Buses {
    pub fn get(&self, name: &str) -> Bus {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string()).or_insert_with(Bus::new).clone()
    }
}

pub async fn run(bus: Bus, io: &mut PortIo) -> anyhow::Result<()> {
    let (me, mut rx) = bus.attach();
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(f) if f.sender != me => io.deliver(f.frame),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    io.counters.errors.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            f = io.tx.recv() => match f {
                Some(_) if io.listen_only => PortCounters::add(&io.counters.tx_dropped),
                Some(out) => { bus.send(me, out.frame); io.sent(out) }
                None => return Ok(()),
            },
        }
    }
}

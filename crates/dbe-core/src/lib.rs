//! The sans-IO core of DBE.
//!
//! Everything that decides what a battery pack and an inverter are told lives here, and nothing here touches a
//! clock, a socket or the heap: drivers are state machines fed `(now, frame)` and asked for frames to send at
//! `now` (the shape of quinn-proto's `Connection`). That is what lets a whole day of operation run in a test in
//! simulated time, and what lets the same code move to a microcontroller later.
//!
//! The vocabulary shared by every driver (battery, inverter, supervisor, bridge):
//! - inputs: `handle_frame(now, &frame)`, `handle_timeout(now)`, `handle_command(now, cmd)`;
//! - outputs: `poll_transmit(now)`, `poll_timeout()`, `poll_event()`.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![forbid(unsafe_code)]

pub mod battery;
pub mod bridge;
pub mod can;
pub mod command;
pub mod contactor;
pub mod crc;
pub mod diag;
pub mod energy;
pub mod events;
pub mod extras;
pub mod inverter;
pub mod model;
pub mod options;
pub mod supervisor;
pub mod time;
pub mod units;

pub use can::CanFrame;
pub use time::{Duration, Instant};

//! The services around DBE's bridge, independent of where the bridge's frames come from (real ports or the
//! demo's simulators): the status snapshot every surface shares, the hub that carries snapshots, events and
//! commands between the bridge loop and its consumers, and the consumers themselves.

pub mod config;
pub mod config_store;
pub mod hub;
pub mod mqtt;
pub mod status;
pub mod web;

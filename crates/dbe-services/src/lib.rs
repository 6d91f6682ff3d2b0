//! The services around DBE's bridge, independent of where the bridge's frames come from (real ports or the
//! demo's simulators): the status snapshot every surface shares, the hub that carries snapshots, events and
//! commands between the bridge loop and its consumers, and the consumers themselves.

//!
//! Without the default `runtime` feature only the config file and the MQTT command payloads are parsed (no tokio,
//! web or MQTT client): what the fuzz targets need.

pub mod config;
#[cfg(feature = "runtime")]
pub mod config_store;
pub mod contactors;
#[cfg(feature = "runtime")]
pub mod hub;
pub mod mqtt;
pub mod request;
#[cfg(feature = "runtime")]
pub mod status;
#[cfg(feature = "runtime")]
pub mod web;

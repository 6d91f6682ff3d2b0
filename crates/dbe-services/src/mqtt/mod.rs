//! MQTT telemetry, remote commands and Home Assistant discovery, compatible with Battery-Emulator's topics so
//! dashboards and automations written for it keep working.
//!
//! The client is one more consumer of a [`hub::Handle`]: it reads the latest snapshot on a timer (latest state
//! wins, nothing queues up while the broker is away), keeps the events it has not sent in a bounded queue
//! (oldest dropped first, sent oldest first after a reconnect), and hands commands to the bridge loop through
//! the hub without ever waiting on it. Its own queues are bounded; `try_publish` is the only way anything reaches
//! the MQTT connection, so a stalled broker can never block the bridge or this task.
//!
//! Source of the facts: Battery-Emulator `Software/src/devboard/mqtt/mqtt.cpp` (topics, field names and units,
//! last will, the `SET_LIMITS` payload) and `Software/src/devboard/utils/events.cpp` (`emulator_status` from the
//! event level); the Home Assistant MQTT discovery documentation for [`discovery`].
//!
//! # Topics (prefix `BE` by default)
//! | topic | retained | payload |
//! |---|---|---|
//! | `BE/status` | yes | `online`, and `offline` as the last will |
//! | `BE/info` | no | the fields below, every `publish_interval_ms` |
//! | `BE/spec_data` | no | `{"cell_voltages":[V...],"cell_balancing":[bool...]}` (when `publish_cell_voltages`) |
//! | `BE/balancing_data` | no | `{"cell_balancing":[bool...]}` (when `publish_cell_voltages`) |
//! | `BE/events` | no | one [`hub::EventMessage`] per new event occurrence |
//! | `BE/command/<NAME>` | subscribed | `PAUSE`, `RESUME`, `RESTART`, `STOP`, `START`, `BMSRESET`, `SET_LIMITS`, `SET_SOC_WINDOW` |
//! | `BE/command_result` | no | `{"command":NAME,"ok":bool,"error":text}` for every command received |
//!
//! # `info` fields
//! Battery-Emulator's names and units (it publishes floats scaled from its datalayer; DBE's [`Status`] already
//! carries the same base units, see [`crate::status::Status`]). A value DBE does not know yet is left out, never sent as 0.
//!
//! | field | unit / form | Battery-Emulator source | DBE source |
//! |---|---|---|---|
//! | `SOC` | % (0.01) | `reported_soc` / 100 | `status.reported.soc_pct` (after the SOC window) |
//! | `SOC_real` | % | `real_soc` / 100 | `battery.soc_real_pct` |
//! | `state_of_health` | % | `soh_pptt` / 100 | `battery.soh_pct` |
//! | `temperature_min`, `temperature_max` | °C | `temperature_*_dC` / 10 | `battery.temperature_*_c` |
//! | `stat_batt_power` | W, negative = discharging | `active_power_W` | `battery.power_w` |
//! | `battery_current` | A, negative = discharging | `current_dA` / 10 | `battery.current_a` |
//! | `battery_voltage` | V | `voltage_dV` / 10 | `battery.voltage_v` |
//! | `cell_max_voltage`, `cell_min_voltage` | V (3 decimals) | `cell_*_voltage_mV` / 1000 | `battery.cell_*_mv` / 1000 |
//! | `cell_voltage_delta` | mV | max − min in mV | `battery.cell_delta_mv` |
//! | `total_capacity` | Wh | `info.total_capacity_Wh` (left out while 0) | `battery.total_energy_wh` |
//! | `remaining_capacity` | Wh (scaled) | `reported_remaining_capacity_Wh` | `reported.remaining_energy_wh` |
//! | `remaining_capacity_real` | Wh | `remaining_capacity_Wh` | `battery.remaining_energy_wh` |
//! | `max_charge_power`, `max_discharge_power` | W | `max_*_power_W` (the BMS's) | `battery.bms_max_*_power_w` |
//! | `bms_status` | `ACTIVE`/`STANDBY`/`FAULT`/`UNKNOWN` | `getBMSStatus` | `battery.bms_status` |
//! | `pause_status` | `RUNNING`/`PAUSED`/`STOPPED` | `get_emulator_pause_status` | `status.paused`/`stopped` |
//! | `event_level` | `INFO`/`WARNING`/`ERROR` | `get_event_level_string` | `status.event_level` |
//! | `emulator_status` | `OK`/`WARNING`/`ERROR` | `get_emulator_status_string` (level → status) | from `event_level` |
//! | `emulator_uptime` | s | `millis64() / 1000` | `status.time_ms / 1000` (bridge uptime) |
//! | `balancing_active_cells` | count | cells with the balancing flag | `battery.balancing_cells` (once cells are known) |
//! | `balancing_status` | `Active`/`Ready` | `get_balancing_status_text` | `Active` when a cell balances, else `Ready` |
//! | `charging_state` | `Charging`/`Discharging`/`Idle` | sign of `current_dA` | sign of `battery.current_a` |
//! | `limiting_factor` | `Battery`/`UserSetting`/`Idle`, or DBE's reason | `limiting_factor_to_text` | `limits.*_limited_by` |
//! | `software_version` | text | (web page only) | crate version |
//! | pack-specific values | the driver's descriptor | `leaf_hx`, `insulation_resistance`, `dc_dc_*`, ... | `battery.extras`: known ones only, under BE's name where it has one (never replaces a field above) |
//!
//! Differences on purpose: `event_level` is the plain word (`WARNING`), not `EVENT_LEVEL_WARNING`; a
//! `SET_LIMITS` payload that does not parse changes nothing instead of clearing the remote limits (see
//! [`commands`]); retained commands are ignored, so a stale retained `STOP` cannot fire on every reconnect.

pub mod commands;
pub mod config;
#[cfg(feature = "runtime")]
pub mod discovery;
#[cfg(feature = "runtime")]
pub mod telemetry;
#[cfg(feature = "runtime")]
pub mod tls;
#[cfg(feature = "runtime")]
pub mod topics;

// The client itself needs the async runtime; the settings and the command payload parser do not (the fuzz
// targets build them alone).
#[cfg(feature = "runtime")]
mod client;

#[cfg(feature = "runtime")]
pub use client::*;
pub use commands::{CommandName, PayloadError};
pub use config::{ConfigError, MqttConfig, TlsConfig};
#[cfg(feature = "runtime")]
pub use tls::TlsSetupError;

//! Invariants of the config and MQTT command parsers. Shared by the fuzz targets and by a stable `cargo test`
//! in dbe-services that replays the checked-in corpora (`#[path]`-included there), so CI checks these parsers
//! on every run without building the services stack a second time with coverage instrumentation.

use dbe_core::command::{Command, MAX_TEMPORARY_LIMIT_TIMEOUT};
use dbe_services::config::Config;
use dbe_services::mqtt::commands::{parse_command, CommandName, MAX_REMOTE_LIMIT_DA};
use dbe_services::request::Request;

/// Any text is either a non-empty list of errors (each pointing at a line of the text) or a config that
/// validates and survives a save and reload unchanged.
pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_toml(text) {
        Ok(cfg) => {
            cfg.validate().unwrap_or_else(|e| panic!("accepted a config that does not validate: {e}"));
            let saved = cfg.to_toml();
            let back =
                Config::from_toml(&saved).unwrap_or_else(|e| panic!("saved config does not reload: {e}\n{saved}"));
            assert_eq!(back, cfg, "config changed in a save and reload:\n{saved}");
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "rejected without saying why");
            let lines = text.split('\n').count();
            for e in &errors.0 {
                if let Some(line) = e.line {
                    assert!((1..=lines).contains(&line), "error on line {line} of {lines}: {e}");
                }
                let _ = e.to_string();
            }
        }
    }
}

/// The first byte picks the command; the rest is the payload. An accepted payload gives a command whose values
/// are inside the ranges the core accepts.
pub fn check_mqtt_command(data: &[u8]) {
    let Some((&sel, payload)) = data.split_first() else { return };
    let name = CommandName::ALL[sel as usize % CommandName::ALL.len()];
    match parse_command(name, payload) {
        Ok(Request::Core(Command::SetTemporaryLimits { charge, discharge, timeout })) => {
            for v in [charge, discharge].into_iter().flatten() {
                assert!((0..=MAX_REMOTE_LIMIT_DA).contains(&(v.0 as i64)), "limit {v:?} from {payload:?}");
            }
            assert!(timeout.as_secs() >= 1 && timeout <= MAX_TEMPORARY_LIMIT_TIMEOUT, "timeout {timeout:?}");
        }
        Ok(Request::Core(Command::SetSocWindow { min, max })) => {
            assert!(
                min < max && max.0 <= 10_000,
                "window {min:?}..{max:?} from {:?}",
                String::from_utf8_lossy(payload)
            );
        }
        Ok(r) => assert!(name.is_button(), "{name:?} gave {r:?}"),
        Err(e) => {
            assert!(!name.is_button(), "button {name:?} refused a payload: {e}");
            let _ = e.to_string();
        }
    }
}

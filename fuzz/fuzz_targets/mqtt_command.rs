//! The MQTT command payload parser, for every command name.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dbe_fuzz::services::check_mqtt_command(data);
});

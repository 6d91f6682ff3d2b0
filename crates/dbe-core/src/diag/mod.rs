//! The diagnostic client: ISO-TP (ISO 15765-2) underneath, and a poller for UDS `0x22` / KWP2000 `0x21` reads on
//! top. One way to do diagnostics for every pack driver: the driver lists what it reads and how often, and gets
//! each answer as a slice of the reassembly buffer.

pub mod isotp;
pub mod poller;

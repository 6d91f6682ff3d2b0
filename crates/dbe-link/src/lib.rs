//! Link-layer codecs: bytes and text ⟷ [`dbe_core::CanFrame`], with no I/O, tested on bytes alone (the codec/
//! connection split of tokio-modbus). The daemon's port tasks own the files, serial ports and sockets.

pub mod candump;

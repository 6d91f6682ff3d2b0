//! Link-layer codecs between bytes and [`dbe_core::CanFrame`]: the formats DBE reads and writes when it talks
//! to a CAN bus through something other than a SocketCAN socket, or records one.
//!
//! - [`candump`]: candump / python-can log lines (`(1436509052.249713) can0 1DB#0123...`), for recording and
//!   replaying buses.
//! - [`slcan`]: Lawicel ASCII serial-line CAN (CANable, USBtin), host and adapter side.
//! - [`socketcand`]: the socketcand TCP protocol (`< frame ... >`), client and server side.
//! - [`gvret`]: GVRET, SavvyCAN's binary protocol over serial and TCP, host and device side.
//! - [`port`]: the port strings that name a CAN port (`slcan:/dev/ttyACM0?bitrate=500000`), shared by the daemon
//!   and the config check.
//!
//! Nothing here opens a port, a socket or a file, or reads a clock: each module turns bytes into messages and
//! messages into bytes, and is tested on bytes alone (as tokio-modbus keeps its codec apart from its
//! connection). The daemon's tasks own the serial ports and TCP sockets and call these codecs. Every decoder is
//! incremental (bytes may arrive in any pieces), resynchronises after garbage without losing the next good
//! message, and never panics on any input. (GVRET is the one exception to the middle promise: it has no length
//! field or real checksum, so garbage containing its 0xF1 start byte can swallow the next message; see
//! [`gvret::Decoder`].)
#![forbid(unsafe_code)]

pub mod candump;
pub mod gvret;
mod hex;
pub mod port;
pub mod slcan;
pub mod socketcand;

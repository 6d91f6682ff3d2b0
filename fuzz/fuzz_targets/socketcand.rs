//! socketcand: the message parser and the stream decoder. A parsed message's canonical text parses back to it.
#![no_main]
use dbe_link::socketcand::{Decoder, Message};

fn round_trip(m: &Message) {
    if let Ok(text) = m.to_text() {
        let again = Message::parse(text.as_bytes());
        assert_eq!(again.as_ref(), Ok(m), "{m:?} → {text:?}");
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        round_trip(&m);
    }
    let mut d = Decoder::new();
    for chunk in data.chunks(1 + data.first().copied().unwrap_or(7) as usize % 17) {
        d.push(chunk);
        while let Some(r) = d.poll() {
            if let Ok(m) = r {
                round_trip(&m);
            }
        }
    }
});

//! GVRET: both directions' stream decoders. Every decoded message encodes to bytes that decode to it alone.
#![no_main]
use dbe_link::gvret::{to_bytes, Command, Decoder, Message, Reply};

fn stream<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let mut d = Decoder::<M>::new();
    for chunk in data.chunks(1 + data.first().copied().unwrap_or(5) as usize % 11) {
        d.push(chunk);
        while let Some(r) = d.poll() {
            if let Ok(m) = r {
                if let Ok(bytes) = to_bytes(&m) {
                    let mut again = Decoder::<M>::new();
                    again.push(&bytes);
                    let got = again.poll();
                    assert!(matches!(&got, Some(Ok(x)) if *x == m), "{m:?} → {bytes:x?} → {got:?}");
                    assert!(again.poll().is_none(), "{m:?} encoded to more than one message");
                }
            }
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stream::<Command>(data);
    stream::<Reply>(data);
});

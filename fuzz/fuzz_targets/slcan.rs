//! slcan: both directions' parsers and the stream decoder. Whatever parses re-encodes to bytes that parse to the
//! same message; the decoder's buffer stays bounded whatever arrives.
#![no_main]
use dbe_link::slcan::{Command, Decoder, Message, Reply, CR};

fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: &M) {
    let mut out = Vec::new();
    m.encode(&mut out);
    let mut d = Decoder::<M>::new();
    d.push(&out);
    let again = d.poll();
    assert!(matches!(&again, Some(Ok(x)) if x == m), "{m:?} → {:?} → {again:?}", String::from_utf8_lossy(&out));
}

fn stream<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let mut d = Decoder::<M>::new();
    // Feed in pieces whose sizes come from the data, so split points are fuzzed too.
    for chunk in data.chunks(1 + data.first().copied().unwrap_or(7) as usize % 13) {
        d.push(chunk);
        while let Some(r) = d.poll() {
            if let Ok(m) = r {
                round_trip(&m);
            }
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Command::parse(data) {
        round_trip(&c);
    }
    if let Ok(r) = <Reply as Message>::parse(data, CR) {
        round_trip(&r);
    }
    stream::<Command>(data);
    stream::<Reply>(data);
});

//! candump logs: the line parser and the streaming decoder. A parsed line prints as a line that parses to the
//! same frame, timestamp, interface and direction.
#![no_main]
use dbe_link::candump::{format_frame, parse_frame, parse_line_bytes, Decoder};

fn round_trip(line: &dbe_link::candump::LogLine) {
    let text = line.to_string();
    let again = parse_line_bytes(text.as_bytes());
    assert_eq!(again.as_ref().ok().and_then(|l| l.as_ref()), Some(line), "{line:?} → {text:?}");
    assert_eq!(parse_frame(&format_frame(&line.frame)).as_ref(), Ok(&line.frame));
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Some(line)) = parse_line_bytes(data) {
        round_trip(&line);
    }
    let mut d = Decoder::new();
    for chunk in data.chunks(1 + data.first().copied().unwrap_or(9) as usize % 31) {
        d.push(chunk);
        while let Some(r) = d.poll() {
            if let Ok(line) = r {
                round_trip(&line);
            }
        }
    }
    d.finish();
    while let Some(r) = d.poll() {
        if let Ok(line) = r {
            round_trip(&line);
        }
    }
});

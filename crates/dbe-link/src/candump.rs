//! candump log lines: `(1436509052.249713) can0 1DB#0123456789ABCDEF`.
//!
//! The format written by can-utils `candump -l` and read by `canplayer` and `log2asc`, and written and read by
//! python-can's `CanutilsLogWriter`/`CanutilsLogReader` (`can/io/canutils.py`): a timestamp in seconds with
//! microseconds in parentheses, the interface name, then `ID#DATA` with a 3-hex-digit standard id or an 8-hex-digit
//! extended id, data as hex byte pairs, `ID#R` (optionally `ID#R<len>`) for remote frames. CAN FD lines (`ID##...`)
//! are refused: DBE's frames are classic CAN.

use dbe_core::CanFrame;

/// One frame of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Microseconds since the Unix epoch (or whatever epoch the log used).
    pub timestamp_us: u64,
    pub interface: String,
    pub frame: CanFrame,
}

/// What was wrong with a line, and where (1-based column).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {found}, expected {expected}")]
pub struct ParseError {
    pub column: usize,
    pub expected: &'static str,
    pub found: String,
}

fn err(line: &str, rest: &str, expected: &'static str, found: impl Into<String>) -> ParseError {
    ParseError { column: line.len() - rest.len() + 1, expected, found: found.into() }
}

fn describe(s: &str) -> String {
    match s.split_whitespace().next() {
        Some(tok) => format!("found '{}'", tok.chars().take(24).collect::<String>()),
        None => "found the end of the line".into(),
    }
}

/// Parses one line. Blank lines and `#` comments are `Ok(None)`.
pub fn parse_line(line: &str) -> Result<Option<LogLine>, ParseError> {
    let trimmed = line.trim_end_matches(['\r', '\n']);
    let rest = trimmed.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let Some(after_paren) = rest.strip_prefix('(') else {
        return Err(err(trimmed, rest, "'(' and a timestamp", describe(rest)));
    };
    let close = after_paren
        .find(')')
        .ok_or_else(|| err(trimmed, after_paren, "a timestamp closed by ')'", describe(after_paren)))?;
    let ts = &after_paren[..close];
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    let bad_ts = || err(trimmed, after_paren, "a timestamp like 1436509052.249713", format!("found '{ts}'"));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
    {
        return Err(bad_ts());
    }
    let secs: u64 = secs.parse().map_err(|_| bad_ts())?;
    let mut us: u64 = 0;
    for b in frac.bytes().chain(core::iter::repeat(b'0')).take(6) {
        us = us * 10 + (b - b'0') as u64;
    }
    let timestamp_us = secs.checked_mul(1_000_000).and_then(|s| s.checked_add(us)).ok_or_else(bad_ts)?;

    let rest = &after_paren[close + 1..];
    let rest_trim = rest.trim_start();
    if rest_trim.len() == rest.len() {
        return Err(err(trimmed, rest, "a space after the timestamp", describe(rest)));
    }
    let iface_end = rest_trim
        .find(char::is_whitespace)
        .ok_or_else(|| err(trimmed, rest_trim, "an interface name and a frame", describe(rest_trim)))?;
    let interface = &rest_trim[..iface_end];
    let frame_text = rest_trim[iface_end..].trim_start();
    let frame_part = frame_text.split_whitespace().next().unwrap_or("");
    // python-can appends " R" / " T" direction flags on newer logs; anything after the frame is ignored.
    let frame = parse_frame(frame_part).map_err(|(offset, expected, found)| ParseError {
        column: trimmed.len() - frame_text.len() + 1 + offset,
        expected,
        found,
    })?;
    Ok(Some(LogLine { timestamp_us, interface: interface.to_string(), frame }))
}

/// Parses `ID#DATA`; on error: (offset in the text, what was expected, what was found).
pub fn parse_frame(text: &str) -> Result<CanFrame, (usize, &'static str, String)> {
    let Some(hash) = text.find('#') else {
        return Err((0, "a frame like 1DB#0011AABB", format!("found '{text}'")));
    };
    let (id_text, data_text) = (&text[..hash], &text[hash + 1..]);
    if data_text.starts_with('#') {
        return Err((hash, "a classic CAN frame", "a CAN FD frame ('##'), which DBE does not support".into()));
    }
    if id_text.is_empty()
        || !id_text.bytes().all(|b| b.is_ascii_hexdigit())
        || !(id_text.len() == 3 || id_text.len() == 8)
    {
        return Err((0, "a 3-digit standard or 8-digit extended hex id", format!("found '{id_text}'")));
    }
    let id = u32::from_str_radix(id_text, 16).map_err(|_| (0, "a hex id", format!("found '{id_text}'")))?;
    let extended = id_text.len() == 8;
    if let Some(len_text) = data_text.strip_prefix('R') {
        let len = if len_text.is_empty() {
            0
        } else {
            len_text.parse::<usize>().ok().filter(|&l| l <= 8).ok_or((
                hash + 2,
                "a remote length 0-8",
                format!("found '{len_text}'"),
            ))?
        };
        let id: dbe_core::can::Id = if extended {
            dbe_core::can::ExtendedId::new(id)
                .ok_or((0, "an extended id up to 1FFFFFFF", format!("found '{id_text}'")))?
                .into()
        } else {
            dbe_core::can::StandardId::new(id as u16)
                .filter(|_| id <= 0x7FF)
                .ok_or((0, "a standard id up to 7FF", format!("found '{id_text}'")))?
                .into()
        };
        return CanFrame::remote(id, len).map_err(|e| (hash + 1, "a remote frame", e.to_string()));
    }
    if data_text.len() % 2 != 0 || data_text.len() > 16 || !data_text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err((hash + 1, "0 to 8 data bytes as hex pairs", format!("found '{data_text}'")));
    }
    let mut data = [0u8; 8];
    for (i, pair) in data_text.as_bytes().chunks(2).enumerate() {
        let s = core::str::from_utf8(pair).unwrap_or("");
        data[i] = u8::from_str_radix(s, 16).map_err(|_| (hash + 1 + 2 * i, "hex data", format!("found '{s}'")))?;
    }
    let data = &data[..data_text.len() / 2];
    let frame = if extended { CanFrame::extended(id, data) } else { CanFrame::standard(id as u16, data) };
    frame.map_err(|e| (0, "a valid CAN id", e.to_string()))
}

/// Formats a line exactly as `candump -l` writes it.
pub fn format_line(timestamp_us: u64, interface: &str, frame: &CanFrame) -> String {
    format!("({}.{:06}) {} {}", timestamp_us / 1_000_000, timestamp_us % 1_000_000, interface, frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_candump_l_lines() {
        // The example line of can-utils' candump -l output format.
        let l = parse_line("(1436509052.249713) can0 1DB#0123456789ABCDEF").unwrap().unwrap();
        assert_eq!(l.timestamp_us, 1_436_509_052_249_713);
        assert_eq!(l.interface, "can0");
        assert_eq!(l.frame, CanFrame::standard(0x1DB, &[0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF]).unwrap());
        let e = parse_line("(1.5) vcan1 00004210#AA").unwrap().unwrap();
        assert_eq!(e.timestamp_us, 1_500_000);
        assert_eq!(e.frame, CanFrame::extended(0x4210, &[0xAA]).unwrap());
        assert_eq!(parse_line("(0.000001) can0 7BB#").unwrap().unwrap().frame.len(), 0);
        let r = parse_line("(0.0) can0 123#R4").unwrap().unwrap().frame;
        assert!(r.is_remote() && r.len() == 4);
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(parse_line("  # a comment").unwrap(), None);
    }

    #[test]
    fn says_what_and_where() {
        let e = parse_line("this is not a candump line").unwrap_err();
        assert_eq!(e.column, 1);
        assert!(e.to_string().contains("timestamp"));
        let e = parse_line("(1.0) can0 1DB#01234").unwrap_err();
        assert_eq!(e.column, 16);
        assert!(e.to_string().contains("hex pairs"), "{e}");
        let e = parse_line("(1.0) can0 1DB##0011").unwrap_err();
        assert!(e.to_string().contains("CAN FD"));
        let e = parse_line("(1.0) can0 800#00").unwrap_err();
        assert!(e.to_string().contains("id"), "{e}");
        assert!(parse_line("(1.0) can0").is_err());
        assert!(parse_line("(x) can0 1DB#").is_err());
        assert!(parse_line("(99999999999999999999.0) can0 1DB#").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,80}") {
            let _ = parse_line(&s);
        }

        #[test]
        fn round_trips(ts in 0u64..4_000_000_000_000_000, id in 0u16..0x800, data in proptest::collection::vec(any::<u8>(), 0..=8)) {
            let f = CanFrame::standard(id, &data).unwrap();
            let text = format_line(ts, "can0", &f);
            let l = parse_line(&text).unwrap().unwrap();
            prop_assert_eq!(l, LogLine { timestamp_us: ts, interface: "can0".into(), frame: f });
        }
    }
}

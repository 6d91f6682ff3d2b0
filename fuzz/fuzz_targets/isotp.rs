//! The diagnostic client: an ISO-TP connection and a poller over it, fed fuzzed frames on their ids (biased
//! towards valid N_PCI types), other testers' requests, sends of fuzzed length and jumps in time. Whatever
//! arrives, nothing panics, a message never exceeds the buffer, every next deadline after draining is in the
//! future (nothing spins), and once the bus goes quiet both return to idle within their longest timeout.
#![no_main]
use dbe_core::diag::isotp::{Config, IsoTp, Padding, Received, SeparationTime};
use dbe_core::diag::poller::{Heard, PollRequest, Poller, PollerConfig, Service};
use dbe_core::{CanFrame, Duration, Instant};
use dbe_fuzz::Input;

const BUF: usize = 64;

fn frame(input: &mut Input<'_>, ids: [u16; 3]) -> CanFrame {
    let sel = input.u8();
    let bytes = input.bytes((sel as usize >> 2) % 9);
    let mut data = [0u8; 8];
    data[..bytes.len()].copy_from_slice(bytes);
    if sel & 0x80 != 0 {
        // Mostly the four N_PCI types.
        data[0] &= 0x3F;
    }
    let id = ids[(sel as usize & 3) % ids.len()];
    CanFrame::standard(id, &data[..bytes.len()]).expect("standard id, at most 8 bytes")
}

fn drained_deadline_is_ahead(next: Option<Instant>, now: Instant, what: &str) {
    assert!(next.is_none_or(|at| at > now), "{what}: next deadline {next:?} not after {now:?}");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut c = Config::standard(0x7E0, 0x7E8);
    let mode = input.u8();
    c.padding = if mode & 1 == 0 { Padding::None } else { Padding::Byte(0x55) };
    c.block_size = mode >> 4;
    c.st_min = SeparationTime(input.u8());
    c.max_waits = mode & 0x07;
    let mut tp = IsoTp::<BUF>::new(c);
    let reqs = [
        PollRequest::new(Service::ReadDataByIdentifier(0xF190), Duration::from_millis(700)).with_retries(2),
        PollRequest::new(Service::ReadDataByLocalIdentifier(0x01), Duration::from_millis(1500)).with_priority(3),
    ];
    let mut poller = Poller::<BUF, 2>::new(PollerConfig::new(c), reqs);
    let mut now = Instant::ZERO;
    poller.start(now);
    while !input.is_empty() {
        match input.u8() % 4 {
            0 => now += Duration::from_millis(input.u16() as u64 % 3000),
            1 => {
                let n = input.u8() as usize % 80;
                let payload = input.bytes(n);
                let _ = tp.send(payload);
            }
            _ => {
                let f = frame(&mut input, [0x7E8, 0x7E0, 0x123]);
                if let Ok(Received::Message(m)) = tp.handle_frame(now, &f) {
                    assert!(!m.is_empty() && m.len() <= BUF);
                }
                if let Heard::Answer(a) = poller.handle_frame(now, &f) {
                    assert!(a.response.len() <= BUF && a.data().len() < a.response.len());
                }
            }
        }
        let _ = tp.handle_timeout(now);
        let _ = poller.handle_timeout(now);
        while tp.poll_transmit(now).is_some() {}
        while poller.poll_transmit(now).is_some() {}
        drained_deadline_is_ahead(tp.poll_timeout(), now, "isotp");
        drained_deadline_is_ahead(poller.poll_timeout(), now, "poller");
    }
    // Quiet bus: jump from deadline to deadline. The connection is idle within its timeouts (STmin-paced frames
    // of a 64-byte send included); the poller finishes whatever is outstanding within P2* (5 s).
    let quiet = now;
    for _ in 0..10_000 {
        let Some(at) = tp.poll_timeout() else { break };
        now = now.max(at);
        let _ = tp.handle_timeout(now);
        while tp.poll_transmit(now).is_some() {}
    }
    assert!(tp.is_idle(), "isotp stuck after {:?}", now - quiet);
    let mut now = quiet;
    let requests = poller.stats().requests;
    for _ in 0..10_000 {
        if !poller.is_busy() || poller.stats().requests != requests {
            break;
        }
        assert!(now - quiet <= Duration::from_millis(5000), "poller stuck on one request");
        now = poller.poll_timeout().map_or(now, |at| at.max(now));
        let _ = poller.handle_timeout(now);
        while poller.poll_transmit(now).is_some() {}
    }
    assert!(!poller.is_busy() || poller.stats().requests != requests, "poller spins on one request");
});

//! A diagnostic poller: a pack driver's fixed list of reads (UDS `0x22` or KWP2000 `0x21`), each with its cadence,
//! priority and retries, asked one at a time over one ISO-TP connection, out of the way of any other tester.
//!
//! The services (sources: ISO 14229-1 as python-udsoncan documents it, ISO 14230-3 as OVMS v3's poller
//! `vehicle_poller.cpp` and Battery-Emulator's LEAF driver use it):
//! - UDS ReadDataByIdentifier: request `22 DH DL` (16-bit DID), positive response `62 DH DL data..`.
//! - KWP2000 ReadDataByLocalIdentifier: request `21 LID` (8-bit), positive response `61 LID data..`.
//! - A negative response is `7F SID NRC`. NRC 0x78 (requestCorrectlyReceived-ResponsePending) means the server
//!   needs longer: the wait is extended to P2* (5000 ms, ISO 14229-2's default P2*server_max; python-udsoncan's
//!   `p2_star_timeout`), at most [`PollerConfig::max_pending`] times so a server cannot hold the poller forever.
//!   NRC 0x21 (busyRepeatRequest) is worth a retry; any other code is final for that round.
//!
//! Scheduling: the poller ticks every [`PollerConfig::spacing`] (the pace the ECU and the bus take) and on a
//! tick, when no request is outstanding and no other tester has been heard lately, asks the request that is due
//! with the highest priority (ties: the one due longest, then list order). A request is due again `interval`
//! after the tick that asked it, so equal intervals rotate. A failed attempt (timeout, transport error,
//! busy-repeat) with retries left is asked again on the next tick, before anything else.
//!
//! Another tester: a frame on our own request id that we did not send means someone else (LeafSpy, a garage
//! tool) is talking to the ECU. Answers on the response id are then theirs, and two testers interleaving
//! requests confuse both, so the poller drops what it was doing and asks nothing for
//! [`PollerConfig::tester_backoff`] (Battery-Emulator pauses its LEAF polls for 20 s when it sees LeafSpy's
//! requests on 0x79B). While nothing of ours is outstanding, frames on the response id are not ours: they are
//! ignored and get no flow control from us.

use crate::can::CanFrame;
use crate::diag::isotp::{Config, IsoTp, IsoTpError, Received};
use crate::time::{earliest, Duration, Instant, Periodic};

/// UDS ReadDataByIdentifier.
pub const UDS_READ_DATA_BY_IDENTIFIER: u8 = 0x22;
/// KWP2000 ReadDataByLocalIdentifier.
pub const KWP_READ_DATA_BY_LOCAL_IDENTIFIER: u8 = 0x21;
/// Positive responses carry the request's service id plus this.
pub const POSITIVE_OFFSET: u8 = 0x40;
/// The service id of a negative response.
pub const NEGATIVE_RESPONSE: u8 = 0x7F;
/// NRC requestCorrectlyReceived-ResponsePending.
pub const NRC_RESPONSE_PENDING: u8 = 0x78;
/// NRC busyRepeatRequest.
pub const NRC_BUSY_REPEAT: u8 = 0x21;

/// What one request reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// UDS `0x22` with a 16-bit data identifier.
    ReadDataByIdentifier(u16),
    /// KWP2000 `0x21` with an 8-bit local identifier.
    ReadDataByLocalIdentifier(u8),
}

impl Service {
    pub const fn sid(self) -> u8 {
        match self {
            Service::ReadDataByIdentifier(_) => UDS_READ_DATA_BY_IDENTIFIER,
            Service::ReadDataByLocalIdentifier(_) => KWP_READ_DATA_BY_LOCAL_IDENTIFIER,
        }
    }

    /// The request's bytes, written into `buf`.
    pub fn encode(self, buf: &mut [u8; 3]) -> &[u8] {
        match self {
            Service::ReadDataByIdentifier(did) => {
                let [hi, lo] = did.to_be_bytes();
                *buf = [self.sid(), hi, lo];
                &buf[..]
            }
            Service::ReadDataByLocalIdentifier(lid) => {
                buf[..2].copy_from_slice(&[self.sid(), lid]);
                &buf[..2]
            }
        }
    }

    /// Length of a positive response's header: the service id and the identifier echoed.
    pub const fn header_len(self) -> usize {
        match self {
            Service::ReadDataByIdentifier(_) => 3,
            Service::ReadDataByLocalIdentifier(_) => 2,
        }
    }

    /// Whether `msg` is the positive response to this request (service and identifier echoed).
    pub fn is_answer(self, msg: &[u8]) -> bool {
        let mut req = [0u8; 3];
        let req = self.encode(&mut req);
        msg.len() >= req.len() && msg[0] == req[0].wrapping_add(POSITIVE_OFFSET) && msg[1..req.len()] == req[1..]
    }
}

/// One entry of a driver's poll list.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct PollRequest {
    pub service: Service,
    /// How often it is asked (measured from the tick that asked it last).
    pub interval: Duration,
    /// Higher goes first when several are due.
    pub priority: u8,
    /// Extra attempts after a timeout, a transport error or a busy-repeat answer.
    pub retries: u8,
}

impl PollRequest {
    pub const fn new(service: Service, interval: Duration) -> Self {
        PollRequest { service, interval, priority: 0, retries: 0 }
    }

    pub const fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    pub const fn with_retries(mut self, retries: u8) -> Self {
        self.retries = retries;
        self
    }
}

/// The poller's settings: its ISO-TP connection and its timing.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PollerConfig {
    pub isotp: Config,
    /// The tick: at most one request starts per tick (at least 1 ms).
    pub spacing: Duration,
    /// P2: how long after the request has gone out the answer may take to start.
    pub response_timeout: Duration,
    /// P2*: the wait after each "response pending" (NRC 0x78).
    pub pending_timeout: Duration,
    /// How many "response pending" answers one request may get before it counts as failed.
    pub max_pending: u8,
    /// How long to stay quiet after another tester is heard.
    pub tester_backoff: Duration,
}

impl PollerConfig {
    /// Ticks of 100 ms, P2 1000 ms and P2* 5000 ms (python-udsoncan's defaults), ten "response pending" at most,
    /// 20 s of quiet after another tester (Battery-Emulator's LEAF pause).
    pub const fn new(isotp: Config) -> Self {
        PollerConfig {
            isotp,
            spacing: Duration::from_millis(100),
            response_timeout: Duration::from_millis(1000),
            pending_timeout: Duration::from_millis(5000),
            max_pending: 10,
            tester_backoff: Duration::from_secs(20),
        }
    }
}

/// A positive answer, borrowed from the reassembly buffer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Answer<'a> {
    /// Which entry of the poll list it answers.
    pub index: usize,
    pub service: Service,
    /// The whole response, service id and identifier echo included (`61 GG ..`, `62 DH DL ..`).
    pub response: &'a [u8],
}

impl<'a> Answer<'a> {
    /// The data after the service id and the identifier echo.
    pub fn data(&self) -> &'a [u8] {
        &self.response[self.service.header_len()..]
    }
}

/// Why an attempt failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer within P2 (or P2* after a "response pending").
    Timeout,
    /// The ISO-TP transfer broke (sequence, length, N_Bs, N_Cr, ...).
    Transport(IsoTpError),
    /// A negative response with this code (0x78 only when it came more than `max_pending` times).
    Negative(u8),
}

/// What a received frame meant to the poller.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Heard<'a> {
    /// Not ours: another id, nothing outstanding, or someone else's answer.
    Ignored,
    /// Part of our answer (or a "response pending", or flow control for our request).
    Progress,
    Answer(Answer<'a>),
    /// The request failed: a negative response or a broken transfer.
    Failed {
        index: usize,
        failure: Failure,
    },
    /// Another tester's request to our ECU: the poller backs off.
    OtherTester,
}

/// Counters for the status page and the logs.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PollerStats {
    pub requests: u32,
    pub answers: u32,
    pub negatives: u32,
    pub timeouts: u32,
    pub transport_errors: u32,
    pub other_testers: u32,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Outstanding {
    index: usize,
    attempt: u8,
    /// `None` while the request is still being sent (ISO-TP's own timeouts cover that part).
    deadline: Option<Instant>,
    pendings: u8,
}

/// A poller over an `N`-byte ISO-TP connection for a list of `R` requests.
#[derive(Clone, Debug)]
pub struct Poller<const N: usize, const R: usize> {
    config: PollerConfig,
    link: IsoTp<N>,
    requests: [PollRequest; R],
    due_at: [Instant; R],
    tick: Periodic,
    outstanding: Option<Outstanding>,
    retry: Option<(usize, u8)>,
    backoff_until: Option<Instant>,
    stats: PollerStats,
}

impl<const N: usize, const R: usize> Poller<N, R> {
    pub fn new(config: PollerConfig, requests: [PollRequest; R]) -> Self {
        let spacing = if config.spacing < Duration::from_millis(1) { Duration::from_millis(1) } else { config.spacing };
        Poller {
            config,
            link: IsoTp::new(config.isotp),
            requests,
            due_at: [Instant::ZERO; R],
            tick: Periodic::new(spacing),
            outstanding: None,
            retry: None,
            backoff_until: None,
            stats: PollerStats::default(),
        }
    }

    /// Starts the ticks (the first at `at`, every request due then). Does nothing once running.
    pub fn start(&mut self, at: Instant) {
        if !self.tick.is_running() {
            self.tick.start_at(at);
            self.due_at = [at; R];
        }
    }

    pub fn is_running(&self) -> bool {
        self.tick.is_running()
    }

    pub fn requests(&self) -> &[PollRequest; R] {
        &self.requests
    }

    /// The index of the request for `service` in the poll list.
    pub fn index_of(&self, service: Service) -> Option<usize> {
        self.requests.iter().position(|r| r.service == service)
    }

    pub fn stats(&self) -> PollerStats {
        self.stats
    }

    /// Until when the poller keeps quiet because another tester was heard.
    pub fn backoff_until(&self) -> Option<Instant> {
        self.backoff_until
    }

    /// Whether a request is outstanding.
    pub fn is_busy(&self) -> bool {
        self.outstanding.is_some()
    }

    /// The last complete response (the one the last [`Heard::Answer`] borrowed), until the next one starts.
    pub fn response(&self) -> Option<&[u8]> {
        self.link.message()
    }

    /// Asks request `index` now, outside its cadence (a command, or a test). Refused while another is outstanding.
    pub fn poll_now(&mut self, now: Instant, index: usize) -> Result<(), IsoTpError> {
        if self.outstanding.is_some() || index >= R {
            return Err(IsoTpError::Busy);
        }
        self.begin(now, index, 0)
    }

    fn begin(&mut self, tick_at: Instant, index: usize, attempt: u8) -> Result<(), IsoTpError> {
        let mut buf = [0u8; 3];
        let service = self.requests[index].service;
        self.link.reset();
        self.link.send(service.encode(&mut buf))?;
        self.due_at[index] = tick_at + self.requests[index].interval;
        self.outstanding = Some(Outstanding { index, attempt, deadline: None, pendings: 0 });
        self.stats.requests = self.stats.requests.wrapping_add(1);
        Ok(())
    }

    fn fail(&mut self, o: Outstanding, failure: Failure) {
        self.link.reset();
        self.outstanding = None;
        let s = &mut self.stats;
        let retryable = match failure {
            Failure::Timeout => {
                s.timeouts = s.timeouts.wrapping_add(1);
                true
            }
            Failure::Transport(_) => {
                s.transport_errors = s.transport_errors.wrapping_add(1);
                true
            }
            Failure::Negative(code) => {
                s.negatives = s.negatives.wrapping_add(1);
                code == NRC_BUSY_REPEAT
            }
        };
        if retryable && o.attempt < self.requests[o.index].retries {
            self.retry = Some((o.index, o.attempt + 1));
        }
    }

    /// Takes one received frame (any id: the poller picks out its own).
    pub fn handle_frame(&mut self, now: Instant, frame: &CanFrame) -> Heard<'_> {
        if frame.id() == self.config.isotp.tx_id && !frame.is_remote() {
            self.link.reset();
            self.outstanding = None;
            self.retry = None;
            self.backoff_until = Some(now + self.config.tester_backoff);
            self.stats.other_testers = self.stats.other_testers.wrapping_add(1);
            return Heard::OtherTester;
        }
        let Some(o) = self.outstanding else { return Heard::Ignored };
        let service = self.requests[o.index].service;
        match self.link.handle_frame(now, frame) {
            Ok(Received::Ignored) => return Heard::Ignored,
            Ok(Received::Progress) => return Heard::Progress,
            Ok(Received::Message(_)) => {}
            Err(e) => {
                self.fail(o, Failure::Transport(e));
                return Heard::Failed { index: o.index, failure: Failure::Transport(e) };
            }
        }
        // The message stays in the link's buffer; it is read again below once the bookkeeping is done (a borrow
        // held across it would pin `self`).
        let (negative, answer) = {
            let msg = self.link.message().unwrap_or(&[]);
            let negative = match *msg {
                [NEGATIVE_RESPONSE, sid, code, ..] if sid == service.sid() => Some(code),
                _ => None,
            };
            (negative, service.is_answer(msg))
        };
        if let Some(code) = negative {
            if code == NRC_RESPONSE_PENDING && o.pendings < self.config.max_pending {
                let deadline = Some(now + self.config.pending_timeout);
                self.outstanding = Some(Outstanding { deadline, pendings: o.pendings + 1, ..o });
                return Heard::Progress;
            }
            self.fail(o, Failure::Negative(code));
            return Heard::Failed { index: o.index, failure: Failure::Negative(code) };
        }
        if !answer {
            // An answer to something else (a stale one, or another tester's): ours is still awaited.
            return Heard::Ignored;
        }
        self.outstanding = None;
        self.stats.answers = self.stats.answers.wrapping_add(1);
        Heard::Answer(Answer { index: o.index, service, response: self.link.message().unwrap_or(&[]) })
    }

    /// Fails an attempt whose deadline has passed; returns which and why. Extra calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<(usize, Failure)> {
        let o = self.outstanding?;
        let failure = match self.link.handle_timeout(now) {
            Some(e) => Failure::Transport(e),
            None if o.deadline.is_some_and(|d| now >= d) => Failure::Timeout,
            None => return None,
        };
        self.fail(o, failure);
        Some((o.index, failure))
    }

    /// The request due now with the highest priority, the one due longest among equals, then list order.
    fn pick(&self, now: Instant) -> Option<usize> {
        (0..R)
            .filter(|&i| self.due_at[i] <= now)
            .min_by_key(|&i| (core::cmp::Reverse(self.requests[i].priority), self.due_at[i], i))
    }

    fn link_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        let f = self.link.poll_transmit(now)?;
        if let Some(o) = self.outstanding.as_mut() {
            if o.deadline.is_none() && !self.link.is_sending() {
                o.deadline = Some(now + self.config.response_timeout);
            }
        }
        Some(f)
    }

    /// The next frame to send at `now`: the transfer in progress first, then, on a tick, the next request.
    /// Handles timeouts itself (callers that want the reason call [`Poller::handle_timeout`] first).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        let _ = self.handle_timeout(now);
        if let Some(f) = self.link_transmit(now) {
            return Some(f);
        }
        let tick_at = self.tick.next_at();
        if self.tick.poll(now) && self.outstanding.is_none() && self.backoff_until.is_none_or(|t| now >= t) {
            let tick_at = tick_at.unwrap_or(now);
            let next = self.retry.take().or_else(|| self.pick(now).map(|i| (i, 0)));
            if let Some((index, attempt)) = next {
                // The send cannot fail (the link was reset and requests are three bytes); if it did, the request
                // simply waits for its next turn.
                let _ = self.begin(tick_at, index, attempt);
                return self.link_transmit(now);
            }
        }
        None
    }

    /// When the poller next needs to run: a frame or deadline of the transfer, the answer's deadline, or (with
    /// nothing outstanding) the first tick at which a request is due and no back-off holds.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.outstanding.and_then(|o| o.deadline);
        let idle = match (self.outstanding, self.tick.next_at()) {
            (None, Some(tick)) => {
                let due = if self.retry.is_some() { None } else { self.due_at.iter().min().copied() };
                Some(tick.max(due.unwrap_or(tick)).max(self.backoff_until.unwrap_or(tick)))
            }
            _ => None,
        };
        earliest(earliest(self.link.poll_timeout(), deadline), idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::isotp::Padding;
    use proptest::prelude::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn ecu(data: &[u8]) -> CanFrame {
        CanFrame::standard(0x7E8, data).unwrap()
    }

    fn config() -> PollerConfig {
        let mut isotp = Config::standard(0x7E0, 0x7E8);
        isotp.padding = Padding::Byte(0xAA);
        PollerConfig { spacing: Duration::from_millis(100), ..PollerConfig::new(isotp) }
    }

    const SOC: Service = Service::ReadDataByIdentifier(0x1234);
    const CELLS: Service = Service::ReadDataByLocalIdentifier(0x02);

    fn poller() -> Poller<64, 2> {
        let reqs = [
            PollRequest::new(SOC, Duration::from_secs(1)).with_retries(1),
            PollRequest::new(CELLS, Duration::from_secs(5)).with_priority(1),
        ];
        let mut p = Poller::new(config(), reqs);
        p.start(t(0));
        p
    }

    /// Runs the poller from `from` to `to` in 10 ms steps, returning what it sent and when.
    fn run(p: &mut Poller<64, 2>, from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
        let mut sent = vec![];
        let mut now = from;
        while now <= to {
            while let Some(f) = p.poll_transmit(t(now)) {
                sent.push((now, f.data().to_vec()));
            }
            now += 10;
        }
        sent
    }

    #[test]
    fn encodes_uds_and_kwp_requests_and_recognises_their_answers() {
        let mut buf = [0; 3];
        assert_eq!(SOC.encode(&mut buf), &[0x22, 0x12, 0x34]);
        assert_eq!(CELLS.encode(&mut buf), &[0x21, 0x02]);
        assert!(SOC.is_answer(&[0x62, 0x12, 0x34, 0x56]));
        assert!(!SOC.is_answer(&[0x62, 0x12, 0x35, 0x56]), "another DID");
        assert!(!SOC.is_answer(&[0x62, 0x12]), "too short");
        assert!(CELLS.is_answer(&[0x61, 0x02]));
        assert!(!CELLS.is_answer(&[0x61, 0x01, 0]));
        assert!(!CELLS.is_answer(&[0x62, 0x02, 0]));
    }

    #[test]
    fn asks_the_highest_priority_first_then_each_on_its_cadence() {
        let mut p = poller();
        let sent = run(&mut p, 0, 50);
        assert_eq!(sent, vec![(0, vec![0x02, 0x21, 0x02, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA])], "priority 1 first");
        p.handle_frame(t(20), &ecu(&[0x03, 0x61, 0x02, 0x77]));
        // The UDS read on the next tick; KWP's 0x02 is not due again for 5 s.
        let sent = run(&mut p, 60, 150);
        assert_eq!(sent, vec![(100, vec![0x03, 0x22, 0x12, 0x34, 0xAA, 0xAA, 0xAA, 0xAA])]);
        match p.handle_frame(t(110), &ecu(&[0x05, 0x62, 0x12, 0x34, 0x01, 0x02])) {
            Heard::Answer(a) => {
                assert_eq!((a.index, a.service, a.data()), (0, SOC, &[0x01, 0x02][..]));
                assert_eq!(a.response, &[0x62, 0x12, 0x34, 0x01, 0x02]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.response(), Some(&[0x62, 0x12, 0x34, 0x01, 0x02][..]));
        assert_eq!(p.poll_timeout(), Some(t(1100)), "nothing until the UDS read is due again");
        let sent = run(&mut p, 160, 1200);
        assert_eq!(sent.iter().map(|(at, _)| *at).collect::<Vec<_>>(), vec![1100]);
    }

    #[test]
    fn a_multi_frame_answer_gets_flow_control_and_arrives_whole() {
        let mut p = poller();
        let _ = run(&mut p, 0, 0);
        assert_eq!(p.handle_frame(t(5), &ecu(&[0x10, 0x0A, 0x61, 0x02, 1, 2, 3, 4])), Heard::Progress);
        // Flow control: continue, all, no gap, with its own padding (the default 0xCC; requests use 0xAA here).
        assert_eq!(run(&mut p, 5, 5), vec![(5, vec![0x30, 0x00, 0x00, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC])]);
        let Heard::Answer(a) = p.handle_frame(t(7), &ecu(&[0x21, 5, 6, 7, 8, 0xAA, 0xAA, 0xAA])) else {
            panic!("no answer")
        };
        assert_eq!(a.data(), &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn response_pending_extends_the_wait_and_a_timeout_retries() {
        let mut p = poller();
        let _ = run(&mut p, 0, 0);
        p.handle_frame(t(5), &ecu(&[0x03, 0x61, 0x02, 0x00]));
        let _ = run(&mut p, 100, 100); // the UDS read, sent at 100: P2 ends at 1100
        assert_eq!(p.poll_timeout(), Some(t(1100)));
        // 0x78 at 900: P2* from then, 5900.
        assert_eq!(p.handle_frame(t(900), &ecu(&[0x03, 0x7F, 0x22, 0x78])), Heard::Progress);
        assert_eq!(p.poll_timeout(), Some(t(5900)));
        assert_eq!(p.handle_timeout(t(5899)), None);
        assert_eq!(p.handle_timeout(t(5900)), Some((0, Failure::Timeout)));
        assert_eq!(p.stats().timeouts, 1);
        // One retry, on the next tick, before its cadence says so.
        let sent = run(&mut p, 5900, 6000);
        assert_eq!(sent, vec![(5900, vec![0x03, 0x22, 0x12, 0x34, 0xAA, 0xAA, 0xAA, 0xAA])]);
        assert_eq!(p.handle_timeout(t(6900)), Some((0, Failure::Timeout)));
        // No retries left: the next tick asks what is due with the highest priority, the KWP read (due since 5 s).
        assert_eq!(run(&mut p, 6900, 6900), vec![(6900, vec![0x02, 0x21, 0x02, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA])]);
    }

    #[test]
    fn negative_responses_end_the_attempt_and_only_busy_repeat_retries() {
        let mut p = poller();
        let _ = run(&mut p, 0, 0);
        p.handle_frame(t(5), &ecu(&[0x03, 0x61, 0x02, 0x00]));
        let _ = run(&mut p, 100, 100);
        // requestOutOfRange: final.
        assert_eq!(
            p.handle_frame(t(110), &ecu(&[0x03, 0x7F, 0x22, 0x31])),
            Heard::Failed { index: 0, failure: Failure::Negative(0x31) }
        );
        assert!(run(&mut p, 200, 1000).is_empty(), "no retry for 0x31");
        let _ = run(&mut p, 1100, 1100);
        assert_eq!(
            p.handle_frame(t(1110), &ecu(&[0x03, 0x7F, 0x22, 0x21])),
            Heard::Failed { index: 0, failure: Failure::Negative(0x21) }
        );
        assert_eq!(run(&mut p, 1200, 1200).len(), 1, "busy-repeat: retried on the next tick");
        // A negative response to another service and another DID's answer are not ours.
        assert_eq!(p.handle_frame(t(1210), &ecu(&[0x03, 0x7F, 0x2E, 0x31])), Heard::Ignored);
        assert_eq!(p.handle_frame(t(1210), &ecu(&[0x04, 0x62, 0x99, 0x99, 0])), Heard::Ignored);
        assert!(p.is_busy());
        assert_eq!(p.stats().negatives, 2);
    }

    #[test]
    fn too_many_response_pendings_fail_the_request() {
        let mut p = poller();
        let _ = run(&mut p, 0, 0);
        for i in 0..10 {
            assert_eq!(p.handle_frame(t(10 + i), &ecu(&[0x03, 0x7F, 0x21, 0x78])), Heard::Progress);
        }
        assert_eq!(
            p.handle_frame(t(30), &ecu(&[0x03, 0x7F, 0x21, 0x78])),
            Heard::Failed { index: 1, failure: Failure::Negative(0x78) }
        );
        assert!(!p.is_busy());
    }

    #[test]
    fn another_tester_makes_it_back_off() {
        let mut p = poller();
        let _ = run(&mut p, 0, 0);
        // Someone else asks our ECU: what we were doing is dropped, and nothing is asked for 20 s.
        let theirs = CanFrame::standard(0x7E0, &[0x02, 0x21, 0x01]).unwrap();
        assert_eq!(p.handle_frame(t(50), &theirs), Heard::OtherTester);
        assert!(!p.is_busy());
        assert_eq!(p.backoff_until(), Some(t(20_050)));
        // Their answers are theirs: no flow control from us.
        assert_eq!(p.handle_frame(t(60), &ecu(&[0x10, 0x20, 0x61, 0x01, 0, 0, 0, 0])), Heard::Ignored);
        assert!(run(&mut p, 60, 20_040).is_empty());
        assert_eq!(p.poll_timeout(), Some(t(20_100)), "the first tick after the back-off");
        let sent = run(&mut p, 20_050, 20_100);
        assert_eq!(sent, vec![(20_100, vec![0x02, 0x21, 0x02, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA])]);
        assert_eq!(p.stats().other_testers, 1);
        // An extended frame with the same number is another id, not a tester.
        let ext = CanFrame::extended(0x7E0, &[0x02, 0x21, 0x01]).unwrap();
        assert_eq!(p.handle_frame(t(20_110), &ext), Heard::Ignored);
    }

    #[test]
    fn a_broken_transfer_is_a_failure_and_retried() {
        let mut p = poller();
        let _ = run(&mut p, 0, 0);
        p.handle_frame(t(5), &ecu(&[0x03, 0x61, 0x02, 0x00]));
        let _ = run(&mut p, 100, 100);
        p.handle_frame(t(110), &ecu(&[0x10, 0x0A, 0x62, 0x12, 0x34, 1, 2, 3]));
        assert_eq!(
            p.handle_frame(t(120), &ecu(&[0x23, 4, 5, 6, 7])),
            Heard::Failed { index: 0, failure: Failure::Transport(IsoTpError::Sequence { expected: 1, got: 3 }) }
        );
        assert_eq!(run(&mut p, 200, 200).len(), 1, "one retry");
        // A lost consecutive frame: N_Cr.
        p.handle_frame(t(210), &ecu(&[0x10, 0x0A, 0x62, 0x12, 0x34, 1, 2, 3]));
        assert_eq!(p.handle_timeout(t(1210)), Some((0, Failure::Transport(IsoTpError::ConsecutiveTimeout))));
        assert_eq!(p.stats().transport_errors, 2);
    }

    proptest! {
        /// Whatever the ECU and the bus send, nothing panics, and once they go quiet the poller is idle again
        /// within its longest wait (it never stays stuck on a request).
        #[test]
        fn no_frame_sequence_panics_or_leaves_it_stuck(
            frames in proptest::collection::vec(
                (0u64..2000, 0usize..=8, proptest::array::uniform8(any::<u8>()), 0u8..4),
                0..60,
            ),
        ) {
            let mut p = poller();
            let mut now = t(0);
            for (dt, len, mut data, kind) in frames {
                now += Duration::from_millis(dt);
                while p.poll_transmit(now).is_some() {}
                let id = match kind {
                    0 => 0x7E0,
                    1 => 0x123,
                    _ => 0x7E8,
                };
                if kind == 3 && len > 0 {
                    data[0] &= 0x3F;
                }
                let _ = p.handle_frame(now, &CanFrame::standard(id, &data[..len]).unwrap());
                let _ = p.handle_timeout(now);
            }
            // Quiet bus from here. Every call's next deadline is in the future (nothing spins), and no request
            // stays outstanding longer than P2* (the longest wait a "response pending" can have left it).
            let end = now + Duration::from_secs(30);
            let mut current: Option<(u32, Instant)> = None;
            while now < end {
                let _ = p.handle_timeout(now);
                while p.poll_transmit(now).is_some() {}
                let at = p.poll_timeout();
                prop_assert!(at.is_some_and(|at| at > now), "next deadline {at:?} is not after {now:?}");
                if p.is_busy() {
                    let id = p.stats().requests;
                    let since = match current { Some((i, s)) if i == id => s, _ => now };
                    current = Some((id, since));
                    prop_assert!(now - since <= Duration::from_millis(5000), "outstanding since {since:?}");
                } else {
                    current = None;
                }
                now = at.unwrap_or(end);
            }
        }
    }
}

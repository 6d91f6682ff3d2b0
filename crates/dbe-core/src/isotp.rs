//! Reassembly of ISO 15765-2 (ISO-TP) multi-frame responses, as diagnostic replies arrive over classic CAN.
//!
//! A single frame (PCI 0x0N) carries up to 7 bytes; a first frame (0x1L LL) announces up to 4095 bytes and carries
//! 6; consecutive frames (0x2S) carry 7 each with a 4-bit sequence number. The receiver answers a first frame (and,
//! with block size 1, every consecutive frame) with a flow-control frame. The buffer is fixed (no heap); a reply
//! longer than it, a sequence gap or a consecutive frame without a first frame is an error and resets the state.

/// Progress of a reassembly after one frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// More frames are expected; send flow control.
    More,
    /// The payload is complete: `payload()` holds it.
    Done,
}

/// Why a frame did not fit the transfer in progress.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IsoTpError {
    Empty,
    /// A consecutive frame with the wrong sequence number, or with no first frame before it.
    Sequence,
    /// The announced length is zero or larger than the buffer.
    Length,
    /// A PCI type this receiver does not take (flow control from the other side, reserved values).
    Pci,
}

/// A reassembly buffer of `N` bytes.
#[derive(Clone, Debug)]
pub struct Reassembler<const N: usize> {
    buf: [u8; N],
    expected: usize,
    got: usize,
    next_seq: u8,
    active: bool,
}

impl<const N: usize> Default for Reassembler<N> {
    fn default() -> Self {
        Reassembler { buf: [0; N], expected: 0, got: 0, next_seq: 1, active: false }
    }
}

impl<const N: usize> Reassembler<N> {
    pub fn reset(&mut self) {
        self.active = false;
        self.expected = 0;
        self.got = 0;
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The completed payload (valid after `Step::Done`).
    pub fn payload(&self) -> &[u8] {
        &self.buf[..self.got.min(self.expected)]
    }

    /// Takes one frame's data.
    pub fn push(&mut self, data: &[u8]) -> Result<Step, IsoTpError> {
        let Some(&pci) = data.first() else {
            self.reset();
            return Err(IsoTpError::Empty);
        };
        match pci >> 4 {
            0x0 => {
                let len = (pci & 0x0F) as usize;
                if len == 0 || len > 7 || len + 1 > data.len() || len > N {
                    self.reset();
                    return Err(IsoTpError::Length);
                }
                self.buf[..len].copy_from_slice(&data[1..1 + len]);
                self.expected = len;
                self.got = len;
                self.active = false;
                Ok(Step::Done)
            }
            0x1 => {
                if data.len() < 2 {
                    self.reset();
                    return Err(IsoTpError::Length);
                }
                let len = (((pci & 0x0F) as usize) << 8) | data[1] as usize;
                if len <= 7 || len > N {
                    self.reset();
                    return Err(IsoTpError::Length);
                }
                let n = (data.len() - 2).min(6);
                self.buf[..n].copy_from_slice(&data[2..2 + n]);
                self.expected = len;
                self.got = n;
                self.next_seq = 1;
                self.active = true;
                Ok(Step::More)
            }
            0x2 => {
                if !self.active || pci & 0x0F != self.next_seq {
                    self.reset();
                    return Err(IsoTpError::Sequence);
                }
                let n = (data.len() - 1).min(self.expected - self.got);
                self.buf[self.got..self.got + n].copy_from_slice(&data[1..1 + n]);
                self.got += n;
                self.next_seq = (self.next_seq + 1) & 0x0F;
                if self.got >= self.expected {
                    self.active = false;
                    Ok(Step::Done)
                } else {
                    Ok(Step::More)
                }
            }
            _ => Err(IsoTpError::Pci),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_first_and_consecutive_frames() {
        let mut r = Reassembler::<64>::default();
        assert_eq!(r.push(&[0x10, 0x0A, 0x61, 0x90, 0x44, 0x43, 0x41, 0x31]), Ok(Step::More));
        assert_eq!(r.push(&[0x21, 0x30, 0x30, 0x35, 0x35, 0xFF, 0xFF, 0xFF]), Ok(Step::Done));
        assert_eq!(r.payload(), &[0x61, 0x90, 0x44, 0x43, 0x41, 0x31, 0x30, 0x30, 0x35, 0x35]);
    }

    #[test]
    fn rejects_gaps_overlong_and_orphans() {
        let mut r = Reassembler::<16>::default();
        assert_eq!(r.push(&[0x21, 1, 2, 3]), Err(IsoTpError::Sequence));
        assert_eq!(r.push(&[0x10, 0x20, 0, 0, 0, 0, 0, 0]), Err(IsoTpError::Length));
        assert_eq!(r.push(&[0x10, 0x0A, 1, 2, 3, 4, 5, 6]), Ok(Step::More));
        assert_eq!(r.push(&[0x22, 7, 8, 9, 10]), Err(IsoTpError::Sequence));
        assert!(!r.is_active());
        assert_eq!(r.push(&[0x03, 0x61, 0x01, 0x02]), Ok(Step::Done));
        assert_eq!(r.push(&[]), Err(IsoTpError::Empty));
    }
}

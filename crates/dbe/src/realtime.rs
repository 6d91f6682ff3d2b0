//! `dbe run --realtime`: memory locked and SCHED_FIFO scheduling, for gateways that also run other busy work.
//!
//! Locking memory (`mlockall`) keeps the daemon's pages from being swapped or paged out, so a keep-alive never
//! waits on a page fault from disk; SCHED_FIFO lets its threads run ahead of every normal process when a frame
//! is due. It is set once for the whole process before the async runtime starts, so every runtime thread
//! inherits it. Both need privileges (root, or `CAP_IPC_LOCK` and `CAP_SYS_NICE`, see `dist/dbe.service`);
//! without them the daemon says so and runs normally: real-time mode is an improvement, never a condition.
//! The figures it changes are in the README's benchmark table (`scripts/bench`).

/// The FIFO priority: above normal processes and most kernel threads' defaults, below the kernel's own
/// interrupt threads (50), so the CAN driver's IRQ handling still runs first.
pub const PRIORITY: i32 = 40;

/// Applies real-time mode; returns what could not be applied (empty when everything was).
pub fn enable() -> Vec<String> {
    let mut problems = Vec::new();
    // SAFETY: mlockall takes flags only and touches no memory of ours.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        problems.push(format!("cannot lock memory: {}", std::io::Error::last_os_error()));
    }
    let param = libc::sched_param { sched_priority: PRIORITY };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0 is this process.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        problems.push(format!("cannot set SCHED_FIFO priority {PRIORITY}: {}", std::io::Error::last_os_error()));
    }
    problems
}

/// Whether the calling thread runs SCHED_FIFO (the log confirms what took effect, not what was asked).
pub fn is_fifo() -> bool {
    // SAFETY: no arguments beyond the pid; returns the policy or -1.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_FIFO }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabling_either_applies_fifo_or_says_why_not() {
        // On its own thread: the policy is per thread (threads started later inherit it).
        let (problems, fifo) = std::thread::spawn(|| (enable(), is_fifo())).join().unwrap();
        assert_eq!(fifo, !problems.iter().any(|p| p.contains("SCHED_FIFO")), "{problems:?}");
        // SAFETY: undoes the lock for the rest of the test process.
        unsafe { libc::munlockall() };
    }
}

//! SIGTERM/SIGINT handling without extra crates: the handler only sets a flag, which the
//! main thread polls to begin an orderly shutdown.

use std::sync::atomic::{AtomicBool, Ordering};

static SIGNALLED: AtomicBool = AtomicBool::new(false);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

extern "C" {
    // From the C library that std already links; `sighandler_t` is pointer-sized.
    fn signal(signum: i32, handler: usize) -> usize;
}

extern "C" fn on_signal(_signum: i32) {
    // Only an atomic store: async-signal-safe.
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// Routes SIGTERM and SIGINT to the flag read by [`signalled`].
pub fn install() {
    let handler = on_signal as extern "C" fn(i32) as usize;
    // SAFETY: `signal` is the C library's; the handler is a plain function that only stores
    // to an atomic, which is async-signal-safe.
    unsafe {
        signal(SIGTERM, handler);
        signal(SIGINT, handler);
    }
}

pub fn signalled() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}

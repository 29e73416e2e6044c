//! Read-ahead for consumers of the files. With O_DIRECT writes nothing
//! read back is in the page cache, and a consumer's one 1 MiB fetch at a
//! time kept the device one request deep (cold consume at 43% of the
//! device); the kernel is asked to read a window ahead of each partition's
//! reader instead.

use crate::log::ReadEnd;
use std::cell::Cell;

/// The window of a segment the kernel was last asked to read ahead.
#[derive(Clone, Copy, Default)]
pub(crate) struct ReadAhead {
    file: usize,
    from: u64,
    until: u64,
}

/// How far ahead of a consumer reading from the files the kernel is asked
/// to read, and how close to the window's end a read may come before the
/// next part is asked for.
const READ_AHEAD_WINDOW: u64 = 64 << 20;
const READ_AHEAD_REFILL: u64 = 32 << 20;

/// Keeps the disk reading ahead of a consumer of the files: one window
/// per partition, moved on as reads approach its end, started afresh at
/// a read outside it (another segment, another consumer). The advice runs
/// on the blocking pool (it may wait to queue the I/O) and is not awaited.
pub(crate) fn read_ahead(state: &Cell<ReadAhead>, end: ReadEnd) {
    let window = state.get();
    let file = end.reader.file_id();
    let inside = window.file == file && end.position >= window.from && end.position < window.until;
    if inside && end.position + READ_AHEAD_REFILL <= window.until {
        return;
    }
    let from = if inside { window.until } else { end.position };
    let until = end.position + READ_AHEAD_WINDOW;
    state.set(ReadAhead {
        file,
        from: end.position,
        until,
    });
    glommio::spawn_local(glommio::executor().spawn_blocking(move || {
        end.reader.prefetch(from, until - from);
        // A window past this segment's end goes on into the next one, so
        // the consumer does not wait on the disk at every roll.
        if let Some(next) = &end.next {
            next.prefetch(0, until.saturating_sub(end.reader.limit().max(from)));
        }
    }))
    .detach();
}

//! How long a connection waits for a request's answer.
//!
//! Apache Kafka has no server-side request timeout: a JoinGroup waits for
//! its group's rebalance (up to `max.poll.interval.ms`, 5 minutes by
//! default), a Fetch for its `max_wait_ms`, an acks=all Produce for its
//! `timeout_ms`. So a handler whose wait the protocol bounds says until
//! when it may legitimately wait ([`ProtocolWait::until`]), and the
//! connection's REQUEST_TIMEOUT_SECS safety net (for a stuck disk or a
//! bug) counts from then instead of from the request's arrival.

use futures::future::{select, Either};
use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Shared between a request's handler (which sets it) and the connection's
/// write side (which reads it while waiting for the answer).
#[derive(Clone, Default)]
pub(crate) struct ProtocolWait(Rc<Cell<Option<Instant>>>);

impl ProtocolWait {
    /// The protocol lets this request wait until `at` before it is
    /// answered. Only ever extends.
    pub(crate) fn until(&self, at: Instant) {
        if self.0.get().is_none_or(|now| at > now) {
            self.0.set(Some(at));
        }
    }

    /// The moment the safety net expires for a request that arrived at
    /// `started`.
    fn deadline(&self, started: Instant, safety: Duration) -> Instant {
        self.0.get().map_or(started, |at| at.max(started)) + safety
    }
}

/// Awaits `answer` until `safety` after the later of the request's arrival
/// and its protocol wait; `None` if that passes first. Rechecked each time
/// the timer fires, because the handler may declare its wait only after
/// decoding the request or hearing from the group's shard.
pub(crate) async fn answered_in_time<F: Future + Unpin>(
    mut answer: F,
    started: Instant,
    wait: &ProtocolWait,
    safety: Duration,
) -> Option<F::Output> {
    loop {
        let left = wait
            .deadline(started, safety)
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())?;
        let timer = pin!(glommio::timer::sleep(left));
        if let Either::Left((output, _)) = select(&mut answer, timer).await {
            return Some(output);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_safety_net_counts_from_the_end_of_the_protocol_wait() {
        let t0 = Instant::now();
        let safety = Duration::from_secs(30);
        let wait = ProtocolWait::default();
        assert_eq!(wait.deadline(t0, safety), t0 + safety);
        wait.until(t0 + Duration::from_secs(300));
        assert_eq!(wait.deadline(t0, safety), t0 + Duration::from_secs(330));
        // Never shortened by a later, shorter declaration.
        wait.until(t0 + Duration::from_secs(1));
        assert_eq!(wait.deadline(t0, safety), t0 + Duration::from_secs(330));
        // A wait that ended before the request arrived changes nothing.
        let late = ProtocolWait::default();
        late.until(t0);
        assert_eq!(
            late.deadline(t0 + Duration::from_secs(5), safety),
            t0 + Duration::from_secs(35)
        );
    }
}

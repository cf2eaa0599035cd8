//! Simulated API outages (`ctl outage`): for N seconds the API answers 503 with a `Retry-After`
//! (`ServiceUnavailable`), or its listeners close and connections are refused
//! (`RefuseConnections`), then it serves again on the same addresses.
//!
//! [`Outage`] is pure (is it on at `t`, how long is left); [`OutageSwitch`] holds the current one
//! and tells the listeners (through a `watch` channel) when it starts or ends early.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// The longest outage a control may ask for.
pub const MAX_OUTAGE_SECONDS: i64 = 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutageMode {
    /// Every API request (except the controls) is answered 503 with `Retry-After`.
    ServiceUnavailable,
    /// The listeners close: new connections are refused, open ones are closed.
    RefuseConnections,
}

impl OutageMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::RefuseConnections => "RefuseConnections",
        }
    }
}

/// One outage, from `started_at` (inclusive) to `ends_at` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outage {
    pub mode: OutageMode,
    pub started_at: Timestamp,
    pub ends_at: Timestamp,
}

impl Outage {
    /// An outage of `seconds` starting at `now`.
    pub fn new(mode: OutageMode, seconds: i64, now: Timestamp) -> Self {
        let ends_at = now
            .checked_add(SignedDuration::from_secs(
                seconds.clamp(0, MAX_OUTAGE_SECONDS),
            ))
            .unwrap_or(Timestamp::MAX);
        Self {
            mode,
            started_at: now,
            ends_at,
        }
    }

    pub fn is_active(&self, now: Timestamp) -> bool {
        self.started_at <= now && now < self.ends_at
    }

    /// Time left at `now` (zero once over).
    pub fn remaining(&self, now: Timestamp) -> SignedDuration {
        self.ends_at.duration_since(now).max(SignedDuration::ZERO)
    }

    /// `Retry-After` in whole seconds: the time left rounded up, at least 1 (a client told 0
    /// would retry at once, while the outage is still on).
    pub fn retry_after_seconds(&self, now: Timestamp) -> i64 {
        let left = self.remaining(now);
        let whole = left.as_secs() + i64::from(left.subsec_nanos() > 0);
        whole.max(1)
    }
}

/// The current outage, shared by the request gate, the controls and the listeners.
#[derive(Debug)]
pub struct OutageSwitch {
    tx: tokio::sync::watch::Sender<Option<Outage>>,
}

impl Default for OutageSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl OutageSwitch {
    pub fn new() -> Self {
        Self {
            tx: tokio::sync::watch::Sender::new(None),
        }
    }

    /// The outage on at `now`, if any.
    pub fn current(&self, now: Timestamp) -> Option<Outage> {
        (*self.tx.borrow()).filter(|o| o.is_active(now))
    }

    /// Starts `outage`, replacing any other.
    pub fn start(&self, outage: Outage) {
        self.tx.send_replace(Some(outage));
    }

    /// Ends the outage on at `now` early; returns it, or `None` when there was none.
    pub fn end(&self, now: Timestamp) -> Option<Outage> {
        let current = self.current(now)?;
        self.tx.send_replace(None);
        Some(current)
    }

    /// Notified whenever an outage starts or is ended early (not when one runs out: listeners
    /// wait for `ends_at` themselves).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<Outage>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_millisecond(1_700_000_000_000 + millis).unwrap()
    }

    #[test]
    fn an_outage_is_on_from_its_start_until_its_end() {
        let outage = Outage::new(OutageMode::ServiceUnavailable, 10, at(0));
        assert!(!outage.is_active(at(-1)));
        assert!(outage.is_active(at(0)));
        assert!(outage.is_active(at(9_999)));
        assert!(!outage.is_active(at(10_000)));
        assert_eq!(outage.remaining(at(20_000)), SignedDuration::ZERO);
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        let outage = Outage::new(OutageMode::ServiceUnavailable, 10, at(0));
        assert_eq!(outage.retry_after_seconds(at(0)), 10);
        assert_eq!(outage.retry_after_seconds(at(1)), 10);
        assert_eq!(outage.retry_after_seconds(at(1_000)), 9);
        assert_eq!(outage.retry_after_seconds(at(9_999)), 1);
        assert_eq!(outage.retry_after_seconds(at(10_000)), 1);
    }

    #[test]
    fn lengths_are_bounded() {
        let outage = Outage::new(OutageMode::RefuseConnections, i64::MAX, at(0));
        assert_eq!(
            outage.remaining(at(0)),
            SignedDuration::from_secs(MAX_OUTAGE_SECONDS)
        );
    }

    #[test]
    fn the_switch_reports_starts_and_early_ends() {
        let switch = OutageSwitch::new();
        let mut rx = switch.subscribe();
        assert_eq!(switch.current(at(0)), None);
        assert_eq!(switch.end(at(0)), None, "nothing to end");
        let outage = Outage::new(OutageMode::RefuseConnections, 5, at(0));
        switch.start(outage);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), Some(outage));
        assert_eq!(switch.current(at(4_000)), Some(outage));
        assert_eq!(switch.current(at(5_000)), None, "ran out");
        assert_eq!(switch.end(at(5_000)), None);
        switch.start(outage);
        rx.borrow_and_update();
        assert_eq!(switch.end(at(1_000)), Some(outage));
        assert!(rx.has_changed().unwrap());
        assert_eq!(switch.current(at(1_000)), None);
    }
}

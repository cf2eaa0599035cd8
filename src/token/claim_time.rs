//! A time claim (`exp`, `iat`, `nbf`, `warnafter`) as a date, or as a number of seconds past the
//! dates we can show (years -9999 to 9999). kube-apiserver (Go's `time`) takes an `exp` of
//! 2^63-1 as a date some 292 billion years away: a token that does not expire, not one without
//! `exp`.

use jiff::Timestamp;
use serde::Serialize;

/// Which end of the shown dates a claim lies beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Beyond {
    /// After 9999-12-30T22:00:00Z.
    After,
    /// Before the first date (in the year -9999).
    Before,
}

/// A time claim's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimTime {
    At(Timestamp),
    /// Unix seconds no date here can show.
    OutOfRange {
        seconds: i64,
        beyond: Beyond,
    },
}

impl ClaimTime {
    pub fn from_seconds(seconds: i64) -> Self {
        match Timestamp::from_second(seconds) {
            Ok(at) => ClaimTime::At(at),
            Err(_) => ClaimTime::OutOfRange {
                seconds,
                beyond: if seconds < 0 {
                    Beyond::Before
                } else {
                    Beyond::After
                },
            },
        }
    }

    /// The date, when there is one to show.
    pub fn date(self) -> Option<Timestamp> {
        match self {
            ClaimTime::At(at) => Some(at),
            ClaimTime::OutOfRange { .. } => None,
        }
    }

    /// The nearest date, for comparing with another: a claim beyond the last date is later than
    /// any date, as in Go.
    pub fn clamped(self) -> Timestamp {
        match self {
            ClaimTime::At(at) => at,
            ClaimTime::OutOfRange {
                beyond: Beyond::After,
                ..
            } => Timestamp::MAX,
            ClaimTime::OutOfRange {
                beyond: Beyond::Before,
                ..
            } => Timestamp::MIN,
        }
    }

    /// "9223372036854775807 is after 9999-12-30T22:00:00Z, the last date shown here", or the
    /// date.
    pub fn describe(self) -> String {
        match self {
            ClaimTime::At(at) => at.to_string(),
            ClaimTime::OutOfRange { seconds, beyond } => {
                let (word, bound, which) = match beyond {
                    Beyond::After => ("after", last_shown(), "last"),
                    Beyond::Before => ("before", first_shown(), "first"),
                };
                format!("{seconds} is {word} {bound}, the {which} date shown here")
            }
        }
    }
}

/// The last whole second jiff can show.
fn last_shown() -> Timestamp {
    Timestamp::from_second(Timestamp::MAX.as_second()).unwrap_or(Timestamp::MAX)
}

/// The first whole second jiff can show.
fn first_shown() -> Timestamp {
    Timestamp::from_second(Timestamp::MIN.as_second()).unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_what_lies_beyond_them() {
        let at = ClaimTime::from_seconds(1_700_000_000);
        assert_eq!(at.date().unwrap().to_string(), "2023-11-14T22:13:20Z");
        assert_eq!(at.describe(), "2023-11-14T22:13:20Z");
        assert_eq!(at.clamped(), at.date().unwrap());

        let far = ClaimTime::from_seconds(i64::MAX);
        assert_eq!(
            far,
            ClaimTime::OutOfRange {
                seconds: i64::MAX,
                beyond: Beyond::After
            }
        );
        assert_eq!(far.date(), None);
        assert_eq!(far.clamped(), Timestamp::MAX);
        assert_eq!(
            far.describe(),
            "9223372036854775807 is after 9999-12-30T22:00:00Z, the last date shown here"
        );
        let last = ClaimTime::from_seconds(Timestamp::MAX.as_second());
        assert!(matches!(last, ClaimTime::At(_)), "{last:?}");
        assert!(matches!(
            ClaimTime::from_seconds(Timestamp::MAX.as_second() + 1),
            ClaimTime::OutOfRange {
                beyond: Beyond::After,
                ..
            }
        ));

        let early = ClaimTime::from_seconds(i64::MIN);
        assert_eq!(early.clamped(), Timestamp::MIN);
        assert!(
            early
                .describe()
                .starts_with("-9223372036854775808 is before -009999-"),
            "{}",
            early.describe()
        );
    }
}

//! Durations on the command line, read one way by every flag and argument: a bare number is
//! seconds (`5`, `1.5`), otherwise jiff's friendly format (`500ms`, `5s`, `2m`, `1m30s`,
//! `2 minutes`) or ISO 8601 (`PT5S`). jiff does the parsing; this module only adds the bare
//! number and the per-flag range checks, so `check --max-reload-delay 5` and `ctl lifetime 5`
//! mean the same five seconds.

use jiff::SignedDuration;

/// Examples for error messages.
const EXAMPLES: &str = "e.g. 5 (seconds), 500ms, 30s, 2m, 1m30s";

/// Any duration, negative ones included.
pub fn parse(text: &str) -> Result<SignedDuration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty; give a duration, {EXAMPLES}"));
    }
    // jiff wants a unit; a bare number (digits with at most one decimal point) is seconds.
    let bare_number = {
        let digits = text.strip_prefix('-').unwrap_or(text);
        !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && digits.bytes().filter(|&b| b == b'.').count() <= 1
            && digits.bytes().any(|b| b.is_ascii_digit())
    };
    let parsed = if bare_number {
        format!("{text}s").parse::<SignedDuration>()
    } else {
        text.parse::<SignedDuration>()
    };
    parsed.map_err(|e| format!("{text:?} is not a duration ({e}); {EXAMPLES}"))
}

/// Zero or more: a bound (`check --max-reload-delay 0` allows no delay at all).
pub fn parse_non_negative(text: &str) -> Result<SignedDuration, String> {
    let duration = parse(text)?;
    if duration.is_negative() {
        return Err(format!("{:?} must not be negative", text.trim()));
    }
    Ok(duration)
}

/// Above zero: a timeout, an interval, a backoff.
pub fn parse_positive(text: &str) -> Result<SignedDuration, String> {
    let duration = parse(text)?;
    if !duration.is_positive() {
        return Err(format!("{:?} must be above zero", text.trim()));
    }
    Ok(duration)
}

/// Zero or more whole seconds, for the emulator's controls (`ctl`), whose API and token claims
/// count whole seconds: `500ms` is read as half a second, then refused rather than rounded.
pub fn parse_whole_seconds(text: &str) -> Result<i64, String> {
    let duration = parse_non_negative(text)?;
    if duration.subsec_nanos() != 0 {
        return Err(format!(
            "{:?} is not a whole number of seconds: the emulator counts whole seconds; give e.g. \
             {}s",
            text.trim(),
            duration.as_secs() + 1
        ));
    }
    Ok(duration.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(seconds: i64) -> SignedDuration {
        SignedDuration::from_secs(seconds)
    }

    #[test]
    fn one_reading_for_every_form() {
        for (text, expected) in [
            ("5", secs(5)),
            ("5s", secs(5)),
            (" 5s ", secs(5)),
            ("500ms", SignedDuration::from_millis(500)),
            ("0.5", SignedDuration::from_millis(500)),
            ("1.5s", SignedDuration::from_millis(1500)),
            ("2m", secs(120)),
            ("120", secs(120)),
            ("1m30s", secs(90)),
            ("2 minutes", secs(120)),
            ("1h", secs(3600)),
            ("PT5S", secs(5)),
            ("0", secs(0)),
            ("-5", secs(-5)),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
        for bad in ["", "soon", "5x", "1.2.3", ".", "-", "5 parsecs"] {
            let error = parse(bad).expect_err(bad);
            assert!(error.contains("e.g. 5 (seconds), 500ms"), "{bad}: {error}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_non_negative("0"), Ok(secs(0)));
        assert_eq!(parse_non_negative("5"), parse_non_negative("5s"));
        assert!(parse_non_negative("-5s")
            .unwrap_err()
            .contains("must not be negative"));
        assert_eq!(
            parse_positive("500ms"),
            Ok(SignedDuration::from_millis(500))
        );
        assert_eq!(parse_positive("10"), Ok(secs(10)));
        assert!(parse_positive("0s").unwrap_err().contains("above zero"));
        assert!(parse_positive("-1").is_err());
    }

    #[test]
    fn whole_seconds() {
        assert_eq!(parse_whole_seconds("5"), Ok(5));
        assert_eq!(parse_whole_seconds("5s"), Ok(5));
        assert_eq!(parse_whole_seconds("2m"), Ok(120));
        assert_eq!(parse_whole_seconds("1h"), Ok(3600));
        assert_eq!(parse_whole_seconds("0"), Ok(0));
        assert_eq!(parse_whole_seconds("2000ms"), Ok(2));
        let error = parse_whole_seconds("500ms").unwrap_err();
        assert!(error.contains("whole number of seconds"), "{error}");
        assert!(error.contains("1s"), "{error}");
        assert!(parse_whole_seconds("-1").is_err());
        assert!(parse_whole_seconds("soon").is_err());
    }
}

//! Reading the server's "not before" hints: the `Retry-After` header
//! (delta-seconds or an HTTP-date, RFC 9110 §10.2.3) and the body's
//! `retry_after_s` / `probe_after_s`.
//!
//! Everything here is pure: the current time is an argument.

use std::time::{Duration, SystemTime};

/// The longest wait a server hint can impose. A misconfigured proxy
/// answering `Retry-After: 31536000` must not silence an agent for a year;
/// after this long the client tries again (and is told again).
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(3_600);

/// Parses a `Retry-After` header value into a delay from `now`.
///
/// Accepts delta-seconds (`"120"`) and the three HTTP-date forms
/// (IMF-fixdate, RFC 850, asctime; read by `httpdate`, which also refuses
/// a weekday that does not match the date). A date in the past means "now"
/// (`Duration::ZERO`). Returns `None` for anything else, so a garbled
/// header is ignored rather than trusted. The result is capped at
/// [`MAX_SERVER_WAIT`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Overlong digit strings saturate instead of failing.
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_SERVER_WAIT));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_SERVER_WAIT),
    )
}

/// A body's `retry_after_s` / `probe_after_s` as a capped duration.
/// Negative, non-finite or absent values give `None`.
pub fn from_body_seconds(value: Option<f64>) -> Option<Duration> {
    let s = value?;
    if !s.is_finite() || s < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        s.min(MAX_SERVER_WAIT.as_secs_f64()),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::UNIX_EPOCH;

    use super::*;

    /// 1994-11-06T08:49:37Z, the RFC's example.
    const RFC_EXAMPLE: u64 = 784_111_777;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn delta_seconds() {
        let now = at(1_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        // Capped, and overlong numbers saturate rather than fail.
        assert_eq!(parse_retry_after("999999", now), Some(MAX_SERVER_WAIT));
        assert_eq!(
            parse_retry_after("99999999999999999999999999", now),
            Some(MAX_SERVER_WAIT)
        );
    }

    #[test]
    fn garbage_is_ignored() {
        let now = at(1_000);
        for v in [
            "",
            "soon",
            "-3",
            "1.5",
            "3s",
            "Sun, 06 Nov 1994 08:49:37 PST",
        ] {
            assert_eq!(parse_retry_after(v, now), None, "{v:?}");
        }
    }

    #[test]
    fn all_three_http_date_forms() {
        let now = at(RFC_EXAMPLE - 7);
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(v, now),
                Some(Duration::from_secs(7)),
                "{v:?}"
            );
        }
        assert_eq!(
            parse_retry_after("Tue, 29 Feb 2028 23:59:59 GMT", at(1_835_481_599 - 5)),
            Some(Duration::from_secs(5))
        );
        for bad in [
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Mon, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn http_date_becomes_a_delay() {
        let now = at(RFC_EXAMPLE - 7);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        // A date in the past means "now".
        let later = at(RFC_EXAMPLE + 100);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(Duration::ZERO)
        );
        // A date far in the future is capped.
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", at(RFC_EXAMPLE)),
            Some(MAX_SERVER_WAIT)
        );
    }

    #[test]
    fn body_seconds() {
        assert_eq!(from_body_seconds(Some(4.0)), Some(Duration::from_secs(4)));
        assert_eq!(
            from_body_seconds(Some(0.5)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(from_body_seconds(Some(1e12)), Some(MAX_SERVER_WAIT));
        assert_eq!(from_body_seconds(Some(-1.0)), None);
        assert_eq!(from_body_seconds(Some(f64::NAN)), None);
        assert_eq!(from_body_seconds(None), None);
    }
}

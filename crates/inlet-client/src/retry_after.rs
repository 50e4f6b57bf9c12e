//! Reading the server's "not before" hints: the `Retry-After` header
//! (delta-seconds or an HTTP-date, RFC 9110 §10.2.3) and the body's
//! `retry_after_s` / `probe_after_s`.
//!
//! Everything here is pure: the current time is an argument.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest wait a server hint can impose. A misconfigured proxy
/// answering `Retry-After: 31536000` must not silence an agent for a year;
/// after this long the client tries again (and is told again).
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(3_600);

/// Parses a `Retry-After` header value into a delay from `now`.
///
/// Accepts delta-seconds (`"120"`) and the three HTTP-date forms
/// (IMF-fixdate, RFC 850, asctime). A date in the past means "now"
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
    let at = parse_http_date(v)?;
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

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses an HTTP-date (all three forms RFC 9110 requires recipients to
/// accept). Only GMT is valid; the weekday is not cross-checked.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (day, month, year, time) = if let Some((_, rest)) = s.split_once(", ") {
        let rest = rest.strip_suffix(" GMT")?;
        if rest.contains('-') {
            // RFC 850: "06-Nov-94 08:49:37"
            let (date, time) = rest.split_once(' ')?;
            let mut parts = date.split('-');
            let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || y.len() != 2 {
                return None;
            }
            let yy: i64 = digits(y)?;
            // Two-digit years: RFC 9110 says to read a year more than 50
            // years in the future as the past century.
            let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
            (digits(d)?, month_number(m)?, year, time)
        } else {
            // IMF-fixdate: "06 Nov 1994 08:49:37"
            let mut parts = rest.split(' ');
            let (d, m, y, t) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || y.len() != 4 || d.len() != 2 {
                return None;
            }
            (digits(d)?, month_number(m)?, digits(y)?, t)
        }
    } else {
        // asctime: "Sun Nov  6 08:49:37 1994"
        let mut parts = s.split_whitespace();
        let (_wd, m, d, t, y) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if parts.next().is_some() || y.len() != 4 {
            return None;
        }
        (digits(d)?, month_number(m)?, digits(y)?, t)
    };
    let mut hms = time.split(':');
    let (h, mi, se) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() || h.len() != 2 || mi.len() != 2 || se.len() != 2 {
        return None;
    }
    let (h, mi, se): (i64, i64, i64) = (digits(h)?, digits(mi)?, digits(se)?);
    // 60 allows a leap second.
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3_600 + mi * 60 + se;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month_number(m: &str) -> Option<i64> {
    MONTHS
        .iter()
        .position(|name| *name == m)
        .map(|i| i as i64 + 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(v), Some(at(RFC_EXAMPLE)), "{v:?}");
        }
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(at(1_835_481_599))
        );
        for bad in [
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
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

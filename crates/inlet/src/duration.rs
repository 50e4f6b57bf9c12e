//! The one grammar for durations on the command line.
//!
//! Every duration flag takes a `humantime` duration: a number with a unit,
//! `30s`, `500ms`, `5m`, `1h`, `1h 30m`, `2days`. A bare number is refused
//! rather than given a unit by guess: `5` has meant five seconds to one
//! command and five minutes to another, so the error asks for the unit.

use std::time::Duration;

/// The longest duration any flag takes: a year. Bounds `now + duration`
/// arithmetic far from overflow.
const MAX: Duration = Duration::from_secs(365 * 86_400);

/// Parses a duration flag's value (for clap: `value_parser =
/// crate::duration::parse_duration`).
///
/// Accepts what [`humantime::parse_duration`] accepts, more than zero and
/// at most a year. A bare number is an error that suggests units; clap
/// prefixes it with the flag, e.g. `invalid value '5' for '--duration
/// <DURATION>': a bare number has no unit: give one, e.g. 5s or 5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "a bare number has no unit: give one, e.g. {s}s or {s}m"
        ));
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); e.g. 30s, 500ms, 5m, 1h"))?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero: give a duration of more than zero"));
    }
    if d > MAX {
        return Err(format!("{s:?} is longer than a year"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_required_and_humantime_spelled() {
        let secs = Duration::from_secs;
        assert_eq!(parse_duration("30s"), Ok(secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(secs(120)));
        assert_eq!(parse_duration("5min"), Ok(secs(300)));
        assert_eq!(parse_duration("1h"), Ok(secs(3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(secs(5400)));
        assert_eq!(parse_duration(" 10s "), Ok(secs(10)));
        assert_eq!(parse_duration("365days"), Ok(MAX));
        for bare in ["5", "45", "1.5", "0"] {
            let e = parse_duration(bare).unwrap_err();
            assert!(
                e.contains("bare number") && e.contains(&format!("{bare}s")),
                "{e}"
            );
        }
        for bad in ["", "s", "0s", "-1s", "3 fortnights", "1e9h", "366days"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}

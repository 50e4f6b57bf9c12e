//! The one grammar for durations on the command line: humantime strings
//! (`30s`, `500ms`, `5m`, `1h`, `2d`, `1h 30m`). A bare number is refused:
//! `5` meant seconds to one flag and minutes to another, so every duration
//! now names its unit. A leaf module.

use std::time::Duration;

/// Parses a humantime duration; refuses a number without a unit. Used as
/// a clap `value_parser`, so clap's error names the flag.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "{s:?} has no unit: write e.g. {s}s, {s}m or {s}h (ms, s, m, h, d)"
        ));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}): write e.g. 30s, 5m or 1h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_strings_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration(" 1h 30m "), Ok(Duration::from_secs(5_400)));
    }

    #[test]
    fn bare_numbers_are_refused_with_a_unit_suggested() {
        for bare in ["5", "30", "1.5", "0"] {
            let err = parse_duration(bare).unwrap_err();
            assert!(
                err.contains("no unit") && err.contains(&format!("{bare}s")),
                "{err}"
            );
        }
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "h", "1y2", "soon", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}

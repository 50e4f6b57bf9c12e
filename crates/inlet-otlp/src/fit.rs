//! Fitting OTLP values into the domain's (a leaf): text cut to a limit,
//! times from nanoseconds to milliseconds.

/// Nanoseconds since the epoch → milliseconds (`None` for 0, "unset").
pub(crate) fn ms(unix_nano: u64) -> Option<i64> {
    (unix_nano > 0).then_some((unix_nano / 1_000_000) as i64)
}

/// At most `max` characters of `s`, without control characters (other than
/// newline and tab): names are cut, not refused, so a long span name does
/// not cost the span.
pub(crate) fn fit(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .take(max)
        .collect()
}

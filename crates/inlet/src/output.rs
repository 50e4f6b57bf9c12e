//! What commands print with: the listing format flag, timestamps, and the
//! progress bars of long commands. A leaf module: it uses no other module
//! of the binary.

use std::time::{Duration, SystemTime};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

/// Output format for listings.
#[derive(Debug, Args)]
pub struct Format {
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A Unix-ms time as RFC 3339 in UTC, with as many fraction digits as it
/// needs (`2026-01-02T03:04:05.12Z`, `…:05Z` for a whole second); empty
/// for a time before 1970.
pub fn rfc3339(ms: i64) -> String {
    let Ok(ms) = u64::try_from(ms) else {
        return String::new();
    };
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    let full = humantime::format_rfc3339_millis(t).to_string();
    // `….120Z` → `….12Z`, `….000Z` → `…Z`.
    match full.strip_suffix('Z').and_then(|s| s.rsplit_once('.')) {
        Some((whole, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{fraction}Z")
            }
        }
        None => full,
    }
}

/// A progress bar of `len` steps counted in `unit`, on stderr. indicatif
/// draws nothing when stderr is not a terminal, so scripts, pipes and logs
/// see only a command's result.
pub fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    progress(
        ProgressBar::new(len),
        &format!(
            "{{spinner}} [{{bar:40}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, {{eta}} left)"
        ),
    )
}

/// A bar over `seconds` of wall-clock time, with a message (what was
/// done so far).
pub fn time_bar(seconds: u64) -> ProgressBar {
    progress(
        ProgressBar::new(seconds),
        "{spinner} [{bar:40}] {pos}/{len} s  {msg}",
    )
}

fn progress(bar: ProgressBar, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn timestamps_print_like_rfc3339_with_trimmed_fractions() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_323_045_000), "2026-01-02T03:04:05Z");
        assert_eq!(rfc3339(1_767_323_045_120), "2026-01-02T03:04:05.12Z");
        assert_eq!(rfc3339(1_767_323_045_123), "2026-01-02T03:04:05.123Z");
        assert_eq!(rfc3339(1_767_323_045_001), "2026-01-02T03:04:05.001Z");
        assert_eq!(rfc3339(-1), "");
    }

    /// The same text as the BSON formatting the commands printed with
    /// before (MongoDB times have millisecond precision).
    #[test]
    fn same_text_as_bson() {
        let mut ms = 0_i64;
        for step in [
            1,
            7,
            10,
            100,
            999,
            1_000,
            60_000,
            86_399_999,
            31_622_400_123,
        ] {
            for _ in 0..50 {
                ms += step;
                let bson = mongodb::bson::DateTime::from_millis(ms)
                    .try_to_rfc3339_string()
                    .unwrap();
                assert_eq!(rfc3339(ms), bson, "{ms}");
            }
        }
    }
}

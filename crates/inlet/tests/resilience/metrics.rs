//! Just enough of the Prometheus text format to read counters and gauges.

use std::collections::BTreeMap;
use std::time::Duration;

/// One scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// Parses the text format (comments skipped; histograms appear as
    /// their `_bucket`/`_sum`/`_count` series).
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(p) => p,
                None => continue,
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_owned(), labels, value));
        }
        Scrape { samples }
    }

    /// The sum of every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .fold(0.0, |a, (_, _, v)| a + v)
    }

    /// Like [`Self::sum`], excluding series whose label `key` is `value`.
    pub fn sum_except(&self, name: &str, key: &str, value: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && l.get(key).is_none_or(|x| x != value))
            .fold(0.0, |a, (_, _, v)| a + v)
    }

    /// `(labels, value)` of every series of `name`.
    pub fn series(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }

    /// Every series of `name` as `label=value,… → value`, for reports.
    pub fn describe(&self, name: &str) -> BTreeMap<String, f64> {
        self.series(name)
            .into_iter()
            .map(|(l, v)| {
                let key = l
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                (key, v)
            })
            .collect()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let key = key.trim_start_matches(',').trim();
        // Values are escaped with backslashes; find the closing quote.
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                other => value.push(other),
            }
        }
        out.insert(key.to_owned(), value);
        rest = &after[end..];
    }
    out
}

/// Scrapes `url` (a `/metrics` endpoint); `None` when it does not answer.
pub async fn scrape(http: &reqwest::Client, url: &str) -> Option<Scrape> {
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    Some(Scrape::parse(&resp.text().await.ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_series() {
        let s = Scrape::parse(
            "# HELP x y\n# TYPE inlet_auth_decisions_total counter\n\
             inlet_auth_decisions_total{source=\"mongo\",verdict=\"accepted\"} 3\n\
             inlet_auth_decisions_total{source=\"redis\",verdict=\"accepted\"} 4\n\
             inlet_auth_decisions_total{source=\"mongo\",verdict=\"unknown_key\"} 5\n\
             inlet_api_ready 1\n",
        );
        assert_eq!(
            s.sum("inlet_auth_decisions_total", &[("source", "mongo")]),
            8.0
        );
        assert_eq!(
            s.sum(
                "inlet_auth_decisions_total",
                &[("source", "mongo"), ("verdict", "accepted")]
            ),
            3.0
        );
        assert_eq!(s.sum("inlet_api_ready", &[]), 1.0);
        assert_eq!(
            s.sum_except("inlet_auth_decisions_total", "source", "mongo"),
            4.0
        );
    }
}

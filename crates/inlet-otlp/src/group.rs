//! Resources → batches: who sent the data (app, environment, host, SDK),
//! and the batches that collect one resource's samples within the count
//! limits.

use inlet_domain::{
    AppName, BatchLimits, Environment, WireAgent, WireBatch, WireErrorSample, WireMetric,
    WireTransaction,
};

use crate::attributes::{first_text, text};
use crate::fit::fit;
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The app of a resource without `service.name` (the SDKs themselves set
/// `unknown_service[:<process>]`).
pub(crate) const UNKNOWN_APP: &str = "unknown_service";
/// The environment of a resource without `deployment.environment[.name]`.
pub(crate) const DEFAULT_ENVIRONMENT: &str = "default";

/// The identity a resource gives its samples.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Origin {
    app: String,
    environment: String,
    agent: WireAgent,
}

impl Origin {
    /// Reads a resource, fitting every value into the domain's rules (an
    /// export is never refused for its resource: a name is cut, an
    /// environment folded to the characters it may hold).
    pub(crate) fn of(resource: Option<&Resource>, limits: &BatchLimits) -> Origin {
        let attrs = resource.map_or(&[][..], |r| &r.attributes[..]);
        let app = text(attrs, "service.name")
            .map(|s| fit(s.trim(), AppName::MAX_LEN).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| UNKNOWN_APP.to_owned());
        let environment = first_text(
            attrs,
            &["deployment.environment.name", "deployment.environment"],
        )
        .map(|s| environment(&s))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_ENVIRONMENT.to_owned());
        let max = limits.max_name_len;
        let sdk = text(attrs, "telemetry.sdk.name");
        let language = text(attrs, "telemetry.sdk.language");
        let name = match (sdk, language) {
            (Some(s), Some(l)) => format!("{s}-{l}"),
            (Some(s), None) => s.into_owned(),
            (None, Some(l)) => format!("otlp-{l}"),
            (None, None) => "otlp".to_owned(),
        };
        let nonempty = |s: String| (!s.trim().is_empty()).then_some(s);
        Origin {
            app,
            environment,
            agent: WireAgent {
                name: nonempty(fit(&name, max)).unwrap_or_else(|| "otlp".into()),
                version: text(attrs, "telemetry.sdk.version")
                    .and_then(|v| nonempty(fit(&v, max)))
                    .unwrap_or_else(|| "unknown".into()),
                hostname: text(attrs, "host.name").and_then(|h| nonempty(fit(&h, max))),
            },
        }
    }
}

/// An environment name folded into `[a-z0-9._-]`, starting alphanumeric.
fn environment(s: &str) -> String {
    let folded: String = s
        .trim()
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
            _ => '-',
        })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(Environment::MAX_LEN)
        .collect();
    folded
}

/// The batches of one export: one open batch per origin, a new one when
/// a count limit is reached.
#[derive(Debug, Default)]
pub(crate) struct Batches {
    batches: Vec<(Origin, WireBatch)>,
}

impl Batches {
    /// The batch of `origin` with room for one more sample of the kind
    /// `full` tells about.
    fn open(&mut self, origin: &Origin, full: impl Fn(&WireBatch) -> bool) -> &mut WireBatch {
        let found = self
            .batches
            .iter()
            .rposition(|(o, b)| o == origin && !full(b));
        let i = match found {
            Some(i) => i,
            None => {
                self.batches.push((
                    origin.clone(),
                    WireBatch {
                        batch_id: None,
                        agent: origin.agent.clone(),
                        app: origin.app.clone(),
                        environment: origin.environment.clone(),
                        transactions: Vec::new(),
                        metrics: Vec::new(),
                        errors: Vec::new(),
                    },
                ));
                self.batches.len() - 1
            }
        };
        &mut self.batches[i].1
    }

    pub(crate) fn transaction(&mut self, o: &Origin, l: &BatchLimits, t: WireTransaction) {
        self.open(o, |b| b.transactions.len() >= l.max_transactions)
            .transactions
            .push(t);
    }

    pub(crate) fn metric(&mut self, o: &Origin, l: &BatchLimits, m: WireMetric) {
        self.open(o, |b| b.metrics.len() >= l.max_metrics)
            .metrics
            .push(m);
    }

    pub(crate) fn error(&mut self, o: &Origin, l: &BatchLimits, e: WireErrorSample) {
        self.open(o, |b| b.errors.len() >= l.max_errors)
            .errors
            .push(e);
    }

    /// The batches, in the order they were opened.
    pub(crate) fn finish(self) -> Vec<WireBatch> {
        self.batches.into_iter().map(|(_, b)| b).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::kv;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    fn resource(pairs: &[(&str, &str)]) -> Resource {
        Resource {
            attributes: pairs
                .iter()
                .map(|(k, v)| kv(k, Value::StringValue((*v).into())))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn resources_fit_the_domain_rules() {
        let limits = BatchLimits::default();
        let o = Origin::of(
            Some(&resource(&[
                ("service.name", "checkout"),
                ("deployment.environment.name", "Staging EU"),
                ("deployment.environment", "ignored"),
                ("host.name", "web-1"),
                ("telemetry.sdk.name", "opentelemetry"),
                ("telemetry.sdk.language", "python"),
                ("telemetry.sdk.version", "1.39.0"),
            ])),
            &limits,
        );
        assert_eq!(o.app, "checkout");
        assert_eq!(o.environment, "staging-eu");
        assert_eq!(o.agent.name, "opentelemetry-python");
        assert_eq!(o.agent.version, "1.39.0");
        assert_eq!(o.agent.hostname.as_deref(), Some("web-1"));
        assert!(Environment::parse(&o.environment).is_ok());

        let o = Origin::of(
            Some(&resource(&[("deployment.environment", "--Prod")])),
            &limits,
        );
        assert_eq!(
            (o.app.as_str(), o.environment.as_str()),
            (UNKNOWN_APP, "prod")
        );
        let o = Origin::of(None, &limits);
        assert_eq!(o.environment, DEFAULT_ENVIRONMENT);
        assert_eq!(
            (o.agent.name.as_str(), o.agent.version.as_str()),
            ("otlp", "unknown")
        );
        let long = "x".repeat(500);
        let o = Origin::of(Some(&resource(&[("service.name", &long)])), &limits);
        assert!(AppName::parse(&o.app).is_ok());
    }

    #[test]
    fn a_full_batch_opens_another() {
        let limits = BatchLimits {
            max_errors: 2,
            ..BatchLimits::default()
        };
        let o = Origin::of(None, &limits);
        let mut b = Batches::default();
        for _ in 0..5 {
            b.error(
                &o,
                &limits,
                WireErrorSample {
                    class: "E".into(),
                    message: String::new(),
                    backtrace: Vec::new(),
                    action: None,
                    timestamp_ms: 0,
                },
            );
        }
        let sizes: Vec<_> = b.finish().iter().map(|b| b.errors.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
    }
}

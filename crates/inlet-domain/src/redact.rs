//! Secrets never print: credentials inside URLs, for logs and for
//! `inlet config`.

use std::borrow::Cow;

/// What a password or secret prints as.
pub const REDACTED: &str = "***";

/// Query parameters whose value is a credential (matched case-insensitively
/// on the parameter name), e.g. MongoDB's `tlsCertificateKeyFilePassword`
/// or `authMechanismProperties=AWS_SESSION_TOKEN:…`.
const SECRET_PARAMS: &[&str] = &["password", "secret", "token", "authmechanismproperties"];

/// `scheme://user:password@hosts/path?query` with the password and secret
/// query values replaced by [`REDACTED`]; `s` itself when it is not such a
/// URL or holds no credential. Hand-written rather than with the `url`
/// crate, which refuses MongoDB's multi-host authorities
/// (`h1:27017,h2:27017`).
pub fn redact_url(s: &str) -> Cow<'_, str> {
    redact(s).map_or(Cow::Borrowed(s), Cow::Owned)
}

fn redact(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut changed = false;
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _password)) => {
                changed = true;
                format!("{user}:{REDACTED}@{hosts}")
            }
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_param(name) => {
                        changed = true;
                        format!("{name}={REDACTED}")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            let mut t = format!("{path}?{}", query.join("&"));
            if let Some(f) = fragment {
                t.push('#');
                t.push_str(f);
            }
            t
        }
        None => tail.to_owned(),
    };
    changed.then(|| format!("{scheme}://{authority}{tail}"))
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|p| name.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        let cases = [
            ("redis://:pw@h:6379/0", Some("redis://:***@h:6379/0")),
            ("rediss://user:pw@h", Some("rediss://user:***@h")),
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                Some("amqp://guest:***@127.0.0.1:5672/%2f"),
            ),
            (
                "mongodb+srv://u:p%40ss@cluster.example.com/?retryWrites=false",
                Some("mongodb+srv://u:***@cluster.example.com/?retryWrites=false"),
            ),
            (
                "mongodb://u:a@b@h1:1,h2:2/db?replicaSet=rs0&authMechanismProperties=AWS_SESSION_TOKEN:t",
                Some("mongodb://u:***@h1:1,h2:2/db?replicaSet=rs0&authMechanismProperties=***"),
            ),
            (
                "mongodb://h/?tlsCertificateKeyFilePassword=x#frag",
                Some("mongodb://h/?tlsCertificateKeyFilePassword=***#frag"),
            ),
            // A user without a password, or no credential at all: unchanged.
            ("mongodb://user@h:27017", None),
            ("redis://127.0.0.1:6379", None),
            ("0.0.0.0:8080", None),
            ("config/keys.toml", None),
            ("not a url: x://y", None),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected.unwrap_or(input), "{input}");
        }
    }
}

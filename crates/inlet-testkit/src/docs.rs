//! Examples in the documentation, checked against what the code produces,
//! so that they cannot drift.
//!
//! An example is compared by its *shape*: objects must have the same keys,
//! arrays the same length, booleans and `null` the same values, numbers be
//! numbers. A string of the example is a pattern: `…` stands for anything
//! and every number-like run — lower-case hex letters and digits, with at
//! least one digit — for any such run (ids, counts and times differ from
//! run to run); the rest must be as written. The same pattern
//! rule compares lines of console output.

use std::path::Path;

use serde_json::Value;

/// The text of `docs/<name>` of this repository.
///
/// # Panics
/// If the file cannot be read.
pub fn doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bodies of the fenced blocks of `markdown` whose info string starts
/// with `lang` (```` ```json ````, ```` ```console ````), indented blocks
/// included (their indentation removed).
pub fn fenced_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for line in markdown.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        match &mut current {
            None => {
                if let Some(info) = trimmed.strip_prefix("```")
                    && info.starts_with(lang)
                    && !lang.is_empty()
                {
                    current = Some((indent, String::new()));
                }
            }
            Some((block_indent, body)) => {
                if trimmed.starts_with("```") {
                    blocks.push(std::mem::take(body));
                    current = None;
                } else {
                    let cut = (*block_indent).min(indent);
                    body.push_str(&line[cut..]);
                    body.push('\n');
                }
            }
        }
    }
    blocks
}

/// Whether `real` matches the example text `example` (`…` is anything,
/// a number-like run any number-like run).
pub fn text_matches(example: &str, real: &str) -> bool {
    // Number-like runs: lower-case hex with at least one digit (`4`,
    // `1000`, `01a20c42`); words without a digit stay literal.
    let runs = regex::Regex::new("[0-9a-f]+").expect("a valid pattern");
    let mut pattern = String::from("^");
    let literal = |text: &str, pattern: &mut String| {
        for (i, part) in text.split('…').enumerate() {
            if i > 0 {
                pattern.push_str(".*");
            }
            pattern.push_str(&regex::escape(part));
        }
    };
    let mut at = 0;
    for m in runs.find_iter(example) {
        if !m.as_str().bytes().any(|b| b.is_ascii_digit()) {
            continue;
        }
        literal(&example[at..m.start()], &mut pattern);
        pattern.push_str("[0-9a-f]+");
        at = m.end();
    }
    literal(&example[at..], &mut pattern);
    pattern.push('$');
    regex::Regex::new(&pattern).is_ok_and(|re| re.is_match(real))
}

/// The differences between an example and a real value, as
/// `path: what` lines; empty when the real value has the example's shape.
pub fn shape_differences(example: &Value, real: &Value) -> Vec<String> {
    let mut out = Vec::new();
    compare("$", example, real, &mut out);
    out
}

fn compare(path: &str, example: &Value, real: &Value, out: &mut Vec<String>) {
    match (example, real) {
        (Value::Object(e), Value::Object(r)) => {
            for k in e.keys().filter(|k| !r.contains_key(*k)) {
                out.push(format!("{path}.{k}: in the example, not sent"));
            }
            for k in r.keys().filter(|k| !e.contains_key(*k)) {
                out.push(format!("{path}.{k}: sent, not in the example"));
            }
            for (k, ev) in e {
                if let Some(rv) = r.get(k) {
                    compare(&format!("{path}.{k}"), ev, rv, out);
                }
            }
        }
        (Value::Array(e), Value::Array(r)) => {
            if e.len() != r.len() {
                out.push(format!(
                    "{path}: {} elements in the example, {} sent",
                    e.len(),
                    r.len()
                ));
            }
            for (i, (ev, rv)) in e.iter().zip(r).enumerate() {
                compare(&format!("{path}[{i}]"), ev, rv, out);
            }
        }
        (Value::String(e), Value::String(r)) => {
            if !text_matches(e, r) {
                out.push(format!("{path}: the example says {e:?}, sent {r:?}"));
            }
        }
        (Value::Number(_), Value::Number(_)) => {}
        (e, r) if e == r => {}
        (e, r) => out.push(format!("{path}: the example says {e}, sent {r}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns_elide_and_generalize_digits() {
        assert!(text_matches(
            "01a20c42…",
            "01a20c61ce55715aaba8d3bd172d4413"
        ));
        assert!(text_matches(
            "generation 4, 1000 keys",
            "generation 17, 3 keys"
        ));
        assert!(!text_matches(
            "generation 4, 1000 keys",
            "generation 4, 1000 key"
        ));
        assert!(!text_matches("retryable: false", "retryable: true"));
        assert!(text_matches("a (b) [c]. d", "a (b) [c]. d"));
        assert!(text_matches(
            "id: 01a20c61-ce57-745e",
            "id: 0199ffff-0a1b-7000"
        ));
        assert!(!text_matches("stores_unavailable", "stores_unreachable"));
    }

    #[test]
    fn shapes_compare_keys_and_literals_not_numbers() {
        let example = json!({"code": "x", "n": 4, "ok": true, "list": [{"a": "1…"}]});
        assert!(
            shape_differences(
                &example,
                &json!({"code": "x", "n": 7, "ok": true, "list": [{"a": "19"}]})
            )
            .is_empty()
        );
        let diff = shape_differences(
            &example,
            &json!({"code": "y", "n": 4, "ok": false, "extra": 1, "list": []}),
        );
        assert_eq!(diff.len(), 4, "{diff:?}");
    }

    #[test]
    fn blocks_are_found_by_language_indented_or_not() {
        let md = "text\n```json\n{\"a\": 1}\n```\n- item\n\n  ```json\n  {\"b\": 2}\n  ```\n```sh\nls\n```\n";
        assert_eq!(
            fenced_blocks(md, "json"),
            vec!["{\"a\": 1}\n", "{\"b\": 2}\n"]
        );
    }
}

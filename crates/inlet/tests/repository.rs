//! What the repository itself must (not) contain: every signing secret it
//! publishes is refused in production; docker-compose ships none and
//! generates one on first start; local secrets and data stay out of git
//! and out of the image's build context.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use inlet_auth::SigningSettings;
use regex::Regex;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file that is (or is about to be) published: tracked, or untracked
/// and not ignored.
fn published_files() -> Vec<PathBuf> {
    let out = std::process::Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root())
        .output()
        .expect("git ls-files (the scan needs git)");
    assert!(out.status.success(), "git ls-files failed");
    let mut files: Vec<PathBuf> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
        .collect();
    files.sort();
    files.dedup();
    files
}

/// A value in the repository that could be copied into
/// `signing.secrets`.
#[derive(Debug)]
struct Candidate {
    place: String,
    secret: String,
}

/// Finds secret-looking values in text files: runs of 64+ hex digits (the
/// documented form), values assigned to a secret setting (hex or base64,
/// also as a `${VAR:-default}`), `[signing.secrets]` entries of TOML files,
/// and the test fixtures' `SigningSecret::new(id, &[byte; n])` and
/// `"hex".repeat(n)`.
struct Scanner {
    hex_run: Regex,
    assigned: Regex,
    byte_fill: Regex,
    repeated: Regex,
}

impl Scanner {
    fn new() -> Scanner {
        Scanner {
            hex_run: Regex::new(r"\b[0-9A-Fa-f]{64,}\b").unwrap(),
            assigned: Regex::new(
                r#"(?i)secrets?(?:__\w+)?["']?\s*[:=]\s*(?:\$\{\w+:-)?["']?([A-Za-z0-9+/_-]{43,}={0,2})"#,
            )
            .unwrap(),
            byte_fill: Regex::new(
                r"SigningSecret::new\(\s*\d+\s*,\s*&\[\s*(\d+)(?:u8)?\s*;\s*(\d+)\s*\]",
            )
            .unwrap(),
            // Not byte strings (`b"0123".repeat(n)` is data, not hex).
            repeated: Regex::new(r#"(?:^|[^A-Za-z0-9_])"([0-9A-Fa-f]{2,})"\.repeat\((\d+)\)"#)
                .unwrap(),
        }
    }

    fn candidates(&self, path: &Path, text: &str) -> Vec<Candidate> {
        let Scanner {
            hex_run,
            assigned,
            byte_fill,
            repeated,
        } = self;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let place = format!("{}:{}", path.display(), i + 1);
            let mut push = |secret: String| {
                out.push(Candidate {
                    place: place.clone(),
                    secret,
                })
            };
            for m in hex_run.find_iter(line) {
                push(m.as_str().to_owned());
            }
            for c in assigned.captures_iter(line) {
                push(c[1].to_owned());
            }
            for c in byte_fill.captures_iter(line) {
                let (byte, len): (u8, usize) = (c[1].parse().unwrap(), c[2].parse().unwrap());
                push(format!("{byte:02x}").repeat(len));
            }
            for c in repeated.captures_iter(line) {
                push(c[1].repeat(c[2].parse().unwrap()));
            }
        }
        if path.extension().is_some_and(|e| e == "toml")
            && let Ok(tree) = text.parse::<toml::Table>()
            && let Some(secrets) = tree
                .get("signing")
                .and_then(|s| s.get("secrets"))
                .and_then(|s| s.as_table())
        {
            for (id, v) in secrets {
                if let Some(s) = v.as_str() {
                    out.push(Candidate {
                        place: format!("{} [signing.secrets] {id}", path.display()),
                        secret: s.to_owned(),
                    });
                }
            }
        }
        out
    }
}

fn signing(secret: &str) -> SigningSettings {
    SigningSettings {
        secrets: BTreeMap::from([("1".to_owned(), secret.to_owned())]),
        ..SigningSettings::default()
    }
}

#[test]
fn every_secret_published_in_the_repository_is_refused_in_production() {
    let scanner = Scanner::new();
    let mut scanned = 0;
    let mut usable = Vec::new();
    for path in published_files() {
        // Package checksums, not secrets anyone configures.
        if path.file_name().is_some_and(|n| n == "Cargo.lock") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root().join(&path)) else {
            continue; // binary (fuzz regressions, images)
        };
        scanned += 1;
        for c in scanner.candidates(&path, &text) {
            // Only what would work as a secret at all.
            if signing(&c.secret).validate(false).is_ok() {
                usable.push(c);
            }
        }
    }
    assert!(scanned > 100, "scanned only {scanned} files");
    // The scan sees what it must: the development secret and a fixture.
    for expected in ["config/local.toml", "crates/inlet-auth/tests/common/mod.rs"] {
        assert!(
            usable.iter().any(|c| c.place.starts_with(expected)),
            "no secret found in {expected}: {usable:?}"
        );
    }
    let accepted: Vec<&Candidate> = usable
        .iter()
        .filter(|c| signing(&c.secret).validate(true).is_ok())
        .collect();
    assert!(
        accepted.is_empty(),
        "published secrets production would accept (add their fingerprints to \
         inlet_auth::settings::PUBLISHED_SECRETS): {:#?}",
        accepted.iter().map(|c| &c.place).collect::<Vec<_>>()
    );
}

#[test]
fn the_scanner_finds_every_form_a_secret_is_written_in() {
    // Random, so this file publishes none of them.
    let hex = random_hex();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b64: String = (0..44)
        .map(|_| char::from(alphabet[rand::random_range(0..64)]))
        .collect();
    let cases = [
        ("docker-compose.yml", format!("  X: {hex}"), hex.clone()),
        (
            "docker-compose.yml",
            format!("  INLET__SIGNING__SECRETS__2: ${{INLET_SIGNING_SECRET:-{b64}}}"),
            b64.clone(),
        ),
        (
            "docs/deploy.md",
            format!("export INLET_SIGNING_SECRET={b64}"),
            b64.clone(),
        ),
        (
            "config/x.toml",
            format!("[signing.secrets]\n7 = \"{b64}\""),
            b64.clone(),
        ),
        (
            "src/a.rs",
            "SigningSecret::new(1, &[9u8; 32])".to_owned(),
            "09".repeat(32),
        ),
        (
            "src/b.rs",
            "let s = \"ab\".repeat(32);".to_owned(),
            "ab".repeat(32),
        ),
    ];
    let scanner = Scanner::new();
    for (path, text, secret) in cases {
        let found = scanner.candidates(Path::new(path), &text);
        assert!(
            found.iter().any(|c| c.secret == secret),
            "{path}: {text}: {found:?}"
        );
        assert!(signing(&secret).validate(false).is_ok(), "{text}");
    }
}

fn random_hex() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `inlet config` in production with the given signing environment.
fn production_config(vars: &[(&str, &str)]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_inlet"));
    c.arg("config")
        .env("INLET_CONFIG_DIR", root().join("config"))
        .env("INLET_ENV", "production")
        .env_remove("RUST_LOG");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Runs `deploy/secrets-init.sh` as docker-compose's `secrets-init` does,
/// into `dir`; returns the secret file's contents.
fn secrets_init(dir: &Path, user_secret: Option<&str>) -> String {
    let mut c = std::process::Command::new("sh");
    c.arg(root().join("deploy/secrets-init.sh"))
        .env("INLET_SECRETS_DIR", dir)
        .env_remove("INLET_SIGNING_SECRET");
    if let Some(s) = user_secret {
        c.env("INLET_SIGNING_SECRET", s);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "secrets-init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join("signing-1")).unwrap()
}

#[test]
fn compose_ships_no_secret_and_generates_one_on_first_start() {
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    assert!(
        !compose.contains("SIGNING__SECRETS__"),
        "docker-compose.yml sets a signing secret"
    );
    let value = |name: &str| {
        let re = Regex::new(&format!(r"(?m)^\s*{name}:\s*(\S+)\s*$")).unwrap();
        let all: Vec<String> = re
            .captures_iter(&compose)
            .map(|c| c[1].to_owned())
            .collect();
        assert_eq!(all.len(), 1, "{name} once in docker-compose.yml");
        all[0].clone()
    };
    // The services read the file secrets-init writes.
    let file = value("INLET__SIGNING__SECRET_FILES__1");
    assert_eq!(file, format!("{}/signing-1", value("INLET_SECRETS_DIR")));
    assert_eq!(value("INLET__SIGNING__CURRENT"), "\"1\"");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signing-1");
    let file = file.to_str().unwrap();
    let stack_env = [
        ("INLET__SIGNING__CURRENT", "1"),
        ("INLET__SIGNING__SECRET_FILES__1", file),
    ];
    // Before secrets-init ran, nothing starts: there is no secret to fall
    // back on.
    let out = production_config(&stack_env);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("signing.secret_files"));

    // First start: a fresh random secret, which production accepts.
    let first = secrets_init(dir.path(), None);
    assert!(
        first.trim().len() == 64 && first.trim().bytes().all(|b| b.is_ascii_hexdigit()),
        "{first:?}"
    );
    let out = production_config(&stack_env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(first.trim()));
    // Later starts keep it (keys signed with it stay verifiable).
    assert_eq!(secrets_init(dir.path(), None), first);
    // Another stack gets another secret.
    let other = tempfile::tempdir().unwrap();
    assert_ne!(secrets_init(other.path(), None), first);
    // A secret the user supplies wins.
    let mine = random_hex();
    assert_eq!(secrets_init(dir.path(), Some(&mine)).trim(), mine);
    assert!(production_config(&stack_env).status.success());
    // And a published one is refused when the services start.
    let dev = "696e6c65742d6c6f63616c2d646576656c6f706d656e742d736563726574212121";
    secrets_init(dir.path(), Some(dev));
    let out = production_config(&stack_env);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("published"));
}

#[test]
fn local_secrets_and_data_stay_out_of_git_and_the_image() {
    // Git, by its own matching rules.
    for path in ["config/keys.toml", ".env"] {
        let ignored = std::process::Command::new("git")
            .args(["check-ignore", "-q", "--no-index", path])
            .current_dir(root())
            .status()
            .unwrap();
        assert!(ignored.success(), "{path} is not in .gitignore");
        let tracked = std::process::Command::new("git")
            .args(["ls-files", "--error-unmatch", path])
            .current_dir(root())
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!tracked.success(), "{path} is tracked");
    }
    // The image's build context (`COPY . .`): Docker anchors patterns at
    // the context root, `**/` reaches nested directories.
    let text = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for required in [
        "config/keys.toml",
        ".env",
        ".git",
        "target",
        "**/target",
        ".venv",
        "**/.venv",
        "venv",
        "**/venv",
        "secantus-data",
        "fuzz/corpus",
        "fuzz/artifacts",
        ".schemathesis",
    ] {
        assert!(
            patterns.contains(&required),
            "{required} missing from .dockerignore"
        );
    }
}

//! The `inlet` binary's administrative commands against real services.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use inlet_testkit::{TestAmqp, TestMongo, TestRedis, on_a_terminal};

struct Cli {
    mongo: TestMongo,
    redis: TestRedis,
}

impl Cli {
    async fn new() -> Cli {
        Cli {
            mongo: TestMongo::new().await,
            redis: TestRedis::new().await,
        }
    }

    /// `inlet <args>` against this test's MongoDB database and Redis prefix.
    fn command(&self, args: &[&str]) -> Command {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_inlet"));
        cmd.args(args)
            .env("INLET_CONFIG_DIR", config)
            .env("INLET_ENV", "local")
            .env("INLET__MONGO__URL", &self.mongo.url)
            .env("INLET__MONGO__DATABASE", &self.mongo.db_name)
            .env("INLET__REDIS__URL", &self.redis.url)
            .env("INLET__REDIS__PREFIX", &self.redis.prefix)
            .env("INLET__LOG__FILTER", "warn")
            .env_remove("RUST_LOG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run inlet")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "inlet {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "inlet {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }
}

#[tokio::test]
async fn migrate_twice_changes_nothing_the_second_time() {
    let cli = Cli::new().await;
    // Before: every migration pending, and `--status` says so by its exit
    // code, 2 (what the Kubernetes worker's init container waits on).
    let before = cli.run(&["migrate", "--status"]);
    assert_eq!(before.status.code(), Some(2), "{before:?}");
    assert!(
        String::from_utf8_lossy(&before.stdout).contains("0001 keys_and_accounts"),
        "{before:?}"
    );
    assert!(cli.ok(&["migrate"]).contains("applied migration 0001"));
    let log = cli
        .mongo
        .db()
        .collection::<mongodb::bson::Document>("_migrations");
    let before: Vec<_> = futures_collect(log.find(mongodb::bson::doc! {}).await.unwrap()).await;
    assert!(cli.ok(&["migrate"]).contains("up to date"));
    let after: Vec<_> = futures_collect(log.find(mongodb::bson::doc! {}).await.unwrap()).await;
    assert_eq!(before, after, "the second run records nothing new");
    assert!(
        cli.ok(&["migrate", "--status"])
            .contains("0001 keys_and_accounts")
    );
    // An applied migration whose file has changed since is not "wait
    // longer" but "look": exit 3, and `inlet migrate` refuses.
    log.update_one(
        mongodb::bson::doc! { "_id": 1 },
        mongodb::bson::doc! { "$set": { "checksum": "0".repeat(64) } },
    )
    .await
    .unwrap();
    let changed = cli.run(&["migrate", "--status"]);
    assert_eq!(changed.status.code(), Some(3), "{changed:?}");
    assert!(
        String::from_utf8_lossy(&changed.stdout).contains("the file has changed since"),
        "{changed:?}"
    );
    assert!(!cli.run(&["migrate"]).status.success());
    // And an unreachable MongoDB is neither: exit 1.
    let unreachable = cli
        .command(&["migrate", "--status", "--wait", "1s"])
        .env("INLET__MONGO__URL", "mongodb://127.0.0.1:1/")
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(1), "{unreachable:?}");
    cli.mongo.cleanup().await;
}

async fn futures_collect(
    mut cursor: mongodb::Cursor<mongodb::bson::Document>,
) -> Vec<mongodb::bson::Document> {
    let mut out = Vec::new();
    while cursor.advance().await.unwrap() {
        out.push(cursor.deserialize_current().unwrap());
    }
    out
}

#[tokio::test]
async fn key_administration_round_trip() {
    let cli = Cli::new().await;
    cli.ok(&["migrate"]);
    cli.ok(&[
        "accounts",
        "create",
        "acme",
        "--rate-limit",
        "10",
        "--burst",
        "20",
    ]);
    assert!(
        cli.fails(&["accounts", "create", "acme"])
            .contains("already exists")
    );
    assert!(
        cli.fails(&["keys", "create", "--account", "nobody"])
            .contains("does not exist")
    );

    // The key alone on stdout (`KEY=$(inlet keys create …)`), its id on
    // stderr.
    let created = cli.run(&["keys", "create", "--account", "acme", "--app", "shop"]);
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout).unwrap();
    let key = key.trim();
    assert!(key.starts_with("inlet_") && key.len() == 70, "{key}");
    let key_id = inlet_domain::ApiKey::parse_format(key)
        .unwrap()
        .key_id()
        .unwrap()
        .to_string();
    let stderr = String::from_utf8(created.stderr).unwrap();
    assert!(
        stderr.contains(&format!("created key {key_id} of account acme")) && !stderr.contains(key),
        "{stderr}"
    );
    // Both, with the key's record, as one JSON line.
    let json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["keys", "create", "--account", "acme", "--json"])).unwrap();
    let json_key = json["key"].as_str().unwrap();
    assert_eq!(
        json["key_id"].as_str().unwrap(),
        inlet_domain::ApiKey::parse_format(json_key)
            .unwrap()
            .key_id()
            .unwrap()
            .to_string()
    );
    assert_eq!(
        (json["account"].as_str(), json["state"].as_str()),
        (Some("acme"), Some("active"))
    );
    assert!(json["app"].is_null(), "{json}");
    cli.ok(&["keys", "revoke", json["key_id"].as_str().unwrap()]);
    let list = cli.ok(&["keys", "list", "--account", "acme"]);
    assert!(!list.contains(key), "the key is shown only once");
    assert!(!list.contains(&key[6..20]));
    let parsed = inlet_domain::ApiKey::parse_format(key).unwrap();
    let key_id = parsed.key_id().unwrap().to_string();
    assert!(
        list.contains(&key_id) && list.contains("active") && list.contains("shop"),
        "{list}"
    );

    // Only the digest is stored.
    let stored = cli
        .mongo
        .db()
        .collection::<mongodb::bson::Document>("api_keys")
        .find_one(mongodb::bson::doc! { "_id": &key_id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_str("digest").unwrap(), parsed.digest().to_hex());
    assert!(!stored.to_string().contains(key));

    assert!(cli.ok(&["keys", "revoke", &key_id]).contains("revoked"));
    assert!(
        cli.ok(&["keys", "list", "--json"])
            .contains("\"state\":\"revoked\"")
    );
    assert!(
        cli.fails(&["keys", "revoke", "xyz"])
            .contains("invalid key id")
    );
    assert!(cli.ok(&["keys", "activate", &key_id]).contains("activated"));
    assert!(
        cli.ok(&["keys", "list", "--json"])
            .contains("\"state\":\"active\"")
    );
    assert!(cli.ok(&["keys", "revoke", &key_id]).contains("revoked"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("legacy.csv");
    std::fs::write(&file, "# legacy keys\nacme,3f2504e0-4f89-11d3-9a0c-0305e82c3301\nacme,0c9e59b2-7a4b-4f36-9d2a-1b2c3d4e5f60,shop\n").unwrap();
    let f = file.to_str().unwrap();
    assert!(
        cli.ok(&["keys", "import", "--file", f])
            .contains("imported 2 keys (0 already present)")
    );
    assert!(
        cli.ok(&["keys", "import", "--file", f])
            .contains("imported 0 keys (2 already present)")
    );
    // A raw key the API would refuse is refused here, with its line.
    std::fs::write(&file, "acme,short-but-fine\nacme,inlet_notakey\n").unwrap();
    let err = cli.fails(&["keys", "import", "--file", f]);
    assert!(
        err.contains("line 2") && err.contains("inlet keys create"),
        "{err}"
    );

    // The created key, the one created with --json, the two imported.
    assert!(cli.ok(&["sync", "--once"]).contains("loaded 4 keys"));
    assert!(
        cli.ok(&["accounts", "suspend", "acme"])
            .contains("suspended")
    );
    assert!(cli.ok(&["accounts", "list"]).contains("suspended"));
    assert!(
        cli.ok(&["accounts", "activate", "acme"])
            .contains("activated")
    );
    cli.mongo.cleanup().await;
    cli.redis.cleanup().await;
}

#[tokio::test]
async fn bad_configuration_names_the_key() {
    let cli = Cli::new().await;
    let out = Command::new(env!("CARGO_BIN_EXE_inlet"))
        .arg("config")
        .env(
            "INLET_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"),
        )
        .env("INLET__AUTH__POSITIVE_TTL_S", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("auth.positive_ttl_s"), "{err}");
    drop(cli);
}

/// A worker that would dead-letter bodies its API accepts does not start:
/// it exits at once, naming the key, before connecting to anything.
#[tokio::test]
async fn a_worker_decoding_less_than_the_api_accepts_does_not_start() {
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut worker = Kill(
        Command::new(env!("CARGO_BIN_EXE_inlet"))
            .arg("worker")
            .env(
                "INLET_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"),
            )
            .env("INLET_ENV", "local")
            .env(
                "INLET__ADMIN__WORKER_LISTEN",
                format!("127.0.0.1:{}", inlet_testkit::free_port()),
            )
            .env("INLET__API__MAX_DECODED_BYTES", "8388608")
            .env("INLET__WORKER__MAX_DECODED_BYTES", "4194304")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = inlet_testkit::wait_for(
        std::time::Duration::from_secs(10),
        "the worker to refuse to start",
        || {
            let s = worker.0.try_wait().unwrap();
            async move { s }
        },
    )
    .await;
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut worker.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("worker.max_decoded_bytes") && err.contains("api.max_decoded_bytes"),
        "{err}"
    );
}

#[test]
fn config_prints_no_password_or_secret() {
    let secret = "5e".repeat(16) + &"a7".repeat(16);
    let out = Command::new(env!("CARGO_BIN_EXE_inlet"))
        .arg("config")
        .env(
            "INLET_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"),
        )
        .env("INLET_ENV", "local")
        .env("INLET__REDIS__URL", "redis://:redis-pw-1@cache:6379/0")
        .env(
            "INLET__MONGO__URL",
            "mongodb://inlet:mongo%2Fpw-2@db1:27017,db2:27017/?replicaSet=rs0&tlsCertificateKeyFilePassword=tls-pw-3",
        )
        .env("INLET__QUEUE__URL", "amqps://inlet:amqp-pw-4@broker:5671/%2f")
        .env("INLET__SIGNING__SECRETS__2", &secret)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for leak in [
        "redis-pw-1",
        "mongo%2Fpw-2",
        "tls-pw-3",
        "amqp-pw-4",
        "guest:guest",
        secret.as_str(),
    ] {
        assert!(
            !text.contains(leak),
            "`inlet config` printed {leak}:\n{text}"
        );
    }
    // What is not secret stays, so the output still answers "where does
    // this instance connect to?".
    for kept in [
        "redis://:***@cache:6379/0",
        "mongodb://inlet:***@db1:27017,db2:27017/?replicaSet=rs0&tlsCertificateKeyFilePassword=***",
        "amqps://inlet:***@broker:5671/%2f",
    ] {
        assert!(text.contains(kept), "{kept} missing:\n{text}");
    }
}

/// `inlet migrate --wait <wait>` against the MongoDB at `url`.
fn migrate_at(url: &str, wait: &str) -> tokio::process::Command {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_inlet"));
    cmd.args(["migrate", "--wait", wait])
        .env("INLET_CONFIG_DIR", config)
        .env("INLET_ENV", "local")
        .env("INLET__MONGO__URL", url)
        .env("INLET__MONGO__DATABASE", "migrate_waits")
        .env("INLET__LOG__FILTER", "warn")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `inlet migrate` against a MongoDB that is not up yet (compose starts
/// both at once): it waits, then applies everything.
#[tokio::test]
async fn migrate_waits_for_mongodb_to_come_up() {
    let mut mongo = inlet_testkit::SecantusServer::start(inlet_testkit::SecantusStorage::Memory);
    mongo.stop();
    let child = migrate_at(&mongo.url(), "60s").spawn().unwrap();
    // Longer than one server selection (2 s): a single try would give up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    mongo.restart();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("migrate finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("applied migration 0001"), "{stdout}");
    assert!(stderr.contains("waiting for MongoDB"), "{stderr}");
}

/// Nothing comes up: `migrate` gives up at its deadline and says why.
#[tokio::test]
async fn migrate_gives_up_at_its_deadline_with_a_clear_message() {
    let url = format!(
        "mongodb://127.0.0.1:{}/?retryWrites=false",
        inlet_testkit::free_port()
    );
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(30), migrate_at(&url, "3s").output())
        .await
        .expect("migrate gave up")
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a writable primary after 3s"),
        "{stderr}"
    );
}

/// `inlet check` with the given environment on top of the test services.
fn check(cli: &Cli, amqp: &TestAmqp, env: &[(&str, &str)]) -> Output {
    let mut cmd = cli.command(&["check", "--timeout", "5s"]);
    cmd.env("INLET__QUEUE__URL", &amqp.url)
        .env("INLET__QUEUE__PREFIX", &amqp.prefix)
        .env("INLET__LOG__FILTER", "error");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run inlet check")
}

fn line<'o>(stdout: &'o str, name: &str) -> &'o str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} line in:\n{stdout}"))
}

#[tokio::test]
async fn check_says_one_line_per_dependency() {
    let cli = Cli::new().await;
    let amqp = TestAmqp::new();
    // Before `migrate`: MongoDB answers, but the services would miss their
    // collections and indexes.
    let out = check(&cli, &amqp, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{stdout}");
    assert!(line(&stdout, "mongodb").contains("FAILED"), "{stdout}");
    assert!(
        line(&stdout, "mongodb").contains("run `inlet migrate`"),
        "{stdout}"
    );

    cli.ok(&["migrate"]);
    let out = check(&cli, &amqp, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(line(&stdout, "config").contains(" ok "), "{stdout}");
    assert!(line(&stdout, "redis").contains(" ok "), "{stdout}");
    assert!(
        line(&stdout, "redis").contains("not populated yet"),
        "{stdout}"
    );
    assert!(
        line(&stdout, "mongodb").contains("writable primary"),
        "{stdout}"
    );
    assert!(
        line(&stdout, "rabbitmq").contains("topology declared"),
        "{stdout}"
    );

    // Nothing listens where Redis and RabbitMQ are said to be (the AMQP
    // URL carries a password, which is never printed).
    let dead = inlet_testkit::free_port();
    let redis = format!("redis://127.0.0.1:{dead}");
    let dead_amqp = format!("amqp://guest:s3cret@127.0.0.1:{dead}/%2f");
    let started = Instant::now();
    let out = check(
        &cli,
        &amqp,
        &[
            ("INLET__REDIS__URL", &redis),
            ("INLET__QUEUE__URL", &dead_amqp),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(line(&stdout, "redis").contains("FAILED"), "{stdout}");
    assert!(line(&stdout, "rabbitmq").contains("FAILED"), "{stdout}");
    assert!(line(&stdout, "mongodb").contains(" ok "), "{stdout}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
    let names = inlet_queue::Names::new(
        &amqp.prefix,
        &inlet_queue::QueueSettings::default().retry_delays_ms,
    );
    amqp.delete_named(&names.all_queues(), &names.all_exchanges())
        .await;
    cli.mongo.cleanup().await;
    cli.redis.cleanup().await;
}

#[test]
fn completions_cover_every_subcommand_in_each_shell() {
    for (shell, marker) in [
        ("bash", "_inlet()"),
        ("zsh", "#compdef inlet"),
        ("fish", "complete -c inlet"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_inlet"))
            .args(["completions", shell])
            .env_remove("INLET_CONFIG_DIR")
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in [
            "check", "migrate", "keys", "accounts", "load", "push", "sync",
        ] {
            assert!(script.contains(sub), "{shell} completes no {sub}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

#[tokio::test]
async fn an_account_gets_its_own_rate_limit_and_the_default_back() {
    let cli = Cli::new().await;
    cli.ok(&["migrate"]);
    cli.ok(&["accounts", "create", "acme"]);
    let out = cli.ok(&[
        "accounts",
        "set-limit",
        "acme",
        "--rate-limit",
        "5",
        "--burst",
        "10",
    ]);
    assert_eq!(out.trim(), "account acme: 5/s burst 10 for each key");
    let listed = cli.ok(&["accounts", "list", "--json"]);
    let acme: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(
        acme["rate_limit"],
        serde_json::json!({"per_second": 5, "burst": 10})
    );
    let out = cli.ok(&["accounts", "set-limit", "acme", "--default"]);
    assert_eq!(out.trim(), "account acme: the server's default rate limit");
    assert!(cli.ok(&["accounts", "list"]).contains("default"));

    assert!(
        cli.fails(&["accounts", "set-limit", "nosuch", "--default"])
            .contains("nosuch")
    );
    assert!(
        cli.fails(&["accounts", "set-limit", "acme"])
            .contains("--rate-limit")
    );
    assert!(
        cli.fails(&[
            "accounts",
            "set-limit",
            "acme",
            "--rate-limit",
            "0",
            "--burst",
            "1"
        ])
        .contains("--rate-limit")
    );
    cli.mongo.cleanup().await;
    cli.redis.cleanup().await;
}

#[tokio::test]
async fn long_commands_show_progress_on_a_terminal_and_nothing_else_off_it() {
    let cli = Cli::new().await;
    cli.ok(&["migrate"]);
    cli.ok(&["accounts", "create", "acme"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("legacy.csv");
    let lines: String = (0..400)
        .map(|n| format!("acme,legacy-key-{n:04}\n"))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let f = file.to_str().unwrap();

    // Off a terminal (a pipe): the result line, and no bar on stderr.
    let out = cli.run(&["keys", "import", "--file", f]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "imported 400 keys (0 already present)\n"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("keys (") && !stderr.contains('\r'),
        "{stderr:?}"
    );

    // On a terminal: the bar is drawn while the import runs.
    let out = on_a_terminal(&cli.command(&["keys", "import", "--file", f]));
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{seen}");
    assert!(
        seen.contains("/400 keys"),
        "no progress bar on a terminal: {seen:?}"
    );
    assert!(
        seen.contains("imported 0 keys (400 already present)"),
        "{seen}"
    );

    // sync --once: a bar over MongoDB's estimate of the key documents.
    let out = on_a_terminal(&cli.command(&["sync", "--once"]));
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{seen}");
    assert!(
        seen.contains("/400 keys"),
        "no progress bar on a terminal: {seen:?}"
    );
    assert!(seen.contains("loaded 400 keys"), "{seen}");
    let out = cli.run(&["sync", "--once"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("loaded 400 keys"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("keys ("));
    cli.mongo.cleanup().await;
    cli.redis.cleanup().await;
}

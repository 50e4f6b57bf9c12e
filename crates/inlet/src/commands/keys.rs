//! `inlet keys …` and `inlet accounts …`: key administration
//! (`inlet_auth::key_admin`).

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use inlet_auth::RedisStore;
use inlet_auth::key_admin::{AccountInfo, KeyAdmin, KeyInfo, LegacyKey};
use inlet_domain::{AccountId, AccountState, AppName, KeyId, KeyState, RateLimit};

use crate::output::{Format, progress_bar, rfc3339};
use crate::settings::Settings;

/// `inlet keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue a key; it is printed exactly once (only its digest is stored).
    /// The key goes to stdout and its id to stderr, so `KEY=$(inlet keys
    /// create …)` captures only the key; `--json` prints both (and the
    /// rest of the key's record) as one JSON line on stdout.
    Create {
        /// Owning account.
        #[arg(long)]
        account: String,
        /// Restrict the key to one app.
        #[arg(long)]
        app: Option<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Revoke a key by id (running instances reject it within seconds).
    Revoke {
        /// The key id (16 hex digits, as shown by `inlet keys list`).
        key_id: String,
    },
    /// Re-activate a revoked key by id (undo a mistaken revocation).
    Activate {
        /// The key id (16 hex digits, as shown by `inlet keys list`).
        key_id: String,
    },
    /// List keys (id, account, state, app; never the key).
    List {
        /// Only this account's keys.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Import legacy keys: one `account,key[,app]` or `account,sha256:<digest>[,app]` per line
    /// (a key containing `,` must be given as its `sha256:` digest).
    Import {
        /// The file ("-" for stdin).
        #[arg(long)]
        file: PathBuf,
    },
}

/// `inlet accounts …`
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account.
    Create {
        /// The account id.
        id: String,
        /// Sustained requests per second for its keys (default: server default).
        #[arg(long, requires = "burst")]
        rate_limit: Option<u32>,
        /// Burst size for the rate limit.
        #[arg(long, requires = "rate_limit")]
        burst: Option<u32>,
    },
    /// Give an account its own rate limit for all its keys, or `--default` the server's again.
    SetLimit {
        /// The account id.
        id: String,
        /// Sustained requests per second for its keys.
        #[arg(
            long,
            requires = "burst",
            required_unless_present = "default",
            value_parser = clap::value_parser!(u32).range(1..)
        )]
        rate_limit: Option<u32>,
        /// Burst size for the rate limit.
        #[arg(long, requires = "rate_limit", value_parser = clap::value_parser!(u32).range(1..))]
        burst: Option<u32>,
        /// Remove its own limit: the server default applies.
        #[arg(long, conflicts_with_all = ["rate_limit", "burst"])]
        default: bool,
    },
    /// Suspend an account: its keys get 403.
    Suspend {
        /// The account id.
        id: String,
    },
    /// Re-activate a suspended account.
    Activate {
        /// The account id.
        id: String,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        format: Format,
    },
}

async fn admin(settings: &Settings) -> anyhow::Result<(KeyAdmin, inlet_auth::MongoStore)> {
    let mongo = super::mongo(settings).await?;
    let admin = KeyAdmin::new(mongo.clone());
    // Changes reach Redis at once when it is configured; if it is down they
    // still reach it through the key sync.
    let admin = match settings.auth.primary {
        inlet_auth::PrimaryStore::Redis => {
            admin.with_redis(RedisStore::new(&settings.redis).context("configuring Redis")?)
        }
        _ => admin,
    };
    Ok((admin, mongo))
}

/// Runs a `keys` subcommand.
pub async fn keys(settings: Settings, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    let (admin, mongo) = admin(&settings).await?;
    let result = keys_inner(&settings, &admin, cmd).await;
    super::close_mongo(&mongo).await;
    result
}

async fn keys_inner(
    settings: &Settings,
    admin: &KeyAdmin,
    cmd: KeysCommand,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        KeysCommand::Create {
            account,
            app,
            format,
        } => {
            let issuer = settings.signing.issuer()?.context(
                "no signing secret: set [signing] current and secrets (INLET__SIGNING__*)",
            )?;
            let account = AccountId::parse(&account)?;
            let app = app.as_deref().map(AppName::parse).transpose()?;
            let (key, info) = admin.create_key(&issuer, &account, app).await?;
            // The audit record, in production's JSON logs; the person at
            // the terminal gets the lines below.
            tracing::info!(key_id = %info.key_id, account = %info.account_id, "key created");
            // The only time the key is ever shown.
            if format.json {
                let mut json = key_json(&info);
                json["key"] = key.expose_secret().into();
                writeln!(out, "{json}")?;
            } else {
                writeln!(out, "{}", key.expose_secret())?;
                writeln!(
                    std::io::stderr(),
                    "created key {} of account {}",
                    info.key_id,
                    info.account_id
                )?;
            }
        }
        KeysCommand::Revoke { key_id } => {
            let doc = admin
                .set_key_state(parse_key_id(&key_id)?, KeyState::Revoked)
                .await?;
            writeln!(
                out,
                "revoked key {} of account {}",
                doc.key_id, doc.account_id
            )?;
        }
        KeysCommand::Activate { key_id } => {
            let doc = admin
                .set_key_state(parse_key_id(&key_id)?, KeyState::Active)
                .await?;
            writeln!(
                out,
                "activated key {} of account {}",
                doc.key_id, doc.account_id
            )?;
        }
        KeysCommand::List { account, format } => {
            let account = account.as_deref().map(AccountId::parse).transpose()?;
            let keys = admin.list_keys(account.as_ref()).await?;
            if format.json {
                for k in &keys {
                    writeln!(out, "{}", key_json(k))?;
                }
            } else {
                writeln!(
                    out,
                    "{:<16}  {:<20}  {:<8}  {:<6}  {:<12}  CREATED",
                    "KEY ID", "ACCOUNT", "STATE", "KIND", "APP"
                )?;
                for k in &keys {
                    writeln!(
                        out,
                        "{:<16}  {:<20}  {:<8}  {:<6}  {:<12}  {}",
                        k.key_id,
                        k.account_id,
                        state_label(k),
                        if k.legacy { "legacy" } else { "inlet" },
                        k.app.as_deref().unwrap_or("-"),
                        rfc3339(k.created_at_ms)
                    )?;
                }
            }
        }
        KeysCommand::Import { file } => {
            let reader: Box<dyn std::io::BufRead> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::new(
                    std::fs::File::open(&file)
                        .with_context(|| format!("opening {}", file.display()))?,
                ))
            };
            let mut entries = Vec::new();
            for (n, line) in reader.lines().enumerate() {
                let line = line?;
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match LegacyKey::parse_line(line) {
                    Ok(k) => entries.push(k),
                    Err(e) => bail!("line {}: {e}", n + 1),
                }
            }
            let bar = progress_bar(entries.len() as u64, "keys");
            let report = admin
                .import_legacy_reporting(&entries, |r| {
                    bar.set_position((r.created + r.existing) as u64);
                })
                .await;
            bar.finish_and_clear();
            let report = report?;
            writeln!(
                out,
                "imported {} keys ({} already present)",
                report.created, report.existing
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_key_id(text: &str) -> anyhow::Result<KeyId> {
    KeyId::parse(text).with_context(|| format!("invalid key id {text:?} (see `inlet keys list`)"))
}

fn state_label(k: &KeyInfo) -> &'static str {
    match k.state {
        inlet_domain::KeyState::Active => "active",
        inlet_domain::KeyState::Revoked => "revoked",
    }
}

fn key_json(k: &KeyInfo) -> serde_json::Value {
    serde_json::json!({
        "key_id": k.key_id,
        "account": k.account_id,
        "state": state_label(k),
        "legacy": k.legacy,
        "app": k.app,
        "created_at": rfc3339(k.created_at_ms),
        "updated_at": rfc3339(k.updated_at_ms),
    })
}

/// Runs an `accounts` subcommand.
pub async fn accounts(settings: Settings, cmd: AccountsCommand) -> anyhow::Result<ExitCode> {
    let (admin, mongo) = admin(&settings).await?;
    let result = accounts_inner(&admin, cmd).await;
    super::close_mongo(&mongo).await;
    result
}

async fn accounts_inner(admin: &KeyAdmin, cmd: AccountsCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        AccountsCommand::Create {
            id,
            rate_limit,
            burst,
        } => {
            let id = AccountId::parse(&id)?;
            let limit = match (rate_limit, burst) {
                (Some(per_second), Some(burst)) => Some(RateLimit { per_second, burst }),
                _ => None,
            };
            admin.create_account(&id, limit).await?;
            writeln!(out, "created account {id}")?;
        }
        AccountsCommand::SetLimit {
            id,
            rate_limit,
            burst,
            default: _,
        } => {
            let id = AccountId::parse(&id)?;
            let limit = match (rate_limit, burst) {
                (Some(per_second), Some(burst)) => Some(RateLimit { per_second, burst }),
                _ => None,
            };
            let account = admin.set_account_rate_limit(&id, limit).await?;
            match account.rate_limit {
                Some(r) => writeln!(
                    out,
                    "account {id}: {}/s burst {} for each key",
                    r.per_second, r.burst
                )?,
                None => writeln!(out, "account {id}: the server's default rate limit")?,
            }
        }
        AccountsCommand::Suspend { id } => {
            let id = AccountId::parse(&id)?;
            admin
                .set_account_state(&id, AccountState::Suspended)
                .await?;
            writeln!(out, "suspended account {id}")?;
        }
        AccountsCommand::Activate { id } => {
            let id = AccountId::parse(&id)?;
            admin.set_account_state(&id, AccountState::Active).await?;
            writeln!(out, "activated account {id}")?;
        }
        AccountsCommand::List { format } => {
            let accounts = admin.list_accounts().await?;
            if format.json {
                for a in &accounts {
                    writeln!(out, "{}", account_json(a))?;
                }
            } else {
                writeln!(
                    out,
                    "{:<24}  {:<9}  {:<14}  CREATED",
                    "ACCOUNT", "STATE", "RATE LIMIT"
                )?;
                for a in &accounts {
                    let limit = a.rate_limit.map_or_else(
                        || "default".to_owned(),
                        |r| format!("{}/s burst {}", r.per_second, r.burst),
                    );
                    let state = match a.state {
                        AccountState::Active => "active",
                        AccountState::Suspended => "suspended",
                    };
                    writeln!(
                        out,
                        "{:<24}  {:<9}  {:<14}  {}",
                        a.id,
                        state,
                        limit,
                        rfc3339(a.created_at_ms)
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn account_json(a: &AccountInfo) -> serde_json::Value {
    serde_json::json!({
        "account": a.id,
        "state": a.state,
        "rate_limit": a.rate_limit,
        "created_at": rfc3339(a.created_at_ms),
    })
}

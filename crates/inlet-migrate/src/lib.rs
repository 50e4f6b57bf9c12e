//! Versioned, idempotent MongoDB migrations.
//!
//! A migration is a JSON file `migrations/NNNN_name.json`:
//!
//! ```json
//! { "description": "…", "commands": [ { "createIndexes": "api_keys", "indexes": [ … ] } ] }
//! ```
//!
//! Each command is a MongoDB database command, run in order. Applied
//! migrations are recorded in `_migrations` (`_id` = version, name, SHA-256
//! of the file, `applied_at`), so a second run applies nothing. Commands are
//! written to be safe to repeat (`createIndexes` is; `create` of an
//! existing collection is treated as done), so a run interrupted midway is
//! simply completed by the next one. A migration edited after it was
//! applied is refused: write a new one instead.
//!
//! The runner knows no collection of its own besides `_migrations`: the
//! migrations Inlet ships ([`shipped`], from the repository's
//! `migrations/`) create the key store's collections (`inlet-auth`) and the
//! worker's aggregates (`inlet-worker`) alike, so both, and the `inlet
//! migrate` command, use this crate. No features.
//!
//! # Using it from another service
//!
//! ```no_run
//! # async fn run(db: mongodb::Database) -> Result<(), inlet_migrate::MigrateError> {
//! use inlet_migrate::{Migration, Migrator};
//!
//! let migrations = Migration::load_dir(std::path::Path::new("migrations"))?;
//! let applied = Migrator::new(db, migrations)?.run().await?;
//! println!("applied {applied:?}");
//! # Ok(()) }
//! ```

use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt as _;
use mongodb::Database;
use mongodb::bson::{self, Document, doc};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

/// The collection recording applied migrations.
pub const MIGRATIONS: &str = "_migrations";

/// Error codes that mean "already done" for the commands migrations use.
const ALREADY_DONE: &[i32] = &[
    48, // NamespaceExists: `create` of an existing collection
];

/// One migration.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// Its version (the file's number).
    pub version: u32,
    /// Its name (the file name without number and extension).
    pub name: String,
    /// What it does.
    pub description: String,
    /// The commands, in order.
    pub commands: Vec<Document>,
    /// SHA-256 (hex) of the file text.
    pub checksum: String,
}

/// Why migrations could not run.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A migration file is not usable.
    #[error("migration {file}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// An applied migration's file changed since.
    #[error(
        "migration {version} ({name}) was changed after it was applied; add a new migration instead"
    )]
    Changed {
        /// Its version.
        version: u32,
        /// Its name.
        name: String,
    },
    /// A command failed.
    #[error("migration {version}, command {index}: {reason}")]
    Command {
        /// The migration.
        version: u32,
        /// Which command (0-based).
        index: usize,
        /// The server's error.
        reason: String,
    },
    /// The database failed.
    #[error("MongoDB: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// MongoDB did not answer as a writable primary in time.
    #[error("MongoDB is not a writable primary after {}: {reason}", humantime::format_duration(*waited))]
    NotWritable {
        /// How long it was waited for.
        waited: Duration,
        /// The last answer, or why there was none.
        reason: String,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrationFile {
    description: String,
    commands: Vec<serde_json::Value>,
}

impl Migration {
    /// Parses a migration from its file name (`NNNN_name.json`) and text.
    pub fn parse(file_name: &str, text: &str) -> Result<Migration, MigrateError> {
        let invalid = |reason: String| MigrateError::Invalid {
            file: file_name.to_owned(),
            reason,
        };
        let stem = file_name
            .strip_suffix(".json")
            .ok_or_else(|| invalid("file name must end in .json".into()))?;
        let (number, name) = stem
            .split_once('_')
            .ok_or_else(|| invalid("file name must be NNNN_name.json".into()))?;
        let version: u32 = number
            .parse()
            .map_err(|_| invalid("file name must start with a number".into()))?;
        let file: MigrationFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let commands = file
            .commands
            .into_iter()
            .map(|c| match bson::to_document(&c) {
                Ok(d) if !d.is_empty() => Ok(d),
                Ok(_) => Err(invalid("a command is empty".into())),
                Err(e) => Err(invalid(e.to_string())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Migration {
            version,
            name: name.to_owned(),
            description: file.description,
            commands,
            checksum: hex::encode(Sha256::digest(text.as_bytes())),
        })
    }

    /// Loads every `*.json` migration in a directory, sorted by version.
    pub fn load_dir(dir: &Path) -> Result<Vec<Migration>, MigrateError> {
        let entries = std::fs::read_dir(dir).map_err(|e| MigrateError::Invalid {
            file: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") {
                continue;
            }
            let text =
                std::fs::read_to_string(entry.path()).map_err(|e| MigrateError::Invalid {
                    file: name.clone(),
                    reason: e.to_string(),
                })?;
            out.push(Migration::parse(&name, &text)?);
        }
        sort_and_check(out)
    }
}

/// The migrations shipped with this build (embedded from the repository's
/// `migrations/`; a test checks that every file there is listed here).
pub fn shipped() -> Result<Vec<Migration>, MigrateError> {
    const FILES: &[(&str, &str)] = &[
        (
            "0001_keys_and_accounts.json",
            include_str!("../../../migrations/0001_keys_and_accounts.json"),
        ),
        (
            "0002_aggregates.json",
            include_str!("../../../migrations/0002_aggregates.json"),
        ),
        (
            "0003_cumulative.json",
            include_str!("../../../migrations/0003_cumulative.json"),
        ),
    ];
    let migrations = FILES
        .iter()
        .map(|(name, text)| Migration::parse(name, text))
        .collect::<Result<Vec<_>, _>>()?;
    sort_and_check(migrations)
}

/// Sorts by version and rejects duplicate versions.
pub fn sort_and_check(mut migrations: Vec<Migration>) -> Result<Vec<Migration>, MigrateError> {
    migrations.sort_by_key(|m| m.version);
    for pair in migrations.windows(2) {
        if pair[0].version == pair[1].version {
            return Err(MigrateError::Invalid {
                file: pair[1].name.clone(),
                reason: format!("version {} is used twice", pair[1].version),
            });
        }
    }
    Ok(migrations)
}

/// The state of one migration.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationStatus {
    /// Version.
    pub version: u32,
    /// Name.
    pub name: String,
    /// When it was applied, Unix ms, if it was.
    pub applied_at_ms: Option<i64>,
    /// Whether the file still matches what was applied.
    pub unchanged: bool,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Applied {
    #[serde(rename = "_id")]
    version: u32,
    name: String,
    checksum: String,
    state: String,
    applied_at: Option<bson::DateTime>,
}

/// Applies migrations to a database.
#[derive(Debug, Clone)]
pub struct Migrator {
    db: Database,
    migrations: Vec<Migration>,
}

impl Migrator {
    /// A migrator for `migrations` (sorted, unique versions).
    pub fn new(db: Database, migrations: Vec<Migration>) -> Result<Self, MigrateError> {
        Ok(Migrator {
            db,
            migrations: sort_and_check(migrations)?,
        })
    }

    /// Waits until MongoDB answers `hello` as a writable primary: a server
    /// still starting, or a replica set still electing (or not initiated
    /// yet), is waited for until `wait` has passed. Each try is bounded by
    /// the client's server selection timeout.
    pub async fn wait_writable_primary(&self, wait: Duration) -> Result<(), MigrateError> {
        let deadline = Instant::now() + wait;
        let mut said = false;
        loop {
            let reason = match self.db.run_command(doc! { "hello": 1 }).await {
                Ok(reply) if reply.get_bool("isWritablePrimary").unwrap_or(false) => return Ok(()),
                Ok(_) => "it answers, but is not a writable primary (a replica set not \
                          initiated yet, or electing)"
                    .to_owned(),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(MigrateError::NotWritable {
                    waited: wait,
                    reason,
                });
            }
            if !said {
                tracing::warn!(
                    %reason,
                    "waiting for MongoDB to be a writable primary (up to {})",
                    humantime::format_duration(wait)
                );
                said = true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(Duration::from_millis(500).min(left)).await;
        }
    }

    async fn applied(&self) -> Result<Vec<Applied>, MigrateError> {
        self.db
            .collection::<Applied>(MIGRATIONS)
            .find(doc! {})
            .await?
            .try_collect()
            .await
            .map_err(Into::into)
    }

    /// Every known migration and whether it was applied.
    pub async fn status(&self) -> Result<Vec<MigrationStatus>, MigrateError> {
        let applied = self.applied().await?;
        Ok(self
            .migrations
            .iter()
            .map(|m| {
                let a = applied
                    .iter()
                    .find(|a| a.version == m.version && a.state == "applied");
                MigrationStatus {
                    version: m.version,
                    name: m.name.clone(),
                    applied_at_ms: a.and_then(|a| a.applied_at).map(|t| t.timestamp_millis()),
                    unchanged: a.is_none_or(|a| a.checksum == m.checksum),
                }
            })
            .collect())
    }

    /// Applies every migration not applied yet, in order. Returns the
    /// versions applied by this run (empty when up to date).
    pub async fn run(&self) -> Result<Vec<u32>, MigrateError> {
        let applied = self.applied().await?;
        let mut done = Vec::new();
        for m in &self.migrations {
            let previous = applied.iter().find(|a| a.version == m.version);
            match previous {
                Some(a) if a.checksum != m.checksum => {
                    return Err(MigrateError::Changed {
                        version: m.version,
                        name: m.name.clone(),
                    });
                }
                Some(a) if a.state == "applied" => continue,
                _ => {}
            }
            self.apply(m).await?;
            done.push(m.version);
        }
        Ok(done)
    }

    async fn apply(&self, m: &Migration) -> Result<(), MigrateError> {
        let log = self.db.collection::<Applied>(MIGRATIONS);
        log.replace_one(
            doc! { "_id": m.version },
            Applied {
                version: m.version,
                name: m.name.clone(),
                checksum: m.checksum.clone(),
                state: "applying".into(),
                applied_at: None,
            },
        )
        .upsert(true)
        .await?;
        for (index, command) in m.commands.iter().enumerate() {
            if let Err(e) = self.db.run_command(command.clone()).await {
                let code = command_error_code(&e);
                if code.is_some_and(|c| ALREADY_DONE.contains(&c)) {
                    continue;
                }
                return Err(MigrateError::Command {
                    version: m.version,
                    index,
                    reason: e.to_string(),
                });
            }
        }
        log.update_one(
            doc! { "_id": m.version },
            doc! { "$set": { "state": "applied", "applied_at": bson::DateTime::now() } },
        )
        .await?;
        tracing::info!(version = m.version, name = %m.name, "migration applied");
        Ok(())
    }
}

fn command_error_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_names_and_commands() {
        let m = Migration::parse(
            "0003_add_things.json",
            r#"{"description": "d", "commands": [{"createIndexes": "x", "indexes": []}]}"#,
        )
        .unwrap();
        assert_eq!((m.version, m.name.as_str()), (3, "add_things"));
        assert_eq!(m.commands.len(), 1);
        assert_eq!(m.checksum.len(), 64);
        for (name, text) in [
            ("x.json", "{}"),
            ("0001_x.txt", "{}"),
            ("abc_x.json", r#"{"description":"","commands":[]}"#),
            ("0001_x.json", r#"{"description":"","commands":[{}]}"#),
            (
                "0001_x.json",
                r#"{"description":"","commands":[], "extra": 1}"#,
            ),
        ] {
            assert!(Migration::parse(name, text).is_err(), "{name}: {text}");
        }
        let a = Migration::parse("0001_a.json", r#"{"description":"","commands":[]}"#).unwrap();
        let b = Migration::parse("0001_b.json", r#"{"description":"","commands":[]}"#).unwrap();
        assert!(sort_and_check(vec![a, b]).is_err());
    }

    #[test]
    fn shipped_migrations_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let all = Migration::load_dir(&dir).unwrap();
        assert!(!all.is_empty());
        assert_eq!(all[0].version, 1);
    }

    #[test]
    fn every_migration_file_is_shipped() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let on_disk = Migration::load_dir(&dir).unwrap();
        assert_eq!(
            on_disk,
            shipped().unwrap(),
            "add new migrations to shipped()"
        );
    }
}

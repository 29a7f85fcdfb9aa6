//! `lectern admin …`: operator commands for organisations, users, partner
//! keys, key rotation, the audit log and the media replica (`replicate`). Each command that changes
//! something is itself audited, with the operator's login as the actor.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use lectern_identity::audit::checkpoint::{self, Verdict};
use lectern_identity::audit::{self, AuditEvent};
use lectern_identity::{password, users};
use lectern_secrets::{Keyring, FIELD_KEYS_VAR};
use lectern_web::Role;
use sqlx::PgPool;

use crate::config::Config;
use crate::database::Database;

#[derive(Parser)]
#[command(name = "lectern admin", about = "Operator commands")]
struct AdminCli {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an organisation (a tenant).
    CreateOrg { name: String },
    /// Create a user; the password is read from stdin, or generated and
    /// printed once when stdin is a terminal.
    CreateUser {
        /// The organisation; omit only for a global super admin.
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        email: String,
        /// learner, expert, partner, content_admin or super_admin.
        #[arg(long)]
        role: String,
    },
    /// Create a content partner's API key; it is printed once.
    CreatePartnerKey {
        #[arg(long)]
        org: String,
        /// A label to recognise the key by.
        #[arg(long, default_value = "partner")]
        name: String,
    },
    /// Revoke a partner API key by its id.
    RevokePartnerKey { key_id: uuid::Uuid },
    /// Re-encrypt personal data still sealed with an older field key.
    RotateKeys {
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
    /// Check the audit log's keyed hash chain, and its head against the
    /// newest signed checkpoint in object storage; names the first bad row
    /// or the rows missing from the end.
    VerifyAudit,
    /// Write a signed checkpoint of the audit log's head to object storage
    /// now (`serve` writes one every LECTERN_AUDIT_CHECKPOINT_INTERVAL).
    CheckpointAudit,
    /// Remove audit rows older than LECTERN_AUDIT_RETENTION_DAYS.
    PurgeAudit,
    /// Copy object storage incrementally into a replica bucket or
    /// directory (the media backup): only new or changed objects; run
    /// again to continue; deletes nothing unless --prune-after-days.
    Replicate(crate::replicate::ReplicateArgs),
}

pub async fn run(config: Config, args: Vec<String>) -> Result<ExitCode> {
    let cli =
        match AdminCli::try_parse_from(std::iter::once("lectern admin".to_string()).chain(args)) {
            Ok(cli) => cli,
            Err(e) => {
                let _ = e.print();
                return Ok(if e.use_stderr() {
                    ExitCode::from(crate::EXIT_BAD_INPUT)
                } else {
                    ExitCode::SUCCESS
                });
            }
        };
    // Object storage only: no database needed (nor opened).
    let command = match cli.command {
        AdminCommand::Replicate(args) => return crate::replicate::run(&config, args).await,
        other => other,
    };
    let db = Database::open(&config).await?;
    db.migrate().await?;
    let result = execute(&config, &db.pool, command).await;
    db.close().await;
    result
}

fn keyring(config: &Config) -> Result<Keyring> {
    config.keyring()?.with_context(|| {
        format!("{FIELD_KEYS_VAR}, LECTERN_BLIND_INDEX_KEY and LECTERN_TOKEN_KEY must be configured with an external database")
    })
}

/// The audit chain's key: the identity keys' when configured (always in
/// embedded mode); without them rows are chained unkeyed.
fn chain_key(config: &Config) -> Option<audit::ChainKey> {
    config
        .keyring()
        .ok()
        .flatten()
        .map(|k| audit::ChainKey::from_keyring(&k))
}

async fn audited(config: &Config, db: &PgPool, action: &str, target: String) -> Result<()> {
    let operator = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    audit::record(
        db,
        chain_key(config).as_ref(),
        &AuditEvent {
            actor: Some(format!("cli:{operator}")),
            action: action.to_string(),
            target: Some(target),
            outcome: "ok",
            ..AuditEvent::default()
        },
    )
    .await
    .context("writing the audit record")?;
    Ok(())
}

async fn execute(config: &Config, db: &PgPool, command: AdminCommand) -> Result<ExitCode> {
    match command {
        AdminCommand::CreateOrg { name } => {
            let id = users::create_organisation(db, &name).await?;
            audited(config, db, "admin.create-org", format!("org:{id}")).await?;
            println!("{id}");
        }
        AdminCommand::CreateUser { org, email, role } => {
            let keys = keyring(config)?;
            let role: Role = role
                .parse()
                .map_err(|e: lectern_web::ApiError| anyhow::anyhow!(e.message))?;
            let org_id = match org {
                Some(name) => Some(users::organisation_id(db, &name).await?),
                None => None,
            };
            // A password piped on stdin is used; at a terminal (or with
            // nothing piped) one is generated and shown once.
            let mut piped = String::new();
            if !std::io::stdin().is_terminal() {
                std::io::stdin()
                    .lock()
                    .read_line(&mut piped)
                    .context("reading the password from stdin")?;
            }
            let piped = piped.trim_end_matches(['\r', '\n']).to_string();
            let (password, generated) = if piped.is_empty() {
                (password::generate(), true)
            } else {
                (piped, false)
            };
            let id = users::create_user(
                db,
                &keys,
                users::NewUser {
                    org_id,
                    email: &email,
                    role,
                    password: &password,
                },
            )
            .await?;
            audited(config, db, "admin.create-user", format!("user:{id}")).await?;
            println!("user {id}");
            if generated {
                println!("password (shown once): {password}");
            }
        }
        AdminCommand::CreatePartnerKey { org, name } => {
            let org_id = users::organisation_id(db, &org).await?;
            let (id, key) = users::create_partner_key(db, org_id, &name).await?;
            audited(config, db, "admin.create-partner-key", format!("key:{id}")).await?;
            eprintln!("partner key {id} for {org}; it is shown once, store it now:");
            println!("{key}");
        }
        AdminCommand::RevokePartnerKey { key_id } => {
            if !users::revoke_partner_key(db, key_id).await? {
                eprintln!("lectern admin: no active partner key {key_id}");
                return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
            }
            audited(
                config,
                db,
                "admin.revoke-partner-key",
                format!("key:{key_id}"),
            )
            .await?;
            println!("revoked {key_id}");
        }
        AdminCommand::RotateKeys { batch } => {
            let keys = keyring(config)?;
            let changed = users::rotate_keys(db, &keys, batch.max(1)).await?;
            audited(
                config,
                db,
                "admin.rotate-keys",
                format!("key:{}", keys.active_key_id()),
            )
            .await?;
            println!(
                "re-encrypted {changed} rows with key {}",
                keys.active_key_id()
            );
        }
        AdminCommand::VerifyAudit => {
            let key = keyring(config).map(|k| audit::ChainKey::from_keyring(&k))?;
            let report = audit::verify(db, Some(&key)).await?;
            if let Some(row) = report.first_bad_row {
                eprintln!("audit chain broken at row {row}: it was altered, removed or inserted");
                return Ok(ExitCode::FAILURE);
            }
            let store = crate::process::open_store(&config.storage).await?;
            let head = report.head.unwrap_or(0);
            match checkpoint::check(db, store.as_ref(), &key).await? {
                Verdict::None => println!(
                    "audit chain intact: {} rows verified, head row {head}; no checkpoint yet",
                    report.rows_checked
                ),
                Verdict::Matches { checkpoint } => println!(
                    "audit chain intact: {} rows verified, head row {head}; checkpoint of {} at row {} matches",
                    report.rows_checked, checkpoint.at, checkpoint.last_id
                ),
                Verdict::Truncated { checkpoint, table_head } => {
                    eprintln!(
                        "audit log truncated: rows {}–{} are missing from its end (the checkpoint of {} recorded row {}; the table ends at row {table_head})",
                        table_head + 1,
                        checkpoint.last_id,
                        checkpoint.at,
                        checkpoint.last_id
                    );
                    return Ok(ExitCode::FAILURE);
                }
                Verdict::Diverged { checkpoint } => {
                    eprintln!(
                        "audit chain diverged: row {} is not the row the checkpoint of {} recorded (rows were removed and others written in their place)",
                        checkpoint.last_id, checkpoint.at
                    );
                    return Ok(ExitCode::FAILURE);
                }
                Verdict::Forged { checkpoint } => {
                    eprintln!(
                        "audit checkpoint for row {} is not signed with this deployment's key",
                        checkpoint.last_id
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        AdminCommand::CheckpointAudit => {
            let key = keyring(config).map(|k| audit::ChainKey::from_keyring(&k))?;
            let store = crate::process::open_store(&config.storage).await?;
            match checkpoint::write(db, store.as_ref(), &key).await? {
                Some(c) => println!("audit checkpoint written: row {} at {}", c.last_id, c.at),
                None => println!("audit checkpoint unchanged: the newest one names the head"),
            }
        }
        AdminCommand::Replicate(_) => unreachable!("handled before the database is opened"),
        AdminCommand::PurgeAudit => {
            let gone = audit::purge(db, config.settings.audit_retention_days).await?;
            audited(config, db, "admin.purge-audit", format!("rows:{gone}")).await?;
            println!(
                "purged {gone} audit rows older than {} days",
                config.settings.audit_retention_days
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `--export-contacts FILE`: the contacts CSV built from the DevRev API, for orgs without a
//! warehouse export. Same columns as the warehouse export, so every other command reads it
//! unchanged.
//!
//! `TICKET_COUNT` costs one `works.list` walk per contact, so it is counted only where the
//! plan uses it: contacts that share an email with another contact. Every other row leaves it
//! empty, which the plan reads as "unknown" (it only affects the time estimate).
//!
//! The counts are the expensive part: they are checkpointed next to the output
//! (`<FILE>.export-progress.json`, 0600) as they come, so after Ctrl-C or an API failure the
//! same command resumes where it stopped. The CSV itself is written once, atomically, at the end.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing_indicatif::span_ext::IndicatifSpanExt;

use crate::config::Config;
use crate::detect::{in_domain, normalize_email};
use crate::devrev::types::RevUser;
use crate::devrev::{ApiError, DevRevClient};
use crate::error::AppError;
use crate::fsutil;
use crate::preview::human_duration;

/// The warehouse export's columns, in its order.
pub const COLUMNS: [&str; 8] = [
    "REV_USER_ID",
    "DISPLAY_NAME",
    "EMAIL",
    "EXTERNAL_REF",
    "FULL_NAME",
    "CREATED_AT",
    "UPDATED_AT",
    "TICKET_COUNT",
];

/// Contacts counted at once (the client's pacer still bounds the rate).
const CONCURRENCY: usize = 4;

/// Counts between two checkpoint writes.
const CHECKPOINT_EVERY: usize = 25;

/// What an interrupted export keeps: the ticket counts made so far, for the same domain.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    kind: String,
    email_domain: Option<String>,
    counts: BTreeMap<String, u64>,
}

const PROGRESS_KIND: &str = "devrev-merge export progress";

/// Runs `--export-contacts output`.
pub async fn run(cfg: &Config, output: &Path, force: bool) -> Result<(), AppError> {
    let client = DevRevClient::new(cfg.client_config()?)?;
    // Hours of API calls must not end in "cannot write": try the folder first.
    check_writable(output)?;
    let progress_path = progress_path(output);
    let mut progress = load_progress(&progress_path, cfg);

    cfg.printer.note(&format!(
        "Listing every contact (rev-users.list, one call per {} contacts)...\n",
        cfg.page_size
    ));
    let users = list_contacts(&client, cfg.email_domain.as_deref()).await?;
    let shared = sharing_an_email(&users);
    let todo: Vec<&str> = shared
        .iter()
        .copied()
        .filter(|id| !progress.counts.contains_key(*id))
        .collect();
    let secs = todo.len() as f64 * cfg.rate_limit_period.as_secs_f64()
        / f64::from(cfg.rate_limit_calls.max(1));
    cfg.printer.note(&format!(
        "{} contact(s), {} share an email with another contact: counting their tickets takes \
         at least {} works.list call(s){}, about {} at {} calls per {} s.\n",
        users.len(),
        shared.len(),
        todo.len(),
        if progress.counts.is_empty() {
            String::new()
        } else {
            format!(
                " ({} already counted by an interrupted export)",
                shared.len() - todo.len()
            )
        },
        human_duration(secs),
        cfg.rate_limit_calls,
        cfg.rate_limit_period.as_secs_f64()
    ));

    let counted = count_tickets(&client, &todo, &mut progress, &progress_path).await;
    if let Err(stop) = counted {
        save_progress(&progress_path, &progress)?;
        let done = shared.len() - todo.len() + stop.counted;
        let again = format!(
            "{done} of {} ticket counts are saved in {}; run the same command again to resume \
             (or delete that file to start over)",
            shared.len(),
            progress_path.display()
        );
        return Err(match stop.error {
            None => AppError::Interrupted(format!("export interrupted: {again}")),
            Some(e) => {
                tracing::error!("{again}");
                AppError::Api(e)
            }
        });
    }

    let shared_set: std::collections::HashSet<&str> = shared.iter().copied().collect();
    let rows = users.iter().map(|u| {
        let count = shared_set
            .contains(u.id.as_str())
            .then(|| progress.counts.get(&u.id).copied())
            .flatten();
        row(u, count)
    });
    write_csv(output, force, rows)?;
    let _ = std::fs::remove_file(&progress_path);
    cfg.printer.note(&format!(
        "Wrote {} contact(s) to {} ({} API calls). TICKET_COUNT is filled in for the {} \
         contact(s) that share an email and empty (unknown) for the others.\n\
         Next: devrev-merge --csv {} --preview\n",
        users.len(),
        output.display(),
        client.totals().calls,
        shared.len(),
        output.display()
    ));
    Ok(())
}

/// `<FILE>.export-progress.json` next to the output.
fn progress_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".export-progress.json");
    output.with_file_name(name)
}

/// The counts of an interrupted export for the same domain; anything else starts over.
fn load_progress(path: &Path, cfg: &Config) -> Progress {
    let fresh = Progress {
        kind: PROGRESS_KIND.into(),
        email_domain: cfg.email_domain.clone(),
        counts: BTreeMap::new(),
    };
    let Ok(bytes) = std::fs::read(path) else {
        return fresh;
    };
    match serde_json::from_slice::<Progress>(&bytes) {
        Ok(p) if p.kind == PROGRESS_KIND && p.email_domain == cfg.email_domain => {
            cfg.printer.note(&format!(
                "Resuming: {} ticket count(s) from an interrupted export ({}).\n",
                p.counts.len(),
                path.display()
            ));
            p
        }
        _ => {
            tracing::warn!(
                "{} is not the progress of this export; starting over",
                path.display()
            );
            fresh
        }
    }
}

fn save_progress(path: &Path, p: &Progress) -> Result<(), AppError> {
    fsutil::write_json_atomic(path, p).map_err(|e| {
        AppError::CantCreate(format!(
            "cannot save the export's progress to {}: {e}",
            path.display()
        ))
    })
}

/// Creates the output's folder (0700) and a throw-away file in it.
fn check_writable(output: &Path) -> Result<(), AppError> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fsutil::create_private_dir(dir)
        .and_then(|()| tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir))
        .map(drop)
        .map_err(|e| {
            AppError::CantCreate(format!(
                "cannot write {}: {e}; choose another file name or folder",
                output.display()
            ))
        })
}

/// Every rev user (in `domain` if given) once, oldest first like the warehouse export.
async fn list_contacts(
    client: &DevRevClient,
    domain: Option<&str>,
) -> Result<Vec<RevUser>, AppError> {
    let listed: Vec<RevUser> = client.rev_users_list(serde_json::json!({})).await?;
    // Cursors are offsets: a contact created while paging can shift another one onto the
    // next page twice.
    let mut seen = std::collections::HashSet::new();
    let mut users: Vec<RevUser> = listed
        .into_iter()
        .filter(|u| seen.insert(u.id.clone()))
        .filter(|u| {
            domain.is_none_or(|d| {
                u.email
                    .as_deref()
                    .is_some_and(|e| in_domain(&normalize_email(e), d))
            })
        })
        .collect();
    users.sort_by_cached_key(|u| (timestamp(u, "created_date"), u.id.clone()));
    Ok(users)
}

/// The ids of contacts whose normalized email another contact has too, in list order.
fn sharing_an_email(users: &[RevUser]) -> Vec<&str> {
    let mut by_email: HashMap<String, usize> = HashMap::new();
    for u in users {
        if let Some(e) = u
            .email
            .as_deref()
            .map(normalize_email)
            .filter(|e| !e.is_empty())
        {
            *by_email.entry(e).or_default() += 1;
        }
    }
    users
        .iter()
        .filter(|u| {
            u.email
                .as_deref()
                .map(normalize_email)
                .is_some_and(|e| by_email.get(&e).is_some_and(|n| *n > 1))
        })
        .map(|u| u.id.as_str())
        .collect()
}

/// Why counting stopped: Ctrl-C (`error == None`) or an API failure after retries.
struct Stopped {
    counted: usize,
    error: Option<ApiError>,
}

/// Counts the tickets of `ids` into `progress`, with a progress bar, saving it to `path`
/// every few counts (a crash loses at most those).
async fn count_tickets(
    client: &DevRevClient,
    ids: &[&str],
    progress: &mut Progress,
    path: &Path,
) -> Result<(), Stopped> {
    if ids.is_empty() {
        return Ok(());
    }
    let span = crate::progress_span!("counting tickets", ids.len());
    span.in_scope(|| {});
    let mut stream = futures_util::stream::iter(ids.iter().copied())
        .map(|id| async move { (id, count_one(client, id).await) })
        .buffered(CONCURRENCY);
    // No listener (it could not be registered) means no press can be seen: count on.
    let mut ctrl_c = crate::platform::CtrlC::listen().ok();
    let mut counted = 0;
    loop {
        let pressed = async {
            match ctrl_c.as_mut() {
                Some(c) => c.pressed().await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            biased;
            Some(()) = pressed => {
                tracing::warn!("Ctrl-C: saving the counts made so far");
                return Err(Stopped { counted, error: None });
            }
            n = stream.next() => n,
        };
        match next {
            None => return Ok(()),
            Some((id, Ok(n))) => {
                progress.counts.insert(id.to_string(), n);
                counted += 1;
                span.pb_inc(1);
                if counted % CHECKPOINT_EVERY == 0
                    && let Err(e) = save_progress(path, progress)
                {
                    // Not fatal: the final CSV is what matters; a resume just counts more.
                    tracing::warn!("{e}");
                }
            }
            Some((_, Err(e))) => {
                return Err(Stopped {
                    counted,
                    error: Some(e),
                });
            }
        }
    }
}

/// Tickets whose `reported_by` lists `id` (all pages, each ticket once).
async fn count_one(client: &DevRevClient, id: &str) -> Result<u64, ApiError> {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let works: Vec<Id> = client.tickets_reported_by_as(&[id]).await?;
    let distinct: std::collections::HashSet<String> = works.into_iter().map(|w| w.id).collect();
    Ok(distinct.len() as u64)
}

/// A DevRev timestamp as the warehouse writes it (`2024-12-03 15:16:07.123`, UTC).
fn timestamp(u: &RevUser, key: &str) -> String {
    u.extra
        .get(key)
        .and_then(serde_json::Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|d| {
            d.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_default()
}

fn row(u: &RevUser, tickets: Option<u64>) -> [String; 8] {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        u.id.clone(),
        s(&u.display_name),
        s(&u.email),
        s(&u.external_ref),
        s(&u.full_name),
        timestamp(u, "created_date"),
        timestamp(u, "modified_date"),
        tickets.map(|n| n.to_string()).unwrap_or_default(),
    ]
}

/// The CSV, atomically and 0600; without `force` an existing file is left alone (73).
fn write_csv(
    output: &Path,
    force: bool,
    rows: impl Iterator<Item = [String; 8]>,
) -> Result<(), AppError> {
    fsutil::write_private_atomic_with(output, force, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(COLUMNS)?;
        for r in rows {
            csv.write_record(r.iter().map(|c| crate::spreadsheet::defuse(c).into_owned()))?;
        }
        csv.flush()
    })
    .map_err(|e| AppError::CantCreate(format!("cannot write {}: {e}", output.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, email: Option<&str>, created: &str) -> RevUser {
        let mut u = RevUser {
            id: id.into(),
            email: email.map(str::to_string),
            ..RevUser::default()
        };
        u.extra
            .insert("created_date".into(), serde_json::json!(created));
        u
    }

    #[test]
    fn only_contacts_sharing_a_normalized_email_are_counted() {
        let users = [
            user("a", Some("X@example.com "), "2024-01-01T00:00:00Z"),
            user("b", Some("x@example.com"), "2024-01-01T00:00:00Z"),
            user("c", Some("y@example.com"), "2024-01-01T00:00:00Z"),
            user("d", None, "2024-01-01T00:00:00Z"),
            user("e", Some(""), "2024-01-01T00:00:00Z"),
            user("f", Some(" "), "2024-01-01T00:00:00Z"),
        ];
        assert_eq!(sharing_an_email(&users), ["a", "b"]);
    }

    #[test]
    fn rows_look_like_the_warehouse_export() {
        let u = user("don:x", Some("a@b.c"), "2024-12-03T15:16:07.1234567Z");
        let r = row(&u, None);
        assert_eq!(r[5], "2024-12-03 15:16:07.123");
        assert_eq!(r[6], "", "no modified_date: empty");
        assert_eq!(r[7], "", "not counted: empty, never 0");
        assert_eq!(row(&u, Some(0))[7], "0");
        assert_eq!(
            progress_path(Path::new("out/contacts.csv")),
            Path::new("out/contacts.csv.export-progress.json")
        );
    }
}

//! The standalone source: a directory of Kubernetes-shaped YAML files (several documents per
//! file), re-read when any file changes. A directory with an invalid document is refused as a
//! whole and the last good snapshot stays published: a typo never half-applies.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::watch;

use super::{Problem, Snapshot};

/// How often the directory's listing and file times are compared. Cheap (a stat per file);
/// the objects are only parsed when something changed.
pub const POLL: Duration = Duration::from_millis(200);

/// How long a changed directory must stay unchanged before it is read.
const SETTLE: Duration = Duration::from_millis(50);

/// What identifies a directory's content without reading it: names, sizes, times.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(dir: &Path) -> std::io::Result<Fingerprint> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        out.push((entry.path(), meta.len(), meta.modified().ok()));
    }
    out.sort();
    Ok(out)
}

/// Reads `dir` once: the first snapshot, or the error that refused it.
pub fn read(dir: &Path, revision: u64, last_good: &Snapshot) -> Snapshot {
    match mesh_api::objects::read_dir(dir) {
        Ok(objects) => Snapshot {
            objects,
            revision,
            problems: Vec::new(),
            istio_objects: Vec::new(),
        },
        Err(e) => {
            let (origin, message) = match &e {
                mesh_api::objects::SourceError::Io { path, message } => {
                    (path.display().to_string(), message.clone())
                }
                mesh_api::objects::SourceError::Invalid {
                    path,
                    document,
                    object,
                    message,
                } => (
                    format!("{} document {document}{object}", path.display()),
                    message.clone(),
                ),
            };
            Snapshot {
                objects: last_good.objects.clone(),
                revision,
                problems: vec![Problem { origin, message }],
                istio_objects: Vec::new(),
            }
        }
    }
}

/// Publishes a snapshot now and after every change of `dir`, until the receivers are gone.
pub fn watch(dir: PathBuf) -> super::Snapshots {
    // Fingerprint before reading: a change racing the first read is seen by the next poll.
    let mut seen = fingerprint(&dir).ok();
    let first = read(&dir, 1, &Snapshot::default());
    log(&first);
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(POLL).await;
            if tx.is_closed() {
                return;
            }
            let now = fingerprint(&dir).ok();
            if now == seen {
                continue;
            }
            // A writer may be half-way through a file: read once it has been still for a
            // moment, so a truncated file is not taken for the new state.
            tokio::time::sleep(SETTLE).await;
            if fingerprint(&dir).ok() != now {
                continue;
            }
            seen = now;
            let last = tx.borrow().clone();
            let next = read(&dir, last.revision + 1, &last);
            log(&next);
            tx.send_replace(Arc::new(next));
        }
    });
    rx
}

fn log(snapshot: &Snapshot) {
    match snapshot.problems.first() {
        None => tracing::info!(
            revision = snapshot.revision,
            objects = snapshot.objects.len(),
            "config directory read"
        ),
        Some(p) => {
            tracing::error!(revision = snapshot.revision, problem = %p, "config directory refused; keeping the last good objects")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_are_published_and_broken_files_keep_the_last_good_state() {
        let dir = std::env::temp_dir().join(format!("trellis-dir-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ns.yaml");
        std::fs::write(&file, "kind: Namespace\nmetadata: {name: a}\n").unwrap();
        let mut rx = watch(dir.clone());
        assert_eq!(rx.borrow().objects.len(), 1);

        std::fs::write(
            &file,
            "kind: Namespace\nmetadata: {name: a}\n---\nkind: Namespace\nmetadata: {name: b}\n",
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.borrow_and_update().objects.len(), 2);

        std::fs::write(&file, "kind: Namespace\nmetadata: {name: a\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        let snap = rx.borrow_and_update().clone();
        assert_eq!(snap.objects.len(), 2, "the last good objects stay");
        assert!(
            snap.problems[0].origin.ends_with("ns.yaml document 1"),
            "{:?}",
            snap.problems
        );
        assert!(snap.problems[0].message.contains("line"), "{:?}", snap.problems);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Reading a service's git repository with gix: resolving the revision a
//! span names, listing the commits merged between two revisions, and the
//! lines each commit added.
//!
//! The repository is opened afresh for every read, so a checkout that
//! git-sync updates in place is always seen as it is now.

use std::path::PathBuf;

use gix::bstr::ByteSlice;
use gix::diff::blob::{Algorithm, Diff, InternedInput, sources};

use super::classify::{Authorship, Classifier, CommitIdentity};
use super::notes::AuthorshipNote;

/// Commits read from one range at most; older ones are left out and said.
pub const MAX_COMMITS: usize = 1000;
/// Files of a revision listed at most, to map span paths into it.
pub(crate) const MAX_TREE_FILES: usize = 200_000;
/// Blobs larger than this are not diffed line by line.
const MAX_BLOB_BYTES: usize = 1 << 20;
/// Added lines kept per file, for evidence.
const MAX_ADDED_LINES: usize = 5000;
/// The notes reference git-ai writes.
pub(crate) const AI_NOTES_REF: &str = "refs/notes/ai";

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("cannot open git repository {path}: {message}; check [[git.repos]] path and that the directory is a git checkout")]
    Open { path: PathBuf, message: String },
    #[error("git repository {path}: {message}")]
    Read { path: PathBuf, message: String },
}

/// A file a commit changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Path from the repository root.
    pub path: String,
    /// Added lines: 1-based line number in the commit's version, text.
    pub added: Vec<(u32, String)>,
    pub lines_added: u32,
    pub lines_removed: u32,
    /// The file's content after the commit (for locating functions);
    /// empty for deleted, binary or oversized files.
    pub content: String,
}

/// One commit with what attribution needs of it.
#[derive(Debug, Clone)]
pub struct CommitRecord {
    pub id: String,
    pub summary: String,
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    pub committer_name: String,
    pub committer_email: String,
    /// Committer time, seconds since the epoch.
    pub committed_at: i64,
    pub parents: usize,
    pub authorship: Authorship,
    pub files: Vec<FileChange>,
    pub note: Option<AuthorshipNote>,
    /// The message of the merge commit in range that brought this commit
    /// in (its branch's side), which names the pull request when the
    /// commit's own message does not.
    pub merged_by: Option<String>,
}

impl CommitRecord {
    pub fn author(&self) -> String {
        format!("{} <{}>", self.author_name, self.author_email)
    }

    pub(crate) fn lines_changed(&self) -> u32 {
        self.files.iter().map(|f| f.lines_added + f.lines_removed).sum()
    }
}

/// A repository as configured for a service.
#[derive(Debug, Clone)]
pub struct RepoReader {
    pub path: PathBuf,
    /// Only changes below this directory count (monorepos).
    pub subdir: Option<String>,
    /// The repository's web address, for links to pull requests.
    pub web_url: Option<String>,
    /// How the spans' file paths map into the repository.
    pub paths: super::paths::PathRules,
}

/// The commits of a range, newest first.
#[derive(Debug, Clone, Default)]
pub struct CommitRange {
    pub commits: Vec<CommitRecord>,
    /// Commits beyond [`MAX_COMMITS`] that were not read.
    pub truncated: bool,
    /// The walk reached the edge of a shallow clone's history before the
    /// base: the oldest commits of the range are not in the checkout, or
    /// (the edge itself) cannot be diffed.
    pub past_shallow_edge: bool,
}

impl RepoReader {
    pub fn new(path: impl Into<PathBuf>, subdir: Option<String>) -> RepoReader {
        let subdir = subdir.map(|s| s.trim_matches('/').to_owned()).filter(|s| !s.is_empty());
        RepoReader {
            path: path.into(),
            subdir,
            web_url: None,
            paths: super::paths::PathRules::default(),
        }
    }

    /// The checkout this reader opens.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn open(&self) -> Result<gix::Repository, RepoError> {
        gix::open(&self.path).map_err(|e| RepoError::Open {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// The URL of the checkout's `origin` remote, if it has one.
    pub(crate) fn origin_url(&self) -> Option<String> {
        let repo = self.open().ok()?;
        let url = repo.config_snapshot().string("remote.origin.url")?;
        Some(url.to_string())
    }

    fn read_error(&self, message: impl std::fmt::Display) -> RepoError {
        RepoError::Read {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    /// Whether the checkout is a shallow clone (git-sync's `--depth`, CI's
    /// `fetch-depth`): its history stops at some depth.
    pub(crate) fn is_shallow(&self) -> bool {
        self.open().ok().is_some_and(|repo| repo.is_shallow().unwrap_or(false))
    }

    /// The full SHA of the commit a revision names (full or abbreviated SHA,
    /// tag, branch), or `None` when the repository does not know it.
    pub(crate) fn resolve(&self, revision: &str) -> Result<Option<String>, RepoError> {
        let repo = self.open()?;
        Ok(resolve_in(&repo, revision).map(|id| id.to_string()))
    }

    /// The files (blobs and links) of `revision` below `subdir` (every file
    /// without one), as paths from the repository root: where a span's file
    /// path is looked up. At most [`MAX_TREE_FILES`].
    pub(crate) fn files_at(&self, revision: &str) -> Result<Vec<String>, RepoError> {
        let repo = self.open()?;
        let root = self.tree_at(&repo, revision)?;
        let tree = match &self.subdir {
            None => root,
            Some(dir) => match root.lookup_entry_by_path(dir).map_err(|e| self.read_error(e))? {
                Some(entry) if entry.mode().is_tree() => entry
                    .object()
                    .map_err(|e| self.read_error(e))?
                    .peel_to_tree()
                    .map_err(|e| self.read_error(e))?,
                _ => return Ok(Vec::new()),
            },
        };
        let entries = tree.traverse().breadthfirst.files().map_err(|e| self.read_error(e))?;
        let prefix = self.subdir.as_deref().map(|d| format!("{d}/")).unwrap_or_default();
        Ok(entries
            .into_iter()
            .filter(|e| !e.mode.is_tree() && !e.mode.is_commit())
            .take(MAX_TREE_FILES)
            .map(|e| format!("{prefix}{}", e.filepath.to_str_lossy()))
            .collect())
    }

    /// The text of the first of `paths` (from the repository root) that
    /// `revision` has as a text file; `None` when it has none of them, or
    /// only binary or oversized ones.
    pub(crate) fn first_file_at(&self, revision: &str, paths: &[&str]) -> Result<Option<String>, RepoError> {
        let repo = self.open()?;
        let tree = self.tree_at(&repo, revision)?;
        for path in paths {
            let Some(entry) = tree.lookup_entry_by_path(path).map_err(|e| self.read_error(e))? else {
                continue;
            };
            if entry.mode().is_blob() {
                let text = blob_text(&repo, entry.oid().to_owned());
                if !text.is_empty() {
                    return Ok(Some(text));
                }
            }
        }
        Ok(None)
    }

    /// The root tree of the commit `revision` names.
    fn tree_at<'r>(&self, repo: &'r gix::Repository, revision: &str) -> Result<gix::Tree<'r>, RepoError> {
        let id = resolve_in(repo, revision).ok_or_else(|| self.read_error(format!("revision {revision:?} not found")))?;
        repo.find_commit(id)
            .and_then(|c| c.tree())
            .map_err(|e| self.read_error(e))
    }

    /// Commits reachable from `head` and not from `base` (`base..head`),
    /// newest first, merges excluded, limited to those touching `subdir`.
    /// Without `base`, every commit reachable from `head` (up to the limit).
    pub fn commits(&self, base: Option<&str>, head: &str, classifier: &Classifier) -> Result<CommitRange, RepoError> {
        let repo = self.open()?;
        let head_id = resolve_in(&repo, head).ok_or_else(|| self.read_error(format!("revision {head:?} not found")))?;
        let base_id = match base {
            Some(base) => Some(resolve_in(&repo, base).ok_or_else(|| self.read_error(format!("revision {base:?} not found")))?),
            None => None,
        };
        // Commits whose parents a shallow clone does not have.
        let shallow_edge: std::collections::HashSet<gix::ObjectId> = repo
            .shallow_commits()
            .ok()
            .flatten()
            .map(|edge| edge.iter().copied().collect())
            .unwrap_or_default();
        let sorting = gix::revision::walk::Sorting::BreadthFirst;
        // gix stops at a shallow clone's edge only on the wanted side of a
        // walk, so in a shallow clone the base's ancestry is walked apart
        // and left out here.
        let mut hidden = std::collections::HashSet::new();
        let walk = if shallow_edge.is_empty() {
            repo.rev_walk([head_id]).with_hidden(base_id).sorting(sorting).all()
        } else {
            if let Some(base_id) = base_id {
                let ancestry = repo.rev_walk([base_id]).sorting(sorting).all().map_err(|e| self.read_error(e))?;
                for info in ancestry {
                    hidden.insert(info.map_err(|e| self.read_error(e))?.id);
                }
            }
            repo.rev_walk([head_id]).sorting(sorting).all()
        }
        .map_err(|e| self.read_error(e))?;
        let mut notes = repo.notes().ok().and_then(|n| n.with_refs([AI_NOTES_REF]).ok());
        let mut range = CommitRange::default();
        // Merge commits in range: (message, parents).
        let mut merges: Vec<(String, Vec<gix::ObjectId>)> = Vec::new();
        for info in walk {
            let info = info.map_err(|e| self.read_error(e))?;
            if hidden.contains(&info.id) {
                continue;
            }
            if range.commits.len() >= MAX_COMMITS {
                range.truncated = true;
                break;
            }
            if shallow_edge.contains(&info.id) {
                // Its parent is missing, so what it changed cannot be read.
                range.past_shallow_edge |= base_id.is_some();
                continue;
            }
            let commit = repo.find_commit(info.id).map_err(|e| self.read_error(e))?;
            let record = self.record(&repo, &commit, classifier, notes.as_mut())?;
            if record.parents > 1 {
                let parents: Vec<gix::ObjectId> = commit.parent_ids().map(|id| id.detach()).collect();
                merges.push((record.message, parents));
                continue;
            }
            if self.subdir.is_none() || !record.files.is_empty() {
                range.commits.push(record);
            }
        }
        self.assign_merges(&repo, &mut range.commits, &merges)?;
        range.commits.sort_by_key(|c| std::cmp::Reverse(c.committed_at));
        Ok(range)
    }

    /// Gives each commit the merge that brought it in: for a merge in
    /// range, the commits its second parent reaches and its first does not
    /// (newest merge first; a commit keeps the first it is found under).
    fn assign_merges(
        &self,
        repo: &gix::Repository,
        commits: &mut [CommitRecord],
        merges: &[(String, Vec<gix::ObjectId>)],
    ) -> Result<(), RepoError> {
        let mut unassigned: std::collections::HashMap<String, usize> =
            commits.iter().enumerate().map(|(i, c)| (c.id.clone(), i)).collect();
        for (message, parents) in merges {
            let [first, branch, ..] = parents.as_slice() else { continue };
            if unassigned.is_empty() {
                break;
            }
            let walk = repo
                .rev_walk([*branch])
                .with_hidden([*first])
                .all()
                .map_err(|e| self.read_error(e))?;
            for info in walk.take(MAX_COMMITS) {
                let Ok(info) = info else { break };
                if let Some(i) = unassigned.remove(&info.id.to_string()) {
                    commits[i].merged_by = Some(message.clone());
                }
            }
        }
        Ok(())
    }

    fn record(
        &self,
        repo: &gix::Repository,
        commit: &gix::Commit<'_>,
        classifier: &Classifier,
        notes: Option<&mut gix::note::Platform<'_>>,
    ) -> Result<CommitRecord, RepoError> {
        let message = commit.message_raw_sloppy().to_str_lossy().into_owned();
        let author = commit.author().map_err(|e| self.read_error(e))?;
        let committer = commit.committer().map_err(|e| self.read_error(e))?;
        let (author_name, author_email) = (
            author.name.to_str_lossy().trim().to_owned(),
            author.email.to_str_lossy().trim().to_owned(),
        );
        let (committer_name, committer_email) = (
            committer.name.to_str_lossy().trim().to_owned(),
            committer.email.to_str_lossy().trim().to_owned(),
        );
        let committed_at = committer.time().map(|t| t.seconds).unwrap_or(0);
        let authorship = classifier.classify(&CommitIdentity {
            message: &message,
            author_name: &author_name,
            author_email: &author_email,
            committer_name: &committer_name,
            committer_email: &committer_email,
        });
        let parent_ids: Vec<gix::ObjectId> = commit.parent_ids().map(|id| id.detach()).collect();
        let files = if parent_ids.len() <= 1 {
            self.changes(repo, commit, parent_ids.first().copied())?
        } else {
            Vec::new()
        };
        let note = notes.and_then(|platform| {
            let found = platform.get(commit.id).ok()?;
            let note = found
                .into_iter()
                .find(|n| n.reference.as_bstr() == AI_NOTES_REF.as_bytes().as_bstr())?;
            AuthorshipNote::parse(&note.blob.data.to_str_lossy()).ok()
        });
        Ok(CommitRecord {
            id: commit.id.to_string(),
            summary: message.lines().next().unwrap_or("").trim().to_owned(),
            message,
            author_name,
            author_email,
            committer_name,
            committer_email,
            committed_at,
            parents: parent_ids.len(),
            authorship,
            files,
            note,
            merged_by: None,
        })
    }

    /// Files the commit changed relative to its parent, below `subdir`.
    fn changes(
        &self,
        repo: &gix::Repository,
        commit: &gix::Commit<'_>,
        parent: Option<gix::ObjectId>,
    ) -> Result<Vec<FileChange>, RepoError> {
        let new_tree = commit.tree().map_err(|e| self.read_error(e))?;
        let old_tree = match parent {
            Some(id) => Some(repo.find_commit(id).and_then(|c| c.tree()).map_err(|e| self.read_error(e))?),
            None => None,
        };
        let mut options = gix::diff::Options::default();
        options.track_path();
        let changes = repo
            .diff_tree_to_tree(old_tree.as_ref(), Some(&new_tree), options)
            .map_err(|e| self.read_error(e))?;
        let mut files = Vec::new();
        for change in changes {
            use gix::object::tree::diff::ChangeDetached as Change;
            let (path, old, new, is_blob) = match &change {
                Change::Addition {
                    location,
                    id,
                    entry_mode,
                    ..
                } => (location, None, Some(*id), entry_mode.is_blob()),
                Change::Deletion {
                    location,
                    id,
                    entry_mode,
                    ..
                } => (location, Some(*id), None, entry_mode.is_blob()),
                Change::Modification {
                    location,
                    previous_id,
                    id,
                    entry_mode,
                    ..
                } => (location, Some(*previous_id), Some(*id), entry_mode.is_blob()),
                Change::Rewrite {
                    location,
                    source_id,
                    id,
                    entry_mode,
                    ..
                } => (location, Some(*source_id), Some(*id), entry_mode.is_blob()),
            };
            let path = path.to_str_lossy().into_owned();
            if !is_blob || !self.in_subdir(&path) {
                continue;
            }
            let old_text = old.map(|id| blob_text(repo, id)).unwrap_or_default();
            let new_text = new.map(|id| blob_text(repo, id)).unwrap_or_default();
            files.push(line_changes(path, &old_text, new_text));
        }
        Ok(files)
    }

    fn in_subdir(&self, path: &str) -> bool {
        match &self.subdir {
            None => true,
            Some(dir) => path.strip_prefix(dir.as_str()).is_some_and(|rest| rest.starts_with('/')),
        }
    }
}

fn resolve_in(repo: &gix::Repository, revision: &str) -> Option<gix::ObjectId> {
    let revision = revision.trim();
    if revision.is_empty() {
        return None;
    }
    let id = repo.rev_parse_single(revision).ok()?;
    let commit = id.object().ok()?.peel_to_commit().ok()?;
    Some(commit.id)
}

/// A blob as text; empty for binary (NUL bytes) or oversized blobs.
fn blob_text(repo: &gix::Repository, id: gix::ObjectId) -> String {
    match repo.find_blob(id) {
        Ok(blob) if blob.data.len() <= MAX_BLOB_BYTES && !blob.data.contains(&0) => blob.data.to_str_lossy().into_owned(),
        _ => String::new(),
    }
}

/// Added lines (with their new line numbers) and counts, by a histogram
/// line diff.
fn line_changes(path: String, old: &str, new: String) -> FileChange {
    let input = InternedInput::new(sources::lines(old), sources::lines(&new));
    let diff = Diff::compute(Algorithm::Histogram, &input);
    let new_lines: Vec<&str> = new.lines().collect();
    let mut added = Vec::new();
    let (mut lines_added, mut lines_removed) = (0u32, 0u32);
    for hunk in diff.hunks() {
        lines_removed += hunk.before.len() as u32;
        lines_added += hunk.after.len() as u32;
        for index in hunk.after.clone() {
            if added.len() < MAX_ADDED_LINES
                && let Some(text) = new_lines.get(index as usize)
            {
                added.push((index + 1, (*text).to_owned()));
            }
        }
    }
    FileChange {
        path,
        added,
        lines_added,
        lines_removed,
        content: new,
    }
}

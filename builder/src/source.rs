//! The build context: the pushed commit's tree read with git2 straight from the
//! repo and git's quarantine (no checkout on disk), filtered by `.dockerignore`,
//! written as a tar stream.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use globset::GlobMatcher;

use crate::buildpacks::Root;
use crate::error::{BuildError, Result};

/// One file of the context.
#[derive(Debug, Clone)]
struct Entry {
    path: String,
    oid: Oid,
    /// git's file mode: 0o100644, 0o100755 or 0o120000 (symlink).
    mode: i32,
}

/// The pushed tree, ready to be sent as a build context.
#[derive(Debug, Clone)]
pub struct Source {
    repo: PathBuf,
    object_dirs: Vec<PathBuf>,
    /// The git tree id: the same content gives the same id.
    pub tree: String,
    pub root: Root,
    entries: Vec<Entry>,
    /// Bytes of file content in the context.
    pub size: u64,
}

/// git's quarantine variables that point at the pushed objects.
const OBJECT_VARIABLES: &[&str] = &["GIT_QUARANTINE_PATH", "GIT_OBJECT_DIRECTORY"];

fn open(repo: &Path, object_dirs: &[PathBuf]) -> Result<Repository> {
    let repository = Repository::open_bare(repo)
        .map_err(|error| BuildError::Source(format!("cannot open {}: {error}", repo.display())))?;
    {
        let odb = repository
            .odb()
            .map_err(|error| BuildError::Source(error.to_string()))?;
        for dir in object_dirs {
            odb.add_disk_alternate(&dir.to_string_lossy())
                .map_err(|error| {
                    BuildError::Source(format!("cannot read the pushed objects: {error}"))
                })?;
        }
    }
    Ok(repository)
}

/// One `.dockerignore` rule.
struct Rule {
    matcher: GlobMatcher,
    exclude: bool,
}

fn dockerignore(text: &str) -> Vec<Rule> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let (exclude, pattern) = match line.strip_prefix('!') {
                Some(rest) => (false, rest.trim()),
                None => (true, line),
            };
            let pattern = pattern
                .trim_start_matches("./")
                .trim_start_matches('/')
                .trim_end_matches('/');
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .ok()?;
            Some(Rule {
                matcher: glob.compile_matcher(),
                exclude,
            })
        })
        .collect()
}

/// Whether `.dockerignore` excludes `path`: the last rule that matches the path
/// or one of its folders decides.
fn ignored(rules: &[Rule], path: &str) -> bool {
    let mut excluded = false;
    for rule in rules {
        let mut candidate = Some(path);
        while let Some(current) = candidate {
            if rule.matcher.is_match(current) {
                excluded = rule.exclude;
                break;
            }
            candidate = current.rsplit_once('/').map(|(parent, _)| parent);
        }
    }
    excluded
}

/// The first line of the message of commit `sha` in `repo`, if it is there
/// (what the web UI shows beside a build or release).
pub fn commit_subject(repo: &Path, sha: &str) -> Option<String> {
    let repository = Repository::open_bare(repo).ok()?;
    let commit = repository.find_commit(Oid::from_str(sha).ok()?).ok()?;
    commit.summary().ok().flatten().map(str::to_string)
}

/// Reads the tree of `sha` (from the repo and the quarantine in `git_env`).
pub fn read(repo: &Path, git_env: &[(String, String)], sha: &str, limit: u64) -> Result<Source> {
    let object_dirs: Vec<PathBuf> = git_env
        .iter()
        .filter(|(name, _)| OBJECT_VARIABLES.contains(&name.as_str()))
        .map(|(_, value)| PathBuf::from(value))
        .collect();
    let repository = open(repo, &object_dirs)?;
    let oid = Oid::from_str(sha)
        .map_err(|_| BuildError::Source(format!("`{sha}` is not a commit id")))?;
    let commit = repository
        .find_commit(oid)
        .map_err(|error| BuildError::Source(format!("cannot read commit {sha}: {error}")))?;
    let tree = commit
        .tree()
        .map_err(|error| BuildError::Source(format!("cannot read the tree of {sha}: {error}")))?;

    let mut entries = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        // Submodules (commits) are not part of the context.
        if entry.kind() == Some(ObjectType::Blob) {
            entries.push(Entry {
                path: format!("{dir}{}", entry.name().unwrap_or_default()),
                oid: entry.id(),
                mode: entry.filemode(),
            });
        }
        TreeWalkResult::Ok
    })
    .map_err(|error| BuildError::Source(format!("cannot walk the tree of {sha}: {error}")))?;

    let blob_text = |name: &str| -> Option<String> {
        let entry = entries.iter().find(|entry| entry.path == name)?;
        let blob = repository.find_blob(entry.oid).ok()?;
        String::from_utf8(blob.content().to_vec()).ok()
    };
    let rules = blob_text(".dockerignore")
        .map(|text| dockerignore(&text))
        .unwrap_or_default();
    let mut files = HashMap::new();
    for name in ["Procfile", "Cargo.toml", "Dockerfile", "app.json"] {
        if let Some(text) = blob_text(name) {
            files.insert(name.to_string(), text);
        }
    }
    entries.retain(|entry| {
        matches!(entry.path.as_str(), "Dockerfile" | ".dockerignore")
            || !ignored(&rules, &entry.path)
    });
    let names = entries
        .iter()
        .map(|entry| entry.path.split('/').next().unwrap_or_default().to_string())
        .collect();

    let odb = repository
        .odb()
        .map_err(|error| BuildError::Source(error.to_string()))?;
    let mut size = 0u64;
    for entry in &entries {
        let (length, _) = odb
            .read_header(entry.oid)
            .map_err(|error| BuildError::Source(format!("cannot read {}: {error}", entry.path)))?;
        size += length as u64;
    }
    if size > limit {
        return Err(BuildError::Source(format!(
            "the build context is {} MiB, over the limit of {} MiB: leave files out with a .dockerignore, or raise the limit",
            size / (1 << 20),
            limit / (1 << 20)
        )));
    }
    Ok(Source {
        repo: repo.to_path_buf(),
        object_dirs,
        tree: tree.id().to_string(),
        root: Root { names, files },
        entries,
        size,
    })
}

impl Source {
    /// Writes the context as a tar to `writer`, with `dockerfile` as `Dockerfile` if given.
    pub fn write_tar(&self, dockerfile: Option<&str>, writer: impl Write) -> Result<()> {
        let repository = open(&self.repo, &self.object_dirs)?;
        let mut archive = tar::Builder::new(writer);
        let failed = |error: std::io::Error| {
            BuildError::Docker(format!("cannot send the build context: {error}"))
        };
        for entry in &self.entries {
            let blob = repository.find_blob(entry.oid).map_err(|error| {
                BuildError::Source(format!("cannot read {}: {error}", entry.path))
            })?;
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            if entry.mode == 0o120000 {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                let target = String::from_utf8_lossy(blob.content()).to_string();
                archive
                    .append_link(&mut header, &entry.path, target)
                    .map_err(failed)?;
            } else {
                header.set_mode(if entry.mode == 0o100755 { 0o755 } else { 0o644 });
                header.set_size(blob.size() as u64);
                archive
                    .append_data(&mut header, &entry.path, blob.content())
                    .map_err(failed)?;
            }
        }
        if let Some(text) = dockerfile {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_mode(0o644);
            header.set_size(text.len() as u64);
            archive
                .append_data(&mut header, "Dockerfile", text.as_bytes())
                .map_err(failed)?;
        }
        archive
            .into_inner()
            .map_err(failed)?
            .flush()
            .map_err(failed)
    }

    /// Whether the context has this file.
    pub fn has(&self, path: &str) -> bool {
        self.entries.iter().any(|entry| entry.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules_follow_docker() {
        let rules =
            dockerignore("# comment\nsecret.txt\n*.log\nbuild/\n!build/keep.txt\n/docs/**/*.md\n");
        assert!(ignored(&rules, "secret.txt"));
        assert!(
            !ignored(&rules, "sub/secret.txt"),
            "patterns are anchored at the root"
        );
        assert!(ignored(&rules, "app.log"));
        assert!(!ignored(&rules, "logs/app.log"), "* does not cross folders");
        assert!(
            ignored(&rules, "build/out.bin"),
            "a folder excludes what it holds"
        );
        assert!(!ignored(&rules, "build/keep.txt"), "! brings a file back");
        assert!(ignored(&rules, "docs/a/b/c.md"));
        assert!(!ignored(&rules, "src/main.rs"));
    }
}

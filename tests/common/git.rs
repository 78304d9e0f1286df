//! Real git repositories for the tests, made with the `git` command line in
//! temporary directories.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const HUMAN: (&str, &str) = ("Dana Smith", "dana@example.com");

pub struct GitRepo {
    pub dir: tempfile::TempDir,
    /// Seconds since the epoch of the next commit (commits are a minute apart).
    clock: i64,
}

impl GitRepo {
    pub fn new() -> GitRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = GitRepo {
            dir,
            clock: 1_767_225_600,
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_buf(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// git in the repository, isolated from the machine's configuration,
    /// acting as `who`.
    fn command(&self, args: &[&str], who: (&str, &str)) -> Command {
        let mut command = Command::new("git");
        command
            .args(args)
            .current_dir(self.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", who.0)
            .env("GIT_AUTHOR_EMAIL", who.1)
            .env("GIT_COMMITTER_NAME", who.0)
            .env("GIT_COMMITTER_EMAIL", who.1);
        command
    }

    /// Runs git in the repository; panics with its stderr on failure.
    pub fn git(&self, args: &[&str]) -> String {
        let output = self.command(args, HUMAN).output().expect("run git");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Writes `files` and commits them as `author` (also the committer);
    /// returns the full SHA.
    pub fn commit(&mut self, files: &[(&str, &str)], message: &str, author: (&str, &str)) -> String {
        for (path, content) in files {
            let full = self.path().join(path);
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(&full, content).expect("write");
            self.git(&["add", path]);
        }
        self.clock += 60;
        let date = format!("@{} +0000", self.clock);
        let output = self
            .command(&["commit", "-q", "--allow-empty", "-F", "-"], author)
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(message.as_bytes())?;
                child.wait_with_output()
            })
            .expect("git commit");
        assert!(
            output.status.success(),
            "git commit: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.git(&["rev-parse", "HEAD"])
    }

    /// Adds a git-ai authorship note to `commit` under refs/notes/ai.
    pub fn add_ai_note(&self, commit: &str, note: &str) {
        self.git(&["notes", "--ref=ai", "add", "-f", "-m", note, commit]);
    }
}

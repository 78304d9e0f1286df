//! Bearer-token authentication for the listeners.
//!
//! Each protected surface (the OTLP receivers, `/api` and `/ui`, `/metrics`)
//! may name a token file, as a Kubernetes Secret mounts it. The file is read
//! at start (an empty or unreadable file is an error, never an open door)
//! and read again when it changes, at most every few seconds, so a rotated
//! Secret takes effect without a restart. Tokens are compared by their
//! SHA-256 digests, so the comparison leaks nothing about the token.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

/// How often the token file is checked for a change.
const RECHECK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the token file {path} ({key}): {source}; mount the Secret there or unset {key}")]
    Read {
        path: PathBuf,
        key: &'static str,
        source: std::io::Error,
    },
    #[error("the token file {path} ({key}) is empty; put the token in it or unset {key}")]
    Empty { path: PathBuf, key: &'static str },
}

/// A token read from a file.
pub(crate) struct BearerToken {
    path: PathBuf,
    key: &'static str,
    state: Mutex<TokenState>,
}

struct TokenState {
    digest: [u8; 32],
    modified: Option<SystemTime>,
    checked: Instant,
}

impl BearerToken {
    /// Reads the token in `path`; `key` names the setting in errors.
    pub(crate) fn from_file(path: &Path, key: &'static str) -> Result<BearerToken, AuthError> {
        let (digest, modified) = read(path, key)?;
        Ok(BearerToken {
            path: path.to_owned(),
            key,
            state: Mutex::new(TokenState {
                digest,
                modified,
                checked: Instant::now(),
            }),
        })
    }

    /// Whether an `Authorization` header value carries the token.
    pub(crate) fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(presented) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
            if modified != state.modified {
                match read(&self.path, self.key) {
                    Ok((digest, modified)) => {
                        state.digest = digest;
                        state.modified = modified;
                        tracing::info!(path = %self.path.display(), "token file changed; using the new token");
                    }
                    // Keep the token in force rather than open the door.
                    Err(error) => tracing::warn!(%error, "keeping the previous token"),
                }
            }
        }
        presented == state.digest
    }
}

fn read(path: &Path, key: &'static str) -> Result<([u8; 32], Option<SystemTime>), AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_owned(),
        key,
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(AuthError::Empty {
            path: path.to_owned(),
            key,
        });
    }
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((Sha256::digest(token.as_bytes()).into(), modified))
}

/// An axum layer that answers 401 unless the request carries `token`.
pub(crate) fn require(router: axum::Router, token: Option<std::sync::Arc<BearerToken>>) -> axum::Router {
    let Some(token) = token else { return router };
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let authorization = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if token.accepts(authorization) {
                    next.run(request).await
                } else {
                    use axum::response::IntoResponse;
                    (
                        http::StatusCode::UNAUTHORIZED,
                        [(http::header::WWW_AUTHENTICATE, "Bearer")],
                        "a bearer token is required\n",
                    )
                        .into_response()
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_compared_and_empty_files_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        let token = BearerToken::from_file(&path, "admin.api_token_file").expect("token");
        assert!(token.accepts(Some("Bearer s3cret")));
        assert!(!token.accepts(Some("Bearer s3cre")));
        assert!(!token.accepts(Some("s3cret")));
        assert!(!token.accepts(None));
        std::fs::write(&path, "").expect("empty");
        let error = BearerToken::from_file(&path, "admin.api_token_file").err().expect("refused");
        assert!(error.to_string().contains("admin.api_token_file"), "{error}");
    }
}

//! Bearer-token authentication: the tokens a listener accepts
//! ([`BearerAuth`]) and the check of an `authorization` header against
//! them.
//!
//! Tokens come from the config file, from environment variables (read once,
//! at start-up) and from files (read at start-up, then again when their
//! modification time or size changes, looked at most once per
//! `reload_interval` when a request arrives). A token file that changes to
//! something unusable (missing, empty) keeps its previous token, logged and
//! counted in `triage_auth_token_reloads_total{result="error"}`: a botched
//! rotation must not lock every client out, nor let every client in.
//!
//! A header is compared with every token, each comparison in time that
//! does not depend on where the strings differ; the tokens themselves never
//! appear in `Debug` output or logs. Refusals are counted in
//! `triage_auth_refused_total{listener,reason}` (`missing`, `invalid`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::AUTHORIZATION;
use http::HeaderMap;
use metrics::counter;
use parking_lot::Mutex;

use super::config::{AuthConfig, Secret};
use super::LoadError;
use crate::telemetry;

/// The tokens one listener (or one write path) accepts. Cheap to clone:
/// clones share the token sets and their reload state.
#[derive(Clone)]
pub struct BearerAuth {
    /// The listener's name in logs and the `listener` metric label.
    listener: &'static str,
    /// A header is accepted when it matches a token of any set.
    sets: Arc<[Arc<TokenSet>]>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `authorization: Bearer ...` header.
    Missing,
    /// A bearer token that is none of the accepted ones.
    Invalid,
}

/// The tokens of one `auth:` section.
struct TokenSet {
    /// Where the section is in the config file, for messages.
    field: String,
    /// Inline and environment tokens; fixed for the life of the process.
    fixed: Vec<Secret>,
    /// Token files, with what each held when last read.
    files: Mutex<Files>,
    reload_interval: Duration,
}

struct Files {
    entries: Vec<TokenFile>,
    /// When the files are next looked at.
    next_check: Instant,
}

struct TokenFile {
    path: PathBuf,
    token: Secret,
    /// Modification time and size when read; `None` if they could not be
    /// looked at.
    stamp: Option<(SystemTime, u64)>,
}

// === impl BearerAuth ===

impl BearerAuth {
    /// The tokens of `config`, read now (files and environment variables);
    /// `None` when it names none, that is, when the listener is open.
    /// `field` is the section's place in the config file, e.g.
    /// `receivers.otlp.grpc.auth`, for messages.
    pub fn load(
        listener: &'static str,
        field: &str,
        config: &AuthConfig,
    ) -> Result<Option<BearerAuth>, LoadError> {
        if !config.is_enabled() {
            return Ok(None);
        }
        let mut fixed = config.bearer_tokens.clone();
        for (index, name) in config.bearer_token_env.iter().enumerate() {
            let key = format!("{field}.bearer_token_env[{index}]");
            let value = std::env::var(name).map_err(|error| {
                LoadError::new(&key, format!("environment variable {name}: {error}"))
            })?;
            let token = Secret::new(&value).ok_or_else(|| {
                LoadError::new(&key, format!("environment variable {name} is empty"))
            })?;
            fixed.push(token);
        }
        let mut entries = Vec::with_capacity(config.bearer_token_files.len());
        for (index, path) in config.bearer_token_files.iter().enumerate() {
            let key = format!("{field}.bearer_token_files[{index}]");
            let stamp = stamp(path);
            let token = read_token(path).map_err(|message| LoadError::new(&key, message))?;
            entries.push(TokenFile {
                path: path.clone(),
                token,
                stamp,
            });
        }
        let set = TokenSet {
            field: field.to_owned(),
            fixed,
            files: Mutex::new(Files {
                entries,
                next_check: Instant::now() + config.reload_interval,
            }),
            reload_interval: config.reload_interval,
        };
        Ok(Some(BearerAuth {
            listener,
            sets: Arc::from([Arc::new(set)]),
        }))
    }

    /// Accepts exactly `tokens` (for tokens configured elsewhere, such as
    /// `changes.api_token`); `None` when there are none.
    pub fn fixed(listener: &'static str, field: &str, tokens: Vec<Secret>) -> Option<BearerAuth> {
        if tokens.is_empty() {
            return None;
        }
        Some(BearerAuth {
            listener,
            sets: Arc::from([Arc::new(TokenSet {
                field: field.to_owned(),
                fixed: tokens,
                files: Mutex::new(Files {
                    entries: Vec::new(),
                    next_check: Instant::now(),
                }),
                reload_interval: Duration::ZERO,
            })]),
        })
    }

    /// Accepts the tokens of every one of `parts` (which keep reloading
    /// their own files), counted under `listener`; `None` when all are
    /// `None`.
    pub fn any_of(
        listener: &'static str,
        parts: impl IntoIterator<Item = Option<BearerAuth>>,
    ) -> Option<BearerAuth> {
        let sets: Vec<Arc<TokenSet>> = parts
            .into_iter()
            .flatten()
            .flat_map(|auth| auth.sets.iter().cloned().collect::<Vec<_>>())
            .collect();
        (!sets.is_empty()).then(|| BearerAuth {
            listener,
            sets: Arc::from(sets),
        })
    }

    /// Checks the `authorization` header of a request; counts a refusal.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        self.check(given)
    }

    /// Checks an `authorization` header value (`Bearer <token>`, the scheme
    /// in any case, RFC 9110); counts a refusal.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), Denied> {
        let result = match authorization.and_then(bearer) {
            None => Err(Denied::Missing),
            Some(given) => {
                let now = Instant::now();
                // Every set is looked at, whatever matched, so the time
                // taken does not say which set a token belongs to.
                let mut found = false;
                for set in self.sets.iter() {
                    found |= set.matches(given, now, self.listener);
                }
                if found {
                    Ok(())
                } else {
                    Err(Denied::Invalid)
                }
            }
        };
        if let Err(denied) = result {
            counter!(telemetry::AUTH_REFUSED, "listener" => self.listener, "reason" => denied.label())
                .increment(1);
        }
        result
    }
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<&str> = self.sets.iter().map(|set| set.field.as_str()).collect();
        f.debug_struct("BearerAuth")
            .field("listener", &self.listener)
            .field("from", &fields)
            .finish_non_exhaustive()
    }
}

/// The token of an `authorization` header value, if it is a bearer token.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

// === impl Denied ===

impl Denied {
    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Invalid => "invalid",
        }
    }

    /// A message for the client, which says what to send but nothing about
    /// the tokens.
    pub fn message(self) -> &'static str {
        match self {
            Denied::Missing => {
                "missing bearer token: send the header `authorization: Bearer <token>`"
            }
            Denied::Invalid => "invalid bearer token",
        }
    }
}

// === impl TokenSet ===

impl TokenSet {
    /// Whether `given` is one of the tokens, after reloading changed files
    /// if their interval has passed.
    fn matches(&self, given: &str, now: Instant, listener: &'static str) -> bool {
        let mut found = false;
        for token in &self.fixed {
            found |= token.matches(given);
        }
        let mut files = self.files.lock();
        if files.entries.is_empty() {
            return found;
        }
        if !self.reload_interval.is_zero() && now >= files.next_check {
            files.next_check = now + self.reload_interval;
            for (index, file) in files.entries.iter_mut().enumerate() {
                file.reload(&self.field, index, listener);
            }
        }
        for file in &files.entries {
            found |= file.token.matches(given);
        }
        found
    }
}

// === impl TokenFile ===

impl TokenFile {
    /// Reads the file again if it changed; keeps the old token if the new
    /// contents are unusable.
    fn reload(&mut self, field: &str, index: usize, listener: &'static str) {
        let stamp = stamp(&self.path);
        if stamp == self.stamp {
            return;
        }
        // Remembered either way: a broken file is read again when it
        // changes again, not at every interval.
        self.stamp = stamp;
        match read_token(&self.path) {
            Ok(token) => {
                self.token = token;
                counter!(telemetry::AUTH_TOKEN_RELOADS, "listener" => listener, "result" => "ok")
                    .increment(1);
                tracing::info!(listener, file = %self.path.display(), "bearer token file reloaded");
            }
            Err(message) => {
                counter!(telemetry::AUTH_TOKEN_RELOADS, "listener" => listener, "result" => "error")
                    .increment(1);
                tracing::error!(
                    listener,
                    field = %format!("{field}.bearer_token_files[{index}]"),
                    error = %message,
                    "bearer token file changed but is unusable; still accepting its previous token"
                );
            }
        }
    }
}

/// The token in a file, or why there is none (naming the file).
fn read_token(path: &std::path::Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let token = Secret::new(&text).ok_or_else(|| format!("{} holds no token", path.display()))?;
    if !text.trim().chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "{} holds more than one word; a token is printable ASCII without spaces",
            path.display()
        ));
    }
    Ok(token)
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

#[cfg(test)]
mod tests;

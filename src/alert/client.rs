//! The HTTP side of one target: a client with the target's timeout, TLS
//! options and credentials, posting JSON and classifying failures into
//! "try again later" and "will never be accepted".

use std::path::{Path, PathBuf};

use reqwest::{StatusCode, Url};
use thiserror::Error;

use super::config::{Auth, Secret, TargetConfig};

/// Why a target could not be set up (at start-up).
#[derive(Debug, Error)]
pub enum ClientError {
    // Causes are part of the messages below and deliberately not
    // `source()`s: printed as a chain (`{:#}`) they would appear twice.
    /// A file named in the config could not be read.
    #[error("cannot read {what} {}: {error}", .path.display())]
    ReadFile {
        /// What the file is for (`alerting.alertmanagers[0].tls.ca_file`).
        what: String,
        /// The file as configured.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// A certificate or key file does not hold what it should.
    #[error("{what} {}: {message}", .path.display())]
    Pem {
        /// What the file is for.
        what: String,
        /// The file as configured.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The HTTP client could not be built (e.g. the TLS backend refused the
    /// options).
    #[error("cannot set up the HTTP client for {field}: {}", describe(.error))]
    Build {
        /// The target's config path.
        field: String,
        /// reqwest's reason.
        error: reqwest::Error,
    },
}

/// Why one request failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    /// The target may accept the same request later: connection refused,
    /// timeout, 5xx, 429, 408.
    #[error("{0}")]
    Retryable(String),
    /// The target refused the request itself (other 4xx); sending it again
    /// would fail again.
    #[error("{0}")]
    Rejected(String),
}

/// A target ready to post to.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    /// Where requests go.
    url: Url,
    auth: Auth,
    /// `url` without credentials, for logs and metric labels.
    name: String,
}

impl Client {
    /// Builds the client of `target`, posting to `url`; `field` is the
    /// target's config path, used in errors. Reads the TLS files and checks
    /// that secret files can be read, so a wrong path fails start-up.
    pub(crate) fn new(target: &TargetConfig, url: Url, field: &str) -> Result<Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .timeout(target.timeout)
            .connect_timeout(target.timeout)
            .user_agent(concat!("triage/", env!("CARGO_PKG_VERSION")))
            // Alertmanager and webhook URLs are configured, not discovered;
            // following a redirect elsewhere could leak the credentials.
            .redirect(reqwest::redirect::Policy::none());
        let tls = &target.tls;
        if let Some(path) = &tls.ca_file {
            let what = format!("{field}.tls.ca_file");
            let pem = read(&what, path)?;
            let certificates =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| ClientError::Pem {
                    what: what.clone(),
                    path: path.clone(),
                    message: error.to_string(),
                })?;
            if certificates.is_empty() {
                return Err(ClientError::Pem {
                    what,
                    path: path.clone(),
                    message: "holds no PEM certificate".into(),
                });
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let (Some(cert_path), Some(key_path)) = (&tls.cert_file, &tls.key_file) {
            let mut pem = read(&format!("{field}.tls.cert_file"), cert_path)?;
            pem.push(b'\n');
            pem.extend(read(&format!("{field}.tls.key_file"), key_path)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|error| ClientError::Pem {
                what: format!("{field}.tls.cert_file and key_file"),
                path: cert_path.clone(),
                message: error.to_string(),
            })?;
            builder = builder.identity(identity);
        }
        if tls.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        match &target.auth {
            Auth::Basic {
                password: Secret::File(path),
                ..
            } => {
                read(&format!("{field}.basic_auth.password_file"), path)?;
            }
            Auth::Bearer(Secret::File(path)) => {
                read(&format!("{field}.bearer_token_file"), path)?;
            }
            _ => {}
        }
        let http = builder.build().map_err(|error| ClientError::Build {
            field: field.to_owned(),
            error,
        })?;
        Ok(Client {
            http,
            name: display_name(&url),
            url,
            auth: target.auth.clone(),
        })
    }

    /// The URL without credentials.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Posts `body` as JSON; success is any 2xx.
    pub(crate) async fn post_json(&self, body: Vec<u8>) -> Result<(), SendError> {
        let mut request = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        request = match &self.auth {
            Auth::None => request,
            Auth::Basic { username, password } => {
                request.basic_auth(username, Some(secret(password)?))
            }
            Auth::Bearer(token) => request.bearer_auth(secret(token)?),
        };
        let response = request
            .send()
            .await
            .map_err(|error| SendError::Retryable(describe(&error)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The body says why (Alertmanager names the bad label); a little of
        // it is enough for the log.
        let text = response.text().await.unwrap_or_default();
        let text: String = text.trim().chars().take(300).collect();
        let message = format!("HTTP {status}: {text}");
        if retryable(status) {
            Err(SendError::Retryable(message))
        } else {
            Err(SendError::Rejected(message))
        }
    }
}

/// Whether a failed status may succeed later.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// Reads a secret, a file's on every call so rotated tokens are used. The
/// read is a small local file, cheaper than the request it authorises, so
/// it is not moved off the async thread.
fn secret(secret: &Secret) -> Result<String, SendError> {
    match secret {
        Secret::Inline(text) => Ok(text.clone()),
        Secret::File(path) => std::fs::read_to_string(path)
            .map(|text| text.trim().to_owned())
            // The file may be mid-rotation; the next attempt may find it.
            .map_err(|error| {
                SendError::Retryable(format!("cannot read {}: {error}", path.display()))
            }),
    }
}

/// `url` with any user name and password removed.
pub(crate) fn display_name(url: &Url) -> String {
    let mut shown = url.clone();
    // Only fails for URLs that cannot have credentials, which then have none.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// A reqwest error with its causes (reqwest's own text is often just "error
/// sending request").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a configured file, naming it by its config path on failure.
fn read(what: &str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|error| ClientError::ReadFile {
        what: what.to_owned(),
        path: path.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_worth_retrying() {
        for code in [500, 502, 503, 504, 429, 408] {
            assert!(
                retryable(StatusCode::from_u16(code).expect("status")),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 413, 422] {
            assert!(
                !retryable(StatusCode::from_u16(code).expect("status")),
                "{code}"
            );
        }
    }

    #[test]
    fn names_hide_credentials() {
        let url = Url::parse("https://user:pw@am.example:9093/x").expect("url");
        assert_eq!(display_name(&url), "https://am.example:9093/x");
    }

    #[test]
    fn missing_files_are_named_by_their_field() {
        let mut target = TargetConfig::new(Url::parse("https://am.example").expect("url"));
        target.tls.ca_file = Some("/does/not/exist.pem".into());
        let error = Client::new(&target, target.url.clone(), "alerting.alertmanagers[0]")
            .expect_err("missing CA file");
        let text = error.to_string();
        assert!(
            text.contains("alerting.alertmanagers[0].tls.ca_file")
                && text.contains("/does/not/exist.pem"),
            "{text}"
        );
    }
}

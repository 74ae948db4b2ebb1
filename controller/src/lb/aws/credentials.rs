//! AWS credentials, looked for where the AWS tools look: the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the
//! shared credentials and config files for the profile (`profile` in the
//! inventory, else `AWS_PROFILE`, else `default`), a container's
//! credentials endpoint (ECS), then the instance's (EC2 IMDSv2). SSO,
//! web-identity, `credential_process` and `role_arn` profiles are not
//! followed: the error says so.
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::secret::Password;

farm_proto::message_error! {
    /// Why no AWS credentials were found, and where farmctl looked.
    CredentialsError
}

/// One set of keys, with its expiry when it has one.
#[derive(Debug, Clone)]
pub struct Creds {
    pub access_key: String,
    pub secret_key: Password,
    pub session_token: Option<Password>,
    pub expires: Option<SystemTime>,
    /// Where they came from, for messages.
    pub source: String,
}

impl Creds {
    /// Good for a few more minutes.
    pub fn fresh(&self) -> bool {
        self.expires
            .is_none_or(|t| t > SystemTime::now() + Duration::from_secs(300))
    }
}

/// The instance and container endpoints answer at once or not at all.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn find(profile: Option<&str>) -> Result<Creds, CredentialsError> {
    let mut tried = Vec::new();
    if let Some(c) = from_env() {
        return Ok(c);
    }
    tried.push("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY");
    let profile = profile
        .map(str::to_string)
        .or_else(|| std::env::var("AWS_PROFILE").ok())
        .unwrap_or_else(|| "default".into());
    match from_files(&profile)? {
        Some(c) => return Ok(c),
        None => tried.push("the shared credentials and config files"),
    }
    if let Some(c) = from_container().await? {
        return Ok(c);
    }
    tried.push("the container credentials endpoint");
    match from_instance().await {
        Ok(c) => Ok(c),
        Err(e) => Err(CredentialsError(format!(
            "no AWS credentials found (looked at {}, and the instance metadata: {e})",
            tried.join(", ")
        ))),
    }
}

fn from_env() -> Option<Creds> {
    let access_key = std::env::var("AWS_ACCESS_KEY_ID")
        .ok()
        .filter(|v| !v.is_empty())?;
    let secret_key = std::env::var("AWS_SECRET_ACCESS_KEY")
        .ok()
        .filter(|v| !v.is_empty())?;
    Some(Creds {
        access_key,
        secret_key: password(secret_key),
        session_token: std::env::var("AWS_SESSION_TOKEN")
            .ok()
            .filter(|v| !v.is_empty())
            .map(password),
        expires: None,
        source: "the environment".into(),
    })
}

fn password(s: String) -> Password {
    crate::secret::Password::from_owned(s)
}

fn home() -> Option<PathBuf> {
    dirs::home_dir()
}

/// `[section]` → key → value, comments and blank lines skipped.
pub fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

fn from_files(profile: &str) -> Result<Option<Creds>, CredentialsError> {
    let credentials = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws").join("credentials")));
    let config = std::env::var_os("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws").join("config")));
    // The credentials file names sections by profile; the config file
    // says `[profile NAME]` except for `[default]`.
    let sections = [
        (credentials, profile.to_string()),
        (
            config,
            if profile == "default" {
                "default".to_string()
            } else {
                format!("profile {profile}")
            },
        ),
    ];
    for (file, section) in sections {
        let Some(file) = file else { continue };
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let ini = parse_ini(&text);
        let Some(keys) = ini.get(&section) else {
            continue;
        };
        for unsupported in [
            "role_arn",
            "sso_start_url",
            "sso_session",
            "credential_process",
            "web_identity_token_file",
        ] {
            if keys.contains_key(unsupported) && !keys.contains_key("aws_access_key_id") {
                return Err(CredentialsError(format!(
                    "AWS profile `{profile}` in {} uses `{unsupported}`, which farmctl does not follow; \
                     give it keys through AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN \
                     (e.g. from `aws configure export-credentials --format env`)",
                    file.display()
                )));
            }
        }
        if let (Some(a), Some(s)) = (
            keys.get("aws_access_key_id"),
            keys.get("aws_secret_access_key"),
        ) {
            return Ok(Some(Creds {
                access_key: a.clone(),
                secret_key: password(s.clone()),
                session_token: keys.get("aws_session_token").cloned().map(password),
                expires: None,
                source: format!("profile `{profile}` in {}", file.display()),
            }));
        }
    }
    Ok(None)
}

fn metadata_client() -> Result<reqwest::Client, CredentialsError> {
    reqwest::Client::builder()
        .timeout(METADATA_TIMEOUT)
        .connect_timeout(METADATA_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| CredentialsError(e.to_string()))
}

/// The JSON both metadata endpoints answer with.
fn parse_endpoint_json(body: &str, source: &str) -> Result<Creds, CredentialsError> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| {
        CredentialsError(format!("{source} answered something else than JSON: {e}"))
    })?;
    let field = |k: &str| v[k].as_str().map(str::to_string);
    let (Some(a), Some(s)) = (field("AccessKeyId"), field("SecretAccessKey")) else {
        return Err(CredentialsError(format!(
            "{source} answered without AccessKeyId/SecretAccessKey"
        )));
    };
    let expires = field("Expiration")
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(SystemTime::from);
    Ok(Creds {
        access_key: a,
        secret_key: password(s),
        session_token: field("Token").map(password),
        expires,
        source: source.to_string(),
    })
}

async fn from_container() -> Result<Option<Creds>, CredentialsError> {
    let url = match (
        std::env::var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        std::env::var("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
    ) {
        (Ok(rel), _) => format!("http://169.254.170.2{rel}"),
        (_, Ok(full)) => full,
        _ => return Ok(None),
    };
    let mut req = metadata_client()?.get(&url);
    if let Ok(token) = std::env::var("AWS_CONTAINER_AUTHORIZATION_TOKEN") {
        req = req.header("Authorization", token);
    }
    let body = req
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| CredentialsError(format!("the container credentials endpoint {url}: {e}")))?
        .text()
        .await
        .map_err(|e| CredentialsError(e.to_string()))?;
    parse_endpoint_json(&body, "the container credentials endpoint").map(Some)
}

async fn from_instance() -> Result<Creds, CredentialsError> {
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(CredentialsError(
            "disabled by AWS_EC2_METADATA_DISABLED".into(),
        ));
    }
    let base = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or_else(|_| "http://169.254.169.254".into());
    let base = base.trim_end_matches('/');
    let client = metadata_client()?;
    let token = client
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| CredentialsError(format!("not reachable ({e})")))?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let get = |path: String| {
        client
            .get(format!("{base}{path}"))
            .header("X-aws-ec2-metadata-token", token.clone())
            .send()
    };
    let role = get("/latest/meta-data/iam/security-credentials/".into())
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| CredentialsError(format!("no instance role ({e})")))?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let role = role.lines().next().unwrap_or("").trim().to_string();
    if role.is_empty() {
        return Err(CredentialsError("no instance role".into()));
    }
    let body = get(format!("/latest/meta-data/iam/security-credentials/{role}"))
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| CredentialsError(format!("the role {role}: {e}")))?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    parse_endpoint_json(&body, &format!("the instance role {role}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_sections_and_keys() {
        let ini = parse_ini(
            "# comment\n[default]\naws_access_key_id = AKIA1\naws_secret_access_key=s1\n\n[profile ops]\nAWS_ACCESS_KEY_ID = AKIA2\n; c\n",
        );
        assert_eq!(ini["default"]["aws_access_key_id"], "AKIA1");
        assert_eq!(ini["default"]["aws_secret_access_key"], "s1");
        assert_eq!(ini["profile ops"]["aws_access_key_id"], "AKIA2");
    }

    #[test]
    fn endpoint_json_with_expiry() {
        let c = parse_endpoint_json(
            r#"{"AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"2026-11-21T23:00:00Z"}"#,
            "test",
        )
        .unwrap();
        assert_eq!(c.access_key, "ASIA1");
        assert_eq!(c.session_token.unwrap().expose(), "t");
        assert!(c.expires.is_some());
        assert!(parse_endpoint_json("{}", "test").is_err());
    }
}

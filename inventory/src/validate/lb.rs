//! Validation of `load_balancer:` — each kind with its own keys, every
//! other key named as unused — and of the nodes' `lb_server` in the words
//! of that load balancer.
use std::time::Duration;

use super::{check_host_port, check_name, Errors, DEFAULT_DETECTION, DEFAULT_HEALTH_FILE};
use crate::model::*;
use crate::raw::*;

/// One API call to an HTTP load balancer, retries included.
pub const DEFAULT_LB_TIMEOUT: Duration = Duration::from_secs(10);
/// One exec command.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// The keys each kind takes (besides `kind`).
fn keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "none" | "nlb" => &[],
        "health-file" => &["path", "detection"],
        "haproxy" => &["admin", "backend"],
        "f5" => &["url", "pool", "auth", "tls", "drain_mode", "timeout"],
        "netscaler" => &[
            "url",
            "auth",
            "tls",
            "member",
            "servicegroup",
            "delay",
            "timeout",
        ],
        "aws-elbv2" => &[
            "target_group_arn",
            "region",
            "endpoint",
            "profile",
            "timeout",
        ],
        "arr" => &["agent", "farm", "drain_mode"],
        "exec" => &["drain", "return", "state", "timeout"],
        _ => return None,
    })
}

/// The keys written in the file.
fn written(lb: &RawLoadBalancer) -> Vec<&'static str> {
    let set = [
        ("path", lb.path.is_some()),
        ("detection", lb.detection.is_some()),
        ("admin", lb.admin.is_some()),
        ("backend", lb.backend.is_some()),
        ("url", lb.url.is_some()),
        ("pool", lb.pool.is_some()),
        ("auth", lb.auth.is_some()),
        ("tls", lb.tls.is_some()),
        ("drain_mode", lb.drain_mode.is_some()),
        ("member", lb.member.is_some()),
        ("servicegroup", lb.servicegroup.is_some()),
        ("delay", lb.delay.is_some()),
        ("target_group_arn", lb.target_group_arn.is_some()),
        ("region", lb.region.is_some()),
        ("endpoint", lb.endpoint.is_some()),
        ("profile", lb.profile.is_some()),
        ("agent", lb.agent.is_some()),
        ("farm", lb.farm.is_some()),
        ("drain", lb.drain.is_some()),
        ("return", lb.return_.is_some()),
        ("state", lb.state.is_some()),
        ("timeout", lb.timeout.is_some()),
    ];
    set.iter().filter(|(_, on)| *on).map(|(k, _)| *k).collect()
}

const KINDS: &str =
    "`haproxy`, `health-file`, `f5`, `netscaler`, `aws-elbv2`, `arr`, `nlb`, `exec` or `none`";

pub(super) fn load_balancer(errors: &mut Errors, lb: &RawLoadBalancer) -> LoadBalancer {
    let Some(allowed) = keys(&lb.kind) else {
        errors.add(
            "load_balancer.kind",
            format!("unknown kind `{}`; expected {KINDS}", lb.kind),
        );
        return LoadBalancer::None;
    };
    for key in written(lb) {
        if !allowed.contains(&key) {
            errors.add(
                format!("load_balancer.{key}"),
                format!("is not used with kind `{}`", lb.kind),
            );
        }
    }
    let timeout = |errors: &mut Errors, default| {
        errors.duration("load_balancer.timeout", lb.timeout.as_deref(), default)
    };
    match lb.kind.as_str() {
        "none" => LoadBalancer::None,
        "nlb" => LoadBalancer::Nlb,
        "health-file" => {
            let path = lb
                .path
                .clone()
                .unwrap_or_else(|| DEFAULT_HEALTH_FILE.into());
            if !path.starts_with('/') {
                errors.add(
                    "load_balancer.path",
                    format!("`{path}` must start with `/`"),
                );
            }
            let detection = errors.duration(
                "load_balancer.detection",
                lb.detection.as_deref(),
                DEFAULT_DETECTION,
            );
            LoadBalancer::HealthFile { path, detection }
        }
        "haproxy" => {
            let admin = lb.admin.clone().unwrap_or_default();
            if admin.is_empty() {
                errors.add(
                    "load_balancer.admin",
                    "haproxy needs the runtime API address (`host:port` or `unix:/path`)",
                );
            } else if !admin.starts_with("unix:") {
                check_host_port(errors, "load_balancer.admin", &admin);
            }
            let backend = lb.backend.clone().unwrap_or_default();
            check_name(errors, "load_balancer.backend", &backend);
            LoadBalancer::Haproxy { admin, backend }
        }
        "f5" => {
            let t = timeout(errors, DEFAULT_LB_TIMEOUT);
            let api = http_api(errors, lb, t);
            let pool = required(
                errors,
                "pool",
                &lb.pool,
                "the pool's full path, e.g. `/Common/shop_pool`",
            );
            if !pool.is_empty() && !is_f5_path(&pool) {
                errors.add(
                    "load_balancer.pool",
                    format!(
                        "`{}` is not a full path like `/Common/shop_pool`",
                        pool.escape_debug()
                    ),
                );
            }
            let drain_mode = match lb.drain_mode.as_deref() {
                None | Some("force-offline") => F5DrainMode::ForceOffline,
                Some("disable") => F5DrainMode::Disable,
                Some(other) => {
                    errors.add(
                        "load_balancer.drain_mode",
                        format!("`{other}`: expected `force-offline` or `disable`"),
                    );
                    F5DrainMode::ForceOffline
                }
            };
            let token_login = match method(lb) {
                None | Some("token") => true,
                Some("basic") => false,
                Some(other) => {
                    errors.add(
                        "load_balancer.auth.method",
                        format!("`{other}`: expected `token` or `basic`"),
                    );
                    true
                }
            };
            LoadBalancer::F5(F5 {
                api,
                pool,
                drain_mode,
                token_login,
            })
        }
        "netscaler" => {
            let t = timeout(errors, DEFAULT_LB_TIMEOUT);
            let api = http_api(errors, lb, t);
            let member = match (lb.member.as_deref(), &lb.servicegroup) {
                (None | Some("service"), None) => NetscalerMember::Service,
                (Some("server"), None) => NetscalerMember::Server,
                (Some("servicegroup"), Some(g)) => {
                    check_netscaler_name(errors, "load_balancer.servicegroup", g);
                    NetscalerMember::ServiceGroup(g.clone())
                }
                (Some("servicegroup"), None) => {
                    errors.add(
                        "load_balancer.servicegroup",
                        "`member: servicegroup` needs the service group's name",
                    );
                    NetscalerMember::Service
                }
                (None | Some("service") | Some("server"), Some(_)) => {
                    errors.add(
                        "load_balancer.servicegroup",
                        "is only used with `member: servicegroup`",
                    );
                    NetscalerMember::Service
                }
                (Some(other), _) => {
                    errors.add(
                        "load_balancer.member",
                        format!("`{other}`: expected `service`, `server` or `servicegroup`"),
                    );
                    NetscalerMember::Service
                }
            };
            let delay = lb
                .delay
                .as_deref()
                .map(|d| errors.duration("load_balancer.delay", Some(d), Duration::ZERO));
            let login = match method(lb) {
                None | Some("login") => true,
                Some("headers") => false,
                Some(other) => {
                    errors.add(
                        "load_balancer.auth.method",
                        format!("`{other}`: expected `login` or `headers`"),
                    );
                    true
                }
            };
            LoadBalancer::Netscaler(Netscaler {
                api,
                member,
                delay,
                login,
            })
        }
        "aws-elbv2" => {
            let arn = required(
                errors,
                "target_group_arn",
                &lb.target_group_arn,
                "the target group's ARN",
            );
            let arn_region = arn.split(':').nth(3).unwrap_or("").to_string();
            if !arn.is_empty() && !is_target_group_arn(&arn) {
                errors.add(
                    "load_balancer.target_group_arn",
                    format!(
                        "`{}` is not a target group ARN like \
                         `arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/shop/0123456789abcdef`",
                        arn.escape_debug()
                    ),
                );
            }
            let region = lb.region.clone().unwrap_or(arn_region);
            if !region.is_empty()
                && !region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                errors.add(
                    "load_balancer.region",
                    format!("`{region}` is not a region like `eu-west-1`"),
                );
            }
            if let Some(e) = &lb.endpoint {
                if !(e.starts_with("https://") || e.starts_with("http://"))
                    || e.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    errors.add(
                        "load_balancer.endpoint",
                        format!("`{}` is not a URL like `https://elasticloadbalancing.eu-west-1.amazonaws.com`", e.escape_debug()),
                    );
                }
            }
            if let Some(p) = &lb.profile {
                check_name(errors, "load_balancer.profile", p);
            }
            LoadBalancer::AwsElbv2(AwsElbv2 {
                target_group_arn: arn,
                region,
                endpoint: lb
                    .endpoint
                    .as_ref()
                    .map(|e| e.trim_end_matches('/').to_string()),
                profile: lb.profile.clone(),
                timeout: timeout(errors, DEFAULT_LB_TIMEOUT),
            })
        }
        "arr" => {
            let agent = required(
                errors,
                "agent",
                &lb.agent,
                "the ARR server's farm-agent, `host:port`",
            );
            if !agent.is_empty() {
                check_host_port(errors, "load_balancer.agent", &agent);
            }
            let farm = required(errors, "farm", &lb.farm, "the web farm's name in ARR");
            if !farm.is_empty() && !is_arr_farm_name(&farm) {
                errors.add(
                    "load_balancer.farm",
                    format!(
                        "`{}` may only contain letters, digits, spaces, `-`, `_` and `.`",
                        farm.escape_debug()
                    ),
                );
            }
            let drain_mode = match lb.drain_mode.as_deref() {
                None | Some("graceful-stop") => ArrDrainMode::GracefulStop,
                Some("drain") => ArrDrainMode::Drain,
                Some(other) => {
                    errors.add(
                        "load_balancer.drain_mode",
                        format!("`{other}`: expected `graceful-stop` or `drain`"),
                    );
                    ArrDrainMode::GracefulStop
                }
            };
            LoadBalancer::Arr(Arr {
                agent,
                farm,
                drain_mode,
            })
        }
        "exec" => {
            let mut argv = |key: &str, value: &Option<Vec<String>>| -> Vec<String> {
                let at = format!("load_balancer.{key}");
                match value {
                    None => {
                        errors.add(
                            &at,
                            "exec needs a command (an argv list) for drain, return and state",
                        );
                        Vec::new()
                    }
                    Some(v) if v.first().is_none_or(|p| p.trim().is_empty()) => {
                        errors.add(&at, "the first element must be the program to run");
                        Vec::new()
                    }
                    Some(v) => {
                        for (i, arg) in v.iter().enumerate() {
                            if let Err(m) = check_template(arg) {
                                errors.add(format!("{at}[{i}]"), m);
                            }
                        }
                        v.clone()
                    }
                }
            };
            let drain = argv("drain", &lb.drain);
            let return_ = argv("return", &lb.return_);
            let state = argv("state", &lb.state);
            LoadBalancer::Exec(Exec {
                drain,
                return_,
                state,
                timeout: timeout(errors, DEFAULT_EXEC_TIMEOUT),
            })
        }
        _ => unreachable!("every kind with keys is handled"),
    }
}

fn method(lb: &RawLoadBalancer) -> Option<&str> {
    lb.auth.as_ref().and_then(|a| a.method.as_deref())
}

fn required(errors: &mut Errors, key: &str, value: &Option<String>, what: &str) -> String {
    match value {
        Some(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => {
            errors.add(
                format!("load_balancer.{key}"),
                format!("is required: {what}"),
            );
            String::new()
        }
    }
}

/// `url`, `auth` and `tls` of an HTTPS management API.
fn http_api(errors: &mut Errors, lb: &RawLoadBalancer, timeout: Duration) -> HttpApi {
    let url = required(
        errors,
        "url",
        &lb.url,
        "the management address, `https://host`",
    );
    let url = url.trim_end_matches('/').to_string();
    if !url.is_empty() {
        let host = url.strip_prefix("https://").unwrap_or("");
        if url.starts_with("http://") {
            errors.add(
                "load_balancer.url",
                "must be https: the API carries the account's password",
            );
        } else if host.is_empty()
            || host.contains('/')
            || host.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            errors.add(
                "load_balancer.url",
                format!(
                    "`{}` is not an address like `https://bigip.example.com`",
                    url.escape_debug()
                ),
            );
        }
    }
    let (username, password) = match &lb.auth {
        None => {
            errors.add(
                "load_balancer.auth",
                "is required: `{username: ..., password_env: VAR}` (or `password_file`)",
            );
            (String::new(), Secret::Env(String::new()))
        }
        Some(a) => {
            if a.username.trim().is_empty()
                || a.username.chars().any(|c| c.is_control() || c == ':')
            {
                errors.add(
                    "load_balancer.auth.username",
                    "must be a user name (no `:` or control characters)",
                );
            }
            let password = match (&a.password_env, &a.password_file) {
                (Some(var), None) => {
                    let ok = var
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !ok {
                        errors.add(
                            "load_balancer.auth.password_env",
                            format!(
                                "`{}` is not an environment variable name",
                                var.escape_debug()
                            ),
                        );
                    }
                    Secret::Env(var.clone())
                }
                (None, Some(file)) if !file.trim().is_empty() => Secret::File(file.into()),
                (Some(_), Some(_)) => {
                    errors.add(
                        "load_balancer.auth",
                        "give `password_env` or `password_file`, not both",
                    );
                    Secret::Env(String::new())
                }
                _ => {
                    errors.add(
                        "load_balancer.auth",
                        "needs `password_env` (an environment variable) or `password_file`; \
                         a password is never written in the inventory",
                    );
                    Secret::Env(String::new())
                }
            };
            (a.username.clone(), password)
        }
    };
    let trust = match lb.tls.as_ref().map(|t| (&t.ca, &t.fingerprint)) {
        Some((Some(ca), None)) if !ca.trim().is_empty() => Trust::Ca(ca.into()),
        Some((None, Some(fp))) => match parse_fingerprint(fp) {
            Some(bytes) => Trust::Fingerprint(bytes),
            None => {
                errors.add(
                    "load_balancer.tls.fingerprint",
                    "is not a sha256 fingerprint (64 hex digits, `:` between pairs allowed)",
                );
                Trust::Fingerprint(Vec::new())
            }
        },
        Some((Some(_), Some(_))) => {
            errors.add("load_balancer.tls", "give `ca` or `fingerprint`, not both");
            Trust::Fingerprint(Vec::new())
        }
        _ => {
            errors.add(
                "load_balancer.tls",
                "is required: `{ca: FILE.pem}` or `{fingerprint: SHA256}` — the management \
                 certificate is never accepted unverified",
            );
            Trust::Fingerprint(Vec::new())
        }
    };
    HttpApi {
        url,
        username,
        password,
        trust,
        timeout,
    }
}

/// `AB:CD:...` or `abcd...`, 32 bytes.
pub fn parse_fingerprint(text: &str) -> Option<Vec<u8>> {
    let hex: String = text
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.len() != 64 {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn is_f5_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() > 1
        && !p.contains("//")
        && !p.split('/').any(|s| s == "..")
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:%".contains(c))
}

fn is_target_group_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "elasticloadbalancing"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5].starts_with("targetgroup/")
        && !arn.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn is_arr_farm_name(f: &str) -> bool {
    f.len() <= 128
        && f.chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._-".contains(c))
}

fn check_netscaler_name(errors: &mut Errors, path: &str, name: &str) {
    if name.is_empty()
        || name.len() > 127
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.#:@=-".contains(c))
    {
        errors.add(
            path,
            format!(
                "`{}` is not a NetScaler name (letters, digits and `_.#:@=-`)",
                name.escape_debug()
            ),
        );
    }
}

/// The placeholders an exec argument may use.
pub const EXEC_PLACEHOLDERS: [&str; 3] = ["{node}", "{lb_server}", "{address}"];

fn check_template(arg: &str) -> Result<(), crate::model::ValueError> {
    use crate::model::ValueError;
    if arg.chars().any(char::is_control) {
        return Err(ValueError("contains control characters".into()));
    }
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let after = &rest[start..];
        let end = after
            .find('}')
            .ok_or_else(|| ValueError("an unclosed `{`".into()))?;
        let placeholder = &after[..=end];
        if !EXEC_PLACEHOLDERS.contains(&placeholder) {
            return Err(ValueError(format!(
                "unknown placeholder `{placeholder}`; use {}",
                EXEC_PLACEHOLDERS.join(", ")
            )));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// A node's `lb_server`, in the words of `lb`.
pub(super) fn check_member(errors: &mut Errors, path: &str, lb: &LoadBalancer, member: &str) {
    let bad = |errors: &mut Errors, what: &str| {
        errors.add(path, format!("`{}` is not {what}", member.escape_debug()))
    };
    match lb {
        LoadBalancer::F5(_) => {
            let port_ok = member
                .rsplit_once([':', '.'])
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok_and(|p| p > 0));
            if !is_f5_path(member) || !port_ok {
                bad(errors, "a pool member's full name like `/Common/web01:80`");
            }
        }
        LoadBalancer::Netscaler(n) => match &n.member {
            NetscalerMember::ServiceGroup(_) => {
                let ok = member
                    .rsplit_once(':')
                    .is_some_and(|(s, p)| !s.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if ok {
                    check_netscaler_name(errors, path, member);
                } else {
                    bad(errors, "a service group member like `web01:80`");
                }
            }
            _ => check_netscaler_name(errors, path, member),
        },
        LoadBalancer::AwsElbv2(_) => {
            if !host_like(member, 256) {
                bad(
                    errors,
                    "a target like `i-0abc123`, `10.0.1.11` or `10.0.1.11:80`",
                );
            }
        }
        LoadBalancer::Arr(_) => {
            if !host_like(member, 255) {
                bad(
                    errors,
                    "a server address of the web farm (a host name or IP)",
                );
            }
        }
        LoadBalancer::Exec(_) => {
            if member.is_empty() || member.chars().any(char::is_control) {
                bad(errors, "a member name (not empty, no control characters)");
            }
        }
        LoadBalancer::None
        | LoadBalancer::HealthFile { .. }
        | LoadBalancer::Haproxy { .. }
        | LoadBalancer::Nlb => check_name(errors, path, member),
    }
}

/// A host name, IP (v4, or v6 in brackets) or instance id, with an
/// optional `:port`: 1 to `max` of letters, digits and `.:-[]`.
fn host_like(member: &str, max: usize) -> bool {
    !member.is_empty()
        && member.len() <= max
        && member
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_with_or_without_colons() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_fingerprint(&hex).unwrap(), vec![0xab; 32]);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), vec![0xab; 32]);
        assert!(parse_fingerprint("abcd").is_none());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_none());
    }

    #[test]
    fn exec_templates_take_only_known_placeholders() {
        assert!(check_template("--server={lb_server}").is_ok());
        assert!(check_template("{node}-{address}").is_ok());
        assert!(check_template("{password}").is_err());
        assert!(check_template("{node").is_err());
        assert!(check_template("a\nb").is_err());
    }
}

//! Parsers for the output of appcmd, iisreset, sc and typeperf, tolerant
//! of CRLF and `\r\r\n` line ends, blank lines, both `WP` forms, commas in
//! values (multi-binding sites, URLs) and `ERROR ( ... )` printed on stdout.
use crate::iis::{PoolState, ServiceState};

/// Lines without their `\r`s, blank ones dropped.
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|l| l.trim_end_matches('\r').trim_end())
        .filter(|l| !l.trim().is_empty())
}

/// One object of an appcmd listing: `TYPE "id" (key:value,key:value)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppcmdObject {
    pub kind: String,
    pub id: String,
    pub attrs: Vec<(String, String)>,
}

impl AppcmdObject {
    /// An attribute by name, case-insensitively.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// An attribute key: letters, digits and dots, starting with a letter.
fn is_key(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '.')
}

/// Parses one listing line; `None` for anything else.
pub fn object(line: &str) -> Option<AppcmdObject> {
    let line = line.trim();
    let (kind, rest) = line.split_once(' ')?;
    if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let rest = rest.trim_start().strip_prefix('"')?;
    let (id, rest) = rest.split_once('"')?;
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or("");
    // Split on commas, then glue back pieces that do not start with
    // `key:` — they belong to the previous value (bindings, URLs).
    let mut attrs: Vec<(String, String)> = Vec::new();
    for piece in inner.split(',') {
        match piece.split_once(':') {
            Some((k, v)) if is_key(k) => attrs.push((k.to_string(), v.to_string())),
            _ => match attrs.last_mut() {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(piece);
                }
                None if piece.is_empty() => {}
                None => attrs.push((String::new(), piece.to_string())),
            },
        }
    }
    Some(AppcmdObject {
        kind: kind.to_string(),
        id: id.to_string(),
        attrs,
    })
}

/// Every object of `kind` in a listing.
pub fn objects<'a>(text: &'a str, kind: &'a str) -> impl Iterator<Item = AppcmdObject> + 'a {
    lines(text)
        .filter_map(object)
        .filter(move |o| o.kind == kind)
}

/// `ERROR ( hresult:800710d8, message:Command execution failed.\n... )`:
/// the hresult (if any) and the message lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppcmdError {
    pub hresult: Option<String>,
    pub message: String,
}

pub fn appcmd_error(text: &str) -> Option<AppcmdError> {
    let start = text.find("ERROR (")?;
    let body = &text[start + "ERROR (".len()..];
    let body = body.rfind(')').map_or(body, |end| &body[..end]);
    let joined: Vec<&str> = lines(body).map(str::trim).collect();
    let joined = joined.join(" ");
    let mut hresult = None;
    let mut message = joined.as_str();
    if let Some(rest) = joined.strip_prefix("hresult:") {
        let (h, m) = rest.split_once(',').unwrap_or((rest, ""));
        hresult = Some(h.trim().to_string());
        message = m.trim();
    }
    let message = message.strip_prefix("message:").unwrap_or(message).trim();
    Some(AppcmdError {
        hresult,
        message: message.to_string(),
    })
}

/// The root virtual directory of `site` in an `appcmd list vdir` listing
/// (`VDIR "shop/" (physicalPath:D:\sites\shop)`): its physical path as
/// written (variables not expanded).
pub fn root_vdir_path(listing: &str, site: &str) -> Option<String> {
    let id = format!("{site}/");
    objects(listing, "VDIR")
        .find(|v| v.id.eq_ignore_ascii_case(&id))
        .and_then(|v| v.attr("physicalPath").map(str::to_string))
}

/// Expands `%NAME%` variables with `lookup`; unknown ones stay as written.
pub fn expand_vars(path: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('%') {
        let (before, after) = rest.split_at(start);
        out.push_str(before);
        match after[1..].find('%') {
            Some(end) => {
                let name = &after[1..1 + end];
                match lookup(name).filter(|_| !name.is_empty()) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&after[..end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

pub fn pool_state(s: &str) -> PoolState {
    PoolState::parse(s)
}

/// `sc query NAME`: the numeric STATE (the text is localized), or
/// `NotInstalled` for `OpenService FAILED 1060`.
pub fn sc_state(text: &str) -> Option<ServiceState> {
    if text.contains("FAILED 1060") {
        return Some(ServiceState::NotInstalled);
    }
    let numeric = |line: &str| -> Option<(String, u8)> {
        let (key, value) = line.split_once(':')?;
        let mut words = value.split_whitespace();
        let n: u8 = words.next()?.parse().ok()?;
        words.next()?; // the (localized) name follows the number
        Some((key.trim().to_ascii_uppercase(), n))
    };
    let candidates: Vec<(String, u8)> = lines(text).filter_map(numeric).collect();
    let pick = candidates
        .iter()
        .find(|(k, _)| k == "STATE")
        .or_else(|| candidates.iter().find(|(_, n)| (1..=7).contains(n)))?;
    ServiceState::from_sc_code(pick.1)
}

/// Whether iisreset's output reports a failure (its exit code is not
/// always non-zero when it does).
pub fn iisreset_failed(text: &str) -> bool {
    lines(text).any(|l| {
        let l = l.to_ascii_lowercase();
        l.contains("attempt failed") || l.starts_with("access denied")
    })
}

/// One site's log settings in `appcmd list site /xml /config:*` (the
/// effective values: `/config:*` emits defaults too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteLogConfig {
    pub name: String,
    pub id: u32,
    /// `<logFile directory>` as written (variables not expanded).
    pub directory: Option<String>,
    /// `W3C`, `IIS`, `NCSA`, `Custom`.
    pub format: Option<String>,
    /// `File`, `ETW`, `File,ETW`.
    pub target: Option<String>,
    /// The root application's pool.
    pub pool: Option<String>,
    /// `Daily`, `Hourly`, `Weekly`, `Monthly`, `MaxSize`: the names of
    /// its files.
    pub period: Option<String>,
}

/// Every `SITE` of `appcmd list site /xml /config:*`.
pub fn site_logs(xml: &str) -> Result<Vec<SiteLogConfig>, String> {
    let doc = roxmltree::Document::parse(xml.trim_start_matches('\u{feff}'))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for site in doc.descendants().filter(|n| n.has_tag_name("SITE")) {
        let name = site
            .attribute("SITE.NAME")
            .ok_or("a SITE without SITE.NAME")?;
        let id = site
            .attribute("SITE.ID")
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| format!("site {name}: no numeric SITE.ID"))?;
        let inner = site.descendants().find(|n| n.has_tag_name("site"));
        let log = inner.and_then(|s| s.children().find(|n| n.has_tag_name("logFile")));
        let pool = inner
            .and_then(|s| {
                s.children()
                    .find(|n| n.has_tag_name("application") && n.attribute("path") == Some("/"))
            })
            .and_then(|a| a.attribute("applicationPool"))
            .map(str::to_string);
        out.push(SiteLogConfig {
            name: name.to_string(),
            id,
            directory: log
                .and_then(|l| l.attribute("directory"))
                .map(str::to_string),
            format: log
                .and_then(|l| l.attribute("logFormat"))
                .map(str::to_string),
            target: log
                .and_then(|l| l.attribute("logTargetW3C"))
                .map(str::to_string),
            period: log.and_then(|l| l.attribute("period")).map(str::to_string),
            pool,
        });
    }
    Ok(out)
}

/// The value of a one-counter `typeperf "<counter>" -sc 1` sample: its
/// one counter's (paired by the header; a row longer than it was refused
/// when read), `None` when unreadable.
pub fn typeperf_value(counters: &[crate::traffic::counters::Counter]) -> Option<f64> {
    match counters {
        [one] => one.value,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's verbatim `/xml /config:*` start (IIS 8.5, sous-chefs
    /// iis#249), completed with the documented elements; a second site
    /// whose log goes to ETW only.
    const SITES_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<appcmd>
    <SITE SITE.NAME="MyWebSite" SITE.ID="1" bindings="http/*:80:,https/*:443:" state="Started">
        <site name="MyWebSite" id="1" serverAutoStart="true">
            <bindings>
                <binding protocol="http" bindingInformation="*:80:" />
            </bindings>
            <logFile logExtFileFlags="Date, Time, ClientIP, UserName, ServerIP, Method, UriStem, UriQuery, HttpStatus, Win32Status, TimeTaken, ServerPort, UserAgent, Referer, HttpSubStatus" customLogPluginClsid="" logFormat="W3C" logTargetW3C="File" directory="%SystemDrive%\inetpub\logs\LogFiles" period="Daily" />
            <application path="/" applicationPool="ShopPool">
                <virtualDirectory path="/" physicalPath="D:\sites\shop" />
            </application>
            <application path="/api" applicationPool="ApiPool" />
        </site>
    </SITE>
    <SITE SITE.NAME="Quiet" SITE.ID="3" bindings="http/*:82:" state="Stopped">
        <site name="Quiet" id="3">
            <logFile logFormat="W3C" logTargetW3C="ETW" directory="D:\IISLogs" />
            <application path="/" applicationPool="QuietPool" />
        </site>
    </SITE>
</appcmd>
"#;

    #[test]
    fn site_ids_and_log_folders_from_the_xml() {
        let sites = site_logs(SITES_XML).unwrap();
        assert_eq!(sites.len(), 2);
        assert_eq!(sites[0].name, "MyWebSite");
        assert_eq!(sites[0].id, 1);
        assert_eq!(
            sites[0].directory.as_deref(),
            Some(r"%SystemDrive%\inetpub\logs\LogFiles")
        );
        assert_eq!(sites[0].pool.as_deref(), Some("ShopPool"));
        assert_eq!(sites[0].period.as_deref(), Some("Daily"));
        assert_eq!(sites[1].period, None);
        assert_eq!(sites[1].target.as_deref(), Some("ETW"));
        assert!(site_logs("not xml").is_err());
        assert!(site_logs("<appcmd><SITE SITE.NAME=\"x\"/></appcmd>").is_err());
    }

    #[test]
    fn attributes_with_commas_stay_whole() {
        let o =
            object(r#"SITE "Shop" (id:2,bindings:http/*:80:,https/*:443:,state:Started)"#).unwrap();
        assert_eq!(o.attr("bindings"), Some("http/*:80:,https/*:443:"));
        assert_eq!(o.attr("state"), Some("Started"));
        assert_eq!(o.attr("ID"), Some("2"));
    }

    #[test]
    fn variables_are_expanded_and_unknown_ones_kept() {
        let env = |n: &str| (n.eq_ignore_ascii_case("SystemDrive")).then(|| "C:".to_string());
        assert_eq!(
            expand_vars(r"%SystemDrive%\inetpub\wwwroot", env),
            r"C:\inetpub\wwwroot"
        );
        assert_eq!(expand_vars(r"%NOPE%\x", env), r"%NOPE%\x");
        assert_eq!(expand_vars("50%", env), "50%");
        assert_eq!(expand_vars("%%", env), "%%");
    }

    #[test]
    fn not_a_listing_line() {
        assert_eq!(object("\"X\" successfully recycled"), None);
        assert_eq!(object("Attempting stop..."), None);
    }
}

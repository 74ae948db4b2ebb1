//! The simulator's own traffic records, in IIS's formats, so the agent's
//! traffic reader runs over the simulator as over a real server: a W3C
//! access log per site (`<dir>/W3SVC<id>/u_exYYMMDD.log`, the IIS 10
//! default fields, UTC, CRLF, the directive block written again whenever
//! the file is reopened — after an IIS stop as after a restart) and the
//! HTTP.sys error log (`<dir>/HTTPERR/httperr1.log`) for what never reaches
//! a worker: a stopped pool's 503s. Refused connections (IIS stopped) are
//! in neither, as on IIS.
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const W3C_FIELDS: &str = "date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken";
pub const HTTPERR_FIELDS: &str = "date time c-ip c-port s-ip s-port cs-version cs-method cs-uri sc-status s-siteid s-reason s-queuename";

/// One request as the access log records it.
pub struct Entry<'a> {
    pub site_id: u32,
    pub server: SocketAddr,
    pub client: SocketAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub status: u16,
    pub substatus: u32,
    pub time_taken_ms: u64,
}

/// A field as W3C logging writes it: `-` for none, `+` for spaces and
/// anything non-printable.
fn field(v: Option<&str>) -> String {
    match v {
        None | Some("") => "-".into(),
        Some(s) => s
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '+'
                } else {
                    c
                }
            })
            .collect(),
    }
}

struct Open {
    name: String,
    file: std::fs::File,
}

pub struct Logs {
    dir: PathBuf,
    open: Mutex<HashMap<String, Open>>,
}

impl Logs {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            open: Mutex::default(),
        }
    }

    /// IIS stopped: the files are closed, and their directives written
    /// again when the next request reopens them.
    pub fn close_all(&self) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn append(&self, key: &str, folder: &Path, name: String, header: &str, line: &str) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let stale = open.get(key).is_none_or(|o| o.name != name);
        if stale {
            let _ = std::fs::create_dir_all(folder);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(folder.join(&name));
            let Ok(mut file) = file else {
                return;
            };
            let now = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S");
            let _ = write!(file, "{}", header.replace("{now}", &now.to_string()));
            open.insert(key.to_string(), Open { name, file });
        }
        if let Some(o) = open.get_mut(key) {
            let _ = write!(o.file, "{line}\r\n");
        }
    }

    pub fn request(&self, e: &Entry<'_>) {
        let now = jiff::Timestamp::now();
        let name = format!("u_ex{}.log", now.strftime("%y%m%d"));
        // date time s-ip cs-method cs-uri-stem cs-uri-query s-port
        // cs-username c-ip cs(User-Agent) cs(Referer) sc-status
        // sc-substatus sc-win32-status time-taken
        let line = format!(
            "{} {} {} {} {} {} - {} {} - {} {} 0 {}",
            now.strftime("%Y-%m-%d %H:%M:%S"),
            e.server.ip(),
            field(Some(e.method)),
            field(Some(e.path)),
            field(e.query),
            e.server.port(),
            e.client.ip(),
            field(e.user_agent),
            e.status,
            e.substatus,
            e.time_taken_ms,
        );
        let folder = self.dir.join(format!("W3SVC{}", e.site_id));
        let header = format!(
            "#Software: Microsoft Internet Information Services 10.0\r\n#Version: 1.0\r\n#Date: {{now}}\r\n#Fields: {W3C_FIELDS}\r\n"
        );
        self.append(&format!("w3c{}", e.site_id), &folder, name, &header, &line);
    }

    /// A request HTTP.sys answered itself (`reason`, e.g. `AppOffline`).
    pub fn httperr(&self, e: &Entry<'_>, reason: &str, queue: &str) {
        let now = jiff::Timestamp::now();
        let line = format!(
            "{} {} {} {} {} HTTP/1.1 {} {} {} {} {} {}",
            now.strftime("%Y-%m-%d %H:%M:%S"),
            e.client.ip(),
            e.client.port(),
            e.server.ip(),
            e.server.port(),
            field(Some(e.method)),
            field(Some(e.path)),
            match e.status {
                0 => "-".to_string(),
                s => s.to_string(),
            },
            e.site_id,
            reason,
            field(Some(queue)),
        );
        let header = format!(
            "#Software: Microsoft HTTP API 2.0\r\n#Version: 1.0\r\n#Date: {{now}}\r\n#Fields: {HTTPERR_FIELDS}\r\n"
        );
        self.append(
            "httperr",
            &self.dir.join("HTTPERR"),
            "httperr1.log".into(),
            &header,
            &line,
        );
    }
}

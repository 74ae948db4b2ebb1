//! `kind: haproxy`: the HAProxy runtime API (stats socket), over TCP
//! (`127.0.0.1:9999`) or a unix socket (`unix:/run/haproxy/admin.sock`).
//!
//! drain = `set server B/S state drain`: no new connections (except
//! persistent ones), health checks go on. Quiesced when HAProxy's current
//! sessions for the server (`scur`) are 0. Return = `state ready`, then
//! wait until HAProxy's own health check reports the server `UP`.
use std::time::{Duration, Instant};

use async_trait::async_trait;
use farm_inventory::Node;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{LbError, LbState, LoadBalancer, Member, MemberState, Target};

farm_proto::message_error! {
    /// Why HAProxy's `show stat` answer does not parse.
    StatError
}

/// How often HAProxy's stats are read while waiting on a condition.
const POLL: Duration = Duration::from_millis(20);
/// Largest runtime API answer read (a big farm's `show stat` is far less).
const MAX_REPLY: u64 = 8 * 1024 * 1024;

pub struct Haproxy {
    admin: String,
    backend: String,
    timeout: Duration,
}

/// One server line of `show stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    pub name: String,
    /// `UP`, `DOWN`, `DRAIN`, `MAINT`, `NOLB`, `UP 1/2`, `no check`, ...
    pub status: String,
    /// Current sessions.
    pub scur: u64,
    /// What users got through it, when the columns are there.
    pub traffic: super::LbTraffic,
}

impl Haproxy {
    pub fn new(admin: impl Into<String>, backend: impl Into<String>) -> Self {
        Self {
            admin: admin.into(),
            backend: backend.into(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Sends one command (non-interactive mode: HAProxy answers and closes).
    pub async fn command(&self, cmd: &str) -> Result<String, LbError> {
        let run = async {
            if let Some(path) = self.admin.strip_prefix("unix:") {
                #[cfg(unix)]
                {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    return exchange(s, cmd).await;
                }
                #[cfg(not(unix))]
                {
                    let _ = path;
                    return Err(std::io::Error::other("unix sockets are not supported here"));
                }
            }
            let s = tokio::net::TcpStream::connect(&self.admin).await?;
            exchange(s, cmd).await
        };
        let api = || format!("HAProxy runtime API {}", self.admin);
        let reply = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| LbError::Unreachable {
                lb: api(),
                detail: format!("no answer within {:?}", self.timeout),
            })?
            .map_err(|e| LbError::Unreachable {
                lb: api(),
                detail: e.to_string(),
            })?;
        if reply.trim_start().starts_with("Permission denied") {
            return Err(LbError::Api {
                lb: api(),
                message: format!(
                    "refused `{cmd}`: permission denied (the stats socket needs `level admin`)"
                ),
            });
        }
        Ok(reply)
    }

    /// The backend's servers from `show stat`, columns read by header name.
    pub async fn servers(&self) -> Result<Vec<ServerStat>, LbError> {
        let text = self.command("show stat").await?;
        let stats = parse_stat(&text).map_err(|e| LbError::Api {
            lb: self.name(),
            message: format!("could not read `show stat`: {e}"),
        })?;
        let mut found_backend = false;
        let servers: Vec<ServerStat> = stats
            .into_iter()
            .filter(|(px, _)| *px == self.backend)
            .filter_map(|(_, s)| {
                found_backend = true;
                (s.name != "BACKEND" && s.name != "FRONTEND").then_some(s)
            })
            .collect();
        if !found_backend {
            return Err(LbError::Api {
                lb: format!("HAProxy {}", self.admin),
                message: format!("no backend `{}`", self.backend),
            });
        }
        Ok(servers)
    }

    /// The server of `node` (its `lb_server`).
    pub async fn server(&self, node: &str, name: &str) -> Result<ServerStat, LbError> {
        self.servers()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| LbError::NoMember {
                lb: self.name(),
                node: node.to_string(),
                member: format!("server `{name}`"),
            })
    }

    /// Every server of the backend as `show servers state` has it: its
    /// administrative state bits (0: ready; 0x08 drain, 0x01 maint, ...)
    /// and its weight now and as configured, by header name. The
    /// operational status in `show stat` cannot tell a drained server whose
    /// check fails from one that is merely down.
    pub async fn servers_state(&self) -> Result<Vec<ServerState>, LbError> {
        let text = self
            .command(&format!("show servers state {}", self.backend))
            .await?;
        parse_servers_state(&text).map_err(|m| LbError::Api {
            lb: self.name(),
            message: format!("could not read `show servers state`: {m}"),
        })
    }

    /// A server's administrative state bits.
    pub async fn admin_state(&self, node: &str, server: &str) -> Result<u32, LbError> {
        self.servers_state()
            .await?
            .into_iter()
            .find(|s| s.name == server)
            .map(|s| s.admin)
            .ok_or_else(|| LbError::NoMember {
                lb: self.name(),
                node: node.to_string(),
                member: format!("server `{server}`"),
            })
    }

    pub async fn set_state(&self, server: &str, state: &str) -> Result<(), LbError> {
        self.set(server, &format!("state {state}")).await
    }

    /// `set server B/S <what>`: an empty answer is success.
    async fn set(&self, server: &str, what: &str) -> Result<(), LbError> {
        let cmd = format!("set server {}/{server} {what}", self.backend);
        let reply = self.command(&cmd).await?;
        if reply.trim().is_empty() {
            Ok(())
        } else {
            Err(LbError::Api {
                lb: self.name(),
                message: format!("refused `{cmd}`: {}", reply.trim()),
            })
        }
    }
}

/// A server in `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub name: String,
    pub admin: u32,
    pub weight: super::weights::Weight,
}

/// `show servers state B`: a version line, a `# be_id ...` header, then
/// space-separated rows, by header name.
pub fn parse_servers_state(text: &str) -> Result<Vec<ServerState>, String> {
    let header = text
        .lines()
        .find_map(|l| l.strip_prefix('#'))
        .ok_or_else(|| format!("no `# be_id ...` header in {:?}", text.trim()))?;
    let cols: Vec<&str> = header.split_whitespace().collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("no `{name}` column"))
    };
    let (name_at, admin_at) = (col("srv_name")?, col("srv_admin_state")?);
    let (uweight_at, iweight_at) = (col("srv_uweight")?, col("srv_iweight")?);
    Ok(text
        .lines()
        .skip_while(|l| !l.starts_with('#'))
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter_map(|f| {
            let num = |at: usize| f.get(at).and_then(|v| v.parse::<u32>().ok());
            Some(ServerState {
                name: f.get(name_at)?.to_string(),
                admin: num(admin_at)?,
                weight: super::weights::Weight {
                    current: num(uweight_at)?,
                    initial: num(iweight_at)?,
                },
            })
        })
        .collect())
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    cmd: &str,
) -> std::io::Result<String> {
    s.write_all(format!("{cmd}\n").as_bytes()).await?;
    let mut buf = Vec::new();
    (&mut s).take(MAX_REPLY).read_to_end(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Parses `show stat` CSV: `(pxname, server)` per line, by header name.
pub fn parse_stat(text: &str) -> Result<Vec<(String, ServerStat)>, StatError> {
    let body = text
        .trim_start()
        .strip_prefix('#')
        .ok_or("no `# pxname,...` header")?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body.as_bytes());
    let headers = rdr.headers().map_err(|e| e.to_string())?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| StatError(format!("no `{name}` column")))
    };
    let (px, sv, scur, status) = (col("pxname")?, col("svname")?, col("scur")?, col("status")?);
    // Counters: by name, absent columns (older builds, trimmed answers)
    // read as unknown; empty fields are empty, not 0.
    let opt = |name: &str| headers.iter().position(|h| h == name);
    let hrsp: Vec<Option<usize>> = [
        "hrsp_1xx",
        "hrsp_2xx",
        "hrsp_3xx",
        "hrsp_4xx",
        "hrsp_5xx",
        "hrsp_other",
    ]
    .iter()
    .map(|n| opt(n))
    .collect();
    let (econ, eresp, qcur, rtime, ttime, req_tot) = (
        opt("econ"),
        opt("eresp"),
        opt("qcur"),
        opt("rtime"),
        opt("ttime"),
        opt("req_tot"),
    );
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| e.to_string())?;
        let get = |i: usize| rec.get(i).unwrap_or("").to_string();
        let num = |i: Option<usize>| {
            i.and_then(|i| rec.get(i))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let responses: Vec<Option<u64>> = hrsp.iter().map(|&i| num(i)).collect();
        let answered = responses.iter().flatten().sum::<u64>();
        out.push((
            get(px),
            ServerStat {
                name: get(sv),
                status: get(status),
                scur: get(scur).parse().unwrap_or(0),
                traffic: super::LbTraffic {
                    responses: responses.iter().any(Option::is_some).then_some(answered),
                    status_5xx: responses[4],
                    connect_errors: num(econ),
                    response_errors: num(eresp),
                    queue: num(qcur),
                    rtime_ms: num(rtime),
                    ttime_ms: num(ttime),
                    requests_total: num(req_tot),
                    connections: num(Some(scur)),
                },
            },
        ));
    }
    Ok(out)
}

/// HAProxy's `status` column in the words of every driver.
pub fn lb_state(status: &str) -> LbState {
    let word = status.split_whitespace().next().unwrap_or("");
    match word {
        // `UP 1/2` is still up (going down); `no check` serves unchecked.
        "UP" | "no" => LbState::Up,
        "DRAIN" | "NOLB" => LbState::Draining,
        "MAINT" => LbState::Maintenance,
        "DOWN" => LbState::Down,
        _ => LbState::Unknown,
    }
}

#[async_trait]
impl LoadBalancer for Haproxy {
    fn name(&self) -> String {
        format!("haproxy backend `{}`", self.backend)
    }

    fn kind(&self) -> &'static str {
        "haproxy"
    }

    fn drains(&self) -> bool {
        true
    }

    async fn weights(
        &self,
        nodes: &[Node],
    ) -> Result<Option<Vec<Option<super::weights::Weight>>>, LbError> {
        let state = self.servers_state().await?;
        Ok(Some(
            nodes
                .iter()
                .map(|n| {
                    state
                        .iter()
                        .find(|s| s.name == n.lb_server)
                        .map(|s| s.weight)
                })
                .collect(),
        ))
    }

    /// `set server B/S weight N` (absolute: a percentage is relative to
    /// the configured weight and rounds a weight of 1 down to 0), then
    /// `get weight B/S` to see each one took.
    async fn set_weights(&self, set: &[(&Node, u32)]) -> Result<(), LbError> {
        for (node, weight) in set {
            self.set(&node.lb_server, &format!("weight {weight}"))
                .await?;
        }
        for (node, weight) in set {
            let cmd = format!("get weight {}/{}", self.backend, node.lb_server);
            let reply = self.command(&cmd).await?;
            // `1 (initial 1)`
            let now: Option<u32> = reply.split_whitespace().next().and_then(|v| v.parse().ok());
            if now != Some(*weight) {
                return Err(LbError::Api {
                    lb: self.name(),
                    message: format!(
                        "the weight of {} did not take: `{cmd}` says {:?}, {weight} was set",
                        node.name,
                        reply.trim()
                    ),
                });
            }
        }
        Ok(())
    }

    async fn traffic(
        &self,
        nodes: &[Node],
    ) -> Result<Option<Vec<Option<super::LbTraffic>>>, LbError> {
        let servers = self.servers().await?;
        Ok(Some(
            nodes
                .iter()
                .map(|n| {
                    servers
                        .iter()
                        .find(|s| s.name == n.lb_server)
                        .map(|s| s.traffic.clone())
                })
                .collect(),
        ))
    }

    async fn members(&self, nodes: &[Node]) -> Result<Vec<Member>, LbError> {
        let servers = self.servers().await?;
        Ok(nodes
            .iter()
            .map(|n| Member {
                node: n.name.clone(),
                state: servers
                    .iter()
                    .find(|s| s.name == n.lb_server)
                    .map(|s| MemberState {
                        state: lb_state(&s.status),
                        raw: s.status.clone(),
                    }),
            })
            .collect())
    }

    async fn drain(&self, t: &Target<'_>) -> Result<(), LbError> {
        self.set_state(&t.node.lb_server, "drain").await
    }

    async fn wait_sessions_gone(&self, node: &Node, timeout: Duration) -> Result<bool, LbError> {
        let gone = farm_proto::poll::until(timeout, POLL, || async {
            match self.server(&node.name, &node.lb_server).await {
                Ok(s) => (s.scur == 0).then_some(Ok(())),
                Err(e) => Some(Err(e)),
            }
        })
        .await;
        match gone {
            Ok(result) => result.map(|()| true),
            Err(()) => Ok(false),
        }
    }

    async fn still_drained(&self, t: &Target<'_>) -> Result<Option<bool>, LbError> {
        let admin = self.admin_state(&t.node.name, &t.node.lb_server).await?;
        Ok(Some(admin != 0))
    }

    async fn undrain(&self, t: &Target<'_>, timeout: Duration) -> Result<Duration, LbError> {
        let start = Instant::now();
        self.set_state(&t.node.lb_server, "ready").await?;
        super::MemberWait::up(self, t, start, timeout, POLL, "UP")
            .until(|| async {
                let s = self.server(&t.node.name, &t.node.lb_server).await?;
                Ok(MemberState {
                    state: lb_state(&s.status),
                    raw: s.status,
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Trimmed from HAProxy 2.6 `show stat` (real output has ~100 columns).
    const STAT: &str =
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,weight,check_status,last_chk\n\
fe,FRONTEND,,,3,10,2000,120,OPEN,,,\n\
shop,web01,0,0,2,5,,60,UP,1,L7OK,\"HTTP status check returned code <200>\"\n\
shop,web02,0,0,0,5,,60,DRAIN,1,L7OK,\"a, b\"\n\
shop,web03,0,0,0,0,,0,MAINT,1,,\n\
shop,BACKEND,0,0,2,10,200,120,UP,3,,\n";

    /// The reference's verbatim HAProxy 2.6 `show stat` lines (blue/green).
    const STAT_26: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,\n\
blue,blue,0,0,0,1,10,3,243,2067,,0,,0,0,0,0,UP,1,1,0,0,1,547,0,,1,3,1,,3,,2,0,,1,L7OK,200,2,0,3,0,0,0,0,,,,3,0,0,,,,,497,,,0,0,1,1,,,,Layer7 check passed,,2,2,3,,,,[::1]:3000,,http,,,,,,,,0,3,0,,,0,,0,0,1,1,0,0,0,0,1,1,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n\
green,green,0,0,0,0,10,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,2,551,551,,1,4,1,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,2,0,,,,[::1]:4000,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n";

    #[test]
    fn show_stat_counters_of_a_real_haproxy_26() {
        let s = parse_stat(STAT_26).unwrap();
        let blue = &s[0].1;
        assert_eq!((blue.name.as_str(), blue.status.as_str()), ("blue", "UP"));
        // hrsp_2xx 3; rtime 1, ttime 1; no connect or response error.
        let t = &blue.traffic;
        assert_eq!(t.responses, Some(3));
        assert_eq!(t.status_5xx, Some(0));
        assert_eq!((t.connect_errors, t.response_errors), (Some(0), Some(0)));
        assert_eq!(
            (t.rtime_ms, t.ttime_ms, t.queue),
            (Some(1), Some(1), Some(0))
        );
        assert_eq!(s[1].1.status, "DOWN");
        assert_eq!(s[1].1.traffic.responses, Some(0));
    }

    #[test]
    fn show_stat_is_read_by_header_name() {
        let s = parse_stat(STAT).unwrap();
        let shop: Vec<&ServerStat> = s
            .iter()
            .filter(|(p, _)| p == "shop")
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            shop[0],
            &ServerStat {
                name: "web01".into(),
                status: "UP".into(),
                scur: 2,
                traffic: crate::lb::LbTraffic {
                    queue: Some(0),
                    connections: Some(2),
                    ..Default::default()
                }
            }
        );
        assert_eq!(shop[1].status, "DRAIN");
        assert_eq!(shop[2].status, "MAINT");
        assert_eq!(shop[3].name, "BACKEND");
    }

    /// A runtime API that answers every command with `reply`, recording
    /// what it was sent.
    async fn fake_api(reply: &'static str) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(Ok((mut s, _))) =
                tokio::time::timeout(Duration::from_millis(500), l.accept()).await
            {
                let mut buf = vec![0u8; 256];
                let n = s.read(&mut buf).await.unwrap_or(0);
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = s.write_all(reply.as_bytes()).await;
            }
            got
        });
        (addr, task)
    }

    #[tokio::test]
    async fn set_state_sends_the_exact_command() {
        let (addr, task) = fake_api("\n").await;
        Haproxy::new(addr, "shop")
            .set_state("web01", "drain")
            .await
            .unwrap();
        assert_eq!(task.await.unwrap(), ["set server shop/web01 state drain\n"]);
    }

    #[test]
    fn servers_state_gives_admin_bits_and_weights() {
        let text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n2 shop 1 web01 127.0.0.1 2 8 0 1 42 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n2 shop 2 web02 127.0.0.1 2 0 10 1 42 6 3 4 6 0 0 0 - 8081 - 0 0 - - 0\n\n";
        let s = parse_servers_state(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].admin), ("web01", 8));
        assert_eq!(
            s[0].weight,
            super::super::weights::Weight {
                current: 0,
                initial: 1
            }
        );
        assert!(s[1].weight.changed());
        assert!(parse_servers_state("garbage").is_err());
    }

    /// The error of draining `server` when the API answers `reply`.
    async fn drain_error(reply: &'static str, server: &str) -> LbError {
        let (addr, _task) = fake_api(reply).await;
        Haproxy::new(addr, "shop")
            .set_state(server, "drain")
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_low_permission_level_is_named() {
        let e = drain_error("Permission denied\n", "web01").await;
        assert!(e.to_string().contains("level admin"), "{e}");
    }

    #[tokio::test]
    async fn an_unknown_server_is_named() {
        let e = drain_error("No such server.\n", "web09").await;
        let text = e.to_string();
        assert!(
            text.contains("No such server") && text.contains("shop/web09"),
            "{e}"
        );
        let (addr, _task) = fake_api(STAT).await;
        let e = Haproxy::new(addr, "shop")
            .server("web09", "web09")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no server `web09`"), "{e}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_named() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Haproxy::new(format!("127.0.0.1:{port}"), "shop")
            .servers()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("unreachable"), "{e}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_unix_socket_transport_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0u8; 64];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(STAT.as_bytes()).await;
            }
        });
        let servers = Haproxy::new(format!("unix:{}", path.display()), "shop")
            .servers()
            .await
            .unwrap();
        assert_eq!(servers.len(), 3);
    }

    #[test]
    fn statuses_map_to_the_shared_states() {
        assert_eq!(lb_state("UP"), LbState::Up);
        assert_eq!(lb_state("UP 1/2"), LbState::Up);
        assert_eq!(lb_state("no check"), LbState::Up);
        assert_eq!(lb_state("DRAIN"), LbState::Draining);
        assert_eq!(lb_state("MAINT (via shop/web01)"), LbState::Maintenance);
        assert_eq!(lb_state("DOWN 1/2"), LbState::Down);
        assert_eq!(lb_state("?"), LbState::Unknown);
    }

    #[test]
    fn a_reply_without_header_is_an_error() {
        assert!(parse_stat("Unknown command.\n").is_err());
    }
}

//! A real etcd cluster on loopback for the tests: three members (Debian's
//! `etcd-server`, which `.ci/run` installs), clients over TLS with client
//! certificates from a CA of the test's own, peers in plain HTTP.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use farm_proto::pki;

pub struct Member {
    pub name: String,
    pub client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    child: Option<tokio::process::Child>,
}

pub struct EtcdCluster {
    pub dir: PathBuf,
    pub members: Vec<Member>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn etcd_binary() -> Option<PathBuf> {
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

impl EtcdCluster {
    pub async fn start(dir: &Path, n: usize) -> EtcdCluster {
        std::fs::create_dir_all(dir).unwrap();
        let ca = pki::new_ca("etcd-test", pki::Validity::CA).unwrap();
        let server =
            pki::issue_agent(&ca, "localhost", &["127.0.0.1".into()], pki::Validity::LEAF).unwrap();
        let client =
            pki::issue_controller(&ca, "farmctl", pki::Role::Operator, pki::Validity::LEAF)
                .unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let mut cluster = EtcdCluster {
            dir: dir.to_path_buf(),
            members: (0..n)
                .map(|i| Member {
                    name: format!("m{}", i + 1),
                    client_port: free_port(),
                    peer_port: free_port(),
                    data_dir: dir.join(format!("m{}.etcd", i + 1)),
                    child: None,
                })
                .collect(),
            ca: write("ca.pem", &ca.cert_pem),
            cert: write("client.pem", &client.cert_pem),
            key: write("client-key.pem", &client.key_pem),
            server_cert: write("server.pem", &server.cert_pem),
            server_key: write("server-key.pem", &server.key_pem),
        };
        for i in 0..n {
            cluster.spawn(i, "new");
        }
        cluster.wait_healthy(Duration::from_secs(60)).await;
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial = self.initial_cluster();
        let (cert, key, ca) = (
            self.server_cert.clone(),
            self.server_key.clone(),
            self.ca.clone(),
        );
        let log = std::fs::File::create(self.dir.join(format!("m{}.log", i + 1))).unwrap();
        let m = &mut self.members[i];
        let client = format!("https://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = tokio::process::Command::new(
            etcd_binary().expect("etcd (apt-get install -y etcd-server)"),
        )
        .args(["--name", &m.name])
        .arg("--data-dir")
        .arg(&m.data_dir)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args([
            "--initial-cluster",
            &initial,
            "--initial-cluster-state",
            state,
        ])
        .args(["--initial-cluster-token", "farmctl-test"])
        .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
        .arg("--cert-file")
        .arg(&cert)
        .arg("--key-file")
        .arg(&key)
        .arg("--trusted-ca-file")
        .arg(&ca)
        .arg("--client-cert-auth")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("start etcd");
        m.child = Some(child);
    }

    /// `etcds://...` for `--state-store`.
    pub fn url(&self, query: &str) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        format!("etcds://{}{query}", hosts.join(","))
    }

    /// The environment `etcds://` reads its TLS files from.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FARMCTL_ETCD_CA", self.ca.display().to_string()),
            ("FARMCTL_ETCD_CERT", self.cert.display().to_string()),
            ("FARMCTL_ETCD_KEY", self.key.display().to_string()),
        ]
    }

    fn ctl(&self, members: &[usize]) -> tokio::process::Command {
        let endpoints: Vec<String> = members
            .iter()
            .map(|&i| format!("https://127.0.0.1:{}", self.members[i].client_port))
            .collect();
        let mut c = tokio::process::Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg(format!("--cacert={}", self.ca.display()))
            .arg(format!("--cert={}", self.cert.display()))
            .arg(format!("--key={}", self.key.display()))
            .args(["--command-timeout=3s", "--dial-timeout=2s"]);
        c
    }

    fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .collect()
    }

    pub async fn wait_healthy(&self, within: Duration) {
        let running = self.running();
        farm_proto::assert_eventually!(
            within,
            async {
                self.ctl(&running)
                    .args(["endpoint", "health"])
                    .output()
                    .await
                    .is_ok_and(|o| o.status.success())
            },
            "the etcd members to be healthy"
        );
    }

    /// The member that leads now.
    pub async fn leader(&self) -> usize {
        let running = self.running();
        let out = self
            .ctl(&running)
            .args(["endpoint", "status", "-w", "json"])
            .output()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let arr = v.as_array().unwrap();
        let leader = arr[0]["Status"]["leader"].as_u64().unwrap();
        let k = arr
            .iter()
            .position(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))
            .expect("the leader among the members");
        running[k]
    }

    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill().await;
        }
    }

    pub async fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i).await;
        }
    }

    /// Starts a stopped member again on its data.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i, "existing");
    }

    /// Keys under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let running = self.running();
        let out = self
            .ctl(&running)
            .args(["get", "--prefix", "--keys-only", prefix])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

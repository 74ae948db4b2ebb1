//! Deployments on one agent, over its gRPC API, with the simulator serving
//! the site's files over real HTTP: staging (and every hostile package
//! refused with nothing written outside the site's releases folder),
//! switching with hooks, switching back, pruning.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use farm_agent::deploy::{DeployConfig, Deployments};
use farm_agent::iiscmd::runner::SystemRunner;
use farm_agent::ops::OpsConfig;
use farm_agent::service::AgentService;
use farm_agent::sim::{config, Simulator};
use farm_proto::v1 as pb;
use farm_proto::NodeAgentClient;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::Code;

struct Node {
    client: NodeAgentClient<Channel>,
    port: u16,
    dir: tempfile::TempDir,
    audit: PathBuf,
    _sim: Simulator,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Node {
    fn releases(&self) -> PathBuf {
        self.dir.path().join("releases").join("shop")
    }
}

#[cfg(not(windows))]
const HOOKS: &str = "hooks:\n  greet:\n    argv: [/bin/sh, -c, 'echo greeting {site} {version} in {path}']\n  broken:\n    argv: [/bin/sh, -c, 'echo it broke >&2; exit 3']\n    timeout: 5s\n";
/// The same hooks as a Windows server would have them, through cmd.exe.
#[cfg(windows)]
const HOOKS: &str = "hooks:\n  greet:\n    argv: [cmd.exe, /c, 'echo greeting {site} {version} in {path}']\n  broken:\n    argv: [cmd.exe, /c, 'echo it broke 1>&2 & exit 3']\n    timeout: 5s\n";

/// An agent whose site `shop` starts on the folder `initial`, with
/// deployments under `releases/`, and `deploy_extra` in its deploy config.
async fn node(deploy_extra: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let initial = dir.path().join("initial");
    std::fs::create_dir_all(&initial).unwrap();
    std::fs::write(initial.join("version.txt"), "initial").unwrap();
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside").join("keep.txt"), "untouched").unwrap();
    let sim = format!(
        "node: t1\nsites:\n  - name: shop\n    app_pool: Shop\n    physical_path: {}\napp_pools:\n  - name: Shop\n    startup: 50ms\n    warmup: 10ms\n",
        initial.display()
    );
    let sim = Simulator::start(config::parse(&sim).unwrap())
        .await
        .unwrap();
    let port = sim.sites()[0].port;
    let extra = if deploy_extra.contains("limits:") {
        deploy_extra.to_string()
    } else {
        format!("limits: {{min_free_mb: 0}}\n{deploy_extra}")
    };
    let deploy: DeployConfig = serde_yaml::from_str(&format!(
        "releases_root: {}\n{HOOKS}{extra}",
        dir.path().join("releases").display()
    ))
    .unwrap();
    let iis = Arc::new(sim.clone());
    let deployments = Deployments::new(deploy, iis.clone(), Arc::new(SystemRunner));
    let service = AgentService::new("t1", iis, OpsConfig::default())
        .with_deployments(Some(Arc::new(deployments)));
    let audit = dir.path().join("audit.jsonl");
    let security = farm_agent::server::Security {
        audit: Some(Arc::new(farm_agent::audit::Audit::open(&audit).unwrap())),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(farm_agent::server::serve(
        listener,
        service,
        security,
        async {
            let _ = stopped.await;
        },
    ));
    let client = NodeAgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Node {
        client,
        port,
        dir,
        audit,
        _sim: sim,
        _stop: stop,
    }
}

/// A zip of `entries` (deflated).
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn release(version: &str) -> Vec<u8> {
    zip_of(&[
        ("version.txt", version.as_bytes()),
        ("index.html", b"<h1>shop</h1>"),
        ("bin/app.dll", b"\x4d\x5a not really"),
    ])
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Stages `bytes` as `version`, with the header's sha256 and size
/// overridable (to lie).
async fn stage_as(
    n: &Node,
    id: &str,
    version: &str,
    bytes: &[u8],
    sha256: Option<String>,
    size: Option<u64>,
) -> Result<pb::StageReply, tonic::Status> {
    let mut msgs = vec![pb::StageChunk {
        part: Some(pb::stage_chunk::Part::Header(pb::StageHeader {
            operation_id: id.into(),
            site: "shop".into(),
            version: version.into(),
            sha256: sha256.unwrap_or_else(|| sha(bytes)),
            size: size.unwrap_or(bytes.len() as u64),
        })),
    }];
    for chunk in bytes.chunks(16 * 1024) {
        msgs.push(pb::StageChunk {
            part: Some(pb::stage_chunk::Part::Data(chunk.to_vec())),
        });
    }
    n.client
        .clone()
        .stage(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

async fn stage(
    n: &Node,
    id: &str,
    version: &str,
    bytes: &[u8],
) -> Result<pb::StageReply, tonic::Status> {
    stage_as(n, id, version, bytes, None, None).await
}

async fn switch(
    n: &Node,
    id: &str,
    version: &str,
    hooks: &[&str],
    back: bool,
) -> Result<pb::SwitchReply, tonic::Status> {
    n.client
        .clone()
        .switch(pb::SwitchRequest {
            operation_id: id.into(),
            site: "shop".into(),
            version: version.into(),
            hooks: hooks.iter().map(|h| h.to_string()).collect(),
            back,
        })
        .await
        .map(|r| r.into_inner())
}

async fn releases(n: &Node) -> pb::ReleasesReply {
    n.client
        .clone()
        .releases(pb::ReleasesRequest {
            site: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// What the site answers for `/version.txt`, over real HTTP.
async fn served(n: &Node) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", n.port))
        .await
        .unwrap();
    s.write_all(b"GET /version.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

/// Every file under `dir` with a digest of its content, except under
/// `skip` and the agent's own audit log.
fn tree(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.starts_with(skip) || p.file_name().is_some_and(|f| f == "audit.jsonl") {
                continue;
            }
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), sha(&std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_release_is_staged_once_switched_to_and_switched_back() {
    let n = node("").await;
    assert_eq!(served(&n).await, "initial");
    let r = stage(&n, "r1.t1.stage", "1.0.0", &release("1.0.0"))
        .await
        .unwrap();
    assert!(!r.already_staged);
    assert_eq!(r.files, 3);
    assert!(n
        .releases()
        .join("1.0.0")
        .join("bin")
        .join("app.dll")
        .is_file());
    // The same package again: nothing to upload.
    let again = stage(&n, "r2.t1.stage", "1.0.0", &release("1.0.0"))
        .await
        .unwrap();
    assert!(again.already_staged);
    // Another package under the same version is refused.
    let e = stage(&n, "r3.t1.stage", "1.0.0", &release("1.0.1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("another package"), "{}", e.message());

    let s = switch(&n, "r1.t1.switch", "1.0.0", &[], false)
        .await
        .unwrap();
    assert!(!s.unchanged);
    assert_eq!(served(&n).await, "1.0.0");
    // Asked again under its id: answered, not redone.
    let replay = switch(&n, "r1.t1.switch", "1.0.0", &[], false)
        .await
        .unwrap();
    assert_eq!(replay, s);
    assert!(
        switch(&n, "r4.t1.switch", "1.0.0", &[], false)
            .await
            .unwrap()
            .unchanged
    );

    stage(&n, "r5.t1.stage", "2.0.0", &release("2.0.0"))
        .await
        .unwrap();
    let s = switch(&n, "r5.t1.switch", "2.0.0", &[], false)
        .await
        .unwrap();
    assert_eq!(s.previous, "1.0.0");
    assert_eq!(served(&n).await, "2.0.0");
    let rel = releases(&n).await;
    let state: Vec<(String, bool, bool)> = rel
        .releases
        .iter()
        .map(|r| (r.version.clone(), r.active, r.previous))
        .collect();
    assert_eq!(
        state,
        [("1.0.0".into(), false, true), ("2.0.0".into(), true, false)]
    );
    // Back from 2.0.0: to what it served before, and only once.
    let back = switch(&n, "r5.t1.revert", "2.0.0", &[], true)
        .await
        .unwrap();
    assert_eq!(back.version, "1.0.0");
    assert_eq!(served(&n).await, "1.0.0");
    let again = switch(&n, "r6.t1.revert", "2.0.0", &[], true)
        .await
        .unwrap();
    assert!(again.unchanged, "{again:?}");
    assert_eq!(served(&n).await, "1.0.0");
    // An unknown release is not switched to.
    let e = switch(&n, "r7.t1.switch", "9.9.9", &[], false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn hooks_run_after_the_switch_and_a_failing_one_switches_back() {
    let n = node("").await;
    stage(&n, "r1.t1.stage", "1.0.0", &release("1.0.0"))
        .await
        .unwrap();
    let s = switch(&n, "r1.t1.switch", "1.0.0", &["greet"], false)
        .await
        .unwrap();
    assert_eq!(s.hooks.len(), 1);
    assert_eq!(s.hooks[0].exit_code, 0);
    assert!(
        s.hooks[0].output.contains("greeting shop 1.0.0 in "),
        "{:?}",
        s.hooks
    );

    stage(&n, "r2.t1.stage", "2.0.0", &release("2.0.0"))
        .await
        .unwrap();
    let e = switch(&n, "r2.t1.switch", "2.0.0", &["greet", "broken"], false)
        .await
        .unwrap_err();
    assert!(
        e.message().contains("hook `broken` failed (exit code 3)")
            && e.message().contains("switched back")
            && e.message().contains("it broke"),
        "{}",
        e.message()
    );
    assert_eq!(
        served(&n).await,
        "1.0.0",
        "the site serves what it did before"
    );
    // A hook the agent's config does not define is not run.
    let e = switch(&n, "r3.t1.switch", "2.0.0", &["rm -rf /"], false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Every stage, switch and hook is in the audit log.
    let audit = std::fs::read_to_string(&n.audit).unwrap();
    let calls: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let switches: Vec<&serde_json::Value> =
        calls.iter().filter(|c| c["call"] == "Switch").collect();
    assert_eq!(switches.len(), 3);
    assert!(switches[0]["detail"]
        .as_str()
        .unwrap()
        .contains("greet exit 0: greeting shop 1.0.0"));
    assert!(switches[1]["outcome"]
        .as_str()
        .unwrap()
        .contains("hook `broken` failed"));
    assert!(calls
        .iter()
        .any(|c| c["call"] == "Stage" && c["detail"].as_str().unwrap().contains("version 2.0.0")));
}

/// Deterministic bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn symlink_zip() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    w.add_symlink("passwd", "/etc/passwd", opts).unwrap();
    w.finish().unwrap().into_inner()
}

/// What, as which version, the bytes, a lying sha256 or size, and what the
/// refusal must say.
type Hostile<'a> = (
    &'a str,
    &'a str,
    Vec<u8>,
    Option<String>,
    Option<u64>,
    &'a str,
);

#[tokio::test]
async fn hostile_packages_are_refused_and_nothing_is_written_outside() {
    let n = node("limits: {min_free_mb: 0, max_file_mb: 1, max_total_mb: 2, max_files: 5}\n").await;
    let outside_before = tree(n.dir.path(), &n.dir.path().join("releases"));
    let mb = 1024 * 1024;
    let good = release("1.0.0");
    let bomb = zip_of(&[("zeros.bin", &vec![0u8; 4 * mb])]);
    let cases: Vec<Hostile> = vec![
        (
            "traversal",
            "1.0.0",
            zip_of(&[("../evil.txt", b"x")]),
            None,
            None,
            "`..`",
        ),
        (
            "traversal deep",
            "1.0.0",
            zip_of(&[("a/../../evil.txt", b"x")]),
            None,
            None,
            "`..`",
        ),
        (
            "backslash traversal",
            "1.0.0",
            zip_of(&[("..\\evil.txt", b"x")]),
            None,
            None,
            "`..`",
        ),
        (
            "absolute",
            "1.0.0",
            zip_of(&[("/tmp/evil.txt", b"x")]),
            None,
            None,
            "absolute",
        ),
        (
            "drive letter",
            "1.0.0",
            zip_of(&[("C:/Windows/evil.txt", b"x")]),
            None,
            None,
            "drive letter",
        ),
        (
            "device name",
            "1.0.0",
            zip_of(&[("bin/CON.txt", b"x")]),
            None,
            None,
            "device name",
        ),
        (
            "symlink",
            "1.0.0",
            symlink_zip(),
            None,
            None,
            "symbolic link",
        ),
        (
            "one file too big",
            "1.0.0",
            zip_of(&[("big.bin", &noise(mb + mb / 2))]),
            None,
            None,
            "one file may be",
        ),
        (
            "total too big",
            "1.0.0",
            zip_of(&[
                ("a", &noise(900_000)),
                ("b", &noise(900_000)),
                ("c", &noise(900_000)),
            ]),
            None,
            None,
            "expands to more",
        ),
        ("zip bomb", "1.0.0", bomb, None, None, "compression ratio"),
        (
            "too many files",
            "1.0.0",
            zip_of(&[
                ("1", b""),
                ("2", b""),
                ("3", b""),
                ("4", b""),
                ("5", b""),
                ("6", b""),
            ]),
            None,
            None,
            "entries",
        ),
        (
            "not a zip",
            "1.0.0",
            b"MZ this is an exe, not a zip".to_vec(),
            None,
            None,
            "not a zip",
        ),
        (
            "truncated",
            "1.0.0",
            good.clone(),
            None,
            Some(good.len() as u64 + 100),
            "stopped after",
        ),
        (
            "hash mismatch",
            "1.0.0",
            good.clone(),
            Some(sha(b"something else")),
            None,
            "sha256 mismatch",
        ),
        (
            "version with a path",
            "../1.0.0",
            good.clone(),
            None,
            None,
            "version",
        ),
        (
            "version with a drive",
            "C:1.0",
            good.clone(),
            None,
            None,
            "version",
        ),
    ];
    for (k, (what, version, bytes, sha256, size, needle)) in cases.into_iter().enumerate() {
        let e = stage_as(&n, &format!("r{k}.t1.stage"), version, &bytes, sha256, size)
            .await
            .expect_err(what);
        assert!(
            e.message().contains(needle),
            "{what}: expected {needle:?} in {:?}",
            e.message()
        );
        assert!(
            matches!(e.code(), Code::FailedPrecondition | Code::InvalidArgument),
            "{what}: {e:?}"
        );
        assert!(
            !n.releases().join("1.0.0").exists(),
            "{what}: a release was left"
        );
        let leftovers: Vec<String> = std::fs::read_dir(n.releases().join(".farm"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{what}: left {leftovers:?}");
        assert_eq!(served(&n).await, "initial", "{what}: the site changed");
    }
    assert_eq!(
        tree(n.dir.path(), &n.dir.path().join("releases")),
        outside_before,
        "something was written outside the releases folder"
    );
    let nowhere = n.dir.path().join("evil.txt");
    assert!(!nowhere.exists() && !Path::new("/tmp/evil.txt").exists());
    // After all that, a good package still stages.
    stage(&n, "ok.t1.stage", "1.0.0", &good).await.unwrap();
}

#[tokio::test]
async fn not_enough_free_disk_is_refused_before_anything_is_written() {
    let n = node("limits: {min_free_mb: 1000000000}\n").await;
    let e = stage(&n, "r1.t1.stage", "1.0.0", &release("1.0.0"))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("not enough free disk"),
        "{}",
        e.message()
    );
    assert!(!n.releases().join("1.0.0").exists());
}

#[tokio::test]
async fn prune_keeps_the_active_and_the_previous_release() {
    let n = node("keep: 2\n").await;
    for v in ["1", "2", "3", "4"] {
        stage(&n, &format!("r{v}.t1.stage"), v, &release(v))
            .await
            .unwrap();
        // Staged in order, a moment apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    switch(&n, "r1.t1.switch", "1", &[], false).await.unwrap();
    switch(&n, "r2.t1.switch", "2", &[], false).await.unwrap();
    // 2 active, 1 previous; 3 and 4 newer: keep 2 removes what it may.
    let pruned = n
        .client
        .clone()
        .prune(pb::PruneRequest {
            operation_id: "r9.t1.prune".into(),
            site: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        pruned.removed.is_empty(),
        "the oldest are active and previous: {pruned:?}"
    );
    switch(&n, "r3.t1.switch", "4", &[], false).await.unwrap();
    let pruned = n
        .client
        .clone()
        .prune(pb::PruneRequest {
            operation_id: "r10.t1.prune".into(),
            site: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pruned.removed, ["1"]);
    let left: Vec<String> = releases(&n)
        .await
        .releases
        .into_iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(left, ["2", "3", "4"]);
    assert_eq!(served(&n).await, "4");
}

#[tokio::test]
async fn a_repeat_waiting_on_a_cut_off_upload_does_the_upload_itself() {
    // A killed controller's upload is still open on the agent when the
    // resumed controller sends the same operation id with the whole file.
    let n = node("").await;
    let bytes = release("2.0.0");
    let id = "run.t1.stage";
    let (first_tx, first_rx) = tokio::sync::mpsc::channel(4);
    first_tx
        .send(pb::StageChunk {
            part: Some(pb::stage_chunk::Part::Header(pb::StageHeader {
                operation_id: id.into(),
                site: "shop".into(),
                version: "2.0.0".into(),
                sha256: sha(&bytes),
                size: bytes.len() as u64,
            })),
        })
        .await
        .unwrap();
    first_tx
        .send(pb::StageChunk {
            part: Some(pb::stage_chunk::Part::Data(bytes[..10].to_vec())),
        })
        .await
        .unwrap();
    let mut client = n.client.clone();
    let first = tokio::spawn(async move {
        client
            .stage(tokio_stream::wrappers::ReceiverStream::new(first_rx))
            .await
    });
    // The first upload is under way once its file exists.
    let farm_dir = n.releases().join(".farm");
    farm_proto::assert_eventually!(
        Duration::from_secs(10),
        async {
            std::fs::read_dir(&farm_dir)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("upload"))
                })
                .unwrap_or(false)
        },
        "the first upload to start"
    );
    let second = {
        let n = &n;
        let bytes = bytes.clone();
        async move { stage(n, id, "2.0.0", &bytes).await }
    };
    let (second, ()) = tokio::join!(second, async {
        // Give the repeat a moment to arrive and wait on the first, then
        // cut the first off. Should the repeat come late, it is an ordinary
        // first call and passes as well: this can only miss the race, not
        // fail because of it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        first.abort();
        drop(first_tx);
    });
    let reply = second.expect("the repeat does the upload");
    assert!(!reply.already_staged);
    assert_eq!(served_after_switch(&n, "2.0.0").await, "2.0.0");
}

async fn served_after_switch(n: &Node, version: &str) -> String {
    switch(n, "run.t1.switch", version, &[], false)
        .await
        .unwrap();
    served(n).await
}

//! Connection errors say what to check: refused, the wrong node's
//! certificate, another CA, plaintext against TLS — each in plain words
//! with the one thing to try, in `status`.
use crate::common::*;
use farmctl::sandbox::SandboxSpec;

/// `status --output json` of an inventory written next to the sandbox's
/// (its certificate paths are relative to it); node 0's `error`.
async fn web01_error(farm: &Farm, name: &str, text: &str, extra: &[&str]) -> String {
    let path = farm.sandbox.dir.join(name);
    std::fs::write(&path, text).unwrap();
    let p = path.display().to_string();
    let mut args = extra.to_vec();
    args.extend(["status", "-i", &p, "--output", "json"]);
    let out = farmctl(&args).await;
    let st = json(&out);
    st["nodes"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_say_what_to_check() {
    let farm = farm(SandboxSpec {
        nodes: 2,
        releases: false,
        ..SandboxSpec::default()
    })
    .await;
    let text = std::fs::read_to_string(&farm.sandbox.inventory).unwrap();
    let (web01, web02) = (&farm.sandbox.nodes[0].agent, &farm.sandbox.nodes[1].agent);

    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let e = web01_error(
        &farm,
        "refused.yaml",
        &text.replace(web01.as_str(), &closed),
        &[],
    )
    .await;
    assert!(e.contains("connection refused: nothing listens on"), "{e}");

    // validate --connect: the same, as a checklist; the rest is fine.
    let refused = farm.sandbox.dir.join("refused.yaml").display().to_string();
    let out = farmctl(&["validate", "-i", &refused, "--connect", "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = json(&out);
    let checks = v["checks"].as_array().unwrap();
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(failed.len(), 1, "{v:#}");
    assert!(failed[0].starts_with("agent of web01"), "{v:#}");
    let good = farmctl(&["validate", "-i", &inventory(&farm), "--connect"]).await;
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
    let list = String::from_utf8_lossy(&good.stdout);
    assert!(
        list.contains("[ok] agent of web02") && list.contains("[ok] sites of web01"),
        "{list}"
    );

    // web01's address answers with web02's certificate.
    let swapped = text
        .replace(web01.as_str(), "SWAP")
        .replace(web02.as_str(), web01)
        .replace("SWAP", web02);
    let e = web01_error(&farm, "swapped.yaml", &swapped, &[]).await;
    assert!(e.contains("does not name `web01`"), "{e}");

    // Another CA in agent.tls.ca.
    let other = farm.sandbox.dir.join("other-ca");
    let out = farmctl(&[
        "certs",
        "init",
        "--dir",
        &other.display().to_string(),
        "--farm",
        "other",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let e = web01_error(
        &farm,
        "other-ca.yaml",
        &text.replace("ca: certs/ca.pem", "ca: other-ca/ca.pem"),
        &[],
    )
    .await;
    assert!(e.contains("not signed by the CA in agent.tls.ca"), "{e}");

    // Plaintext against an agent that wants TLS.
    let start = text.find("  tls:\n").unwrap();
    let end = text.find("nodes:\n").unwrap();
    let plain = format!("{}{}", &text[..start], &text[end..]);
    let e = web01_error(&farm, "plain.yaml", &plain, &["--insecure"]).await;
    assert!(
        e.contains("does not speak plaintext gRPC") || e.contains("wants TLS"),
        "{e}"
    );
}

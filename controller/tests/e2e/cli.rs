//! The command line's conventions: completions for every shell, man pages,
//! `FARMCTL_INVENTORY` as the default inventory.

use crate::common::*;

/// Parses `script` with `shell`'s own syntax check, when that shell is
/// installed.
fn syntax_ok(shell: &str, args: &[&str], script: &str) -> Option<bool> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("completions");
    std::fs::write(&file, script).unwrap();
    let out = std::process::Command::new(shell)
        .args(args)
        .arg(&file)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("{shell}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Some(out.status.success())
}

#[tokio::test]
async fn completions_for_every_shell_know_every_command() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = farmctl(&["completions", shell]).await;
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout).to_string();
        for word in [
            "deploy",
            "rollback",
            "recycle",
            "runs",
            "max-unavailable",
            "wait-for-window",
        ] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
        let checked = match shell {
            "bash" => syntax_ok("bash", &["-n"], &script),
            "zsh" => syntax_ok("zsh", &["-n"], &script),
            "fish" => syntax_ok("fish", &["--no-execute"], &script),
            _ => {
                assert!(script.contains("Register-ArgumentCompleter"));
                None
            }
        };
        match checked {
            Some(ok) => assert!(ok, "{shell} does not accept its completions"),
            None if shell != "powershell" => {
                eprintln!("{shell} not installed: its syntax check is skipped")
            }
            None => {}
        }
    }
    let out = farmctl(&["completions", "tcsh"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn man_pages_for_the_tool_and_each_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = farmctl(&["man", "--dir", &dir.path().display().to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for page in [
        "farmctl.1",
        "farmctl-deploy.1",
        "farmctl-status.1",
        "farmctl-runs-show.1",
    ] {
        let text =
            std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|_| panic!("no {page}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not a man page"
        );
    }
    let main = std::fs::read_to_string(dir.path().join("farmctl.1")).unwrap();
    for section in [
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH EXAMPLES",
        "FARMCTL_INVENTORY",
    ] {
        assert!(main.contains(section), "farmctl.1 has no {section}");
    }
}

#[tokio::test]
async fn the_inventory_can_come_from_farmctl_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("farm.yaml");
    std::fs::write(
        &inv,
        "farm: shop\nnodes:\n  - {name: web01, address: 10.0.0.1}\nsites:\n  - name: shop\n",
    )
    .unwrap();
    let path = inv.display().to_string();
    let out = farmctl_env(
        &["validate", "--insecure", "--output", "json"],
        &[("FARMCTL_INVENTORY", &path)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["farm"], "shop");
    // -i still wins; without either, usage says what is missing.
    let out = farmctl_env(
        &["validate", "-i", "/nonexistent.yaml"],
        &[("FARMCTL_INVENTORY", &path)],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let out = farmctl(&["validate"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--inventory"), "{}", stderr(&out));
}

#[tokio::test]
async fn validate_checks_every_file_the_inventory_names() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("farm.yaml");
    let base = "farm: shop\nnodes:\n  - {name: web01, address: 10.0.0.1}\nsites:\n  - name: shop\n";
    // No TLS: every other command would stop on it; validate says so
    // now, unless plaintext is what is meant.
    std::fs::write(&inv, base).unwrap();
    let path = inv.display().to_string();
    let out = farmctl(&["validate", "-i", &path]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("agent.tls: not set"),
        "{}",
        stderr(&out)
    );
    let out = farmctl(&["validate", "-i", &path, "--insecure"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // TLS files that are not there, and a webhook file: each named.
    std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
    std::fs::write(
        &inv,
        format!("{base}agent:\n  tls: {{ca: ca.pem, cert: certs/c.pem, key: certs/c-key.pem}}\nnotify:\n  - {{url_file: hook.txt}}\n  - {{url_env: FARMCTL_TEST_NO_SUCH_VAR}}\n"),
    )
    .unwrap();
    let out = farmctl(&["validate", "-i", &path, "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["valid"], false);
    let places: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        places,
        ["agent.tls.cert", "agent.tls.key", "notify[0]"],
        "{v:#}"
    );
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("c.pem"),
        "{v:#}"
    );
    assert_eq!(v["warnings"][0]["path"], "notify[1]", "{v:#}");
    // A file that is not YAML: its errors as a list too, with line and
    // column.
    std::fs::write(&inv, "farm: shop\nnodes: [\n").unwrap();
    let out = farmctl(&["validate", "-i", &path, "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    assert_eq!(v["errors"][0]["line"], 3, "{v:#}");
    assert!(v["errors"][0]["column"].is_number(), "{v:#}");
}

#[tokio::test]
async fn a_second_demo_refuses_a_folder_in_use() {
    // Another demo holds the folder (its lock, taken here by flock(1):
    // the same kind of lock farmctl takes).
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("demo.lock");
    let mut holder = tokio::process::Command::new("flock")
        .args([lock.to_str().unwrap(), "sleep", "60"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    farm_proto::assert_eventually!(
        std::time::Duration::from_secs(10),
        async {
            // Held: a non-blocking try fails.
            std::process::Command::new("flock")
                .args(["-n", lock.to_str().unwrap(), "true"])
                .status()
                .is_ok_and(|s| !s.success())
        },
        "flock to hold the lock"
    );
    let d = dir.path().display().to_string();
    let out = farmctl(&["demo", "--serve", "--dir", &d, "--nodes", "2"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is in use by another farmctl demo"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.path().join("inventory.yaml").exists(),
        "nothing written"
    );
    holder.start_kill().unwrap();
    let _ = holder.wait().await;
}

/// `--insecure`, `--state-dir` and `--state-store` appear in the help of
/// the commands they act on only; given before any command they still
/// work, and after it where they act.
#[tokio::test]
async fn global_flags_are_shown_where_they_act() {
    let help = |args: &'static [&'static str]| async move {
        let out = farmctl(args).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    for args in [
        &["certs", "init", "--help"][..],
        &["completions", "--help"],
        &["man", "--help"],
    ] {
        let text = help(args).await;
        for flag in ["--insecure", "--state-dir", "--state-store"] {
            assert!(!text.contains(flag), "{args:?} lists {flag}:\n{text}");
        }
    }
    let text = help(&["drain", "--help"]).await;
    assert!(
        text.contains("--insecure") && !text.contains("--state-dir"),
        "{text}"
    );
    let text = help(&["runs", "show", "--help"]).await;
    assert!(
        !text.contains("--insecure") && text.contains("--state-dir"),
        "{text}"
    );
    for args in [&["recycle", "--help"][..], &["resume", "--help"]] {
        let text = help(args).await;
        for flag in ["--insecure", "--state-dir", "--state-store"] {
            assert!(text.contains(flag), "{args:?} lacks {flag}:\n{text}");
        }
    }
    // Where it does not act, after the command it is an error that says so;
    // before the command it is accepted.
    let out = farmctl(&["certs", "init", "--insecure", "--dir", "/nonexistent/x"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--insecure"), "{}", stderr(&out));

    // Every position of --state-dir reaches `runs show`.
    let state = tempfile::tempdir().unwrap();
    let s = state.path().display().to_string();
    for args in [
        vec!["--state-dir", &s, "runs", "show", "nosuch"],
        vec!["runs", "--state-dir", &s, "show", "nosuch"],
        vec!["runs", "show", "nosuch", "--state-dir", &s],
    ] {
        let out = farmctl(&args).await;
        assert!(stderr(&out).contains(&s), "{args:?}: {}", stderr(&out));
    }
}

/// A closed stdout (`farmctl ... | head -1`) never makes farmctl panic.
/// The pipe's reading end is closed before farmctl starts, so its first
/// write fails with EPIPE every time.
#[tokio::test]
async fn a_closed_stdout_is_not_a_panic() {
    let state = tempfile::tempdir().unwrap();
    let st = state.path().to_str().unwrap();
    // Each writes to stdout: a script, a JSON answer, a line of text.
    for args in [
        &["completions", "bash"][..],
        &["runs", "--state-dir", st, "-o", "json"],
        &["runs", "--state-dir", st],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"))
            .args(args)
            .stdout(std::process::Stdio::from(writer))
            .stderr(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            // (spawn, not output(): output() would pipe stdout itself)
            .spawn()
            .unwrap()
            .wait_with_output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), out)
            .await
            .unwrap()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() != Some(101) && !err.contains("panicked"),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

/// The README's example inventory is one `validate` accepts (with the
/// certificate files it names in place).
#[tokio::test]
async fn the_readmes_example_inventory_is_valid() {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("### An example inventory")
        .nth(1)
        .expect("the README has an example inventory");
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a yaml block");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    for f in ["ca.pem", "controller-ops.pem", "controller-ops-key.pem"] {
        std::fs::write(dir.path().join("certs").join(f), "placeholder\n").unwrap();
    }
    let path = dir.path().join("farm.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = farmctl(&["validate", "-i", path.to_str().unwrap(), "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}\n{yaml}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["valid"], true, "{v:#}");
    assert_eq!(v["nodes_count"], 3, "{v:#}");
    assert_eq!(v["load_balancer"], "haproxy", "{v:#}");
}

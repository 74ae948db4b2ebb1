//! The dump budget: each bound refuses or stops a dump, the day's count
//! outlives the agent, a repeated operation id dumps nothing more. The
//! tool is a small Python program given as argv (no shell), as an
//! operator would give ProcDump.
use super::*;

fn config(dir: &Path, script: &str) -> DumpConfig {
    DumpConfig {
        command: vec![
            "python3".into(),
            "-c".into(),
            script.into(),
            "{pid}".into(),
            "{file}".into(),
            "{pool}".into(),
        ],
        dir: dir.to_path_buf(),
        per_day: 2,
        min_free_mb: 0,
        max_size_mb: 1,
        timeout: Duration::from_secs(30),
    }
}

/// Writes "MDMP <pid> <pool>" to the file and exits -2, as ProcDump does
/// after a dump it wrote.
const PROCDUMP_LIKE: &str =
    "import sys; open(sys.argv[2], 'w').write('MDMP %s %s' % (sys.argv[1], sys.argv[3])); sys.exit(-2)";

fn worker(pid: u32) -> Worker {
    Worker {
        pid,
        private_bytes: Some(1024),
    }
}

#[test]
fn the_config_must_name_the_worker_and_bounds_above_zero() {
    let dir = Path::new("/tmp/x");
    let mut c = config(dir, "");
    assert!(c.check().is_ok());
    c.command = vec!["procdump".into(), "-ma".into()];
    assert!(c.check().unwrap_err().contains("{pid}"));
    c.command.clear();
    assert!(c.check().unwrap_err().contains("empty"));
    let mut c = config(dir, "");
    c.timeout = Duration::ZERO;
    assert!(c.check().is_err());
}

#[tokio::test]
async fn a_spent_budget_refuses_without_running_the_tool() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), PROCDUMP_LIKE);
    c.per_day = 0;
    let d = Dumps::new(c);
    let out = d.take("r.web01.dump", "ShopPool", &[worker(7)]).await;
    assert!(out.dumps.is_empty());
    assert!(out.refused[0].contains("budget is spent"), "{out:?}");
    assert_eq!(out.left_today, 0);
    let dumps = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "dmp"))
        .count();
    assert_eq!(dumps, 0);
}

#[tokio::test]
async fn a_worker_larger_than_the_cap_or_a_full_disk_is_not_dumped() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dumps::new(config(dir.path(), PROCDUMP_LIKE));
    let big = Worker {
        pid: 8,
        private_bytes: Some(5 * MB),
    };
    let out = d.take("r.web01.dump", "ShopPool", &[big]).await;
    assert!(out.refused[0].contains("above dump.max_size_mb"), "{out:?}");
    let mut c = config(dir.path(), PROCDUMP_LIKE);
    c.min_free_mb = u64::MAX / MB / 2;
    let d = Dumps::new(c);
    let out = d.take("r.web02.dump", "ShopPool", &[worker(9)]).await;
    assert!(out.refused[0].contains("MB free where dumps go"), "{out:?}");
    // Neither counted: the tool never ran.
    assert_eq!(out.left_today, 2);
}

#[cfg(unix)]
#[tokio::test]
async fn dumps_are_taken_counted_across_restarts_and_never_twice_for_one_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dumps::new(config(dir.path(), PROCDUMP_LIKE));
    let out = d
        .take("r.web01.dump", "Shop Pool", &[worker(11), worker(12)])
        .await;
    assert_eq!(out.dumps.len(), 2, "{out:?}");
    assert!(out.refused.is_empty(), "{out:?}");
    assert_eq!(out.left_today, 0);
    let first = &out.dumps[0];
    assert_eq!(first.exit_code, Some(254), "ProcDump's -2");
    // The placeholders, filled in each argument.
    assert_eq!(
        std::fs::read_to_string(&first.file).unwrap(),
        "MDMP 11 Shop Pool"
    );
    assert!(first.file.contains("Shop_Pool_11_"), "{}", first.file);
    // The same id again: the first answer, nothing dumped.
    let again = d
        .take("r.web01.dump", "Shop Pool", &[worker(11), worker(12)])
        .await;
    assert!(again.replayed);
    assert_eq!(again.dumps, out.dumps);
    // A restarted agent still counts them, even with the files gone.
    for t in &out.dumps {
        std::fs::remove_file(&t.file).unwrap();
    }
    let d = Dumps::new(config(dir.path(), PROCDUMP_LIKE));
    let later = d.take("r2.web01.dump", "Shop Pool", &[worker(13)]).await;
    assert!(later.dumps.is_empty());
    assert!(
        later.refused[0].contains("2 of dump.per_day 2"),
        "{later:?}"
    );
    let again = d.take("r.web01.dump", "Shop Pool", &[worker(11)]).await;
    assert!(again.replayed, "the id is remembered across the restart");
}

#[cfg(unix)]
#[tokio::test]
async fn a_dump_past_the_size_cap_or_the_time_limit_is_stopped_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KB every 20 ms, for ever: passes 1 MB in about 0.3 s.
    let growing = "import sys, time\nf = open(sys.argv[2], 'wb')\nwhile True:\n    f.write(b'x' * 65536); f.flush(); time.sleep(0.02)";
    let d = Dumps::new(config(dir.path(), growing));
    let started = Instant::now();
    let out = d.take("r.web01.dump", "ShopPool", &[worker(21)]).await;
    assert!(out.dumps.is_empty());
    assert!(
        out.refused[0].contains("passed dump.max_size_mb"),
        "{out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let mut c = config(dir.path(), "import time; time.sleep(60)");
    c.timeout = Duration::from_millis(300);
    let d = Dumps::new(c);
    let started = Instant::now();
    let out = d.take("r.web02.dump", "ShopPool", &[worker(22)]).await;
    assert!(out.refused[0].contains("dump.timeout"), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "dmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A tool that wrote nothing took no dump, whatever it exited (and
    // the two stopped ones spent the day's two).
    let mut c = config(
        dir.path(),
        "import sys; print('[08:14:02] Dump 1 error: Error writing dump file: 0x80070005'); sys.exit(-2)",
    );
    c.per_day = 3;
    let d = Dumps::new(c);
    let out = d.take("r.web03.dump", "ShopPool", &[worker(23)]).await;
    assert!(
        out.refused[0].contains("exited 254 and wrote no dump"),
        "{out:?}"
    );
    assert!(
        out.refused[0]
            .ends_with("it said: [08:14:02] Dump 1 error: Error writing dump file: 0x80070005"),
        "the tool's last line quoted: {out:?}"
    );
}

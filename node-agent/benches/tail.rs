//! The agent's cost of reading its node's traffic: a W3C log written at
//! 2,000 requests/s (IIS 10's default fields, as HTTP.sys writes them)
//! while the agent's own watch tails it, as it does in service; the
//! Traffic figures read every 5 s must count every line. Prints the
//! watch's CPU (the process's, less the writer thread's own) as a share
//! of one core and the memory it added, and ends with one line for
//! scripts. Linux (reads /proc).
//!
//! `cargo bench -p farm-agent --bench tail [-- --seconds N --rate R]`
use std::io::Write;
use std::time::{Duration, Instant};

use farm_agent::iis::{SiteLogs, TrafficLogs};
use farm_agent::traffic::watch::TrafficWatch;

/// utime + stime of a /proc stat file, in seconds.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The command name may hold spaces: fields count from after its ')'.
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A line of `/proc/self/status` (`VmRSS`, `VmHWM`), in MB.
fn memory_mb(key: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds = arg("--seconds", 30);
    let rate = arg("--rate", 2_000);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let w3c = dir.path().join("W3SVC1");
    std::fs::create_dir_all(&w3c).expect("the log folder");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let rss_before = memory_mb("VmRSS").unwrap_or(0.0);
    let watch = runtime.block_on(async {
        TrafficWatch::start(TrafficLogs {
            sites: vec![SiteLogs {
                site: "shop".into(),
                id: 1,
                pool: "ShopPool".into(),
                w3c_dir: w3c.clone(),
                period: None,
            }],
            httperr_dir: None,
            check_paths: vec!["/health.htm".into()],
        })
    });
    let cpu_start = cpu_seconds("/proc/self/stat").unwrap_or(0.0);
    let started = Instant::now();
    // The writer: IIS's lines in batches every 10 ms, flushed like HTTP.sys.
    let writer = std::thread::spawn(move || {
        let day = jiff::Timestamp::now().strftime("%y%m%d").to_string();
        let path = w3c.join(format!("u_ex{day}.log"));
        let mut f = std::fs::File::create(&path).expect("the log file");
        let _ = f.write_all(b"#Software: Microsoft Internet Information Services 10.0\r\n#Version: 1.0\r\n#Date: 2026-01-01 00:00:00\r\n#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken\r\n");
        let per_tick = (rate / 100).max(1);
        let mut written = 0u64;
        let start = Instant::now();
        let mut tick = 0u64;
        while start.elapsed() < Duration::from_secs(seconds) {
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string();
            let mut batch = String::new();
            for k in 0..per_tick {
                let status = if (written + k).is_multiple_of(100) {
                    500
                } else {
                    200
                };
                batch.push_str(&format!(
                    "{now} 10.0.1.11 GET /shop/item.aspx id={} 80 - 203.0.113.{} Mozilla/5.0+(Windows+NT+10.0;+Win64;+x64)+AppleWebKit/537.36 https://shop.example.com/ {status} 0 0 {}\r\n",
                    written + k,
                    (written + k) % 250,
                    10 + (written + k) % 90
                ));
            }
            let _ = f.write_all(batch.as_bytes());
            written += per_tick;
            tick += 1;
            let next = start + Duration::from_millis(10 * tick);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let own = cpu_seconds("/proc/thread-self/stat").unwrap_or(0.0);
        (written, own)
    });
    let mut counted = 0u64;
    let mut peak_rss = 0.0f64;
    while !writer.is_finished() {
        std::thread::sleep(Duration::from_secs(5));
        let figures = watch.figures(300);
        counted = figures.iter().map(|s| s.figures.requests).sum();
        peak_rss = peak_rss.max(memory_mb("VmRSS").unwrap_or(0.0));
    }
    let (written, writer_cpu) = writer.join().expect("the writer");
    std::thread::sleep(Duration::from_millis(600));
    let figures = watch.figures(300);
    counted = counted.max(figures.iter().map(|s| s.figures.requests).sum());
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds("/proc/self/stat").unwrap_or(0.0) - cpu_start - writer_cpu;
    peak_rss = peak_rss.max(memory_mb("VmRSS").unwrap_or(0.0));
    let share = cpu / elapsed * 100.0;
    println!(
        "tailing a W3C log written at {rate} requests/s for {seconds}s: {written} lines written, {counted} counted"
    );
    println!(
        "agent watch CPU {cpu:.2}s in {elapsed:.1}s = {share:.1}% of one core; memory +{:.1} MB (RSS {rss_before:.1} -> {peak_rss:.1} MB)",
        peak_rss - rss_before
    );
    println!(
        "tail rate={rate} seconds={seconds} written={written} counted={counted} cpu_percent={share:.2} rss_added_mb={:.1}",
        peak_rss - rss_before
    );
    drop(runtime);
}

//! Benchmark: `farmctl logs` over a gigabyte of W3C logs (4 servers, a
//! folder each, daily files of IIS 10's default fields, real-looking URLs,
//! agents, statuses and times), against `wc -l` over the same files,
//! measured in one run on warm files: the time of each (median of 3), the
//! ratio, and `farmctl logs`'s peak memory. Ends with one line for scripts.
//! Linux (reads /proc).
//!
//! ```text
//! cargo build --release -p farmctl
//! cargo run --release -p farmctl --bin farmctl-logs-bench [-- --mb 1024]
//! ```
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const HEADER: &str = "#Software: Microsoft Internet Information Services 10.0\r\n#Version: 1.0\r\n#Date: 2026-12-01 00:00:00\r\n#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken\r\n";

/// Writes `mb` megabytes of logs under `dir`: 4 servers, 2 sites each,
/// a file per day.
fn generate(dir: &Path, mb: u64) -> u64 {
    let agents = [
        "Mozilla/5.0+(Windows+NT+10.0;+Win64;+x64)+AppleWebKit/537.36+(KHTML,+like+Gecko)+Chrome/120.0.0.0+Safari/537.36",
        "Mozilla/5.0+(iPhone;+CPU+iPhone+OS+17_1+like+Mac+OS+X)+AppleWebKit/605.1.15+(KHTML,+like+Gecko)+Version/17.1+Mobile/15E148+Safari/604.1",
        "Mozilla/5.0+(X11;+Linux+x86_64;+rv:120.0)+Gecko/20100101+Firefox/120.0",
    ];
    let urls = [
        "/",
        "/shop/product.aspx",
        "/shop/cart.aspx",
        "/api/v1/orders",
        "/static/app.js",
        "/search.aspx",
        "/account/login.aspx",
    ];
    let target = mb * 1024 * 1024;
    let per_file = target / (4 * 2 * 4);
    let mut written = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for server in 1..=4 {
        for site in 1..=2 {
            let folder = dir
                .join(format!("web{server:02}"))
                .join(format!("W3SVC{site}"));
            std::fs::create_dir_all(&folder).expect("a folder");
            for day in 1..=4u64 {
                let path = folder.join(format!("u_ex2612{day:02}.log"));
                let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("a file"));
                f.write_all(HEADER.as_bytes()).expect("write");
                let mut size = HEADER.len() as u64;
                let mut second = 0u64;
                while size < per_file {
                    let r = next();
                    second = (second + (r % 3)) % 86_400;
                    let status = match r % 1000 {
                        0..=4 => "500 0 0",
                        5..=7 => "503 2 0",
                        8..=40 => "304 0 0",
                        41..=60 => "404 0 2",
                        _ => "200 0 0",
                    };
                    let line = format!(
                        "2026-12-{day:02} {:02}:{:02}:{:02} 10.0.{server}.11 GET {} id={} 443 - 203.0.{}.{} {} https://shop.example.com/ {status} {}\r\n",
                        second / 3600,
                        second / 60 % 60,
                        second % 60,
                        urls[(r >> 8) as usize % urls.len()],
                        r % 100_000,
                        (r >> 16) % 256,
                        (r >> 24) % 256,
                        agents[(r >> 32) as usize % agents.len()],
                        5 + (r >> 40) % 400,
                    );
                    f.write_all(line.as_bytes()).expect("write");
                    size += line.len() as u64;
                }
                written += size;
            }
        }
    }
    written
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("a folder").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs `cmd`, returning its wall time and peak RSS (MB, from /proc while
/// it runs).
fn measure(mut cmd: Command) -> (Duration, f64) {
    let start = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the command starts");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0.0f64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "the command failed");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (start.elapsed(), peak_kb / 1024.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mb = arg("--mb", 1024);
    let farmctl = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("farmctl")))
        .filter(|p| p.exists())
        .expect("farmctl beside this benchmark: cargo build --release -p farmctl first");
    // `--keep DIR`: the logs are written there and left (to profile).
    let args: Vec<String> = std::env::args().collect();
    let keep = args
        .iter()
        .position(|a| a == "--keep")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let temp = tempfile::tempdir().expect("a temporary folder");
    let dir = keep.unwrap_or_else(|| temp.path().to_path_buf());
    let bytes = generate(&dir, mb);
    let all = files(&dir);
    // Warm the page cache once for both.
    let mut wc = Command::new("wc");
    wc.arg("-l").args(&all);
    measure(wc);
    let (mut wc_times, mut logs_times, mut peak) = (Vec::new(), Vec::new(), 0.0f64);
    for _ in 0..3 {
        let mut wc = Command::new("wc");
        wc.arg("-l").args(&all);
        wc_times.push(measure(wc).0);
        let mut logs = Command::new(&farmctl);
        logs.args(["logs", "-q", "-o", "json"]).arg(&dir);
        let (t, rss) = measure(logs);
        logs_times.push(t);
        peak = peak.max(rss);
    }
    let (wc_t, logs_t) = (median(wc_times), median(logs_times));
    let ratio = logs_t.as_secs_f64() / wc_t.as_secs_f64();
    let gb = bytes as f64 / 1e9;
    println!(
        "{} files, {gb:.2} GB of W3C logs (4 servers x 2 sites x 4 days), {} cores",
        all.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("wc -l          {:>7.3} s", wc_t.as_secs_f64());
    println!(
        "farmctl logs   {:>7.3} s  ({:.2} GB/s), {ratio:.2}x wc -l, peak memory {peak:.1} MB",
        logs_t.as_secs_f64(),
        gb / logs_t.as_secs_f64()
    );
    println!(
        "logs bytes={bytes} wc_s={:.3} logs_s={:.3} ratio={ratio:.2} peak_mb={peak:.1}",
        wc_t.as_secs_f64(),
        logs_t.as_secs_f64()
    );
}

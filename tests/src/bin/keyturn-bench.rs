//! The benchmark behind `scripts/bench`: N Auth0 rotations started at once
//! through the `keyturn` binary, against moto and a multi-tenant fake Auth0
//! on loopback, side by side with a plain sequential script doing the same
//! work (`bench/sequential.py`).
//!
//! Every AWS request of the worker, of the `keyturn rotate` commands and of
//! the script passes through a counting proxy in front of moto
//! ([`FaultProxy`] with no faults), which names each call by its API action.
//! The bench's own setup and progress polling talk to moto directly and are
//! not counted. Worker CPU and memory come from `/proc/<pid>`.
//!
//! `--exposure` measures instead how fast an exposed key dies while N
//! ordinary rotations drain (N = 0, 200, 1,000 by default), and with a
//! SIGKILL of the replica holding the emergency, on the fleet the
//! priority-lane test uses ([`keyturn_testkit::fleet`]); it writes the
//! figures to `bench/exposure.txt`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use keyturn_testkit::fault_proxy::{FaultProxy, RateLimit};
use keyturn_testkit::fleet::{Fleet, FleetBuilder, EXPOSURE_AUTH0_LATENCY_MS, EXPOSURE_WORKER};
use keyturn_testkit::process::Guard;

/// Rotations per second, AWS calls, CPU and memory of keyturn against a
/// plain sequential script doing the same work (see README, Efficiency).
#[derive(Debug, Parser)]
#[command(name = "keyturn-bench")]
struct Args {
    /// Rotations to run, all requested at once
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    rotations: u32,
    /// The worker's [worker] concurrency
    #[arg(long, value_name = "C", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// A burst against a throttling backend: the proxy in front of moto
    /// answers IAM calls above R per second with Throttling while the worker
    /// runs (not while the script does); prints how close to R the worker ran
    /// and how often it was refused
    #[arg(long, value_name = "R", value_parser = calls_per_second)]
    throttle_iam: Option<f64>,
    /// Configuration, logs and the fake's port file
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    dir: PathBuf,
    /// The keyturn binary
    #[arg(long, value_name = "PATH", default_value = "target/release/keyturn")]
    keyturn: PathBuf,
    /// Instead: the time from an AWS Health exposure event reaching the
    /// intake queue to the exposed key being inactive, while N ordinary
    /// rotations drain (worker concurrency 4, Auth0 answering in 100 ms),
    /// for each N of --backlogs, then with a SIGKILL of the replica holding
    /// the emergency (two replicas, N of --kill-backlog)
    #[arg(long)]
    exposure: bool,
    /// The backlogs of --exposure, comma-separated
    #[arg(long, value_name = "N,N,..", value_delimiter = ',', default_value = "0,200,1000")]
    backlogs: Vec<usize>,
    /// The backlog of the --exposure run with a SIGKILL
    #[arg(long, value_name = "N", default_value_t = 200)]
    kill_backlog: usize,
    /// Where --exposure writes its figures (besides printing them)
    #[arg(long, value_name = "FILE", default_value = "bench/exposure.txt")]
    exposure_out: PathBuf,
}

/// A rate of at least one call per second.
fn calls_per_second(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if r >= 1.0 && r.is_finite() {
        Ok(r)
    } else {
        Err("must be at least 1 (calls per second)".into())
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let ran = if args.exposure { exposure(args).await } else { run(args).await };
    if let Err(e) = ran {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// CPU time (user + system) of a process, in milliseconds.
fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow::anyhow!("bad /proc stat"))? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    let hz = 100.0_f64; // USER_HZ is 100 on Linux for every architecture keyturn targets
    Ok(ticks * 1000.0 / hz)
}

/// A `VmRSS`/`VmHWM` line of `/proc/<pid>/status`, in MiB.
fn mem_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).ok_or_else(|| anyhow::anyhow!("no {field}"))?;
    let kb: f64 = line.split_whitespace().nth(1).unwrap_or("0").parse()?;
    Ok(kb / 1024.0)
}

/// The IAM actions a rotation calls (what `--throttle-iam` limits).
const IAM_ACTIONS: [&str; 5] = ["ListAccessKeys", "CreateAccessKey", "UpdateAccessKey", "DeleteAccessKey", "GetAccessKeyLastUsed"];

/// Forget what the proxy counted so far.
fn clear(proxy: &FaultProxy) {
    let mut log = proxy.log.lock().unwrap();
    log.seen.clear();
    log.upstream.clear();
}

fn counts(proxy: &FaultProxy) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (action, _) in proxy.log.lock().unwrap().seen.iter() {
        *m.entry(if action.is_empty() { "(unnamed)".to_string() } else { action.clone() }).or_default() += 1;
    }
    m
}

async fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.keyturn.exists(), "{} is missing: build it first (scripts/bench does)", a.keyturn.display());
    std::fs::create_dir_all(&a.dir)?;
    let n = a.rotations as usize;
    println!("== keyturn bench: {n} Auth0 rotations, worker concurrency {}", a.concurrency);
    // The resources of a deployment and N users, each with one key and an
    // Auth0 tenant; keyturn processes talk to moto through the counting proxy.
    let fleet = FleetBuilder::new(&a.dir, n)
        .prefix("bench")
        .through_proxy()
        .worker(&format!("concurrency = {}", a.concurrency))
        .keyturn(&a.keyturn)
        .build()
        .await?;
    let (moto, ddb) = (&fleet.moto, &fleet.ddb);
    let proxy = fleet.proxy.as_ref().expect("built through the proxy");

    let log_path = a.dir.join("worker-1.log");
    let worker = fleet.worker(1)?;
    let pid = worker.id();
    wait_started(proxy, &log_path).await?;
    let startup_rss = mem_mib(pid, "VmRSS")?;
    clear(proxy);
    if let Some(rate) = a.throttle_iam {
        println!("IAM behind a proxy that answers Throttling above {rate} calls/s");
        proxy.limit_rate(Some(RateLimit::new(&IAM_ACTIONS, rate)));
    }

    let cpu0 = cpu_ms(pid)?;
    let moto_cpu0 = cpu_ms(moto.pid())?;
    let t0 = Instant::now();
    let requests = request_all(&a, &fleet).await?;
    let (statuses, wall) = wait_all_ended(ddb, &log_path, n, t0).await?;
    let busy_cpu = cpu_ms(pid)? - cpu0;
    let moto_busy = cpu_ms(moto.pid())? - moto_cpu0;
    let peak = mem_mib(pid, "VmHWM")?;
    let calls = counts(proxy);
    let upstream = proxy.log.lock().unwrap().upstream.clone();
    let limited = proxy.rate.lock().unwrap().take();
    let idle = measure_idle(pid, proxy, calls.values().sum()).await?;
    let k = Keyturn { statuses, wall, requests, busy_cpu, moto_busy, peak, calls, upstream, limited, startup_rss, idle };
    // SIGTERM, as ECS stops a task.
    let _ = worker.terminate();
    drop(worker);

    let script = run_script(&fleet, n).await?;
    print_runs(n, &k, &script);
    print_moto(n, &k, &script);
    if let Some(r) = &k.limited {
        print_burst(r, &log_path);
    }
    println!("\nmachine: {}; moto {}; worker concurrency {}", machine(), moto_version(), a.concurrency);
    let failed: usize = k.statuses.iter().filter(|(s, _)| s.as_str() != "succeeded").map(|(_, c)| c).sum();
    anyhow::ensure!(failed == 0, "{failed} sagas did not succeed: {:?}", k.statuses);
    Ok(())
}

/// What the bench measured of keyturn (worker and `keyturn rotate` commands).
struct Keyturn {
    statuses: BTreeMap<String, usize>,
    wall: Duration,
    requests: Requests,
    busy_cpu: f64,
    moto_busy: f64,
    peak: f64,
    calls: BTreeMap<String, usize>,
    upstream: BTreeMap<String, (usize, Duration)>,
    limited: Option<RateLimit>,
    startup_rss: f64,
    idle: Idle,
}

/// The `keyturn rotate` commands: how long they took, and the ones asked again.
struct Requests {
    took: Duration,
    retried: usize,
    /// Why requests failed, by the last line of their error.
    errors: BTreeMap<String, usize>,
}

/// The worker with nothing to do.
struct Idle {
    cpu_pct: f64,
    rss: f64,
    calls: usize,
}

/// What the bench measured of the sequential script.
struct Script {
    wall: f64,
    cpu: f64,
    rss: f64,
    calls: BTreeMap<String, usize>,
    upstream: BTreeMap<String, (usize, Duration)>,
    moto_busy: f64,
}

/// Until the worker started: it has polled once (one ReceiveMessage through the proxy).
async fn wait_started(proxy: &FaultProxy, log_path: &std::path::Path) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    while counts(proxy).get("ReceiveMessage").copied().unwrap_or(0) == 0 {
        anyhow::ensure!(Instant::now() < end, "the worker did not start; see {}", log_path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// N `keyturn rotate` commands, at most 16 running at a time.
async fn request_all(a: &Args, fleet: &Fleet) -> anyhow::Result<Requests> {
    let n = a.rotations as usize;
    let t0 = Instant::now();
    // A request moto answers with an error (its transactions are not built
    // for this concurrency) is asked again, as an operator would.
    let mut pending: std::collections::VecDeque<usize> = (0..n).collect();
    let mut running: Vec<(usize, Guard)> = vec![];
    let mut retried_requests = 0;
    let mut request_errors: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let mut failed = vec![];
        running.retain_mut(|(i, c)| match c.try_wait() {
            Ok(Some(st)) => {
                if !st.success() {
                    failed.push(*i);
                    // Why, by its last line (the error), counted by kind.
                    let err = std::fs::read_to_string(a.dir.join(format!("rotate-{i}.err"))).unwrap_or_default();
                    let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no message)");
                    let kind: String = last.chars().take(140).collect();
                    *request_errors.entry(kind).or_insert(0usize) += 1;
                }
                false
            }
            _ => true,
        });
        retried_requests += failed.len();
        anyhow::ensure!(retried_requests <= n, "too many failed requests");
        pending.extend(failed);
        while running.len() < 16 {
            let Some(i) = pending.pop_front() else { break };
            running.push((
                i,
                Guard::spawn(
                    Command::new(&a.keyturn)
                        .args(["rotate", &format!("bench-{i}"), "--config"])
                        .arg(&fleet.cfg_path)
                        .envs(fleet.env.iter().cloned())
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(std::fs::File::create(a.dir.join(format!("rotate-{i}.err")))?),
                )?,
            ));
        }
        if running.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(Requests { took: t0.elapsed(), retried: retried_requests, errors: request_errors })
}

/// Until every saga ended (polled on moto directly: not counted): the
/// sagas by status, and the time since `t0`. The table is scanned only once
/// the worker's log says every saga was notified: a scan every moment would
/// take moto's time from the worker.
async fn wait_all_ended(
    ddb: &aws_sdk_dynamodb::Client,
    log_path: &std::path::Path,
    n: usize,
    t0: Instant,
) -> anyhow::Result<(BTreeMap<String, usize>, Duration)> {
    loop {
        let notified = std::fs::read_to_string(log_path).unwrap_or_default().matches("notification published").count();
        if notified < n {
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(3600), "rotations did not finish within an hour ({notified} notified)");
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        let mut start = None;
        loop {
            let page = ddb.scan().table_name("keyturn-sagas").set_exclusive_start_key(start.take()).send().await?;
            for item in page.items() {
                if item.get("kind").and_then(|v| v.as_s().ok()).map(String::as_str) == Some("saga") {
                    let st = item.get("status").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                    *statuses.entry(st).or_default() += 1;
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        let done: usize = statuses.iter().filter(|(s, _)| !matches!(s.as_str(), "running" | "compensating")).map(|(_, c)| c).sum();
        if done >= n {
            return Ok((statuses, t0.elapsed()));
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(3600), "rotations did not finish within an hour: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Idle: settle, then 20 s of nothing to do (`calls_before`: what the
/// proxy counted until then).
async fn measure_idle(pid: u32, proxy: &FaultProxy, calls_before: usize) -> anyhow::Result<Idle> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (i0, it0) = (cpu_ms(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let cpu_pct = (cpu_ms(pid)? - i0) / it0.elapsed().as_secs_f64() / 10.0;
    let rss = mem_mib(pid, "VmRSS")?;
    let calls = counts(proxy).values().sum::<usize>() - calls_before;
    Ok(Idle { cpu_pct, rss, calls })
}

/// The plain sequential script, same work, same moto (through the proxy).
async fn run_script(fleet: &Fleet, n: usize) -> anyhow::Result<Script> {
    let proxy = fleet.proxy.as_ref().expect("built through the proxy");
    clear(proxy);
    let moto_cpu1 = cpu_ms(fleet.moto.pid())?;
    let out = Command::new("python3")
        .args([
            "bench/sequential.py",
            "--endpoint",
            &proxy.endpoint,
            "--auth0",
            &fleet.auth0,
            "--client-secret",
            &fleet.client_secret,
            "--topic",
            &fleet.topic,
        ])
        .args(["--rotations", &n.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "bench/sequential.py failed");
    let script: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(Script {
        calls: counts(proxy),
        upstream: proxy.log.lock().unwrap().upstream.clone(),
        moto_busy: cpu_ms(fleet.moto.pid())? - moto_cpu1,
        wall: script["wall_s"].as_f64().unwrap_or(0.0),
        cpu: script["cpu_ms"].as_f64().unwrap_or(0.0),
        rss: script["peak_rss_kb"].as_f64().unwrap_or(0.0) / 1024.0,
    })
}

/// The sagas, the AWS calls per rotation and the figures of both runs side by side.
fn print_runs(n: usize, k: &Keyturn, s: &Script) {
    let per = |c: usize| c as f64 / n as f64;
    println!(
        "\nsagas: {:?}  (all {n} requested in {:.1}s by `keyturn rotate` processes, 16 at a time; {} asked again after an error)",
        k.statuses,
        k.requests.took.as_secs_f64(),
        k.requests.retried
    );
    for (kind, count) in &k.requests.errors {
        println!("  {count} × {kind}");
    }
    println!("\nAWS calls per rotation, by API action (worker + CLI | script):");
    let actions: std::collections::BTreeSet<&String> = k.calls.keys().chain(s.calls.keys()).collect();
    for act in actions {
        let kc = k.calls.get(act).copied().unwrap_or(0);
        let sc = s.calls.get(act).copied().unwrap_or(0);
        println!("  {act:<24} {:>7.2} | {:>5.2}", per(kc), per(sc));
    }
    let (kt, st) = (per(k.calls.values().sum()), per(s.calls.values().sum()));
    println!("  {:<24} {kt:>7.2} | {st:>5.2}", "total");
    let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}x", a / b) } else { "-".into() };
    println!("\n{:<34} {:>12} | {:>12} | {:>7}", "figure", "keyturn", "script", "ratio");
    let row = |name: &str, k: f64, s: f64, unit: &str| {
        println!("{name:<34} {:>12} | {:>12} | {:>7}", format!("{k:.2}{unit}"), format!("{s:.2}{unit}"), ratio(k, s))
    };
    let wall = k.wall.as_secs_f64();
    row("AWS calls per rotation", kt, st, "");
    row("CPU per rotation (ms)", k.busy_cpu / n as f64, s.cpu / n as f64, "");
    row("wall time (s)", wall, s.wall, "");
    row("rotations per second", n as f64 / wall, n as f64 / s.wall, "");
    row("peak RSS (MiB)", k.peak, s.rss, "");
    println!("{:<34} {:>12}", "worker RSS after start (MiB)", format!("{:.2}", k.startup_rss));
    println!("{:<34} {:>12}", "worker idle RSS (MiB)", format!("{:.2}", k.idle.rss));
    println!("{:<34} {:>12}", "worker idle CPU (% of one core)", format!("{:.3}", k.idle.cpu_pct));
    println!("{:<34} {:>12}", "worker idle AWS calls in 20 s", k.idle.calls);
}

/// Where the wall time goes: moto answers one request at a time (one
/// Python process), so its time per call grows with the calls waiting.
fn print_moto(n: usize, k: &Keyturn, s: &Script) {
    let moto = |u: &BTreeMap<String, (usize, Duration)>| {
        let (n, t) = u.values().fold((0usize, Duration::ZERO), |(n, t), (c, d)| (n + c, t + *d));
        (n, t.as_secs_f64())
    };
    let ((wn, wt), (sn, st_)) = (moto(&k.upstream), moto(&s.upstream));
    let (wall, s_wall) = (k.wall.as_secs_f64(), s.wall);
    println!("\nmoto, where the wall time goes          keyturn |       script");
    println!("{:<34} {:>12} | {:>12}", "calls answered per second", format!("{:.1}", wn as f64 / wall), format!("{:.1}", sn as f64 / s_wall));
    println!(
        "{:<34} {:>12} | {:>12}",
        "mean time moto took per call (ms)",
        format!("{:.2}", 1000.0 * wt / wn.max(1) as f64),
        format!("{:.2}", 1000.0 * st_ / sn.max(1) as f64)
    );
    println!("{:<34} {:>12} | {:>12}", "calls in moto at once (mean)", format!("{:.2}", wt / wall), format!("{:.2}", st_ / s_wall));
    println!(
        "{:<34} {:>12} | {:>12}",
        "moto CPU, % of one core",
        format!("{:.0}", k.moto_busy / wall / 10.0),
        format!("{:.0}", s.moto_busy / s_wall / 10.0)
    );
    println!("{:<34} {:>12} | {:>12}", "moto CPU per rotation (ms)", format!("{:.1}", k.moto_busy / n as f64), format!("{:.1}", s.moto_busy / n as f64));
    let mut slow: Vec<(&String, &(usize, Duration))> = k.upstream.iter().collect();
    slow.sort_by_key(|e| std::cmp::Reverse(e.1 .1));
    let top: Vec<String> = slow.iter().take(4).map(|(a, (c, d))| format!("{a} {:.0} ms", 1000.0 * d.as_secs_f64() / (*c).max(1) as f64)).collect();
    println!("{:<34} {}", "keyturn's slowest in moto (mean)", top.join(", "));
}

/// `--throttle-iam`: how close to the limit the worker ran, how often it was refused.
fn print_burst(r: &RateLimit, log_path: &std::path::Path) {
    let refusals = std::fs::read_to_string(log_path).unwrap_or_default().matches("IAM is throttling").count();
    println!(
        "\nburst against a throttling IAM: limit {:.1} calls/s; {} IAM calls let through at {:.2}/s from the first to the last ({:.0}% of the limit); {} answered Throttling ({:.1}% of IAM calls); {refusals} steps backed off in place (worker log)",
        r.per_sec,
        r.admitted,
        r.admitted_per_sec(),
        100.0 * r.admitted_per_sec() / r.per_sec,
        r.refused,
        100.0 * r.refused as f64 / (r.admitted + r.refused).max(1) as f64
    );
}

/// `2 x <cpu model>`: the CPUs this runs on.
fn machine() -> String {
    let cpus = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpus.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("?").trim().to_string();
    format!("{} x {model}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// `--exposure`: for each backlog N, a fresh fleet (moto, N + 1 users and
/// tenants), one worker at concurrency 4; the N rotations are requested at
/// once, and once a few finished the exposure event for the extra user
/// reaches the intake queue. Timed until the exposed key is inactive; the
/// rest of the backlog is not waited for (`tests/tests/priority.rs` checks
/// that it all succeeds). Then the same with two replicas and a SIGKILL of
/// the one holding the emergency's lease.
async fn exposure(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.keyturn.exists(), "{} is missing: build it first (scripts/bench does)", a.keyturn.display());
    let fleet = |n: usize, name: String| {
        FleetBuilder::new(a.dir.join(name), n)
            .prefix("bench")
            .exposed_user()
            .lanes()
            .auth0_latency_ms(EXPOSURE_AUTH0_LATENCY_MS)
            .worker(EXPOSURE_WORKER)
            .keyturn(&a.keyturn)
            .build()
    };
    let mut out = format!(
        "== exposure to inactive while N ordinary rotations drain (keyturn {}, worker concurrency 4, Auth0 answering in {EXPOSURE_AUTH0_LATENCY_MS} ms)\n\n{:<44} {:>22} {:>16} {:>10} {:>14}\n",
        a.keyturn.display(),
        "situation",
        "exposed key inactive",
        "still waiting",
        "re-drives",
        "load (1 min)"
    );
    println!("{}", out.trim_end());
    // Written after every figure, so an interrupted run keeps what it measured.
    let out_path = a.exposure_out.clone();
    let mut row = |what: String, took: Duration, waiting: String, redriven: usize| -> anyhow::Result<()> {
        let line = format!("{what:<44} {:>21.2}s {waiting:>16} {redriven:>10} {:>14}\n", took.as_secs_f64(), load_average());
        print!("{line}");
        out.push_str(&line);
        std::fs::write(&out_path, &out)?;
        Ok(())
    };
    for &n in &a.backlogs {
        let f = fleet(n, format!("exposure-{n}")).await?;
        let _w = f.worker(1)?;
        f.request_all().await?;
        f.wait_draining().await?;
        let (took, done) = f.expose_and_time(|_| true).await?;
        let what = if n == 0 { "idle worker (no backlog)".to_string() } else { format!("{n} rotations requested at once") };
        row(what, took, format!("{} of {n}", n.saturating_sub(done)), f.count_in_logs("re-driving its step"))?;
    }
    if a.kill_backlog > 0 || a.backlogs.is_empty() {
        let n = a.kill_backlog;
        let f = fleet(n, format!("exposure-kill-{n}")).await?;
        let mut replicas = vec![Some(f.worker(1)?), Some(f.worker(2)?)];
        f.request_all().await?;
        f.wait_draining().await?;
        let (took, done, at) = f.expose_kill_and_time(&mut replicas).await?;
        let what = format!("{n} requested, 2 replicas, holder killed at {:.2}s", at.as_secs_f64());
        row(what, took, format!("{} of {n}", n.saturating_sub(done)), f.count_in_logs("re-driving its step"))?;
    }
    let machine = format!(
        "\ntimed from the event reaching the intake queue; re-drives: steps the sweeper sent again up to then.\nmachine: {}; moto {}; load average: the machine's, at each figure\n",
        machine(),
        moto_version()
    );
    print!("{machine}");
    out.push_str(&machine);
    std::fs::write(&a.exposure_out, out)?;
    println!("written to {}", a.exposure_out.display());
    Ok(())
}

/// The 1-minute load average (`/proc/loadavg`).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split_whitespace().next().map(str::to_string)).unwrap_or_else(|| "?".into())
}

fn moto_version() -> String {
    Command::new("python3")
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

//! A child process that cannot outlive its owner: killed and reaped on drop,
//! whatever path the owner leaves by (an error, a panic, an early return).
//! Used by the tool binaries and the integration tests that run workers
//! ([`WorkerProcesses`]: `keyturn worker` processes with their logs).

use std::io;
use std::process::{Child, Command, ExitStatus};

/// A running child, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Guard(Child);

impl Guard {
    /// Spawn `cmd` under a guard.
    pub fn spawn(cmd: &mut Command) -> io::Result<Self> {
        cmd.spawn().map(Guard)
    }

    /// Guard a child that is already running.
    pub fn new(child: Child) -> Self {
        Guard(child)
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Ask it to stop as ECS stops a task (SIGTERM); [`Guard::wait`] then
    /// gives its exit status.
    pub fn terminate(&self) -> io::Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -TERM {} failed: {status}", self.0.id())))
        }
    }

    /// Wait for it to exit (and reap it).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.0.wait()
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.0.try_wait()
    }

    /// SIGKILL it now and reap it (what dropping does).
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.0.try_wait()? {
            return Ok(status);
        }
        self.0.kill()?;
        self.0.wait()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// `keyturn worker` processes of one configuration file, started with the
/// environment `env`, each logging at debug level to `worker-<n>.log` in
/// `dir` (n counts every start, restarts included); each is killed and
/// reaped when its [`Guard`] drops.
pub struct WorkerProcesses {
    pub config: std::path::PathBuf,
    pub env: Vec<(&'static str, String)>,
    pub dir: std::path::PathBuf,
    pub started: usize,
}

impl WorkerProcesses {
    pub fn new(config: std::path::PathBuf, env: Vec<(&'static str, String)>, dir: std::path::PathBuf) -> Self {
        WorkerProcesses { config, env, dir, started: 0 }
    }

    /// Start one more.
    pub fn spawn(&mut self) -> Guard {
        self.started += 1;
        let log = std::fs::File::create(self.dir.join(format!("worker-{}.log", self.started))).unwrap();
        Guard::spawn(
            Command::new(crate::env::keyturn_bin())
                .args(["worker", "--config"])
                .arg(&self.config)
                .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
                .env("RUST_LOG", "keyturn=debug,warn")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(log),
        )
        .unwrap()
    }

    /// Every worker's log so far.
    pub fn logs(&self) -> String {
        (1..=self.started).map(|i| std::fs::read_to_string(self.dir.join(format!("worker-{i}.log"))).unwrap_or_default()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    /// Whether `pid` is still a process of ours (running or an unreaped zombie).
    fn exists(pid: u32) -> bool {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn dropping_kills_and_reaps_the_child() {
        let g = Guard::spawn(Command::new("sleep").arg("600").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null())).unwrap();
        let pid = g.id();
        assert!(exists(pid));
        drop(g);
        // Reaped too: no zombie left in the process table.
        assert!(!exists(pid), "process {pid} outlived its guard");
    }

    #[test]
    fn kill_after_exit_gives_the_real_status() {
        let mut g = Guard::spawn(Command::new("sh").args(["-c", "exit 3"])).unwrap();
        assert_eq!(g.wait().unwrap().code(), Some(3));
        assert_eq!(g.kill().unwrap().code(), Some(3));
    }

    #[test]
    fn terminate_lets_wait_see_the_signal() {
        use std::os::unix::process::ExitStatusExt;
        let mut g = Guard::spawn(Command::new("sleep").arg("600").stdout(Stdio::null()).stderr(Stdio::null())).unwrap();
        g.terminate().unwrap();
        assert_eq!(g.wait().unwrap().signal(), Some(15));
    }
}

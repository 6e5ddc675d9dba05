//! A `moto_server` process on a free loopback port, killed on drop.
//!
//! Each test gets its own emulator so tests can run in parallel without
//! seeing each other's queues, tables and users.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
    pub endpoint: String,
}

impl Moto {
    /// The moto_server process id (the benchmark reads its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Start `moto_server` (from `pip install 'moto[server]>=5.2,<6'`).
    /// `extra_env` is passed to the process (e.g. `INITIAL_NO_AUTH_ACTION_COUNT`).
    pub async fn start(extra_env: &[(&str, &str)]) -> anyhow::Result<Moto> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child =
            cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start {bin}: {e}. Install the AWS emulator with: pip install 'moto[server]>=5.2,<6'"))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let moto = Moto { child, port, endpoint };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/moto-api/", moto.endpoint)).send().await {
                if r.status().is_success() {
                    return Ok(moto);
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!("moto_server on port {port} did not answer within 60s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

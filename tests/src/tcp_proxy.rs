//! A loopback TCP proxy that adds latency to every chunk in both directions.
//!
//! Put between the worker processes and moto (their `AWS_ENDPOINT_URL`), it
//! makes every AWS call take as long as it might on a real network, so the
//! windows between a side effect and the write that records it are wide
//! enough for the crash suite's random kills to land in them.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct TcpProxy {
    pub endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Proxy `127.0.0.1:<free port>` → `upstream` (host:port), delaying each
    /// chunk by `latency`.
    pub async fn start(upstream: String, latency: Duration) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, latency), pipe(sr, cw, latency));
                });
            }
        });
        Ok(TcpProxy { endpoint, task })
    }
}

async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, latency: Duration) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tokio::time::sleep(latency).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

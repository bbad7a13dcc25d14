//! A minimal HTTP endpoint: `/healthz` and Prometheus text at `/metrics`.
//! Hand-rolled on tokio to keep an HTTP stack out of the binary until more is needed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Connections accepted on the Postgres endpoint since start.
pub(crate) static PG_CONNECTIONS: AtomicU64 = AtomicU64::new(0);
/// Statements executed since start.
pub(crate) static STATEMENTS: AtomicU64 = AtomicU64::new(0);

pub(crate) async fn serve(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let request = read_head(&mut socket).await;
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/healthz" => ("200 OK", "ok\n".to_string()),
                    "/metrics" => ("200 OK", render()),
                    _ => ("404 Not Found", "not found\n".to_string()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(local)
}

/// Reads until the blank line that ends a request's head (a client may send the
/// request line in several segments), at most 8 KiB.
async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn render() -> String {
    format!(
        "# TYPE weir_pg_connections_total counter\nweir_pg_connections_total {}\n# TYPE weir_statements_total counter\nweir_statements_total {}\n",
        PG_CONNECTIONS.load(Ordering::Relaxed),
        STATEMENTS.load(Ordering::Relaxed)
    )
}

//! A TCP proxy for fault injection.
//!
//! Point a client at [`FaultProxy::addr`] instead of the real service. Then
//! [`FaultProxy::cut`] drops every open connection and refuses new ones (a
//! crashed or partitioned service), [`FaultProxy::blackhole`] stops
//! forwarding on every connection, open or new, while keeping them open (a
//! hung service or a silent network partition: only timeouts and
//! heartbeats notice), and [`FaultProxy::restore`] closes what was held
//! and forwards new connections again. Each test gets its own proxy, so
//! faults never leak into other tests sharing the service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the upstream.
    Forward,
    /// Close every connection at once.
    Cut,
    /// Hold every connection, open or new, without forwarding anything.
    Blackhole,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free local port forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (mode, rx) = watch::channel(Mode::Forward);
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let rx = rx.clone();
                tokio::spawn(serve(client, upstream, rx));
            }
        });
        FaultProxy {
            addr,
            mode,
            accepted,
            task,
        }
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops all connections and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Stops forwarding until [`Self::restore`]: open connections stall
    /// (they stay open, nothing passes either way), new ones are accepted
    /// and never answered.
    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    /// Forwards traffic again, for new connections only: cut ones stay
    /// cut, and held (black-holed) ones are closed now, as a peer that
    /// comes back has forgotten them.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Forward);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Cut);
        self.task.abort();
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let initial = *mode.borrow_and_update();
    match initial {
        Mode::Cut => {
            let _ = client.shutdown().await;
            return;
        }
        Mode::Blackhole => {
            // Hold the socket until the mode changes, then drop it.
            let _ = mode.changed().await;
            return;
        }
        Mode::Forward => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let pipe = async {
        tokio::select! {
            _ = tokio::io::copy(&mut cr, &mut sw) => {},
            _ = tokio::io::copy(&mut sr, &mut cw) => {},
        }
    };
    let fault = async {
        loop {
            if mode.changed().await.is_err() {
                return Mode::Cut;
            }
            let m = *mode.borrow();
            if m != Mode::Forward {
                return m;
            }
        }
    };
    // Leaving the select drops the copy loops: nothing is forwarded any
    // more, whichever fault it was.
    let fault = tokio::select! {
        _ = pipe => return,
        m = fault => m,
    };
    if fault == Mode::Blackhole {
        // A hang: keep both sockets open, silent, until the mode changes.
        let _ = mode.wait_for(|m| *m != Mode::Blackhole).await;
    }
    // Dropping the sockets closes both sides.
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn echo(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"ping").await?;
        let mut buf = vec![0u8; 4];
        tokio::time::timeout(
            std::time::Duration::from_millis(300),
            s.read_exact(&mut buf),
        )
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
        Ok(buf)
    }

    #[tokio::test]
    async fn blackhole_stalls_open_connections_too() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        proxy.blackhole();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        s.write_all(b"ping").await.unwrap();
        let read =
            tokio::time::timeout(std::time::Duration::from_millis(300), s.read(&mut buf)).await;
        assert!(read.is_err(), "an open connection stalls too");
    }

    #[tokio::test]
    async fn restore_closes_blackholed_connections_and_forwards_new_ones() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.unwrap();
        proxy.blackhole();
        // Accepted while black-holed: held too, never answered.
        let mut held_new = TcpStream::connect(proxy.addr()).await.unwrap();
        held_new.write_all(b"ping").await.unwrap();
        let read = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            held_new.read(&mut buf),
        )
        .await;
        assert!(read.is_err(), "a new connection is held: {read:?}");
        proxy.restore();
        for s in [&mut open, &mut held_new] {
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "a held connection is closed on restore: {read:?}"
            );
        }
        assert_eq!(echo(proxy.addr()).await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn forwards_cuts_and_restores() {
        let proxy = FaultProxy::start(echo_server().await).await;
        assert_eq!(echo(proxy.addr()).await.unwrap(), b"ping");
        proxy.cut();
        assert!(echo(proxy.addr()).await.is_err());
        proxy.blackhole();
        assert!(echo(proxy.addr()).await.is_err(), "hangs, so times out");
        proxy.restore();
        assert_eq!(echo(proxy.addr()).await.unwrap(), b"ping");
    }
}

//! Fault injection for integration tests: a proxy that black-holes the network, a scratch folder
//! that runs out of space, and a URL where nothing listens.
//!
//! These reproduce, on one machine and within seconds, the failures a worker meets in the cloud:
//! a NAT or load balancer that silently forgets connections (only timeouts get a client out), a
//! full disk while transcoding, and an endpoint that is down.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// The black-hole state the proxy's tasks watch. `epoch` counts `black_hole` calls, so every
/// connection forwarding at the time of a call is cut, even when windows overlap.
#[derive(Debug, Clone, Copy)]
struct Window {
    epoch: u64,
    until: Option<Instant>,
}

impl Window {
    fn active(&self) -> bool {
        self.until.is_some_and(|until| Instant::now() < until)
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    forwarded: AtomicU64,
    swallowed: AtomicU64,
    frozen: AtomicU64,
    held: AtomicU64,
}

/// What a [`BlackHoleProxy`] did with its connections, for assertions
/// (`accepted == forwarded + swallowed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyConnections {
    /// Every connection accepted.
    pub accepted: u64,
    /// Accepted outside a black-hole window and handed to the target.
    pub forwarded: u64,
    /// Accepted during a window: held open and silent, never forwarded.
    pub swallowed: u64,
    /// Forwarded connections that a `black_hole` call cut (they stay open and silent).
    pub frozen: u64,
    /// Swallowed or frozen connections whose client has not closed its end yet.
    pub held: u64,
}

/// A TCP proxy on 127.0.0.1 in front of `target` (moto's endpoint) that can black-hole traffic
/// the way a NAT that forgot its mappings does: bytes vanish, and neither FIN nor RST ever comes.
///
/// A client without timeouts hangs forever on such a connection; one with timeouts gives up and
/// recovers on a fresh connection once the window is over. Dropping the proxy closes everything.
pub struct BlackHoleProxy {
    addr: SocketAddr,
    target: SocketAddr,
    window: watch::Sender<Window>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl BlackHoleProxy {
    /// Listens on 127.0.0.1 and a free port, forwarding every connection to `target`.
    pub async fn start(target: SocketAddr) -> BlackHoleProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the black-hole proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (window, watcher) = watch::channel(Window { epoch: 0, until: None });
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(listener, target, watcher, counters.clone()));
        BlackHoleProxy { addr, target, window, counters, task }
    }

    /// Where clients connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, to use as the endpoint URL instead of the target's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Starts a black hole now, for `duration`: every connection open now stops forwarding in
    /// both directions for good, and every connection accepted before the window ends is held
    /// open and never forwarded. Both stay silent (no FIN, no RST) until their client closes
    /// them. Connections accepted after the window are forwarded normally. Overlapping calls
    /// extend the window.
    pub fn black_hole(&self, duration: Duration) {
        let until = Instant::now() + duration;
        self.window.send_modify(|window| {
            window.epoch += 1;
            window.until = Some(window.until.map_or(until, |current| current.max(until)));
        });
    }

    /// Whether a black-hole window is in progress.
    pub fn is_black_holed(&self) -> bool {
        self.window.borrow().active()
    }

    /// A snapshot of the connection counters.
    pub fn connections(&self) -> ProxyConnections {
        let c = &self.counters;
        ProxyConnections {
            accepted: c.accepted.load(Ordering::SeqCst),
            forwarded: c.forwarded.load(Ordering::SeqCst),
            swallowed: c.swallowed.load(Ordering::SeqCst),
            frozen: c.frozen.load(Ordering::SeqCst),
            held: c.held.load(Ordering::SeqCst),
        }
    }
}

impl Drop for BlackHoleProxy {
    /// Aborting the accept loop drops its listener and its `JoinSet`, which aborts every
    /// connection task and so closes every socket.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The socket address of an `http://127.0.0.1:<port>` URL such as `moto_endpoint()`, for
/// [`BlackHoleProxy::start`].
pub fn socket_addr(url: &str) -> SocketAddr {
    let authority = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
    authority.parse().unwrap_or_else(|e| panic!("{url} is not http://<ip>:<port>: {e}"))
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    watcher: watch::Receiver<Window>,
    counters: Arc<Counters>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    counters.accepted.fetch_add(1, Ordering::SeqCst);
                    let mut window = watcher.clone();
                    // Marked seen before the check: a window that starts after it still cuts
                    // this connection through `changed()`.
                    if window.borrow_and_update().active() {
                        counters.swallowed.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(hold(client, None, counters.clone()));
                    } else {
                        counters.forwarded.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(forward(client, target, window, counters.clone()));
                    }
                }
                // Out of file descriptors or the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Forwards until either side closes, or until a black hole starts: then both sockets are held.
async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    mut window: watch::Receiver<Window>,
    counters: Arc<Counters>,
) {
    let _ = client.set_nodelay(true);
    let upstream = tokio::select! {
        biased;
        Ok(()) = window.changed() => None,
        upstream = TcpStream::connect(target) => match upstream {
            Ok(upstream) => Some(upstream),
            // The target is down: close the client's connection, as the target would have.
            Err(_) => return,
        },
    };
    let Some(mut upstream) = upstream else {
        counters.frozen.fetch_add(1, Ordering::SeqCst);
        return hold(client, None, counters).await;
    };
    let _ = upstream.set_nodelay(true);
    // Biased: once a window has started, no byte that arrives afterwards is forwarded.
    let cut = tokio::select! {
        biased;
        Ok(()) = window.changed() => true,
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => false,
    };
    if cut {
        counters.frozen.fetch_add(1, Ordering::SeqCst);
        hold(client, Some(upstream), counters).await;
    }
}

/// Decrements the `held` gauge however `hold` ends (client closed, or the proxy dropped).
struct Held(Arc<Counters>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Keeps the connection open and silent until the client closes it. Nothing is read: what the
/// client sends piles up in the socket buffers until its writes stall, as with lost packets.
async fn hold(client: TcpStream, upstream: Option<TcpStream>, counters: Arc<Counters>) {
    counters.held.fetch_add(1, Ordering::SeqCst);
    let _held = Held(counters);
    loop {
        match client.ready(Interest::READABLE).await {
            Ok(ready) if ready.is_read_closed() || ready.is_error() => break,
            // Data arrived: leave it unread and forget this readiness, so the task sleeps until
            // the next event (more data, or the client's FIN or RST). Closed states are final in
            // tokio and survive this clearing, so a close is never missed.
            Ok(_) => {
                let _ = client.try_io(Interest::READABLE, || Err::<(), _>(std::io::ErrorKind::WouldBlock.into()));
            }
            Err(_) => break,
        }
    }
    drop(upstream);
}

/// A scratch folder on its own tmpfs of a few MiB, so a test can make the disk fill up
/// (ENOSPC, `ErrorKind::StorageFull`) without touching the real one. Unmounted on drop.
///
/// Mounting needs root on Linux: elsewhere [`TinyScratch::mount`] says the test is skipped and
/// returns `None`; in CI (which runs as root on Linux) a failure to mount fails the test.
pub struct TinyScratch {
    dir: TempDir,
    mib: u64,
}

impl TinyScratch {
    /// Mounts a tmpfs of `mib` MiB on a fresh temp folder.
    pub fn mount(mib: u64) -> Option<TinyScratch> {
        let dir = TempDir::new().expect("temp dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .output();
        let why = match mounted {
            Ok(out) if out.status.success() => return Some(TinyScratch { dir, mib }),
            Ok(out) => format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
            Err(e) => e.to_string(),
        };
        assert!(!crate::support::in_ci(), "could not mount a {mib} MiB tmpfs, and CI=true forbids skipping: {why}");
        eprintln!("skipped: could not mount a {mib} MiB tmpfs (needs root on Linux): {why}");
        None
    }

    /// The mounted folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The size of the tmpfs, in MiB.
    pub fn mib(&self) -> u64 {
        self.mib
    }
}

impl Drop for TinyScratch {
    /// Unmounts (lazily when a file in it is still open), then `TempDir` removes the folder.
    fn drop(&mut self) {
        let umount = |args: &[&str]| {
            Command::new("umount")
                .args(args)
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !umount(&[]) && !umount(&["-l"]) {
            eprintln!("could not unmount the tmpfs on {}", self.dir.path().display());
        }
    }
}

/// `http://127.0.0.1:<port>` for a port where nothing listens, so connections are refused: an
/// endpoint that is down. (Another process could take the port meanwhile; unlikely in a test.)
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Write};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::{sleep, timeout};

    use super::*;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    /// An HTTP server on 127.0.0.1 that answers every request of every keep-alive connection
    /// with 200 "ok". It stops with the test's runtime.
    async fn ok_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            if socket.write_all(RESPONSE).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// Sends one request and reads one whole response (or fails if the connection closes).
    async fn ask(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        stream.write_all(REQUEST).await?;
        let mut response = vec![0u8; RESPONSE.len()];
        stream.read_exact(&mut response).await?;
        Ok(response)
    }

    async fn ask_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
        timeout(limit, ask(stream)).await.ok().map(|r| r.expect("the connection stays open"))
    }

    #[tokio::test]
    async fn black_hole_silences_old_and_new_connections_until_the_window_ends() {
        let proxy = BlackHoleProxy::start(ok_server().await).await;
        assert_eq!(socket_addr(&proxy.url()), proxy.addr());

        let mut old = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(ask(&mut old).await.expect("answer before the window"), RESPONSE);

        let window = Duration::from_secs(3);
        let started = Instant::now();
        proxy.black_hole(window);
        assert!(proxy.is_black_holed());
        let mut new = TcpStream::connect(proxy.addr()).await.expect("a black hole still accepts");
        let (old_answer, new_answer) =
            tokio::join!(ask_within(&mut old, Duration::from_secs(1)), ask_within(&mut new, Duration::from_secs(1)));
        assert_eq!(old_answer, None, "an existing keep-alive connection is silent");
        assert_eq!(new_answer, None, "a connection accepted in the window is silent");

        sleep(window.saturating_sub(started.elapsed()) + Duration::from_millis(100)).await;
        assert!(!proxy.is_black_holed());
        let mut fresh = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(ask_within(&mut fresh, Duration::from_secs(1)).await.as_deref(), Some(RESPONSE));
        // Silent for good, not just during the window (a short read: the request is still there).
        let mut byte = [0u8; 1];
        assert!(timeout(Duration::from_millis(200), old.read(&mut byte)).await.is_err(), "the old one stays silent");
        assert!(timeout(Duration::from_millis(200), new.read(&mut byte)).await.is_err(), "the new one stays silent");

        let counts = proxy.connections();
        assert_eq!(counts, ProxyConnections { accepted: 3, forwarded: 2, swallowed: 1, frozen: 1, held: 2 });
    }

    #[tokio::test]
    async fn held_connections_end_when_the_client_closes_and_everything_closes_on_drop() {
        let proxy = BlackHoleProxy::start(ok_server().await).await;
        let mut old = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(ask(&mut old).await.expect("answer"), RESPONSE);
        proxy.black_hole(Duration::from_millis(300));
        let mut new = TcpStream::connect(proxy.addr()).await.expect("connect");
        new.write_all(REQUEST).await.expect("write");
        old.write_all(REQUEST).await.expect("write");
        let deadline = Instant::now() + Duration::from_secs(2);
        while proxy.connections().held < 2 {
            assert!(Instant::now() < deadline, "{:?}", proxy.connections());
            sleep(Duration::from_millis(10)).await;
        }
        // Unread data in the proxy's buffers must not keep a held connection alive once the client is gone.
        drop(old);
        drop(new);
        while proxy.connections().held > 0 {
            assert!(Instant::now() < deadline, "held connections outlive their clients: {:?}", proxy.connections());
            sleep(Duration::from_millis(10)).await;
        }

        sleep(Duration::from_millis(300)).await;
        let mut fresh = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(ask(&mut fresh).await.expect("answer after the window"), RESPONSE);
        let addr = proxy.addr();
        drop(proxy);
        let mut byte = [0u8; 1];
        let read = timeout(Duration::from_secs(1), fresh.read(&mut byte)).await.expect("closed when the proxy drops");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
    }

    #[tokio::test]
    async fn a_client_with_a_timeout_recovers_on_a_fresh_connection() {
        let proxy = BlackHoleProxy::start(ok_server().await).await;
        let client = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().expect("client");
        let get = || async { client.get(proxy.url()).send().await?.text().await };
        assert_eq!(get().await.expect("before"), "ok");
        proxy.black_hole(Duration::from_millis(500));
        assert!(get().await.expect_err("during the window").is_timeout());
        sleep(Duration::from_millis(300)).await;
        assert_eq!(get().await.expect("after the window"), "ok");
        let counts = proxy.connections();
        assert_eq!((counts.frozen, counts.forwarded), (1, 2), "{counts:?}");
    }

    #[tokio::test]
    async fn closed_port_refuses_connections() {
        let url = closed_port_url();
        assert!(TcpStream::connect(socket_addr(&url)).await.is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused));
    }

    #[tokio::test]
    async fn tiny_scratch_fills_up_and_unmounts_on_drop() {
        let Some(scratch) = TinyScratch::mount(2) else { return };
        let path = scratch.path().to_path_buf();
        let mounted = || {
            let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
            mounts.lines().any(|line| line.split(' ').nth(1) == Some(path.to_str().expect("utf-8 path")))
        };
        assert!(mounted());
        let mut file = std::fs::File::create(scratch.path().join("big")).expect("create");
        let written = file.write_all(&vec![7u8; 3 << 20]).and_then(|()| file.sync_all());
        assert_eq!(written.expect_err("3 MiB do not fit in 2").kind(), ErrorKind::StorageFull);
        drop(file);
        drop(scratch);
        assert!(!mounted(), "unmounted on drop");
        assert!(!path.exists(), "folder removed on drop");
    }
}

//! A fault-injecting TCP proxy on every directed Raft link.
//!
//! Node `a` is told that peer `b`'s Raft address is the proxy port of link
//! `a→b`, which forwards to `b`'s real port. So everything `a` sends to `b`
//! (its RPCs, and `b`'s answers to them) crosses that link, and nothing else
//! does: cutting `a→b` alone is a one-way cut of `a`'s requests, cutting
//! both `a→b` and `b→a` separates the two nodes.
//!
//! A cut link closes the connections it carries and turns new ones into a
//! black hole: the connect succeeds, nothing is forwarded, and the socket is
//! closed when the link heals. That is what a dropped-packet partition looks
//! like to the node's own gRPC client: RPCs hang until its timeouts fire.
//! A link can also delay every chunk it forwards (latency, order kept).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::NodeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LinkState {
    up: bool,
    /// Bumped on every cut, so a cut-and-heal between two looks is seen.
    cuts: u64,
    latency: Duration,
    closed: bool,
}

struct Link {
    port: u16,
    state: watch::Sender<LinkState>,
    listener: JoinHandle<()>,
}

/// The proxies of every directed link of a cluster.
pub struct Network {
    links: BTreeMap<(NodeId, NodeId), Link>,
}

impl Network {
    /// Starts a proxy for every ordered pair of `ids`, forwarding link
    /// `a→b` to `127.0.0.1:raft_port(b)`. Proxies listen on OS-chosen ports.
    pub async fn start(
        ids: &[NodeId],
        raft_port: impl Fn(NodeId) -> u16,
    ) -> std::io::Result<Network> {
        let mut links = BTreeMap::new();
        for &a in ids {
            for &b in ids {
                if a == b {
                    continue;
                }
                let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
                let port = listener.local_addr()?.port();
                let (state, rx) = watch::channel(LinkState {
                    up: true,
                    cuts: 0,
                    latency: Duration::ZERO,
                    closed: false,
                });
                let target = format!("127.0.0.1:{}", raft_port(b));
                let listener = tokio::spawn(accept_loop(listener, target, rx));
                links.insert(
                    (a, b),
                    Link {
                        port,
                        state,
                        listener,
                    },
                );
            }
        }
        Ok(Network { links })
    }

    /// The proxy port node `from` must use to reach node `to`.
    pub fn port(&self, from: NodeId, to: NodeId) -> u16 {
        self.links[&(from, to)].port
    }

    /// Sets every link up or down: link `a→b` is up iff `connected(a, b)`.
    pub fn apply(&self, connected: impl Fn(NodeId, NodeId) -> bool) {
        for (&(a, b), link) in &self.links {
            let up = connected(a, b);
            link.state.send_if_modified(|s| {
                if s.up == up {
                    return false;
                }
                s.up = up;
                if !up {
                    s.cuts += 1;
                }
                true
            });
        }
    }

    /// Cuts the one-way link `from→to` (leaving the rest as it is).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        if let Some(link) = self.links.get(&(from, to)) {
            link.state.send_modify(|s| {
                s.up = false;
                s.cuts += 1;
            });
        }
    }

    /// Splits the nodes into groups that cannot reach one another.
    pub fn partition(&self, groups: &[Vec<NodeId>]) {
        let group = |n: NodeId| groups.iter().position(|g| g.contains(&n));
        self.apply(|a, b| group(a) == group(b));
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&self, node: NodeId) {
        self.apply(|a, b| a != node && b != node);
    }

    /// Every link up, with no added latency.
    pub fn heal(&self) {
        self.apply(|_, _| true);
        self.set_latency(|_, _| Duration::ZERO);
    }

    /// Sets each link's added one-way delay.
    pub fn set_latency(&self, delay: impl Fn(NodeId, NodeId) -> Duration) {
        for (&(a, b), link) in &self.links {
            let d = delay(a, b);
            link.state.send_if_modified(|s| {
                let changed = s.latency != d;
                s.latency = d;
                changed
            });
        }
    }

    /// A one-line picture of the links that are down.
    pub fn describe(&self) -> String {
        let down: Vec<String> = self
            .links
            .iter()
            .filter(|(_, l)| !l.state.borrow().up)
            .map(|((a, b), _)| format!("{a}->{b}"))
            .collect();
        if down.is_empty() {
            "all links up".to_string()
        } else {
            format!("down: {}", down.join(" "))
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for link in self.links.values() {
            link.listener.abort();
            link.state.send_modify(|s| s.closed = true);
        }
    }
}

async fn accept_loop(listener: TcpListener, target: String, state: watch::Receiver<LinkState>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let _ = inbound.set_nodelay(true);
        tokio::spawn(connection(inbound, target.clone(), state.clone()));
    }
}

/// Resolves when the link is cut (or the network dropped) after `cuts`.
async fn cut_since(state: &mut watch::Receiver<LinkState>, cuts: u64) {
    loop {
        {
            let s = state.borrow_and_update();
            if s.closed || !s.up || s.cuts != cuts {
                return;
            }
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves when the link is up again (or the network dropped).
async fn healed(state: &mut watch::Receiver<LinkState>) {
    loop {
        {
            let s = state.borrow_and_update();
            if s.closed || s.up {
                return;
            }
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

async fn connection(inbound: TcpStream, target: String, mut state: watch::Receiver<LinkState>) {
    let s = *state.borrow();
    if s.closed {
        return;
    }
    if !s.up {
        // Black hole: hold the socket, forward nothing, close on heal.
        let mut inbound = inbound;
        let mut sink = [0u8; 4096];
        tokio::select! {
            _ = healed(&mut state) => {}
            _ = async { while matches!(inbound.read(&mut sink).await, Ok(n) if n > 0) {} } => {}
        }
        return;
    }
    let outbound =
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&target)).await {
            Ok(Ok(s)) => s,
            _ => return,
        };
    let _ = outbound.set_nodelay(true);
    let (in_rd, in_wr) = inbound.into_split();
    let (out_rd, out_wr) = outbound.into_split();
    let mut watch_cut = state.clone();
    tokio::select! {
        _ = cut_since(&mut watch_cut, s.cuts) => {}
        _ = pipe(in_rd, out_wr, state.clone()) => {}
        _ = pipe(out_rd, in_wr, state.clone()) => {}
    }
    // Dropping the halves closes both sockets.
}

/// Copies one direction, delaying each chunk by the link's latency at the
/// time it was read.
async fn pipe(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    state: watch::Receiver<LinkState>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = Instant::now() + state.borrow().latency;
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> u16 {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    async fn round_trip(port: u16) -> bool {
        let attempt = async {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            s.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.ok()?;
            Some(&buf == b"ping")
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), attempt).await,
            Ok(Some(true))
        )
    }

    #[tokio::test]
    async fn links_forward_cut_and_heal() {
        let echo = echo_server().await;
        let net = Network::start(&[1, 2], |_| echo).await.unwrap();
        assert!(round_trip(net.port(1, 2)).await);
        // A connection open across a cut is closed by it.
        let mut open = TcpStream::connect(("127.0.0.1", net.port(1, 2)))
            .await
            .unwrap();
        open.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.unwrap();
        net.cut(1, 2);
        assert!(!round_trip(net.port(1, 2)).await);
        assert!(
            round_trip(net.port(2, 1)).await,
            "the other direction stays up"
        );
        let closed = tokio::time::timeout(Duration::from_secs(2), open.read(&mut one)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        net.heal();
        assert!(round_trip(net.port(1, 2)).await);
        net.partition(&[vec![1], vec![2]]);
        assert!(!round_trip(net.port(1, 2)).await);
        assert!(!round_trip(net.port(2, 1)).await);
        net.heal();
        net.set_latency(|_, _| Duration::from_millis(100));
        let t = Instant::now();
        assert!(round_trip(net.port(2, 1)).await);
        assert!(t.elapsed() >= Duration::from_millis(200));
    }
}

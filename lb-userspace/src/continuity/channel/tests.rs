//! Channel tests over in-memory pipes (no sockets): the listener with a test acceptor, the
//! sender's connection core, and hand-made clients for the hostile cases.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::frame::{Auth, FrameReceiver, FrameSender, header, read_challenge};
use super::*;
use crate::continuity::wire::{
    ExceptionGroup, FlowRef, HEADER_LEN, Kind, LABEL_RECEIVER_TO_SENDER, LABEL_SENDER_TO_RECEIVER,
    MAX_PAYLOAD, Message, NONCE_LEN, VipRef, encode_sync,
};

mod hostile;
mod key_file;
mod sending;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const OTHER_KEY: &[u8] = b"fedcba9876543210fedcba9876543210";

/// Node A (sends) and node B (listens).
fn a_addr() -> SocketAddr {
    "198.51.100.11:7946".parse().unwrap()
}
fn b_addr() -> SocketAddr {
    "198.51.100.12:7946".parse().unwrap()
}
/// Where A's connections come from: its listen IP, an ephemeral port.
fn a_source() -> SocketAddr {
    "198.51.100.11:40001".parse().unwrap()
}

fn key() -> PeerKey {
    PeerKey::from_material(KEY).unwrap()
}

fn groups(flows: u32) -> Vec<ExceptionGroup> {
    vec![ExceptionGroup {
        vip: VipRef {
            addr: "192.0.2.1".parse().unwrap(),
            port: 443,
            proto: 6,
        },
        backend: "10.0.0.7".parse().unwrap(),
        flows: (0..flows)
            .map(|i| FlowRef {
                client: "198.51.100.200".parse().unwrap(),
                client_port: 1024 + i as u16,
                dst_port: 443,
            })
            .collect(),
    }]
}

/// A set of `flows` flows split in parts of at most `max_payload` bytes.
fn set(sync_id: u64, flows: u32, max_payload: usize) -> Arc<SyncSet> {
    let encoded = encode_sync(sync_id, &groups(flows), max_payload);
    Arc::new(SyncSet {
        sync_id,
        parts: encoded.parts,
        flows: encoded.flows,
    })
}

/// Connections handed to the listener by the test.
struct TestAccept(mpsc::Receiver<(DuplexStream, SocketAddr)>);

impl Accept for TestAccept {
    type Stream = DuplexStream;

    async fn accept(&mut self) -> io::Result<(DuplexStream, SocketAddr)> {
        match self.0.recv().await {
            Some(conn) => Ok(conn),
            None => std::future::pending().await,
        }
    }
}

/// Node B's listener, fed by the test.
struct Rig {
    monitor: Arc<ChannelMonitor>,
    connect: mpsc::Sender<(DuplexStream, SocketAddr)>,
    inbound: mpsc::Receiver<Inbound>,
    _listener: JoinHandle<()>,
}

/// The queue between the connections and the agent, small as in production.
const QUEUE: usize = 8;

fn rig(adjust: impl FnOnce(&mut ListenerConfig)) -> Rig {
    let monitor = Arc::new(ChannelMonitor::new(&[a_addr()]));
    let mut config = ListenerConfig::new(b_addr(), key(), 1, Duration::from_secs(30));
    adjust(&mut config);
    let (connect, accepted) = mpsc::channel(4);
    let (tx, inbound) = mpsc::channel(QUEUE);
    let listener = Listener::with_acceptor(TestAccept(accepted), config, Arc::clone(&monitor), tx);
    Rig {
        monitor,
        connect,
        inbound,
        _listener: tokio::spawn(listener.run()),
    }
}

impl Rig {
    /// A new connection from `from`; returns the client's end.
    async fn connect_from(&self, from: SocketAddr) -> DuplexStream {
        let (client, server) = duplex(64 * 1024);
        self.connect.send((server, from)).await.unwrap();
        client
    }

    fn rejected(&self, reason: RejectReason) -> u64 {
        self.monitor.stats().rejected(reason)
    }

    /// The next part, answered with every flow applied.
    async fn apply_next(&mut self) -> (u64, u32, bool, usize) {
        let inbound = self.inbound.recv().await.expect("a part");
        let flows: usize = inbound.groups.iter().map(|g| g.flows.len()).sum();
        let _ = inbound.done.send(ApplyResult {
            applied: flows as u32,
            rejected: 0,
        });
        (inbound.sync_id, inbound.part, inbound.last, flows)
    }
}

/// A hand-driven sender: reads the challenge and can send any frame.
struct Client {
    stream: DuplexStream,
    out: FrameSender,
    acks: FrameReceiver,
    nonce: [u8; NONCE_LEN],
}

impl Client {
    async fn new(mut stream: DuplexStream, key_material: &[u8]) -> Self {
        let key = PeerKey::from_material(key_material).unwrap();
        let receiver_nonce = read_challenge(&mut stream).await.expect("a challenge");
        let nonce = [0x5a; NONCE_LEN];
        Self {
            stream,
            out: FrameSender::new(Auth {
                key: key.clone(),
                label: LABEL_SENDER_TO_RECEIVER,
                nonce: receiver_nonce,
            }),
            acks: FrameReceiver::new(Auth {
                key,
                label: LABEL_RECEIVER_TO_SENDER,
                nonce,
            }),
            nonce,
        }
    }

    /// A sealed frame's bytes, not sent.
    fn seal(&mut self, message: &Message) -> Vec<u8> {
        self.out.seal(message.kind(), &message.encode().unwrap())
    }

    async fn write(&mut self, bytes: &[u8]) {
        // The listener may already have closed the pipe: what matters is what it counted.
        let _ = self.stream.write_all(bytes).await;
    }

    async fn hello(&mut self) {
        let hello = self.seal(&Message::Hello {
            node: a_addr().to_string(),
            nonce: self.nonce,
        });
        self.write(&hello).await;
    }

    fn sync_part(sync_id: u64, part: u32, last: bool, flows: u32) -> Message {
        Message::Sync {
            sync_id,
            part,
            last,
            groups: groups(flows),
        }
    }

    async fn ack(&mut self) -> Message {
        let frame = self.acks.recv(&mut self.stream).await.expect("an ack");
        Message::decode(frame.kind, &frame.payload).unwrap()
    }

    /// Whether the listener closed the connection (reads to the end).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).await.is_ok()
    }
}

/// Polls `done` until true, in paused time (each step advances the clock only when every
/// task is idle).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Runs `fut` expecting it to finish.
async fn finishes<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("finished")
}

#[tokio::test(start_paused = true)]
async fn a_hand_made_sync_is_delivered_and_acked() {
    let mut rig = rig(|_| {});
    let mut client = Client::new(rig.connect_from(a_source()).await, KEY).await;
    client.hello().await;
    let part = client.seal(&Client::sync_part(7, 0, true, 3));
    client.write(&part).await;
    assert_eq!(rig.apply_next().await, (7, 0, true, 3));
    assert_eq!(
        client.ack().await,
        Message::Ack {
            sync_id: 7,
            part: 0,
            applied: 3,
            rejected: 0
        }
    );
    let stats = rig.monitor.stats();
    assert_eq!(stats.rejections().map(|(_, n)| n).sum::<u64>(), 0);
    let peer = &rig.monitor.peers()[0];
    assert_eq!(peer.addr, a_addr());
    assert_eq!(peer.frames_received, 2);
    assert_eq!(peer.frames_sent, 1);
    assert_eq!(peer.exceptions_received_last_set, 3);
    assert_eq!(peer.exceptions_received_total, 3);
    assert_eq!(peer.inbound_connections, 1);
    assert!(peer.last_received.is_some());
    drop(client);
    until("the connection to end", || {
        rig.monitor.peers()[0].inbound_connections == 0
    })
    .await;
}

#[test]
fn rejection_counters_are_enumerated_with_their_labels() {
    let stats = ChannelStats::default();
    stats.reject(RejectReason::BadTag);
    stats.reject(RejectReason::BadTag);
    stats.reject(RejectReason::UnknownPeer);
    let all: Vec<_> = stats.rejections().collect();
    assert_eq!(all.len(), RejectReason::ALL.len());
    assert!(all.contains(&("bad_tag", 2)));
    assert!(all.contains(&("unknown_peer", 1)));
    assert!(all.contains(&("replay", 0)));
    let labels: std::collections::HashSet<_> = all.iter().map(|(l, _)| *l).collect();
    assert_eq!(labels.len(), all.len(), "labels are distinct");
}

#[test]
fn warnings_are_limited_per_peer_and_reason() {
    let limiter = stats::WarnLimiter::new(Duration::from_secs(10));
    let t0 = std::time::Instant::now();
    let ip = a_addr().ip();
    assert_eq!(limiter.check(ip, "bad_tag", t0), Some(0));
    assert_eq!(
        limiter.check(ip, "bad_tag", t0 + Duration::from_secs(1)),
        None
    );
    assert_eq!(
        limiter.check(ip, "bad_tag", t0 + Duration::from_secs(9)),
        None
    );
    // Another reason or peer has its own budget.
    assert_eq!(limiter.check(ip, "replay", t0), Some(0));
    assert_eq!(limiter.check(b_addr().ip(), "bad_tag", t0), Some(0));
    // After the interval, one more, with the count of what was held back.
    assert_eq!(
        limiter.check(ip, "bad_tag", t0 + Duration::from_secs(10)),
        Some(2)
    );
    assert_eq!(
        limiter.check(ip, "bad_tag", t0 + Duration::from_secs(11)),
        None
    );
    // Many addresses: the table stays bounded and the flood is still reported.
    for i in 0..5000u32 {
        let ip = std::net::IpAddr::from((0x2001_0db8_u128 << 96 | u128::from(i)).to_be_bytes());
        limiter.check(ip, "unknown_peer", t0);
    }
    assert!(limiter.len() <= 1024 + 1);
}

#[test]
fn frame_header_layout() {
    assert_eq!(
        header(2, 0x0102_0304, 5),
        [1, 2, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 5]
    );
    assert_eq!(HEADER_LEN, 16);
}

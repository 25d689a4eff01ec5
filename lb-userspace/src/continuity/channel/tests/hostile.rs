//! The listener facing bad keys, replays, bad framing, silence and strangers: each case closes
//! the connection, delivers nothing and moves its counter.

use super::*;

/// Nothing reached the agent.
fn nothing_delivered(rig: &mut Rig) -> bool {
    rig.inbound.try_recv().is_err()
}

#[tokio::test(start_paused = true)]
async fn a_wrong_key_is_rejected_before_anything_is_delivered() {
    let mut rig = rig(|_| {});
    let mut client = Client::new(rig.connect_from(a_source()).await, OTHER_KEY).await;
    client.hello().await;
    let part = client.seal(&Client::sync_part(1, 0, true, 2));
    client.write(&part).await;
    assert!(finishes(client.closed()).await);
    assert_eq!(rig.rejected(RejectReason::BadTag), 1);
    assert!(nothing_delivered(&mut rig));
    assert_eq!(rig.monitor.peers()[0].frames_received, 0);
}

#[tokio::test(start_paused = true)]
async fn a_replayed_frame_is_rejected() {
    let mut rig = rig(|_| {});
    let mut client = Client::new(rig.connect_from(a_source()).await, KEY).await;
    client.hello().await;
    let part = client.seal(&Client::sync_part(1, 0, true, 2));
    client.write(&part).await;
    assert_eq!(rig.apply_next().await, (1, 0, true, 2));
    client.ack().await;
    // The very same bytes again: valid tag, stale sequence number.
    client.write(&part).await;
    assert!(finishes(client.closed()).await);
    assert_eq!(rig.rejected(RejectReason::Replay), 1);
    assert!(nothing_delivered(&mut rig));
}

#[tokio::test(start_paused = true)]
async fn a_reordered_frame_is_rejected() {
    let mut rig = rig(|_| {});
    let mut client = Client::new(rig.connect_from(a_source()).await, KEY).await;
    client.hello().await;
    let first = client.seal(&Client::sync_part(1, 0, false, 1));
    let second = client.seal(&Client::sync_part(1, 1, true, 1));
    client.write(&second).await;
    client.write(&first).await;
    assert!(finishes(client.closed()).await);
    assert_eq!(rig.rejected(RejectReason::Replay), 1);
    assert!(nothing_delivered(&mut rig));
}

#[tokio::test(start_paused = true)]
async fn frames_recorded_on_one_connection_fail_on_another() {
    let mut rig = rig(|_| {});
    let mut first = Client::new(rig.connect_from(a_source()).await, KEY).await;
    let hello = first.seal(&Message::Hello {
        node: a_addr().to_string(),
        nonce: first.nonce,
    });
    let part = first.seal(&Client::sync_part(1, 0, true, 2));
    first.write(&hello).await;
    first.write(&part).await;
    assert_eq!(rig.apply_next().await, (1, 0, true, 2));
    first.ack().await;

    // An attacker replays the recorded bytes on a connection of its own (from the peer's
    // address): the receiver's fresh nonce makes the tag wrong.
    let mut second = Client::new(rig.connect_from(a_source()).await, KEY).await;
    second.write(&hello).await;
    second.write(&part).await;
    assert!(finishes(second.closed()).await);
    assert_eq!(rig.rejected(RejectReason::BadTag), 1);
    assert!(nothing_delivered(&mut rig));
}

#[tokio::test(start_paused = true)]
async fn an_oversized_frame_is_refused_before_its_payload() {
    let mut rig = rig(|_| {});
    let mut client = Client::new(rig.connect_from(a_source()).await, KEY).await;
    client.hello().await;
    // Only the header: the listener must not wait for the 1 MiB + 1 it announces.
    let head = header(Kind::Sync as u8, MAX_PAYLOAD as u32 + 1, 2);
    client.write(&head).await;
    assert!(finishes(client.closed()).await);
    assert_eq!(rig.rejected(RejectReason::Oversized), 1);
    assert!(nothing_delivered(&mut rig));
}

#[tokio::test(start_paused = true)]
async fn a_truncated_frame_then_eof_is_counted() {
    let mut rig = rig(|_| {});
    let mut client = Client::new(rig.connect_from(a_source()).await, KEY).await;
    client.hello().await;
    let part = client.seal(&Client::sync_part(1, 0, true, 5));
    client.write(&part[..part.len() / 2]).await;
    client.stream.shutdown().await.unwrap();
    assert!(finishes(client.closed()).await);
    assert_eq!(rig.rejected(RejectReason::Truncated), 1);
    assert!(nothing_delivered(&mut rig));
}

#[tokio::test(start_paused = true)]
async fn a_sync_before_the_hello_is_a_protocol_error() {
    let mut rig = rig(|_| {});
    let mut client = Client::new(rig.connect_from(a_source()).await, KEY).await;
    let part = client.seal(&Client::sync_part(1, 0, true, 2));
    client.write(&part).await;
    assert!(finishes(client.closed()).await);
    assert_eq!(rig.rejected(RejectReason::Protocol), 1);
    assert!(nothing_delivered(&mut rig));
}

#[tokio::test(start_paused = true)]
async fn a_second_hello_is_a_protocol_error() {
    let rig = rig(|_| {});
    let mut client = Client::new(rig.connect_from(a_source()).await, KEY).await;
    client.hello().await;
    client.hello().await;
    assert!(finishes(client.closed()).await);
    assert_eq!(rig.rejected(RejectReason::Protocol), 1);
}

#[tokio::test(start_paused = true)]
async fn parts_out_of_order_are_a_protocol_error() {
    let mut rig = rig(|_| {});
    let mut client = Client::new(rig.connect_from(a_source()).await, KEY).await;
    client.hello().await;
    // Part 1 of a set whose part 0 never came.
    let part = client.seal(&Client::sync_part(1, 1, true, 2));
    client.write(&part).await;
    assert!(finishes(client.closed()).await);
    assert_eq!(rig.rejected(RejectReason::Protocol), 1);
    assert!(nothing_delivered(&mut rig));
}

#[tokio::test(start_paused = true)]
async fn a_malformed_payload_with_a_valid_tag_is_rejected() {
    let mut rig = rig(|_| {});
    let mut client = Client::new(rig.connect_from(a_source()).await, KEY).await;
    client.hello().await;
    // A Sync claiming a group but carrying none.
    let mut payload = Client::sync_part(1, 0, true, 1).encode().unwrap();
    payload.truncate(20);
    let frame = client.out.seal(Kind::Sync, &payload);
    client.write(&frame).await;
    assert!(finishes(client.closed()).await);
    assert_eq!(rig.rejected(RejectReason::Malformed), 1);
    assert!(nothing_delivered(&mut rig));
}

#[tokio::test(start_paused = true)]
async fn no_hello_within_the_deadline_closes_the_connection() {
    let mut rig = rig(|_| {});
    let mut client = Client::new(rig.connect_from(a_source()).await, KEY).await;
    let start = tokio::time::Instant::now();
    assert!(finishes(client.closed()).await);
    assert!(start.elapsed() >= HANDSHAKE_TIMEOUT);
    assert_eq!(rig.rejected(RejectReason::HandshakeTimeout), 1);
    assert!(nothing_delivered(&mut rig));
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let rig = rig(|c| c.idle_timeout = Duration::from_secs(30));
    let mut client = Client::new(rig.connect_from(a_source()).await, KEY).await;
    client.hello().await;
    let start = tokio::time::Instant::now();
    assert!(finishes(client.closed()).await);
    assert!(start.elapsed() >= Duration::from_secs(30));
    assert_eq!(rig.rejected(RejectReason::IdleTimeout), 1);
}

#[tokio::test(start_paused = true)]
async fn strangers_are_closed_at_once() {
    let rig = rig(|_| {});
    let mut stream = rig.connect_from("203.0.113.9:5555".parse().unwrap()).await;
    // Closed without even a challenge.
    let mut got = Vec::new();
    finishes(stream.read_to_end(&mut got)).await.unwrap();
    assert!(got.is_empty());
    assert_eq!(rig.rejected(RejectReason::UnknownPeer), 1);
}

#[tokio::test(start_paused = true)]
async fn connections_beyond_the_limit_are_closed() {
    let rig = rig(|c| c.max_connections = 1);
    let mut first = Client::new(rig.connect_from(a_source()).await, KEY).await;
    first.hello().await;
    let mut second = rig.connect_from(a_source()).await;
    let mut got = Vec::new();
    finishes(second.read_to_end(&mut got)).await.unwrap();
    assert!(got.is_empty());
    assert_eq!(rig.rejected(RejectReason::TooManyConnections), 1);
    // Once the first one is gone, its slot is free again.
    drop(first);
    until("the slot to be released", || {
        rig.monitor.peers()[0].inbound_connections == 0
    })
    .await;
    let mut third = Client::new(rig.connect_from(a_source()).await, KEY).await;
    third.hello().await;
    assert_eq!(rig.rejected(RejectReason::TooManyConnections), 1);
}

#[tokio::test]
async fn an_unspecified_listen_address_is_refused() {
    let monitor = Arc::new(ChannelMonitor::new(&[a_addr()]));
    let (tx, _rx) = mpsc::channel(1);
    let config = ListenerConfig::new(
        "0.0.0.0:7946".parse().unwrap(),
        key(),
        1,
        Duration::from_secs(30),
    );
    // Refused before any socket is opened.
    assert!(matches!(
        Listener::bind(config, monitor, tx).await,
        Err(ChannelError::UnspecifiedListen(_))
    ));
}

/// Seeded noise (xorshift): reproducible without a generator crate.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn random_bytes_after_the_hello_are_rejected_without_delivery() {
    let mut rig = rig(|_| {});
    let rounds = 40u64;
    for seed in 1..=rounds {
        let mut client = Client::new(rig.connect_from(a_source()).await, KEY).await;
        client.hello().await;
        let mut bytes = noise(seed, 600);
        if seed % 2 == 0 {
            // A plausible header in front, so the noise reaches the tag check.
            bytes[..HEADER_LEN].copy_from_slice(&header(Kind::Sync as u8, 100, 2));
        }
        client.write(&bytes).await;
        assert!(finishes(client.closed()).await);
    }
    let stats = rig.monitor.stats();
    assert_eq!(stats.rejections().map(|(_, n)| n).sum::<u64>(), rounds);
    assert_eq!(stats.rejected(RejectReason::BadTag), rounds / 2);
    assert!(nothing_delivered(&mut rig));
}

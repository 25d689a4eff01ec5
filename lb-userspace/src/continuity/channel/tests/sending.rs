//! The sender's connection core against the real listener (and against hand-made receivers
//! for the hostile cases).

use super::*;

/// Node A's sender to node B, with its own monitor.
fn sender() -> (Arc<Sender>, Arc<ChannelMonitor>) {
    let monitor = Arc::new(ChannelMonitor::new(&[b_addr()]));
    let config = SenderConfig::new(b_addr(), a_addr().to_string(), None, key());
    let sender = Sender::new(config, Arc::clone(&monitor)).expect("B is a peer of A");
    (Arc::new(sender), monitor)
}

/// Runs the sender's connection core over `stream` in a task.
fn drive(
    sender: &Arc<Sender>,
    stream: DuplexStream,
    mut sets: sender::SetReceiver,
) -> JoinHandle<Result<(), ChannelError>> {
    let sender = Arc::clone(sender);
    tokio::spawn(async move {
        let mut established = false;
        sender.drive(stream, &mut sets, &mut established).await
    })
}

#[tokio::test(start_paused = true)]
async fn sets_are_sent_applied_and_acked() {
    let mut rig = rig(|_| {});
    let (sender, a_monitor) = sender();
    let (publish, sets) = watch::channel(None);
    let task = drive(&sender, rig.connect_from(a_source()).await, sets);

    // Nothing is sent before the agent published its first set.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rig.inbound.try_recv().is_err());

    // 300 flows in parts of at most 1 KiB: several parts.
    let first = set(1, 300, 1024);
    let parts = first.parts.len();
    assert!(parts > 2);
    publish.send_replace(Some(first));
    for i in 0..parts {
        let (id, part, last, _) = rig.apply_next().await;
        assert_eq!((id, part as usize, last), (1, i, i + 1 == parts));
    }
    until("the set's ack", || {
        a_monitor.peers()[0]
            .last_acked
            .is_some_and(|a| a.sync_id == 1)
    })
    .await;
    let acked = a_monitor.peers()[0].last_acked.unwrap();
    assert_eq!((acked.applied, acked.rejected), (300, 0));

    // The empty set is the heartbeat: one part, and the peer learns we have nothing.
    publish.send_replace(Some(set(2, 0, 1024)));
    assert_eq!(rig.apply_next().await, (2, 0, true, 0));
    until("the heartbeat's ack", || {
        a_monitor.peers()[0]
            .last_acked
            .is_some_and(|a| a.sync_id == 2)
    })
    .await;

    let a = &a_monitor.peers()[0];
    assert!(a.outbound_connected);
    assert_eq!(a.exceptions_sent_total, 300);
    assert_eq!(a.exceptions_sent_last_set, 0);
    assert_eq!(a.frames_sent, 1 + parts as u64 + 1);
    assert_eq!(a.frames_received, parts as u64 + 1);
    let b = &rig.monitor.peers()[0];
    assert_eq!(b.exceptions_received_total, 300);
    assert_eq!(b.exceptions_received_last_set, 0);
    assert_eq!(b.bytes_received, a.bytes_sent);
    assert_eq!(b.bytes_sent, a.bytes_received);
    let stats = a_monitor.stats();
    assert_eq!(
        stats
            .exceptions_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        300
    );
    assert_eq!(stats.rejections().map(|(_, n)| n).sum::<u64>(), 0);
    assert_eq!(
        rig.monitor
            .stats()
            .rejections()
            .map(|(_, n)| n)
            .sum::<u64>(),
        0
    );

    // The agent stops: the sender ends cleanly.
    drop(publish);
    assert!(finishes(task).await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_flooding_sender_is_held_back_by_a_slow_agent() {
    let mut rig = rig(|_| {});
    let (sender, a_monitor) = sender();
    let big = set(1, 20_000, 1024);
    let parts = big.parts.len();
    assert!(parts > 100);
    let (_publish, sets) = watch::channel(Some(big));
    let _task = drive(&sender, rig.connect_from(a_source()).await, sets);

    // The agent takes nothing for a while (less than the apply timeout). A connection hands
    // over one part and waits for its outcome before reading the next, so the queue holds
    // one part per connection; the pipe fills and the sender's writes wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.inbound.len(), 1);
    let sent = a_monitor.peers()[0].frames_sent - 1;
    // The queued part, plus what the 64 KiB pipe buffers (parts of about 1 KiB with framing),
    // plus the one being written.
    let in_pipe = 64 * 1024 / 1000 + 1;
    assert!(
        sent as usize <= 1 + in_pipe + 1,
        "{sent} of {parts} parts sent to a stalled agent"
    );

    // A slow agent: every part arrives, in order, and the queue never holds more than its
    // capacity.
    for i in 0..parts {
        assert!(rig.inbound.len() <= QUEUE);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (_, part, last, _) = rig.apply_next().await;
        assert_eq!((part as usize, last), (i, i + 1 == parts));
    }
    until("the ack", || a_monitor.peers()[0].last_acked.is_some()).await;
    assert_eq!(a_monitor.peers()[0].exceptions_sent_total, 20_000);
    assert_eq!(rig.monitor.peers()[0].exceptions_received_last_set, 20_000);
}

#[tokio::test(start_paused = true)]
async fn a_superseded_set_is_abandoned_for_the_newer_one() {
    let mut rig = rig(|_| {});
    let (sender, a_monitor) = sender();
    let old = set(1, 20_000, 1024);
    let (publish, sets) = watch::channel(Some(Arc::clone(&old)));
    let _task = drive(&sender, rig.connect_from(a_source()).await, sets);
    // Part of the old set is in flight when the new one is published.
    assert_eq!(rig.apply_next().await.0, 1);
    publish.send_replace(Some(set(2, 10, 1024)));
    let mut old_parts = 1;
    loop {
        let (id, part, last, flows) = rig.apply_next().await;
        if id == 1 {
            assert!(!last, "the old set was not abandoned");
            old_parts += 1;
            continue;
        }
        assert_eq!((id, part, last, flows), (2, 0, true, 10));
        break;
    }
    assert!(old_parts < old.parts.len());
    until("the new set's ack", || {
        a_monitor.peers()[0]
            .last_acked
            .is_some_and(|a| a.sync_id == 2)
    })
    .await;
    assert_eq!(a_monitor.peers()[0].exceptions_sent_last_set, 10);
}

/// Runs the connection core of a sender with key `material` over a new connection to `rig`
/// until it ends (the agent stops when `sets`' sender is dropped); returns its result and
/// whether it counted as established (what resets the reconnect backoff).
async fn drive_counting(
    rig: &Rig,
    material: &'static [u8],
    mut sets: sender::SetReceiver,
) -> JoinHandle<(Result<(), ChannelError>, bool)> {
    let monitor = Arc::new(ChannelMonitor::new(&[b_addr()]));
    let key = PeerKey::from_material(material).unwrap();
    let config = SenderConfig::new(b_addr(), a_addr().to_string(), None, key);
    let sender = Sender::new(config, monitor).expect("B is a peer of A");
    let stream = rig.connect_from(a_source()).await;
    tokio::spawn(async move {
        let mut established = false;
        let r = sender.drive(stream, &mut sets, &mut established).await;
        (r, established)
    })
}

#[tokio::test(start_paused = true)]
async fn a_hello_the_peer_refuses_is_no_established_connection() {
    let rig = rig(|_| {});
    let (_publish, sets) = watch::channel(Some(set(1, 10, 1024)));
    let (result, established) = finishes(drive_counting(&rig, OTHER_KEY, sets).await)
        .await
        .unwrap();
    assert!(result.is_err(), "{result:?}");
    assert_eq!(rig.rejected(RejectReason::BadTag), 1);
    // Counted as established, it would reset the backoff: a node with the wrong key would
    // reconnect every 100 ms, each time a rejection and a warning on its peer.
    assert!(!established, "the peer refused the Hello");
}

#[tokio::test(start_paused = true)]
async fn an_acknowledged_part_makes_the_connection_established() {
    let mut rig = rig(|_| {});
    let (publish, sets) = watch::channel(Some(set(1, 10, 1024)));
    let task = drive_counting(&rig, KEY, sets).await;
    rig.apply_next().await;
    until("the part's ack", || rig.monitor.peers()[0].frames_sent == 1).await;
    // The ack is on its way back; let the sender read it, then stop the agent.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(publish);
    let (result, established) = finishes(task).await.unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(established);
}

/// A receiver by hand: writes `challenge`, reads the Hello; returns the sender's nonce.
async fn fake_receiver(stream: &mut DuplexStream, challenge: &[u8]) -> [u8; NONCE_LEN] {
    stream.write_all(challenge).await.unwrap();
    let mut hello = FrameReceiver::new(Auth {
        key: key(),
        label: LABEL_SENDER_TO_RECEIVER,
        nonce: challenge[8..].try_into().unwrap(),
    });
    let frame = hello.recv(stream).await.expect("a hello");
    let Message::Hello { node, nonce } = Message::decode(frame.kind, &frame.payload).unwrap()
    else {
        panic!("not a hello");
    };
    assert_eq!(node, a_addr().to_string());
    nonce
}

#[tokio::test(start_paused = true)]
async fn a_bad_challenge_is_refused() {
    let (sender, _) = sender();
    let (_publish, sets) = watch::channel(None);
    let (client, mut server) = duplex(4096);
    let task = drive(&sender, client, sets);
    server
        .write_all(b"HTTP/1.1 400 Bad Request\r\n")
        .await
        .unwrap();
    assert!(matches!(
        finishes(task).await.unwrap(),
        Err(ChannelError::BadMagic)
    ));
}

#[tokio::test(start_paused = true)]
async fn an_ack_with_a_bad_tag_ends_the_connection() {
    let (sender, _) = sender();
    let (_publish, sets) = watch::channel(Some(set(1, 1, 1024)));
    let (client, mut server) = duplex(4096);
    let task = drive(&sender, client, sets);
    let challenge = frame::challenge(&[3; NONCE_LEN]);
    let nonce = fake_receiver(&mut server, &challenge).await;
    let mut forged = FrameSender::new(Auth {
        key: PeerKey::from_material(OTHER_KEY).unwrap(),
        label: LABEL_RECEIVER_TO_SENDER,
        nonce,
    });
    let ack = Message::Ack {
        sync_id: 1,
        part: 0,
        applied: 1,
        rejected: 0,
    };
    forged
        .send(&mut server, Kind::Ack, &ack.encode().unwrap())
        .await
        .unwrap();
    assert!(matches!(
        finishes(task).await.unwrap(),
        Err(ChannelError::BadTag)
    ));
}

#[tokio::test(start_paused = true)]
async fn an_ack_for_a_part_never_sent_ends_the_connection() {
    let (sender, _) = sender();
    let (_publish, sets) = watch::channel(None);
    let (client, mut server) = duplex(4096);
    let task = drive(&sender, client, sets);
    let challenge = frame::challenge(&[3; NONCE_LEN]);
    let nonce = fake_receiver(&mut server, &challenge).await;
    let mut acks = FrameSender::new(Auth {
        key: key(),
        label: LABEL_RECEIVER_TO_SENDER,
        nonce,
    });
    let ack = Message::Ack {
        sync_id: 9,
        part: 0,
        applied: 1,
        rejected: 0,
    };
    acks.send(&mut server, Kind::Ack, &ack.encode().unwrap())
        .await
        .unwrap();
    assert!(matches!(
        finishes(task).await.unwrap(),
        Err(ChannelError::Protocol(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_receiver_that_never_acks_is_given_up_on() {
    let (sender, _) = sender();
    let (_publish, sets) = watch::channel(Some(set(1, 1, 1024)));
    let (client, mut server) = duplex(4096);
    let task = drive(&sender, client, sets);
    let challenge = frame::challenge(&[3; NONCE_LEN]);
    fake_receiver(&mut server, &challenge).await;
    let start = tokio::time::Instant::now();
    assert!(matches!(
        finishes(task).await.unwrap(),
        Err(ChannelError::IdleTimeout(_))
    ));
    assert!(start.elapsed() >= sender::ACK_TIMEOUT);
}

#[tokio::test]
async fn a_sender_needs_a_configured_peer() {
    let monitor = Arc::new(ChannelMonitor::new(&[b_addr()]));
    let config = SenderConfig::new(a_addr(), b_addr().to_string(), None, key());
    assert!(Sender::new(config, monitor).is_none());
}

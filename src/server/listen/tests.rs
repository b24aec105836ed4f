use std::future::poll_fn;
use std::num::NonZeroUsize;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn limits(max_connections: usize, handshake: Duration, idle: Duration) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: NonZeroUsize::new(max_connections).expect("non-zero"),
        read_header_timeout: handshake,
        idle_timeout: idle,
    }
}

/// Waits (in paused time) until `expiry` says the connection should close,
/// and says after how long.
async fn expires(expiry: &mut Expiry) -> (Expired, Duration) {
    let started = Instant::now();
    let reason = poll_fn(|cx| expiry.poll_expired(cx)).await;
    (reason, started.elapsed())
}

#[test]
fn throttle_logs_once_per_period_and_counts_the_rest() {
    let start = Instant::now();
    let mut throttle = Throttle::default();
    assert_eq!(throttle.allow(start), Some(0));
    assert_eq!(throttle.allow(start + Duration::from_secs(1)), None);
    assert_eq!(throttle.allow(start + Duration::from_secs(2)), None);
    assert_eq!(throttle.allow(start + LOG_EVERY), Some(2));
    assert_eq!(throttle.allow(start + LOG_EVERY), None);
}

#[test]
fn accept_errors_are_told_apart_by_errno() {
    use rustix::io::Errno;
    let table = [
        (Errno::MFILE, AcceptError::FdLimit),
        (Errno::NFILE, AcceptError::FdLimit),
        (Errno::NOBUFS, AcceptError::NoMemory),
        (Errno::NOMEM, AcceptError::NoMemory),
        (Errno::CONNABORTED, AcceptError::Aborted),
        (Errno::CONNRESET, AcceptError::Aborted),
        (Errno::INVAL, AcceptError::Other),
    ];
    for (errno, expected) in table {
        let error = io::Error::from_raw_os_error(errno.raw_os_error());
        assert_eq!(AcceptError::of(&error), expected, "{errno:?}");
    }
    let synthetic = io::Error::other("no errno");
    assert_eq!(AcceptError::of(&synthetic), AcceptError::Other);
}

#[tokio::test]
async fn an_accept_error_pauses_but_never_ends_the_listener() {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = socket.local_addr().expect("address");
    let mut listener = Listener::new(
        "test_errors",
        socket,
        limits(4, Duration::from_secs(10), Duration::from_secs(60)),
    );
    // Out of file descriptors: counted, logged, and waited out.
    let emfile = io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
    assert_eq!(listener.accept_failed(&emfile), ACCEPT_PAUSE);
    assert_eq!(listener.accept_failed(&emfile), ACCEPT_PAUSE);
    // A peer that left first: nothing to wait for.
    let aborted = io::Error::from_raw_os_error(rustix::io::Errno::CONNABORTED.raw_os_error());
    assert_eq!(listener.accept_failed(&aborted), Duration::ZERO);
    // The second error in the period was not logged but is owed a mention.
    assert_eq!(listener.errors.suppressed, 1);

    // And the listener still accepts.
    let _client = TcpStream::connect(address).await.expect("connect");
    let conn = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("accepted after the errors");
    assert_eq!(conn.info.local, Some(address));
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = socket.local_addr().expect("address");
    let mut listener = Listener::new(
        "test_cap",
        socket,
        limits(1, Duration::from_secs(10), Duration::from_secs(60)),
    );
    let _first = TcpStream::connect(address).await.expect("connect");
    let held = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("accepted");

    // Every connection past the cap is accepted and closed at once (not
    // left in the backlog) while the first holds the permit.
    let accepting = tokio::spawn(async move {
        let conn = listener.accept().await;
        (listener, conn)
    });
    for _ in 0..3 {
        let mut refused = TcpStream::connect(address).await.expect("connect");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut byte))
            .await
            .expect("the server closed the connection over the cap");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert!(!accepting.is_finished(), "the cap held");

    // Once the first is dropped, the next connection gets its permit.
    drop(held);
    let _next = TcpStream::connect(address).await.expect("connect");
    let (_listener, next) = tokio::time::timeout(Duration::from_secs(5), accepting)
        .await
        .expect("accepted once a permit was free")
        .expect("accept task");
    assert_eq!(next.info.local, Some(address));
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_speaks_closes_after_the_handshake_timeout() {
    let activity = Arc::new(Activity::new());
    let mut expiry = Expiry::new(
        Arc::clone(&activity),
        &limits(1, Duration::from_secs(2), Duration::from_secs(60)),
    );
    assert_eq!(
        expires(&mut expiry).await,
        (Expired::Handshake, Duration::from_secs(2))
    );

    // A few bytes are not a start; the HTTP/2 preface's 24 are.
    let mut expiry = Expiry::new(
        Arc::clone(&activity),
        &limits(1, Duration::from_secs(2), Duration::from_secs(60)),
    );
    expiry.read(PREFACE_BYTES - 1);
    assert_eq!(expires(&mut expiry).await.0, Expired::Handshake);
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_started_speaking_closes_only_when_idle() {
    let limits = limits(1, Duration::from_secs(2), Duration::from_secs(30));

    // Preface read: the idle timeout, counted from the accept, applies.
    let mut expiry = Expiry::new(Arc::new(Activity::new()), &limits);
    expiry.read(PREFACE_BYTES);
    assert_eq!(
        expires(&mut expiry).await,
        (Expired::Idle, Duration::from_secs(30))
    );

    // A request started: no handshake timeout, and nothing expires while it
    // is in flight; the idle clock starts again when it ends.
    let activity = Arc::new(Activity::new());
    let mut expiry = Expiry::new(Arc::clone(&activity), &limits);
    let busy = activity.start();
    let released = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(100)).await;
        drop(busy);
    });
    assert_eq!(
        expires(&mut expiry).await,
        (Expired::Idle, Duration::from_secs(130))
    );
    released.await.expect("released");
}

#[tokio::test(start_paused = true)]
async fn overlapping_requests_keep_the_connection_busy_until_the_last_ends() {
    let activity = Arc::new(Activity::new());
    let mut expiry = Expiry::new(
        Arc::clone(&activity),
        &limits(1, Duration::from_secs(2), Duration::from_secs(10)),
    );
    let first = activity.start();
    let second = activity.start();
    let released = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(first);
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(second);
    });
    assert_eq!(
        expires(&mut expiry).await,
        (Expired::Idle, Duration::from_secs(35))
    );
    released.await.expect("released");
}

#[tokio::test]
async fn a_silent_conn_reads_end_of_file_and_frees_its_permit() {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = socket.local_addr().expect("address");
    let mut listener = Listener::new(
        "test_silent",
        socket,
        limits(1, Duration::from_millis(200), Duration::from_secs(60)),
    );
    let _client = TcpStream::connect(address).await.expect("connect");
    let mut conn = listener.accept().await;
    let slots = Arc::clone(&listener.slots);
    assert_eq!(slots.available_permits(), 0);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("closed within the bound");
    assert_eq!(read.expect("end-of-file, not an error"), 0);
    assert_eq!(conn.expired, Some(Expired::Handshake));
    drop(conn);
    assert_eq!(slots.available_permits(), 1);
}

#[tokio::test]
async fn a_conn_passes_bytes_both_ways() {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = socket.local_addr().expect("address");
    let mut listener = Listener::new(
        "test_echo",
        socket,
        limits(1, Duration::from_secs(10), Duration::from_secs(60)),
    );
    let mut client = TcpStream::connect(address).await.expect("connect");
    let mut conn = listener.accept().await;
    client.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"ping");
    conn.write_all(b"pong").await.expect("write");
    client.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"pong");
    assert_eq!(conn.expiry.bytes_read, 4);
}

//! Fault injection on the Redis backplane: a `redis-server` of the test's own killed and
//! restarted during 10,000 envelopes (without persistence: what it lost is reported,
//! nothing duplicated; with `appendfsync always`: nothing lost), connections cut through
//! a proxy (nothing lost), retention trimming, and a node restarted with a new id.

mod support;

use std::sync::Arc;
use std::time::Duration;

use backplane_core::testkit::CuttingProxy;
use backplane_core::testkit::events::labelled;
use backplane_core::testkit::faults::{self, HUB, Published, Tally, kill_and_restart};
use backplane_core::{Backplane, GapRepair};
use backplane_redis::{RedisBackplane, RedisOptions};
use support::server;

async fn node(options: &RedisOptions) -> Arc<dyn Backplane> {
    Arc::new(
        RedisBackplane::connect(options.clone())
            .await
            .expect("starting a node"),
    )
}

async fn restart_during_10000(what: &str, persistent: bool) -> (Tally, Published) {
    let mut server = if persistent {
        server::start_persistent().await
    } else {
        server::start().await
    };
    let options = support::options(&server.url(), "restart");
    let (publisher, receiver) = (node(&options).await, node(&options).await);
    kill_and_restart(what, &mut server, publisher, receiver).await
}

/// A Redis without persistence restarts mid-stream: entries not read yet are gone with
/// it. The receiver neither hangs nor duplicates; it reports exactly what it could not
/// recover, and receives everything published after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_reports_what_was_lost() {
    let (tally, published) = restart_during_10000("without persistence", false).await;
    assert!(
        matches!(
            tally.reconnects.first(),
            Some(GapRepair::Unrepairable { .. })
        ),
        "the stream was lost with the server: the reconnect must not claim a full repair: {tally:?}"
    );
    faults::assert_every_number_accounted_for(&published, &tally);
}

/// With `appendfsync always`, a killed Redis keeps every acknowledged entry: the
/// receiver resumes from its last id and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_appendfsync_always_loses_nothing() {
    let (tally, published) = restart_during_10000("with appendfsync always", true).await;
    faults::assert_nothing_lost(&published, &tally);
}

/// Every connection of both nodes is cut five times during 10,000 envelopes: 0 lost,
/// 0 duplicated, in order, every reconnect repaired, every publish succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_through_a_proxy_lose_nothing() {
    let server = server::start().await;
    let target = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let proxy = CuttingProxy::start(target).await;
    let options = support::options(&format!("redis://{}", proxy.address), "proxy");
    let (publisher, receiver) = (node(&options).await, node(&options).await);
    faults::connections_cut_through_a_proxy_lose_nothing(&proxy, publisher, receiver).await;
}

/// `max_len` keeps a stream near its bound; `max_age` trims old entries and expires
/// the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_by_length_and_age() {
    let server = server::start().await;
    let mut admin = support::admin(&server.url()).await;
    let options = support::options(&server.url(), "retention").max_len(Some(100));
    let key = options.stream_key(HUB);
    let publisher = node(&options).await;
    faults::publish_numbered(&publisher, 1_000).await;
    let length: u64 = redis::cmd("XLEN")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        (100..300).contains(&length),
        "MAXLEN ~ 100 left {length} entries"
    );
    publisher.shutdown().await.unwrap();

    let options = support::options(&server.url(), "retention")
        .max_len(None)
        .max_age(Some(Duration::from_millis(1_000)));
    let key = options.stream_key(HUB);
    let publisher = node(&options).await;
    faults::publish_numbered(&publisher, 500).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    publisher.publish(HUB, labelled("late")).await.unwrap();
    let length: u64 = redis::cmd("XLEN")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(length < 200, "MINID ~ by age left {length} of 501 entries");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        (1..=1_000).contains(&ttl),
        "the stream must expire with max_age, PTTL {ttl}"
    );
    publisher.shutdown().await.unwrap();
}

/// A publisher restarts as a new node (new id, numbers from 1 again): the receiver
/// takes it as a new origin and delivers everything from both, reporting no loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restarted_with_a_new_id() {
    let server = server::start().await;
    let options = support::options(&server.url(), "new-id");
    faults::node_restarted_with_a_new_id(async || node(&options).await).await;
}

/// A node that cannot connect fails at start with an error that says what was being
/// done, and never repeats the password; `rediss://` without the `tls` feature says
/// which feature to enable.
#[tokio::test]
async fn connect_errors_are_clear_and_keep_the_password_out() {
    let options = RedisOptions::new(&faults::unreachable_url("redis"))
        .unwrap()
        .command_timeout(Duration::from_secs(2));
    let error = RedisBackplane::connect(options)
        .await
        .unwrap_err()
        .to_string();
    faults::assert_connect_error_is_clear(&error, "connecting to Redis");
    if !cfg!(feature = "tls") {
        let error = RedisOptions::new(&format!("rediss://app:{}@127.0.0.1:6380", faults::PASSWORD))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("feature `tls`") && !error.contains(faults::PASSWORD),
            "{error}"
        );
    }
}

//! TLS to PostgreSQL, against a disposable cluster with a certificate for `db.test`
//! signed by a CA the test makes, whose `pg_hba.conf` accepts TCP only over TLS with a
//! password (`scram-sha-256`, so channel binding is exercised too).
//!
//! Needs `initdb`/`pg_ctl` and `openssl` (see `tests::cluster`).

use std::time::Duration;

use backplane_core::{Backplane, BackplaneEvent};
use backplane_postgres::{PostgresBackplane, PostgresOptions, SslMode, diagnose};
use tests::cluster::{Cluster, TLS_HOST, TLS_PASSWORD};
use tests::events::{label_of, labelled, next_event, subscribed};

const HUB: &str = "tls";

/// The cluster's URL with `host` as the name checked against the certificate (the
/// socket still goes to 127.0.0.1) and `params` after it.
fn url(cluster: &Cluster, host: &str, params: &str) -> String {
    format!(
        "postgres://postgres:{TLS_PASSWORD}@{host}:{}/postgres?hostaddr=127.0.0.1&{params}",
        cluster.port()
    )
}

fn options(url: &str) -> PostgresOptions {
    PostgresOptions::new(url)
        .expect("the URL parses")
        .command_timeout(Duration::from_secs(5))
}

/// Two nodes over `url` exchange an envelope: every connection role (publisher,
/// flusher, listener, reader) works over it.
async fn round_trip(url: &str) {
    let sender = PostgresBackplane::connect(options(url))
        .await
        .unwrap_or_else(|error| panic!("connecting over {}: {error}", redact(url)));
    let receiver = PostgresBackplane::connect(options(url)).await.unwrap();
    let mut subscription = subscribed(&receiver, HUB).await;
    sender.publish(HUB, labelled("over tls")).await.unwrap();
    match next_event(&mut subscription, "the envelope").await {
        BackplaneEvent::Envelope(envelope) => assert_eq!(label_of(&envelope), "over tls"),
        other => panic!("expected the envelope, got {other:?}"),
    }
    sender.shutdown().await.unwrap();
    receiver.shutdown().await.unwrap();
}

/// The error of starting a node over `url`, checked for leaks.
async fn connect_error(url: &str) -> String {
    let error = match PostgresBackplane::connect(options(url)).await {
        Ok(node) => {
            node.shutdown().await.unwrap();
            panic!("connecting over {} should have failed", redact(url));
        }
        Err(error) => error.to_string(),
    };
    assert!(
        !error.contains(TLS_PASSWORD),
        "the password leaked: {error}"
    );
    eprintln!("{}\n  -> {error}", redact(url));
    error
}

fn redact(url: &str) -> String {
    url.replace(TLS_PASSWORD, "***")
}

/// The modes against a `hostssl`-only server with a private CA: require, prefer,
/// verify-ca and verify-full (right CA and host) work; a wrong CA, a wrong host name
/// under verify-full, and disable fail, each saying what to change; no error shows the
/// password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_against_a_server_with_a_private_ca() {
    tests::init_logging();
    let mut cluster = tokio::task::spawn_blocking(|| Cluster::with_tls("tls"))
        .await
        .unwrap();
    cluster.start();
    let certs = cluster.certificates().unwrap().clone();
    let (ca, wrong_ca) = (certs.ca.display(), certs.wrong_ca.display());

    // require: encrypted, nothing checked (the wrong CA is not even looked at... as
    // long as no root file is given: see below).
    round_trip(&url(&cluster, "wrong.test", "sslmode=require")).await;
    // prefer: TLS because the server offers it (the server would refuse plain TCP).
    round_trip(&url(&cluster, "wrong.test", "sslmode=prefer")).await;
    // verify-full with the right CA and host, in the key=value form too.
    round_trip(&url(
        &cluster,
        TLS_HOST,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    let key_values = format!(
        "host={TLS_HOST} hostaddr=127.0.0.1 port={} user=postgres password='{TLS_PASSWORD}' dbname=postgres sslmode=verify-full sslrootcert='{ca}'",
        cluster.port()
    );
    assert_eq!(options(&key_values).ssl_mode, SslMode::VerifyFull);
    round_trip(&key_values).await;
    // verify-ca: the chain is checked, the name is not.
    round_trip(&url(
        &cluster,
        "wrong.test",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .await;

    let error = connect_error(&url(
        &cluster,
        TLS_HOST,
        &format!("sslmode=verify-full&sslrootcert={wrong_ca}"),
    ))
    .await;
    assert!(
        error.contains("not signed by a CA in sslrootcert") && error.contains("wrong-ca.crt"),
        "a wrong CA must be named as such: {error}"
    );
    // As libpq: a root file makes require check the chain.
    let error = connect_error(&url(
        &cluster,
        TLS_HOST,
        &format!("sslmode=require&sslrootcert={wrong_ca}"),
    ))
    .await;
    assert!(error.contains("not signed by a CA"), "{error}");

    let error = connect_error(&url(
        &cluster,
        "wrong.test",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(
        error.contains("does not name the host") && error.contains("wrong.test"),
        "a wrong host must be named as such: {error}"
    );

    let error = connect_error(&url(&cluster, TLS_HOST, "sslmode=disable")).await;
    assert!(
        error.contains("no encryption") && error.contains("only over TLS"),
        "a server that needs TLS must be named as such: {error}"
    );

    let error = connect_error(&url(
        &cluster,
        TLS_HOST,
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    ))
    .await;
    assert!(
        error.contains("cannot read sslrootcert /nonexistent/ca.pem"),
        "{error}"
    );

    // diagnose (the doctor) goes through the same connector.
    let checks = diagnose(
        &options(&url(
            &cluster,
            TLS_HOST,
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        )),
        HUB,
    )
    .await;
    assert!(checks.iter().all(|check| check.ok), "{checks:#?}");
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

/// `hub-server doctor --database-url` with a verify-full URL passes; with a wrong CA it
/// fails, says why, and prints no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_server_doctor_over_tls() {
    tests::init_logging();
    let binaries =
        tokio::task::spawn_blocking(|| tests::workspace_binaries(&["hub-server"], &["hub-server"]))
            .await
            .unwrap();
    let hub_server = binaries["hub-server"].clone();
    let mut cluster = tokio::task::spawn_blocking(|| Cluster::with_tls("doctor"))
        .await
        .unwrap();
    cluster.start();
    let certs = cluster.certificates().unwrap().clone();
    let good = url(
        &cluster,
        TLS_HOST,
        &format!("sslmode=verify-full&sslrootcert={}", certs.ca.display()),
    );
    // A node creates the schema and the chat hub's table, which the doctor checks.
    let node = PostgresBackplane::connect(options(&good)).await.unwrap();
    let subscription = node.subscribe(hub_server::chat::HUB_NAME).await.unwrap();

    let doctor = |url: String| {
        let hub_server = hub_server.clone();
        async move {
            tokio::process::Command::new(hub_server)
                .args(["doctor", "--database-url", &url])
                .output()
                .await
                .expect("running hub-server doctor")
        }
    };
    let output = doctor(good).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok")).count(),
        4,
        "{stdout}"
    );
    assert!(stdout.contains(", TLS, sslmode=verify-full)"), "{stdout}");

    let bad = url(
        &cluster,
        TLS_HOST,
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            certs.wrong_ca.display()
        ),
    );
    let output = doctor(bad).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("not signed by a CA"), "{stdout}{stderr}");
    assert!(
        !stdout.contains(TLS_PASSWORD) && !stderr.contains(TLS_PASSWORD),
        "the password leaked: {stdout}{stderr}"
    );
    drop(subscription);
    node.shutdown().await.unwrap();
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

//! Finding the PostgreSQL server the tests run against.

use test_services::answers;
pub use test_services::{DATABASE_URL_VAR, LOCAL_DATABASE_URL as LOCAL_URL};
use tokio::sync::OnceCell;

/// The environment variable that, set to `1`, skips the local server and goes straight to
/// the container: the only way to exercise the container path on a machine whose local
/// server answers (tests/containers/run.sh sets it).
pub const CONTAINER_VAR: &str = "BACKPLANE_TEST_CONTAINER";

/// The tag of the official `postgres` image the container fallback starts: the major
/// version CI runs (15), on Alpine for a small download. testcontainers-modules' own
/// default, `11-alpine`, is a major version past its end of life.
/// tests/containers/postgres-image.sh reads this line to tag the image it builds.
pub const POSTGRES_TAG: &str = "15-alpine";

/// The resolved URL, shared by every test of the binary.
static URL: OnceCell<String> = OnceCell::const_new();

/// The URL of the test database, resolved once (see the [crate docs](crate)).
///
/// # Panics
///
/// Panics, naming all three ways to provide a database, when none is available; when
/// `BACKPLANE_TEST_DATABASE_URL` is set but cannot be connected to; or when
/// `BACKPLANE_TEST_CONTAINER=1` asks for a container that cannot be started.
pub async fn database_url() -> &'static str {
    URL.get_or_init(resolve).await
}

async fn resolve() -> String {
    let want_container = std::env::var_os(CONTAINER_VAR).is_some_and(|value| value == "1");
    if let Ok(url) = std::env::var(DATABASE_URL_VAR) {
        assert!(
            !want_container,
            "both {DATABASE_URL_VAR} and {CONTAINER_VAR}=1 are set: unset one of them"
        );
        if let Err(error) = answers(&url).await {
            panic!("{DATABASE_URL_VAR} is set but the database does not answer: {error}");
        }
        return url;
    }
    if want_container {
        return match container::start().await {
            Ok(url) => url,
            Err(why) => panic!("{CONTAINER_VAR}=1 but no container: {why}"),
        };
    }
    let local = match answers(LOCAL_URL).await {
        Ok(()) => return LOCAL_URL.to_owned(),
        Err(error) => error,
    };
    let container = container::start().await;
    match container {
        Ok(url) => url,
        Err(why) => panic!(
            "no PostgreSQL for the integration tests. Provide one of:\n\
             1. {DATABASE_URL_VAR}=postgres://user:password@host:port/db\n\
             2. a local server at {LOCAL_URL} (tried: {local})\n\
             3. a Docker engine, for a testcontainers PostgreSQL container (tried: {why})"
        ),
    }
}

#[cfg(feature = "containers")]
mod container {
    use std::sync::OnceLock;
    use std::time::{SystemTime, UNIX_EPOCH};

    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};
    use tokio::sync::OnceCell;

    use super::POSTGRES_TAG;
    use crate::reaper;

    /// Kept for the life of the test binary: statics are never dropped, so testcontainers
    /// never removes it; the watcher [`owner_label`] registers does, once the binary has
    /// exited. A failure is kept too: every test of the binary asks, and each retry would wait
    /// for the startup timeout (a minute) again.
    static CONTAINER: OnceCell<Result<ContainerAsync<Postgres>, String>> = OnceCell::const_new();

    /// The label key marking the containers of one test process.
    const OWNER_KEY: &str = "signalr-rs.tests.owner";

    /// The value of [`OWNER_KEY`] for this process (its pid and start time: pids are
    /// reused), with the watcher that removes its containers at exit registered; once per
    /// process, before the first container is asked for.
    fn owner_label() -> Result<&'static str, String> {
        static OWNER: OnceLock<Result<String, String>> = OnceLock::new();
        OWNER
            .get_or_init(|| {
                let since_epoch = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let owner = format!("{}-{}", std::process::id(), since_epoch.as_nanos());
                reaper::remove_labelled_at_exit(&format!("{OWNER_KEY}={owner}"))
                    .map(|()| owner)
                    .map_err(|error| {
                        format!("arranging the container's removal at exit failed: {error}")
                    })
            })
            .as_deref()
            .map_err(Clone::clone)
    }

    /// Start a container if Docker is reachable; its URL.
    pub(super) async fn start() -> Result<String, String> {
        let socket = std::path::Path::new("/var/run/docker.sock");
        if std::env::var_os("DOCKER_HOST").is_none() && !socket.exists() {
            return Err("Docker is not reachable (no DOCKER_HOST, no /var/run/docker.sock)".into());
        }
        let owner = owner_label()?;
        let container = CONTAINER
            .get_or_init(|| async {
                Postgres::default()
                    .with_tag(POSTGRES_TAG)
                    .with_label(OWNER_KEY, owner)
                    .start()
                    .await
                    .map_err(|error| {
                        format!(
                            "starting the container postgres:{POSTGRES_TAG} failed: {error} \
                             (no registry access? tests/containers/postgres-image.sh builds \
                             the image from a local PostgreSQL)"
                        )
                    })
            })
            .await
            .as_ref()
            .map_err(Clone::clone)?;
        let host = container
            .get_host()
            .await
            .map_err(|error| format!("container host: {error}"))?;
        let port = container
            .get_host_port_ipv4(5432)
            .await
            .map_err(|error| format!("container port: {error}"))?;
        Ok(format!(
            "postgres://postgres:postgres@{host}:{port}/postgres"
        ))
    }
}

#[cfg(not(feature = "containers"))]
mod container {
    pub(super) async fn start() -> Result<String, String> {
        Err("built without the `containers` feature".into())
    }
}

//! Finding the PostgreSQL server the tests run against.

use std::time::Duration;

use tokio::sync::OnceCell;

/// The environment variable that names the test database.
pub const DATABASE_URL_VAR: &str = "BACKPLANE_TEST_DATABASE_URL";

/// The local server tried when the variable is not set.
pub const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The resolved URL, shared by every test of the binary.
static URL: OnceCell<String> = OnceCell::const_new();

/// The URL of the test database, resolved once (see the [crate docs](crate)).
///
/// # Panics
///
/// Panics, naming all three ways to provide a database, when none is available; or when
/// `BACKPLANE_TEST_DATABASE_URL` is set but cannot be connected to.
pub async fn database_url() -> &'static str {
    URL.get_or_init(resolve).await
}

async fn resolve() -> String {
    if let Ok(url) = std::env::var(DATABASE_URL_VAR) {
        if let Err(error) = answers(&url).await {
            panic!("{DATABASE_URL_VAR} is set but the database does not answer: {error}");
        }
        return url;
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

/// Whether `url` accepts a connection within a few seconds.
async fn answers(url: &str) -> Result<(), String> {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok((client, connection))) => {
            drop(client);
            let _ = connection.await;
            Ok(())
        }
        Ok(Err(error)) => Err(match std::error::Error::source(&error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        }),
        Err(_) => Err("no answer within 5 s".to_owned()),
    }
}

#[cfg(feature = "containers")]
mod container {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::ContainerAsync;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use tokio::sync::OnceCell;

    /// Kept for the life of the test binary (statics are never dropped); testcontainers'
    /// reaper removes it afterwards.
    static CONTAINER: OnceCell<ContainerAsync<Postgres>> = OnceCell::const_new();

    /// Start a container if Docker is reachable; its URL.
    pub(super) async fn start() -> Result<String, String> {
        let socket = std::path::Path::new("/var/run/docker.sock");
        if std::env::var_os("DOCKER_HOST").is_none() && !socket.exists() {
            return Err("Docker is not reachable (no DOCKER_HOST, no /var/run/docker.sock)".into());
        }
        let container = CONTAINER
            .get_or_try_init(|| async { Postgres::default().start().await })
            .await
            .map_err(|error| format!("starting the container failed: {error}"))?;
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

//! A disposable PostgreSQL cluster per test: `initdb` in a temporary directory, started
//! on a spare port with `pg_ctl`, stopped (`immediate` or `fast`) and restarted on the
//! same port and data directory, removed when dropped (stopped first, even when the test
//! panicked). Never the shared server: crash and TLS tests need a server they may kill
//! and configure.
//!
//! Needs the PostgreSQL server binaries (`initdb`, `pg_ctl`; found in
//! `BACKPLANE_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`), and for TLS the
//! `openssl` command. As root, everything runs as the `postgres` user (`initdb` refuses
//! root) through `runuser`. A missing piece fails the test with a message naming it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Names the directory holding `initdb` and `pg_ctl`, when not the default.
pub const PG_BIN_VAR: &str = "BACKPLANE_TEST_PG_BIN";

/// The password of the `postgres` role in TLS clusters (which use `scram-sha-256`).
pub const TLS_PASSWORD: &str = "s3cret-Pa55word";

/// The host name the TLS cluster's certificate is issued for.
pub const TLS_HOST: &str = "db.test";

/// Makes directory names unique within the process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How to stop the server (`pg_ctl -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// `immediate`: the postmaster kills every backend at once without a checkpoint;
    /// the next start runs crash recovery. As close to a crash as `pg_ctl` gets.
    Immediate,
    /// `fast`: clients are disconnected, a checkpoint is written, a clean shutdown.
    Fast,
}

/// The certificates of a TLS cluster, as PEM files.
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// Another CA, which signed nothing the server presents.
    pub wrong_ca: PathBuf,
}

/// A PostgreSQL cluster of its own, on a spare port of 127.0.0.1.
pub struct Cluster {
    /// The temporary directory (data, socket, log, certificates), removed on drop.
    dir: PathBuf,
    /// The server binaries.
    bin: PathBuf,
    /// The user the server runs as, when the tests run as root.
    run_as: Option<String>,
    /// The TCP port, kept across restarts.
    port: u16,
    /// Whether the server is (believed to be) running, so drop stops it.
    running: bool,
    /// Set for clusters made by [`Cluster::with_tls`].
    certificates: Option<Certificates>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A new cluster (not started) accepting `postgres` without a password on TCP.
    ///
    /// # Panics
    ///
    /// Panics, saying what is missing, when the binaries or the `postgres` user (as
    /// root) are missing or `initdb` fails.
    pub fn new(label: &str) -> Self {
        let mut cluster = Self::init(label, None);
        cluster.write_hba("host all all 127.0.0.1/32 trust\n");
        cluster
    }

    /// A new cluster (not started) with `ssl = on` and a certificate for [`TLS_HOST`]
    /// signed by a fresh CA, whose `pg_hba.conf` accepts TCP connections only over TLS
    /// (`hostssl`, `scram-sha-256` with [`TLS_PASSWORD`]).
    ///
    /// # Panics
    ///
    /// As [`Cluster::new`], and when `openssl` is missing or fails.
    pub fn with_tls(label: &str) -> Self {
        let mut cluster = Self::init(label, Some(TLS_PASSWORD));
        let certs = cluster.dir.join("certs");
        cluster.run_ok(cluster.command(Path::new("mkdir")).arg(&certs), "mkdir");
        let ca = cluster.make_ca(&certs, "ca");
        let wrong_ca = cluster.make_ca(&certs, "wrong-ca");
        let ext = certs.join("server.ext");
        cluster.write_file(
            &ext,
            &format!(
                "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = serverAuth\nsubjectAltName = DNS:{TLS_HOST}\n"
            ),
        );
        let (key, csr, crt) = (
            certs.join("server.key"),
            certs.join("server.csr"),
            certs.join("server.crt"),
        );
        let mut request = cluster.command(Path::new("openssl"));
        request.args(["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt"]);
        request.args(["ec_paramgen_curve:prime256v1", "-subj"]);
        request.arg(format!("/CN={TLS_HOST}"));
        request.arg("-keyout").arg(&key).arg("-out").arg(&csr);
        cluster.run_ok(&mut request, "openssl req (server)");
        let mut sign = cluster.command(Path::new("openssl"));
        sign.args(["x509", "-req", "-days", "2", "-set_serial", "2", "-in"]);
        sign.arg(&csr).arg("-CA").arg(&ca).arg("-CAkey");
        sign.arg(certs.join("ca.key")).arg("-out").arg(&crt);
        sign.arg("-extfile").arg(&ext);
        cluster.run_ok(&mut sign, "openssl x509 (server)");
        cluster.run_ok(
            cluster.command(Path::new("chmod")).arg("600").arg(&key),
            "chmod",
        );
        cluster.append_conf(&format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            crt.display(),
            key.display()
        ));
        cluster.write_hba("hostssl all all 127.0.0.1/32 scram-sha-256\n");
        cluster.certificates = Some(Certificates { ca, wrong_ca });
        cluster
    }

    /// The certificates, for a cluster made by [`Cluster::with_tls`].
    pub fn certificates(&self) -> Option<&Certificates> {
        self.certificates.as_ref()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL reaching the cluster over TCP as `postgres` (with [`TLS_PASSWORD`] on TLS
    /// clusters), database `postgres`, then `params` (`sslmode=require&...`, or empty).
    pub fn url(&self, params: &str) -> String {
        let password = if self.certificates.is_some() {
            format!(":{TLS_PASSWORD}")
        } else {
            String::new()
        };
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{params}")
        };
        format!(
            "postgres://postgres{password}@127.0.0.1:{}/postgres{query}",
            self.port
        )
    }

    /// Connection parameters over the cluster's Unix socket (no TLS, no password), for
    /// administration.
    pub fn socket_conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.display(),
            self.port
        )
    }

    /// Start the server and wait until it accepts connections.
    ///
    /// # Panics
    ///
    /// Panics with the end of the server's log when it does not start within 60 s.
    pub fn start(&mut self) {
        let mut start = self.pg_ctl();
        start.args(["-w", "-t", "60", "-l"]);
        start.arg(self.dir.join("server.log")).arg("start");
        let output = run(&mut start, "pg_ctl start");
        if !output.status.success() {
            panic!(
                "pg_ctl start failed: {}\n--- server log ---\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.log_tail()
            );
        }
        self.running = true;
    }

    /// Stop the server with `mode` and wait until it is down.
    ///
    /// # Panics
    ///
    /// Panics if `pg_ctl stop` fails.
    pub fn stop(&mut self, mode: StopMode) {
        let mode = match mode {
            StopMode::Immediate => "immediate",
            StopMode::Fast => "fast",
        };
        let mut stop = self.pg_ctl();
        stop.args(["-w", "-t", "60", "-m", mode, "stop"]);
        self.run_ok(&mut stop, "pg_ctl stop");
        self.running = false;
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn init(label: &str, password: Option<&str>) -> Self {
        let bin = find_bin();
        let run_as = running_as_root().then(|| "postgres".to_owned());
        let label: String = label
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(20)
            .collect();
        let dir = std::env::temp_dir().join(format!(
            "bpt-cluster-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|error| panic!("creating {}: {error}", dir.display()));
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user);
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .unwrap_or_else(|error| panic!("chown {}: {error}", dir.display()));
        }
        let mut cluster = Self {
            dir,
            bin,
            run_as,
            port: spare_port(),
            running: false,
            certificates: None,
        };
        let mut initdb = cluster.command(&cluster.bin.join("initdb"));
        initdb.arg("-D").arg(cluster.data());
        initdb.args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]);
        initdb.args([
            "--auth-local=trust",
            "--auth-host=trust",
            "--no-instructions",
        ]);
        if let Some(password) = password {
            let file = cluster.dir.join("password");
            cluster.write_file(&file, password);
            initdb.arg(format!("--pwfile={}", file.display()));
        }
        cluster.run_ok(&mut initdb, "initdb");
        cluster.append_conf(&format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 60\nshared_buffers = 32MB\n",
            cluster.port,
            cluster.dir.display()
        ));
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Replace `pg_hba.conf`: Unix-socket connections trusted, TCP as `tcp_lines` say.
    fn write_hba(&mut self, tcp_lines: &str) {
        let hba = self.data().join("pg_hba.conf");
        self.write_file(&hba, &format!("local all all trust\n{tcp_lines}"));
    }

    fn append_conf(&mut self, lines: &str) {
        let path = self.data().join("postgresql.conf");
        let mut conf = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        conf.push_str("\n# bpt test cluster\n");
        conf.push_str(lines);
        self.write_file(&path, &conf);
    }

    /// Write `text` to `path`, owned by the server's user.
    fn write_file(&self, path: &Path, text: &str) {
        std::fs::write(path, text)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        if let Some(user) = &self.run_as {
            let (uid, gid) = user_ids(user);
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|error| panic!("chown {}: {error}", path.display()));
        }
    }

    /// A self-signed CA `name`.crt (key `name`.key) in `certs`.
    fn make_ca(&self, certs: &Path, name: &str) -> PathBuf {
        let config = certs.join(format!("{name}.cnf"));
        self.write_file(
            &config,
            &format!(
                "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
                 [dn]\nCN = bpt test {name}\n[v3_ca]\nbasicConstraints = critical,CA:TRUE\n\
                 keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
            ),
        );
        let crt = certs.join(format!("{name}.crt"));
        let mut command = self.command(Path::new("openssl"));
        command.args([
            "req", "-x509", "-new", "-nodes", "-days", "2", "-newkey", "ec",
        ]);
        command.args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-config"]);
        command.arg(&config).arg("-keyout");
        command
            .arg(certs.join(format!("{name}.key")))
            .arg("-out")
            .arg(&crt);
        self.run_ok(&mut command, "openssl req -x509 (CA)");
        crt
    }

    fn pg_ctl(&self) -> Command {
        let mut command = self.command(&self.bin.join("pg_ctl"));
        command.arg("-D").arg(self.data());
        command
    }

    /// `program`, run as the server's user.
    fn command(&self, program: &Path) -> Command {
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    fn run_ok(&self, command: &mut Command, what: &str) {
        let output = run(command, what);
        assert!(
            output.status.success(),
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let mut stop = self.pg_ctl();
            stop.args(["-w", "-t", "30", "-m", "immediate", "stop"]);
            let _ = stop.output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command, what: &str) -> Output {
    command.output().unwrap_or_else(|error| {
        panic!("cannot run {what} ({command:?}): {error}; is it installed? (PostgreSQL server binaries: apt-get install postgresql-15, or set {PG_BIN_VAR}; openssl: apt-get install openssl)")
    })
}

/// The directory of `initdb` and `pg_ctl`.
fn find_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os(PG_BIN_VAR) {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").exists(),
            "{PG_BIN_VAR}={} has no initdb",
            dir.display()
        );
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin: \
             install them (Debian: apt-get install postgresql-15) or set {PG_BIN_VAR} to their directory"
        )
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// The uid and gid of `user`.
fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, user])
            .output()
            .unwrap_or_else(|error| panic!("running id: {error}"));
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                panic!("running as root needs the user {user:?} to run PostgreSQL (initdb refuses root): create it, or run the tests as another user")
            })
    };
    (id("-u"), id("-g"))
}

/// A TCP port nothing listens on right now.
fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("binding a spare port")
}

//! A throwaway database on the PostgreSQL server that `scripts/test`
//! starts (or `DRIFTWATCH_TEST_POSTGRES_URL` names), dropped afterwards.

use std::time::{SystemTime, UNIX_EPOCH};

/// The server the tests use; its database is only used to create others.
pub fn admin_url() -> String {
    std::env::var("DRIFTWATCH_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub struct TestDatabase {
    pub url: String,
    name: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database. Fails the test, naming the server,
    /// when PostgreSQL is not reachable: fleet tests are never skipped.
    pub fn create() -> TestDatabase {
        let db = TestDatabase::reserve();
        db.bring_up();
        db
    }

    /// A database's name and URL, before it exists: a server that answers,
    /// but not yet for this database (it is being restored, or provisioned).
    pub fn reserve() -> TestDatabase {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos();
        let name = format!("driftwatch_test_{}_{}", std::process::id(), nanos % 1_000_000_000_000);
        let admin = admin_url();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// Creates the reserved database.
    pub fn bring_up(&self) {
        run(&format!("CREATE DATABASE {}", self.name));
    }

    /// Ends every session of database `name`, as a server restart would.
    /// Returns how many sessions ended.
    pub async fn terminate_sessions(name: &str) -> u64 {
        let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(connection);
        client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await
            .expect("terminate sessions")
    }

    /// Sessions open on database `name`, the asking one aside.
    pub async fn sessions(name: &str) -> i64 {
        let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(connection);
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await
            .expect("count sessions")
            .get(0)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs SQL in this database.
    pub fn execute(&self, sql: &str) {
        execute_at(&self.url, sql);
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| run(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)));
    }
}

fn run(sql: &str) {
    execute_at(&admin_url(), sql);
}

fn execute_at(url: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is needed by this test (scripts/test starts one): {e}"));
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    });
}

/// CPU seconds spent so far by every `postgres` process on this machine
/// (the server the scale benches measure).
pub fn server_cpu_seconds() -> f64 {
    let mut ticks = 0u64;
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((name, rest)) = stat.split_once(") ") else { continue };
        if !name.ends_with("(postgres") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 here.
        ticks += fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        ticks += fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    }
    ticks as f64 / 100.0
}

/// A private PostgreSQL server that accepts only TLS connections, with a
/// certificate for `localhost` signed by its own CA; stopped on drop.
/// Started with `initdb` and `pg_ctl` as the `postgres` user, so the test
/// must run as root (as `scripts/test` does here).
pub struct TlsServer {
    pub port: u16,
    pub ca: std::path::PathBuf,
    /// A CA that signed nothing the server presents.
    pub other_ca: std::path::PathBuf,
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
}

impl TlsServer {
    pub fn start() -> TlsServer {
        use std::process::Command;
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries in /usr/lib/postgresql (scripts/test installs them)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql");
        let dir = tempfile::tempdir().expect("dir");
        let sh = |program: &str, args: &[&str]| {
            let output = Command::new(program).args(args).current_dir(dir.path()).output().expect(program);
            assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        let as_postgres = |program: &std::path::Path, args: &[&str]| {
            let output = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(program)
                .args(args)
                .current_dir("/")
                .output()
                .expect("runuser (the TLS PostgreSQL test runs as root)");
            assert!(output.status.success(), "{program:?} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        for name in ["ca", "other"] {
            sh("openssl", &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &format!("{name}.key"), "-out", &format!("{name}.pem"), "-days", "2", "-subj", &format!("/CN={name}")]);
        }
        sh("openssl", &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
        std::fs::write(dir.path().join("ext"), "subjectAltName=DNS:localhost\n").expect("ext");
        sh("openssl", &["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext"]);
        let data = dir.path().join("data");
        sh("chown", &["-R", "postgres", "."]);
        sh("chmod", &["755", "."]);
        let data_text = data.display().to_string();
        as_postgres(&bin.join("initdb"), &["-D", &data_text, "-A", "trust", "-U", "postgres", "--no-sync"]);
        // TLS only: a plaintext connection finds no pg_hba.conf entry.
        std::fs::write(data.join("pg_hba.conf"), "hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n").expect("hba");
        for file in ["server.crt", "server.key"] {
            std::fs::copy(dir.path().join(file), data.join(file)).expect("copy");
        }
        sh("chown", &["postgres", &format!("{data_text}/server.key"), &format!("{data_text}/server.crt"), &format!("{data_text}/pg_hba.conf")]);
        sh("chmod", &["600", &format!("{data_text}/server.key")]);
        let port = super::free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c fsync=off",
            dir.path().display()
        );
        as_postgres(&bin.join("pg_ctl"), &["-D", &data_text, "-o", &options, "-l", &format!("{}/log", dir.path().display()), "-w", "start"]);
        TlsServer {
            port,
            ca: dir.path().join("ca.pem"),
            other_ca: dir.path().join("other.pem"),
            dir,
            bin,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.dir.path().join("data").display().to_string(), "-m", "immediate", "stop"])
            .current_dir("/")
            .output();
    }
}

/// PgBouncer in transaction pooling in front of the test server, with at
/// most `server_sessions` server sessions per database; stopped on drop.
/// Run as the `postgres` user (PgBouncer refuses root), so the test must
/// run as root (as `scripts/test` does here).
pub struct PgBouncer {
    pub port: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl PgBouncer {
    pub fn start(server_sessions: u32) -> PgBouncer {
        use std::process::{Command, Stdio};
        let admin = admin_url();
        // postgres://user@host:port/database
        let server = admin
            .rsplit_once('@')
            .and_then(|(_, rest)| rest.split_once('/'))
            .map_or("127.0.0.1:5432", |(authority, _)| authority);
        let (host, server_port) = server.rsplit_once(':').unwrap_or((server, "5432"));
        let dir = tempfile::tempdir().expect("dir");
        let port = super::free_port();
        let config = dir.path().join("pgbouncer.ini");
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").expect("users");
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host={host} port={server_port}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {users}\npool_mode = transaction\n\
                 default_pool_size = {server_sessions}\nmin_pool_size = 0\nmax_client_conn = 500\npidfile = {pid}\n",
                users = dir.path().join("users.txt").display(),
                pid = dir.path().join("pid").display()
            ),
        )
        .expect("pgbouncer.ini");
        let chown = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().expect("chown");
        assert!(chown.success(), "chown the PgBouncer directory");
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", "pgbouncer"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
            .spawn()
            .expect("pgbouncer (scripts/test installs it, and runs the tests as root)");
        let bouncer = PgBouncer { port, child, dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "PgBouncer did not listen: {}", bouncer.log());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        bouncer
    }

    /// The URL of `database` through this PgBouncer.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.dir.path().join("pid")).unwrap_or_default();
        for pid in [pid.trim().to_owned(), self.child.id().to_string()] {
            if !pid.is_empty() {
                let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
            }
        }
        let _ = self.child.wait();
    }
}

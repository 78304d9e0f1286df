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
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos();
        let name = format!("driftwatch_test_{}_{}", std::process::id(), nanos % 1_000_000_000_000);
        run(&format!("CREATE DATABASE {name}"));
        let admin = admin_url();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
        }
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

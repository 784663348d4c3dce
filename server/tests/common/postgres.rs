//! A throwaway PostgreSQL for one test: the cluster is copied from a template made once with
//! `initdb` (cached under the system's temporary directory), started on a free port on 127.0.0.1 with its
//! socket in its own temporary directory, and stopped (immediate shutdown) on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{as_postgres_user, free_port, give_to_postgres_user, postgres_bin_dir};

/// A running PostgreSQL server, stopped on drop.
pub struct TestPostgres {
    child: Option<Child>,
    /// Extra `-c` settings (TLS).
    settings: Vec<String>,
    /// The data directory (inside `dir`).
    pub data: PathBuf,
    /// The port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// Which backend the suite runs on: `TEST_DATABASE=postgres` selects PostgreSQL.
pub fn postgres_selected() -> bool {
    match std::env::var("TEST_DATABASE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("TEST_DATABASE={other}: expected sqlite or postgres"),
    }
}

/// The template cluster, made once per machine and PostgreSQL version.
fn template(bin: &Path) -> PathBuf {
    let version = bin
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Under the system's temporary directory, not the target directory: when root, the
    // cluster belongs to the `postgres` user, who cannot enter a checkout under a private
    // directory (a `mktemp -d` clone is 0700).
    let root = std::env::temp_dir().join("sigil-test-postgres");
    let done = root.join(format!("pg-template-{version}"));
    if done.join("PG_VERSION").exists() {
        return done;
    }
    std::fs::create_dir_all(&root).unwrap();
    let work = tempfile::Builder::new()
        .prefix("pg-template-")
        .tempdir_in(&root)
        .unwrap();
    let data = work.path().join("data");
    give_to_postgres_user(work.path());
    let out = as_postgres_user(&bin.join("initdb"))
        .args([
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--no-sync",
        ])
        .arg("-D")
        .arg(&data)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another test may have won the race; either copy is good.
    let _ = std::fs::rename(&data, &done);
    done
}

impl TestPostgres {
    /// Starts a fresh server (empty `postgres` database, trust authentication).
    pub fn start() -> Self {
        let bin = postgres_bin_dir();
        let template = template(&bin);
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ok = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot copy the template cluster");
        give_to_postgres_user(dir.path());
        let mut pg = TestPostgres {
            child: None,
            settings: Vec::new(),
            data,
            port: free_port(),
            bin,
            dir,
        };
        pg.launch();
        pg
    }

    /// Starts a server that also accepts TLS, with a certificate for `127.0.0.1` signed by a
    /// fresh CA; returns it and the CA certificate's path (PEM).
    pub fn start_with_tls() -> (Self, PathBuf) {
        let mut pg = Self::start();
        pg.stop();
        let dir = pg.dir.path().to_owned();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap_or_else(|e| panic!("openssl is missing (scripts/test installs it): {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ed25519",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=sigil test CA",
            "-days",
            "2",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "ed25519",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        give_to_postgres_user(&dir);
        let ok = Command::new("chmod")
            .arg("600")
            .arg(dir.join("server.key"))
            .status()
            .unwrap()
            .success();
        assert!(ok);
        pg.settings = vec![
            "ssl=on".to_owned(),
            format!("ssl_cert_file={}", dir.join("server.crt").display()),
            format!("ssl_key_file={}", dir.join("server.key").display()),
        ];
        pg.launch();
        (pg, dir.join("ca.pem"))
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).unwrap();
        let mut cmd = as_postgres_user(&self.bin.join("postgres"));
        for s in &self.settings {
            cmd.arg("-c").arg(s);
        }
        let child = cmd
            .arg("-D")
            .arg(&self.data)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("port={}", self.port)])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            // Throwaway: no fsync (a crash of PostgreSQL, not of the machine, loses nothing
            // committed: the WAL is written to the OS before a commit is acknowledged).
            .args(["-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "shared_buffers=32MB"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if postgres::Client::connect(&self.url(), postgres::NoTls).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("postgres exited ({status}): {}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Stops the server at once (SIGQUIT: immediate shutdown, as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Stops and starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// A plain client (for tests that read or tamper with tables directly).
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).unwrap()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The database a test's `sigil-server` processes use: the default SQLite file in their data
/// directory, or (with `TEST_DATABASE=postgres`) a throwaway PostgreSQL of the test's own,
/// shared by every process the test starts and kept across their restarts.
pub struct TestDatabase {
    pub pg: Option<TestPostgres>,
}

impl TestDatabase {
    /// The backend `TEST_DATABASE` selects.
    pub fn selected() -> Self {
        TestDatabase {
            pg: postgres_selected().then(TestPostgres::start),
        }
    }

    /// Points a `sigil-server` command at this database (nothing for SQLite, whose file is
    /// the data directory's default).
    pub fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        if let Some(pg) = &self.pg {
            cmd.env("SIGIL_DATABASE_URL", pg.url());
        }
        cmd
    }
}

//! Helpers for tests that start processes: free loopback ports, the PostgreSQL binaries,
//! running a command as the `postgres` user when the tests run as root (PostgreSQL refuses
//! to run as root).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directory of the PostgreSQL server binaries Debian's `postgresql` package installs
/// (`/usr/lib/postgresql/<version>/bin`, newest version), or `initdb` on `PATH`.
pub fn postgres_bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if let Some(dir) = Path::new(&p).parent().filter(|_| out.status.success()) {
            return dir.to_owned();
        }
    }
    panic!(
        "the PostgreSQL server binaries are missing (initdb, postgres): install Debian's \
         `postgresql` package (scripts/test does)"
    );
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `program args…`, as the `postgres` user when running as root (through `setpriv`). (No
/// parent-death signal: the parent is the thread that spawned it, which may end first.)
pub fn as_postgres_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"]);
        c.arg(program);
        // The caller's directory may be closed to that user (a checkout under a 0700 parent).
        c.current_dir(std::env::temp_dir());
        c
    } else {
        Command::new(program)
    }
}

/// Gives `path` (recursively) to the `postgres` user when running as root.
pub fn give_to_postgres_user(path: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown -R postgres {}", path.display());
    }
}

/// What `sigil-server` prints first when it starts.
pub struct Banner {
    /// Whether it listens with TLS (`https://`).
    pub https: bool,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The first admin token, printed only when the data directory had none.
    pub admin: Option<String>,
}

/// Reads the two lines `sigil-server` prints on stdout when it starts (`child` spawned with a
/// piped stdout): the address it listens on, and the first admin token or that tokens exist.
pub fn read_banner(child: &mut Child) -> Banner {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let (https, addr) = match first.strip_prefix("sigil-server listening on http://") {
        Some(addr) => (false, addr),
        None => (
            true,
            first
                .strip_prefix("sigil-server listening on https://")
                .unwrap_or_else(|| panic!("unexpected first line {first:?}")),
        ),
    };
    let addr = addr.parse().unwrap();
    let second = lines.next().unwrap().unwrap();
    let admin = second
        .rsplit_once(": ")
        .filter(|_| second.starts_with("first admin token"))
        .map(|(_, t)| t.to_owned());
    Banner { https, addr, admin }
}

//! A private PostgreSQL cluster for tests and benchmarks: `initdb` into a folder, `pg_ctl` on a
//! loopback port, a database per test, stopped when the process that started it ends (a
//! watchdog stops it even after a panic or a kill). Never used by `dmmp serve`.
//!
//! The binaries are Debian's (`/usr/lib/postgresql/N/bin`, the newest N), or on the `PATH`.
//! PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    data: PathBuf,
    /// Its loopback port.
    pub port: u16,
    /// The cluster's log file.
    pub log: PathBuf,
    databases: AtomicUsize,
}

/// Where Debian's PostgreSQL binaries are, if they are installed.
pub fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// Whether a test may use PostgreSQL: `Ok(true)` when it is installed, `Ok(false)` (the test
/// skips) when it is not, and an error when it is not but `DM_REQUIRE_POSTGRES` is set (CI:
/// a missing PostgreSQL fails the run rather than skipping its tests).
pub fn installed_for_tests() -> std::result::Result<bool, &'static str> {
    match (binaries(), std::env::var_os("DM_REQUIRE_POSTGRES")) {
        (Some(_), _) => Ok(true),
        (None, None) => Ok(false),
        (None, Some(_)) => Err("DM_REQUIRE_POSTGRES is set and PostgreSQL is not installed"),
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `cmd` as the user that may run PostgreSQL.
fn as_owner(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c.stdin(Stdio::null()).output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Cluster {
    /// Makes and starts a cluster in `dir` (which must not exist yet, in a folder the
    /// `postgres` user can reach when running as root).
    pub fn start(dir: &Path) -> Result<Cluster, String> {
        let bin = binaries().ok_or("PostgreSQL is not installed (Debian package postgresql)")?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let data = dir.join("data");
        let log = dir.join("postgres.log");
        if is_root() {
            // The postgres user must reach and own the folder.
            let mut p = dir.to_path_buf();
            while let Some(parent) = p.parent() {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(m) = std::fs::metadata(parent) {
                    let mode = m.permissions().mode();
                    if mode & 0o001 == 0 && parent.starts_with(std::env::temp_dir()) {
                        let _ = std::fs::set_permissions(
                            parent,
                            std::fs::Permissions::from_mode(mode | 0o001),
                        );
                    }
                }
                p = parent.to_path_buf();
            }
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir);
                    c
                },
                "chown the cluster folder",
            )?;
        }
        let mut init = as_owner(&bin, "initdb");
        init.arg("-D").arg(&data).args(["-U", "dm", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        run(init, "initdb")?;
        let port = free_port()?;
        let c = Cluster {
            dir: dir.to_path_buf(),
            bin,
            data,
            port,
            log,
            databases: AtomicUsize::new(0),
        };
        c.pg_ctl_start()?;
        c.watchdog();
        Ok(c)
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let mut start = as_owner(&self.bin, "pg_ctl");
        start.arg("-D").arg(&self.data).arg("-l").arg(&self.log).args(["-w", "-t", "60", "-o"]).arg(
            format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                self.port,
                self.data.display()
            ),
        );
        start.arg("start");
        run(start, "pg_ctl start")
    }

    /// Stops the cluster when this process ends, however it ends, and removes its folder.
    fn watchdog(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}; rm -rf '{dir}'",
            pid = std::process::id(),
            stop = self.stop_command(),
            dir = self.dir.display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    fn stop_command(&self) -> String {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = format!("{} -D {} -m immediate stop", pg_ctl.display(), self.data.display());
        if is_root() { format!("runuser -u postgres -- {stop}") } else { stop }
    }

    /// Stops the cluster at once (as a crash would).
    pub fn stop(&self) -> Result<(), String> {
        run(
            {
                let mut c = Command::new("sh");
                c.args(["-c", &self.stop_command()]);
                c
            },
            "pg_ctl stop",
        )
    }

    /// Starts the cluster again after [`Cluster::stop`], on the same port.
    pub fn restart(&self) -> Result<(), String> {
        self.pg_ctl_start()
    }

    /// From now on, TLS only: installs `cert_pem` and `key_pem` as the server's certificate
    /// and key, turns `ssl` on, refuses connections without TLS, and restarts the cluster.
    /// Make the databases first: `createdb` speaks plain.
    pub fn require_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        std::fs::write(self.data.join("server.crt"), cert_pem).map_err(|e| io("server.crt", e))?;
        let key = self.data.join("server.key");
        std::fs::write(&key, key_pem).map_err(|e| io("server.key", e))?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("server.key", e))?;
        let conf = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| io("postgresql.conf", e))?;
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).map_err(|e| io("postgresql.conf", e))?;
        let hba = self.data.join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba).map_err(|e| io("pg_hba.conf", e))?;
        let text =
            format!("hostnossl all all 0.0.0.0/0 reject\nhostnossl all all ::/0 reject\n{text}");
        std::fs::write(&hba, text).map_err(|e| io("pg_hba.conf", e))?;
        if is_root() {
            let mut c = Command::new("chown");
            c.args(["postgres:postgres"]).arg(self.data.join("server.crt")).arg(&key);
            run(c, "chown the server key")?;
        }
        self.stop()?;
        self.restart()
    }

    /// A URL for the cluster's database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://dm@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub fn database(&self, prefix: &str) -> Result<String, String> {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}_{n}");
        let mut c = Command::new(self.bin.join("createdb"));
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "dm", &name]);
        run(c, "createdb")?;
        Ok(self.url(&name))
    }
}

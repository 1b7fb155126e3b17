//! The Debian `docker-registry` (distribution 2.8) on a loopback port, with htpasswd or
//! token authentication, in a temporary directory.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{
    CapturedLogs, ChildProcess, fixture_dir, free_loopback_addr, print_logs_if_panicking,
    require_program,
};
use super::token_server::TokenServer;

/// How long a registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a start is retried when the picked port was taken in the meantime.
const PORT_ATTEMPTS: usize = 3;

/// How the registry authenticates clients.
enum AuthMode<'a> {
    /// `auth.htpasswd` with these users (name, password).
    Htpasswd(&'a [(&'a str, &'a str)]),
    /// `auth.token` trusting this token server.
    Token(&'a TokenServer),
    /// No `auth` section: anyone may pull and push.
    Anonymous,
}

/// A running `docker-registry serve`, listening on `127.0.0.1:PORT`.
///
/// Its storage, configuration and log live in a temporary directory that is removed on
/// drop, after the process group is killed. Nothing is pushed to it at start.
#[derive(Debug)]
pub struct Registry {
    // Field order is drop order: the process dies before its directory goes.
    process: ChildProcess,
    addr: SocketAddr,
    dir: TempDir,
}

impl Registry {
    /// Starts a registry that accepts these `(user, password)` pairs with HTTP Basic auth
    /// (an htpasswd file with bcrypt hashes made by `htpasswd -Bin`; the passwords go to
    /// its stdin, never on a command line).
    pub async fn start_htpasswd(users: &[(&str, &str)]) -> Self {
        Self::start(AuthMode::Htpasswd(users)).await
    }

    /// Starts a registry that accepts bearer tokens from `tokens` (`auth.token` with the
    /// token server's realm, service, issuer and certificate).
    pub async fn start_with_token_auth(tokens: &TokenServer) -> Self {
        Self::start(AuthMode::Token(tokens)).await
    }

    /// Starts a registry without authentication (anyone pulls and pushes).
    pub async fn start_anonymous() -> Self {
        Self::start(AuthMode::Anonymous).await
    }

    async fn start(auth: AuthMode<'_>) -> Self {
        let program = require_program("docker-registry", "docker-registry");
        let dir = fixture_dir("registry");
        let auth_yaml = match auth {
            AuthMode::Htpasswd(users) => {
                let path = dir.path().join("htpasswd");
                write_htpasswd(&path, users);
                format!(
                    "auth:\n  htpasswd:\n    realm: regcred-e2e\n    path: {}\n",
                    path.display()
                )
            }
            AuthMode::Token(tokens) => {
                let cert = dir.path().join("token-cert.pem");
                std::fs::write(&cert, tokens.certificate_pem()).expect("writing the token cert");
                format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    tokens.realm(),
                    tokens.service(),
                    tokens.issuer(),
                    cert.display()
                )
            }
            AuthMode::Anonymous => String::new(),
        };

        let mut last_log = String::new();
        for attempt in 1..=PORT_ATTEMPTS {
            let addr = free_loopback_addr();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {data}\n  \
                     delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: regcred-e2e-not-a-secret\n{auth_yaml}",
                    data = dir.path().join("data").display(),
                ),
            )
            .expect("writing the registry config");
            let log = dir.path().join(format!("registry-{attempt}.log"));
            let mut process = ChildProcess::spawn(
                "docker-registry",
                &program,
                [std::ffi::OsStr::new("serve"), config.as_os_str()],
                &log,
            );
            match wait_until_listening(&mut process, addr).await {
                Ok(()) => return Self { process, addr, dir },
                Err(log_text) if log_text.contains("address already in use") => {
                    last_log = log_text;
                    continue;
                }
                Err(log_text) => {
                    panic!("docker-registry did not start on {addr}; its log:\n{log_text}")
                }
            }
        }
        panic!(
            "docker-registry found no free port in {PORT_ATTEMPTS} attempts; last log:\n{last_log}"
        )
    }

    /// `127.0.0.1:PORT`: the host part of image references, and the `hosts.toml` key.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`, the registry's base URL (what containerd wants in
    /// `server_address`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The image reference `127.0.0.1:PORT/REPO:TAG`.
    pub fn image(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.addr)
    }

    /// The registry's log (all start attempts' logs are in the same directory).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The PID of the registry process.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The registry's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the registry (SIGKILL to its process group, as a crash would) and starts it
    /// again on the same address with the same configuration and storage, so it serves
    /// what it held before. Errs with the new start's log when it does not listen again;
    /// the registry is then down.
    pub async fn restart(&mut self) -> Result<(), String> {
        let program = require_program("docker-registry", "docker-registry");
        self.process.kill();
        let config = self.dir.path().join("config.yml");
        let mut restart = 1;
        while self
            .dir
            .path()
            .join(format!("registry-restart-{restart}.log"))
            .exists()
        {
            restart += 1;
        }
        let log = self
            .dir
            .path()
            .join(format!("registry-restart-{restart}.log"));
        self.process = ChildProcess::spawn(
            "docker-registry",
            &program,
            [std::ffi::OsStr::new("serve"), config.as_os_str()],
            &log,
        );
        wait_until_listening(&mut self.process, self.addr).await
    }
}

impl CapturedLogs for Registry {
    fn log_files(&self) -> Vec<(String, PathBuf)> {
        let mut logs: Vec<(String, PathBuf)> = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .map(|path| ("docker-registry".to_owned(), path))
            .collect();
        logs.sort();
        logs
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let logs = self.log_files();
        print_logs_if_panicking(
            logs.iter()
                .map(|(name, path)| (name.as_str(), path.as_path())),
        );
    }
}

/// Writes an htpasswd file: one `htpasswd -Bin USER` per user, password on stdin.
fn write_htpasswd(path: &Path, users: &[(&str, &str)]) {
    let program = require_program("htpasswd", "apache2-utils");
    let mut file = std::fs::File::create(path).expect("creating the htpasswd file");
    for (user, password) in users {
        let mut child = Command::new(&program)
            .args(["-Bin", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting htpasswd");
        child
            .stdin
            .take()
            .expect("htpasswd stdin")
            .write_all(password.as_bytes())
            .expect("writing to htpasswd");
        let output = child.wait_with_output().expect("waiting for htpasswd");
        assert!(output.status.success(), "htpasswd failed for user {user}");
        file.write_all(&output.stdout)
            .expect("writing the htpasswd file");
    }
}

/// Waits until the registry logged that it listens on `addr` and `addr` accepts TCP
/// connections (the log line makes sure it is this registry, not whoever took the port);
/// on failure returns the log.
async fn wait_until_listening(process: &mut ChildProcess, addr: SocketAddr) -> Result<(), String> {
    let start = Instant::now();
    let listening = format!("listening on {addr}");
    loop {
        if process.log_text().contains(&listening)
            && tokio::net::TcpStream::connect(addr).await.is_ok()
        {
            return Ok(());
        }
        if let Some(status) = process.exited() {
            return Err(format!("(exited with {status})\n{}", process.log_text()));
        }
        if start.elapsed() > START_TIMEOUT {
            return Err(format!(
                "(not listening after {START_TIMEOUT:?})\n{}",
                process.log_text()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! Real programs started by the harness: found on `PATH` or the test fails, spawned in
//! their own process group with their output in a log file, killed with their group on drop.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// How many trailing lines of each log [`print_logs_if_panicking`] shows.
const LOG_TAIL_LINES: usize = 200;

/// The absolute path of `program`, or a panic that tells to run `scripts/setup`.
///
/// The end-to-end tests never skip: a machine without containerd or the registry fails
/// them, with this message.
pub fn require_program(program: &str, debian_package: &str) -> PathBuf {
    find_on_path(program).unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed (Debian package `{debian_package}`); \
             the end-to-end tests run real programs: run scripts/setup first"
        )
    })
}

/// The absolute path of `program`, or a panic that says how to get it (`how`): for
/// programs no Debian package provides, such as the Kubernetes binaries.
pub fn require_program_from(program: &str, how: &str) -> PathBuf {
    find_on_path(program).unwrap_or_else(|| {
        panic!("`{program}` is not on PATH; the tests run the real program: {how}")
    })
}

/// The absolute path of `program` on `PATH`, if it is there.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Panics unless the tests run as root, with what to do about it.
pub fn require_root(program: &str) {
    if !rustix::process::geteuid().is_root() {
        panic!("{program} must run as root in the end-to-end tests; run them as root (CI does)");
    }
}

/// A free TCP port on 127.0.0.1, picked by the kernel.
///
/// The port is released before it is returned, so another process can take it in
/// between: starters that bind a port themselves retry on "address already in use".
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0 for a free port");
    listener
        .local_addr()
        .expect("local address of the probe socket")
        .port()
}

/// A loopback socket address on a free port.
pub fn free_loopback_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

/// Set this environment variable (to anything) to keep fixture directories, logs
/// included, after the tests; each kept directory's path is printed.
pub const KEEP_DIRS_ENV: &str = "REGCRED_E2E_KEEP_DIRS";

/// A fresh temporary directory for one fixture, named `regcred-{what}-…`; removed on drop
/// unless [`KEEP_DIRS_ENV`] is set.
pub fn fixture_dir(what: &str) -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("regcred-{what}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temporary directory for {what}: {e}"));
    if std::env::var_os(KEEP_DIRS_ENV).is_some() {
        dir.disable_cleanup(true);
        eprintln!("{KEEP_DIRS_ENV}: keeping {}", dir.path().display());
    }
    dir
}

/// A program the harness started.
///
/// The program runs in a new process group (its own PID is the group's ID) under
/// `setpriv --pdeathsig KILL`, so it dies with the thread that spawned it even when the
/// test binary is killed and no `Drop` runs. Its stdout and stderr go to one log file.
/// Dropping it kills the whole group with SIGKILL and reaps the program.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `program args...` with `log` as its stdout and stderr.
    ///
    /// `name` is what messages call it. Panics when the program cannot be started.
    /// The parent-death signal is tied to the spawning thread: spawn from the test's own
    /// thread (not from a blocking-pool thread that may exit first).
    pub fn spawn(
        name: &str,
        program: &Path,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        log: &Path,
    ) -> Self {
        Self::spawn_with_env(
            name,
            program,
            args,
            log,
            std::iter::empty::<(&OsStr, &OsStr)>(),
        )
    }

    /// [`ChildProcess::spawn`] with these environment variables set for the program.
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        log: &Path,
        env: impl IntoIterator<Item = (impl AsRef<OsStr>, impl AsRef<OsStr>)>,
    ) -> Self {
        use std::os::unix::process::CommandExt as _;

        let setpriv = require_program("setpriv", "util-linux");
        let out = File::create(log)
            .unwrap_or_else(|e| panic!("creating the log {} of {name}: {e}", log.display()));
        let err = out.try_clone().expect("duplicating the log file handle");
        let mut command = Command::new(setpriv);
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(program)
            .args(args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", program.display()));
        Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        }
    }

    /// The process ID (also its process group ID).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name messages use for this program.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file holding the program's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status, if the program has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The log's contents so far (lossy UTF-8; empty when unreadable).
    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    /// Kills the program's process group (SIGKILL) and reaps it, unless it has exited.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            if let Some(group) = rustix::process::Pid::from_raw(self.pid() as i32) {
                // ESRCH (already gone) is fine: the group is what we wanted dead.
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = self.child.wait();
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a file as lossy UTF-8; a missing file reads as empty.
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Prints the last lines of each log to stderr when the current thread is panicking,
/// that is when a fixture is dropped because its test failed. libtest captures the output
/// and shows it with the failure.
pub fn print_logs_if_panicking<'a>(logs: impl IntoIterator<Item = (&'a str, &'a Path)>) {
    if !std::thread::panicking() {
        return;
    }
    for (name, path) in logs {
        let lines: Vec<String> = File::open(path)
            .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
            .unwrap_or_default();
        let skipped = lines.len().saturating_sub(LOG_TAIL_LINES);
        eprintln!(
            "----- {name} log ({}), last {} lines -----",
            path.display(),
            lines.len() - skipped
        );
        for line in &lines[skipped..] {
            eprintln!("{line}");
        }
    }
}

/// Something whose programs' logs the harness captured.
pub trait CapturedLogs {
    /// `(name, path)` of every log file.
    fn log_files(&self) -> Vec<(String, PathBuf)>;
}

/// Panics, naming the log (never quoting the secret), when any captured log contains
/// `secret`.
pub fn assert_logs_exclude(fixtures: &[&dyn CapturedLogs], secret: &str) {
    assert!(!secret.is_empty(), "an empty secret is in every log");
    for fixture in fixtures {
        for (name, path) in fixture.log_files() {
            let text = read_lossy(&path);
            assert!(
                !text.contains(secret),
                "the {name} log ({}) contains a secret the test gave it",
                path.display()
            );
        }
    }
}

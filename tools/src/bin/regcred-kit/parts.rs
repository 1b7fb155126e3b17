//! The kit's processes ("parts"): each started in its own process group with its output
//! appended to `DIR/logs/NAME.log` and its PID in `DIR/pids/NAME.pid`, found alive by that
//! PID (a child of this run by its handle, so that one that exited is seen as gone), and
//! stopped by it: SIGTERM to its group, SIGKILL after 10 s.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// How long a stopped part has after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The kit's processes, by part name.
#[derive(Debug)]
pub(crate) struct Parts {
    logs: PathBuf,
    pids: PathBuf,
    /// The parts this run started, by name: their handles reap them when they exit.
    children: Mutex<HashMap<String, Child>>,
    /// The names this run started, in order (a failed `up` stops them again).
    started: Mutex<Vec<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Parts {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            logs: dir.join("logs"),
            pids: dir.join("pids"),
            children: Mutex::default(),
            started: Mutex::default(),
        }
    }

    pub(crate) fn pid_file(&self, name: &str) -> PathBuf {
        self.pids.join(format!("{name}.pid"))
    }

    pub(crate) fn log_file(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// The PID its file names, if any.
    pub(crate) fn pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.pid_file(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the part runs: a child of this run that has not exited, or a PID from its
    /// file that the kernel knows.
    pub(crate) fn alive(&self, name: &str) -> bool {
        if let Some(child) = lock(&self.children).get_mut(name) {
            return matches!(child.try_wait(), Ok(None));
        }
        self.pid(name)
            .and_then(Pid::from_raw)
            .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
    }

    /// Starts `program` as part `name`, in its own process group, with `env` added to
    /// this process's environment.
    pub(crate) fn start(
        &self,
        name: &str,
        program: &Path,
        args: &[OsString],
        env: &[(&str, OsString)],
    ) -> Result<(), String> {
        for dir in [&self.logs, &self.pids] {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let log_path = self.log_file(name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {name} ({}): {e}", program.display()))?;
        let pid_file = self.pid_file(name);
        std::fs::write(&pid_file, format!("{}\n", child.id()))
            .map_err(|e| format!("writing {}: {e}", pid_file.display()))?;
        lock(&self.children).insert(name.to_owned(), child);
        lock(&self.started).push(name.to_owned());
        Ok(())
    }

    /// Stops the part by its PID: SIGTERM to its process group, SIGKILL to the group after
    /// [`STOP_GRACE`]; then forgets its PID file. A part that is not running is a success.
    pub(crate) fn stop(&self, name: &str) -> Result<(), String> {
        let pid = self.pid(name).and_then(Pid::from_raw);
        if let Some(pid) = pid
            && self.alive(name)
        {
            if rustix::process::kill_process_group(pid, Signal::TERM).is_err() {
                let _ = rustix::process::kill_process(pid, Signal::TERM);
            }
            let deadline = Instant::now() + STOP_GRACE;
            while self.alive(name) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            if let Some(mut child) = lock(&self.children).remove(name) {
                let _ = child.wait();
            }
        }
        lock(&self.children).remove(name);
        let file = self.pid_file(name);
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", file.display())),
        }
    }

    /// Stops, newest first, every part this run started (a failed or interrupted `up`),
    /// and forgets the PID files of those that already exited; returns the names of the
    /// ones that were still running.
    pub(crate) fn stop_started(&self) -> Vec<String> {
        let started: Vec<String> = lock(&self.started).drain(..).rev().collect();
        let mut stopped = Vec::new();
        for name in started {
            let running = self.alive(&name);
            let _ = self.stop(&name);
            if running {
                stopped.push(name);
            }
        }
        stopped
    }

    /// The last `lines` lines of the part's log.
    pub(crate) fn tail(&self, name: &str, lines: usize) -> String {
        tail(&self.log_file(name), lines)
    }
}

/// The last `lines` lines of a file (at most its last 64 KiB), lossily decoded.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The supervisor of `--proxy-supervise` (the stand-in for a systemd unit's
/// `Restart=always RestartSec=1`): runs the command, writes its PID to `pid_file`, and
/// starts it again 1 s after it exits, until SIGTERM or SIGINT, which it passes on to the
/// command before it exits itself.
pub(crate) async fn supervise(pid_file: &Path, command: &[OsString]) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let (program, args) = command
        .split_first()
        .ok_or("supervise: no command to run")?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    loop {
        let mut child = match tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                // As systemd's Restart=always: try again in a second.
                println!(
                    "=== regcred-kit: starting {} failed ({e}), again in 1 s",
                    program.to_string_lossy()
                );
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = term.recv() => return Ok(()),
                    _ = int.recv() => return Ok(()),
                }
            }
        };
        let pid = child.id().unwrap_or(0);
        std::fs::write(pid_file, format!("{pid}\n"))
            .map_err(|e| format!("writing {}: {e}", pid_file.display()))?;
        let status = tokio::select! {
            status = child.wait() => status.map_err(|e| format!("waiting for {pid}: {e}"))?,
            _ = term.recv() => return end(child).await,
            _ = int.recv() => return end(child).await,
        };
        let code = {
            use std::os::unix::process::ExitStatusExt as _;
            status
                .code()
                .or_else(|| status.signal().map(|signal| 128 + signal))
                .unwrap_or(-1)
        };
        println!("=== regcred-kit: cri-proxy (pid {pid}) exited with {code}, restarting in 1 s");
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

async fn end(mut child: tokio::process::Child) -> Result<(), String> {
    if let Some(pid) = child.id().and_then(|pid| Pid::from_raw(pid as i32)) {
        let _ = rustix::process::kill_process(pid, Signal::TERM);
    }
    let _ = child.wait().await;
    Ok(())
}

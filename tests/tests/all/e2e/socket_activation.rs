//! The node agent started the way systemd starts it with `regcred-cri-proxy.socket`:
//! its sockets bound by the service manager and passed as `LISTEN_FDS`, here by Debian's
//! `systemd-socket-activate` (systemd's own tool for this). The agent serves on the
//! passed sockets, says so, warns about a passed socket no flag names, and leaves them
//! in place at exit: they are the service manager's, for the next agent. (The restart
//! under a real systemd is in `node_install.rs`.)

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regcred_tests::harness::{regcred_binary, require_program};

/// The agent's process, killed on every path out of the test.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_agent_serves_on_sockets_the_service_manager_passes_and_leaves_them() {
    let activate = require_program("systemd-socket-activate", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::create_dir(path("secrets")).unwrap();
    let log = std::fs::File::create(path("agent.log")).unwrap();
    let mut agent = Killed(
        Command::new(activate)
            .arg("-l")
            .arg(path("cri.sock"))
            .arg("-l")
            .arg(path("decisions.sock"))
            .arg("-l")
            .arg(path("extra.sock"))
            .arg(regcred_binary())
            .arg("cri-proxy")
            .arg(format!("--listen=unix://{}", path("cri.sock").display()))
            .arg(format!(
                "--nri-decisions=unix://{}",
                path("decisions.sock").display()
            ))
            .arg(format!(
                "--runtime=unix://{}",
                path("no-runtime.sock").display()
            ))
            .arg(format!("--secrets-from=dir:{}", path("secrets").display()))
            .arg("--pull-records-dir")
            .arg(path("records"))
            .arg("--log-format=json")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // systemd-socket-activate binds the three paths, then starts the agent (in its own
    // process, by exec) at the first connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path("extra.sock").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = r#"{"namespace":"team","pod":"web","uid":"u-1","image":"registry.example/app:v1"}"#;
    let mut stream = std::os::unix::net::UnixStream::connect(path("decisions.sock"))
        .expect("the passed decisions socket accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /v1/decide HTTP/1.1\r\nHost: regcred-agent\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"allowed\":"),
        "the agent's answer on the passed socket: {answer}"
    );

    // The decisions socket answers before the agent has logged that it serves and set up
    // its SIGTERM handling: wait for that line (and a moment), so that the SIGTERM finds
    // the graceful path, whose cleanup is what this test is about.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(path("agent.log"))
        .unwrap()
        .contains("regcred cri-proxy serving")
    {
        assert!(Instant::now() < deadline, "the agent never said it serves");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SIGTERM, as systemd stops it: a clean exit that leaves the passed sockets.
    let pid = rustix::process::Pid::from_raw(i32::try_from(agent.0.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = agent.0.wait().unwrap();
    let log = std::fs::read_to_string(path("agent.log")).unwrap();
    assert!(status.success(), "exit status {status}:\n{log}");
    for socket in ["cri.sock", "decisions.sock", "extra.sock"] {
        assert!(
            path(socket).exists(),
            "{socket}, the service manager's, was removed at exit:\n{log}"
        );
    }
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "regcred cri-proxy serving"
                && l["sockets_from_service_manager"] == 2),
        "no line saying both sockets came from the service manager:\n{log}"
    );
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["socket"]
                .as_str()
                .is_some_and(|s| s.ends_with("extra.sock"))),
        "no warning about the passed socket no flag names:\n{log}"
    );
}

//! The install and uninstall transactions, and the host's systemd as they reach it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::state::{
    FileRecord, InstallState, KEPT, Phase, Previous, STAGED, beside, keep, missing_dirs,
    read_with_mode, remove_empty, sha256_of_file, stage, store_identities, write_atomic,
};
use super::{
    AGENT_SERVICE, AGENT_SOCKET, Content, Layout, Mode, NRI_SERVICE, Part, Planned, services,
};

/// containerd's unit.
const CONTAINERD: &str = "containerd.service";
/// kubelet's unit.
const KUBELET: &str = "kubelet.service";

/// How the installer reaches the host's systemd: a command line that `systemctl`'s own
/// arguments are appended to (`systemctl` on the node; `nsenter --target 1 --mount --uts
/// --ipc --net --pid -- systemctl` from a pod with the host's PID namespace).
#[derive(Debug, Clone)]
pub(crate) struct Systemctl {
    argv: Vec<String>,
    settle: Duration,
}

impl Systemctl {
    /// `argv` is the command (non-empty); after restarting a service the installer waits
    /// `settle` before asking whether it is still active (a service that dies at start
    /// is caught then).
    pub(crate) fn new(argv: Vec<String>, settle: Duration) -> Self {
        Self { argv, settle }
    }

    fn run(&self, args: &[&str]) -> Result<(), String> {
        let shown = format!("systemctl {}", args.join(" "));
        let (program, prefix) = self
            .argv
            .split_first()
            .ok_or("the systemctl command is empty")?;
        let output = Command::new(program)
            .args(prefix)
            .args(args)
            .output()
            .map_err(|e| format!("`{shown}` could not run ({program}: {e})"))?;
        if output.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&output.stderr);
        let said = said.trim();
        Err(format!(
            "`{shown}` failed ({}){}",
            output.status,
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ))
    }

    /// Restarts `units` and checks, after the settle time, that each is active.
    fn restart(&self, units: &[&str]) -> Result<(), String> {
        for unit in units {
            self.run(&["restart", unit])?;
        }
        self.check_active(units)
    }

    fn check_active(&self, units: &[&str]) -> Result<(), String> {
        if !self.settle.is_zero() {
            std::thread::sleep(self.settle);
        }
        for unit in units {
            self.run(&["is-active", "--quiet", unit])
                .map_err(|e| format!("{unit} is not active after its restart ({e})"))?;
        }
        Ok(())
    }
}

/// What a run did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Outcome {
    /// Files written (install) or put back (uninstall), as host paths.
    pub files: Vec<PathBuf>,
    /// Units restarted, in order.
    pub restarted: Vec<String>,
    /// Files left alone, each with why (uninstall: changed by someone since).
    pub left: Vec<String>,
    /// Nothing to do: the node already is as asked.
    pub unchanged: bool,
}

/// A file of the plan with what the host has now.
struct Step {
    file: Planned,
    /// The sha256 of what the plan writes.
    sha256: String,
    /// The host file's sha256 and permission bits before this run, if there was one.
    before: Option<(String, u32)>,
    /// The host file before this run, kept beside it (`NAME.regcred-old`) from staging
    /// until the switch is done or undone.
    old: Option<PathBuf>,
    changed: bool,
}

/// Installs `files` (from [`super::plan`]) on the host: stage, record, switch, restart,
/// check; on any failure puts everything back as it was and says what failed.
///
/// # Errors
/// The message names the failing step and what the rollback did.
pub(crate) fn install(
    layout: &Layout,
    mode: Mode,
    files: Vec<Planned>,
    systemctl: &Systemctl,
) -> Result<Outcome, String> {
    let old = InstallState::load(layout)?;
    if let Some(old) = &old
        && old.mode != mode
    {
        return Err(format!(
            "this node has regcred installed in {:?} mode: `regcred node uninstall` first; \
             nothing was changed",
            old.mode
        ));
    }
    // What an install killed halfway may have left beside its files.
    remove_leftovers(
        layout,
        files.iter().map(|f| f.path.as_path()).chain(
            old.iter()
                .flat_map(|o| o.files.iter().map(|f| f.path.as_path())),
        ),
    );
    let state_file = InstallState::path(layout);
    let created = missing_dirs(
        layout,
        files
            .iter()
            .map(|f| f.path.as_path())
            .chain([state_file.as_path()]),
    );
    // Before anything is switched, a failure leaves the host as it was: the staged files,
    // a first install's state and copies, and the directories made for them go.
    let abort = |staged: &[PathBuf], e: String| {
        remove_all(staged);
        if old.is_none() {
            let _ = InstallState::remove(layout, true);
        }
        remove_empty(layout, &created);
        format!("{e}; nothing was changed")
    };
    let mut steps = Vec::with_capacity(files.len());
    let mut records = Vec::with_capacity(files.len());
    for (index, file) in files.into_iter().enumerate() {
        let digest = file.content.sha256().map_err(|e| abort(&[], e))?;
        let before = read_with_mode(&layout.on_host(&file.path)).map_err(|e| abort(&[], e))?;
        let previous = match (
            old.as_ref()
                .and_then(|old| old.files.iter().find(|r| r.path == file.path)),
            &before,
        ) {
            (Some(record), _) => record.previous.clone(),
            (None, Some((was, mode))) => {
                keep(layout, index, &file.path, was, *mode).map_err(|e| abort(&[], e))?
            }
            (None, None) => Previous::Absent,
        };
        records.push(FileRecord {
            path: file.path.clone(),
            part: file.part,
            sha256: digest.clone(),
            previous,
        });
        let changed = before
            .as_ref()
            .is_none_or(|(was, m)| *was != digest || *m != file.mode);
        steps.push(Step {
            file,
            sha256: digest,
            before,
            old: None,
            changed,
        });
    }
    let units = services(mode);
    let mut outcome = Outcome::default();
    if steps.iter().all(|s| !s.changed) && old.as_ref().is_some_and(|o| o.phase == Phase::Installed)
    {
        // Nothing to switch; a stopped service is started (never restarted).
        let mut args = vec!["enable", "--now", AGENT_SOCKET];
        args.extend_from_slice(units);
        systemctl.run(&args)?;
        if let Some(old) = &old {
            // (An install by a regcred that kept no identities gets them now.)
            remember_identities(layout, old);
        }
        outcome.unchanged = true;
        return Ok(outcome);
    }

    // Stage every changed file beside its target, and keep the file it replaces beside
    // it too: nothing on the host changes yet.
    let mut staged = Vec::new();
    let mut kept_old = Vec::new();
    for step in steps.iter_mut().filter(|s| s.changed) {
        let target = layout.on_host(&step.file.path);
        let path = stage(&target, &step.file.content, &step.sha256, step.file.mode)
            .map_err(|e| abort(&[staged.as_slice(), &kept_old].concat(), e))?;
        staged.push(path);
        if step.before.is_some() {
            let old = keep_beside(&target)
                .map_err(|e| abort(&[staged.as_slice(), &kept_old].concat(), e))?;
            kept_old.push(old.clone());
            step.old = Some(old);
        }
    }
    let staged_and_old = [staged.as_slice(), &kept_old].concat();
    let mut state = InstallState {
        version: 1,
        mode,
        phase: Phase::Switching,
        regcred_version: env!("CARGO_PKG_VERSION").to_owned(),
        files: records,
        created_dirs: old
            .iter()
            .flat_map(|o| o.created_dirs.iter().cloned())
            .chain(created.iter().cloned())
            .collect(),
    };
    state.store(layout).map_err(|e| abort(&staged_and_old, e))?;

    let mut switched: Vec<&Step> = Vec::new();
    let mut staged_left = staged.into_iter();
    let result = (|| {
        for step in steps.iter().filter(|s| s.changed) {
            let from = staged_left.next().ok_or("staging lost a file")?;
            let to = layout.on_host(&step.file.path);
            std::fs::rename(&from, &to)
                .map_err(|e| format!("renaming {} to {}: {e}", from.display(), to.display()))?;
            switched.push(step);
            outcome.files.push(step.file.path.clone());
        }
        // An install interrupted after its switch (the state still says `switching`)
        // finds its files in place: everything it would have restarted is restarted now.
        let resumed = old.as_ref().is_some_and(|o| o.phase == Phase::Switching);
        let touched: Vec<&Step> = if resumed {
            steps.iter().collect()
        } else {
            switched.clone()
        };
        restart_for(systemctl, units, &touched, &mut outcome.restarted)
    })();
    match result {
        Ok(()) => {
            remove_all(&kept_old);
            state.phase = Phase::Installed;
            state.store(layout)?;
            remember_identities(layout, &state);
            Ok(outcome)
        }
        Err(failure) => {
            remove_all(&staged_left.collect::<Vec<_>>());
            let undone = roll_back(
                layout,
                old.as_ref(),
                units,
                &switched,
                &outcome.restarted,
                systemctl,
            );
            // The kept files of steps that were not switched; a switched file's kept copy
            // went back by its rename, or, where that failed, stays for the operator
            // (named in the error).
            let unswitched: Vec<PathBuf> = steps
                .iter()
                .filter(|s| !switched.iter().any(|w| std::ptr::eq(*w, *s)))
                .filter_map(|s| s.old.clone())
                .collect();
            remove_all(&unswitched);
            remove_empty(layout, &created);
            Err(format!("install failed: {failure}; {undone}"))
        }
    }
}

/// The restarts that the switched files call for, in dependency order; each unit is
/// listed in `attempted` before it is restarted.
fn restart_for(
    systemctl: &Systemctl,
    units: &[&str],
    switched: &[&Step],
    attempted: &mut Vec<String>,
) -> Result<(), String> {
    let touched = |part: Part| switched.iter().any(|s| s.file.part == part);
    if touched(Part::Binary) || touched(Part::Unit) {
        systemctl.run(&["daemon-reload"])?;
        let mut enable = vec!["enable", AGENT_SOCKET];
        enable.extend_from_slice(units);
        systemctl.run(&enable)?;
        // A new or changed socket unit is switched with the agent stopped: systemd does
        // not start a socket whose service runs. Otherwise the socket stays up through
        // the agent's restart and holds what connects meanwhile for the next agent.
        // Both are stopped in one job, so that a connection waiting on the old socket
        // cannot start the agent again in between.
        if switched.iter().any(|s| is_agent_socket(&s.file.path)) {
            // (the rollback starts the services again whenever a unit was switched)
            systemctl.run(&["stop", AGENT_SOCKET, AGENT_SERVICE])?;
            attempted.push(AGENT_SOCKET.to_owned());
            systemctl.run(&["start", AGENT_SOCKET])?;
            systemctl.check_active(&[AGENT_SOCKET])?;
        }
        // Only the services whose own files changed restart; the others are started
        // (a no-op when they run). A regcred-nri restarted for nothing costs a creation:
        // containerd drops a closed validator only at the end of the next request, which
        // fails ("ttrpc: closed"); an agent restart alone costs none (its socket unit).
        let (changed, same): (Vec<&str>, Vec<&str>) = units
            .iter()
            .partition(|unit| switched.iter().any(|s| restarts(&s.file.path, unit)));
        attempted.extend(changed.iter().map(|u| (*u).to_owned()));
        systemctl.restart(&changed)?;
        if !same.is_empty() {
            attempted.extend(same.iter().map(|u| (*u).to_owned()));
            let mut start = vec!["start"];
            start.extend_from_slice(&same);
            systemctl.run(&start)?;
            systemctl.check_active(&same)?;
        }
    }
    if touched(Part::Containerd) {
        attempted.push(CONTAINERD.to_owned());
        systemctl.restart(&[CONTAINERD])?;
        // regcred-nri reconnects to the new containerd by itself; it must still be there.
        systemctl.check_active(units)?;
    }
    if touched(Part::Kubelet) {
        attempted.push(KUBELET.to_owned());
        systemctl.restart(&[KUBELET])?;
    }
    Ok(())
}

/// Puts the switched files back as they were before this run and restarts again what
/// this run restarted (or tried to); returns what it did, for the error.
fn roll_back(
    layout: &Layout,
    old: Option<&InstallState>,
    units: &[&str],
    switched: &[&Step],
    attempted: &[String],
    systemctl: &Systemctl,
) -> String {
    let mut problems = Vec::new();
    // The socket unit this run switched goes down first, while its file is still there
    // to disable: an agent put back without it binds its sockets itself, and would wait
    // for ever on a path systemd still holds.
    let socket = switched.iter().find(|s| is_agent_socket(&s.file.path));
    if let Some(socket) = socket {
        // Every regcred unit in one job: a regcred-nri left running would start the agent
        // (its Wants=), and the agent the socket, again.
        let mut stop = vec!["stop", AGENT_SOCKET];
        stop.extend_from_slice(units);
        let mut first = vec![stop];
        if socket.before.is_none() {
            first.push(vec!["disable", AGENT_SOCKET]);
        }
        for args in first {
            if let Err(e) = systemctl.run(&args) {
                problems.push(e);
            }
        }
    }
    for step in switched.iter().rev() {
        let target = layout.on_host(&step.file.path);
        let put_back = match &step.old {
            Some(old) => std::fs::rename(old, &target).map_err(|e| {
                format!(
                    "putting {} back from {}: {e}",
                    target.display(),
                    old.display()
                )
            }),
            None => std::fs::remove_file(&target)
                .map_err(|e| format!("removing {}: {e}", target.display())),
        };
        if let Err(e) = put_back {
            problems.push(e);
        }
    }
    let state = match old {
        Some(old) => old.store(layout),
        None => InstallState::remove(layout, true),
    };
    if let Err(e) = state {
        problems.push(e);
    }
    let touched = |part: Part| switched.iter().any(|s| s.file.part == part);
    let tried = |unit: &str| attempted.iter().any(|u| u == unit);
    let mut again = |args: &[&str]| {
        if let Err(e) = systemctl.run(args) {
            problems.push(e);
        }
    };
    if touched(Part::Binary) || touched(Part::Unit) {
        again(&["daemon-reload"]);
        if old.is_some() && socket.is_some_and(|s| s.before.is_some()) {
            // The socket unit put back: up again before its agent.
            again(&["start", AGENT_SOCKET]);
        }
        // (stopped above already when the socket unit was switched: a stop now, of units
        // whose files are gone, would fail as "not loaded")
        let mut args = match (old.is_some(), socket.is_some()) {
            (true, _) => vec!["restart"],
            (false, true) => vec!["disable"],
            (false, false) => vec!["disable", "--now"],
        };
        args.extend_from_slice(units);
        again(&args);
    }
    if tried(CONTAINERD) {
        again(&["restart", CONTAINERD]);
    }
    if tried(KUBELET) {
        again(&["restart", KUBELET]);
    }
    if problems.is_empty() {
        format!(
            "rolled back: {} file(s) put back as they were and their services restarted",
            switched.len()
        )
    } else {
        format!("the rollback was incomplete: {}", problems.join("; "))
    }
}

/// Whether `path` is the agent's socket unit.
fn is_agent_socket(path: &std::path::Path) -> bool {
    path.file_name().is_some_and(|name| name == AGENT_SOCKET)
}

/// Keeps the host file `target` beside it as `NAME.regcred-old` (a hard link, so no
/// bytes are copied; a copy where the file system has no links), so that a rollback puts
/// it back with a rename.
fn keep_beside(target: &std::path::Path) -> Result<PathBuf, String> {
    let old = beside(target, KEPT);
    let _ = std::fs::remove_file(&old);
    if std::fs::hard_link(target, &old).is_err() {
        std::fs::copy(target, &old)
            .map_err(|e| format!("keeping {} as {}: {e}", target.display(), old.display()))?;
    }
    Ok(old)
}

/// Whether switching the file `path` calls for restarting `unit`: its binary, its unit
/// file, or (the agent) its socket unit.
fn restarts(path: &std::path::Path, unit: &str) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name == unit
        || (unit == AGENT_SERVICE && (name == "regcred" || name == AGENT_SOCKET))
        || (unit == NRI_SERVICE && name == "regcred-nri")
}

/// Records the installed files' identities for `status`; a failure only means `status`
/// hashes every file, so it is said, not fatal.
fn remember_identities(layout: &Layout, state: &InstallState) {
    if let Err(e) = store_identities(layout, state) {
        eprintln!("regcred node: {e} (status will read every file)");
    }
}

/// Removes `NAME.regcred-new` and `NAME.regcred-old` beside each of `paths` (host paths):
/// what an install or uninstall killed halfway may have left.
pub(super) fn remove_leftovers<'a>(
    layout: &Layout,
    paths: impl IntoIterator<Item = &'a std::path::Path>,
) {
    for path in paths {
        let on_host = layout.on_host(path);
        for suffix in [STAGED, KEPT] {
            let _ = std::fs::remove_file(beside(&on_host, suffix));
        }
    }
}

fn remove_all(paths: &[PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

/// Undoes what [`install`] recorded, in the reverse order: kubelet's drop-in (kubelet
/// restarted), containerd's (containerd restarted), the services stopped and disabled,
/// their units and binaries put back. A file someone changed since is left alone and
/// named. The state goes once everything is back; run again after a failure.
///
/// # Errors
/// A step failed (named); what could be done was done, and the state keeps the rest.
pub(crate) fn uninstall(layout: &Layout, systemctl: &Systemctl) -> Result<Outcome, String> {
    let Some(state) = InstallState::load(layout)? else {
        return Ok(Outcome {
            unchanged: true,
            ..Outcome::default()
        });
    };
    remove_leftovers(layout, state.files.iter().map(|f| f.path.as_path()));
    let mut outcome = Outcome::default();
    let mut problems = Vec::new();
    let of = |part: Part| state.files.iter().filter(move |f| f.part == part);

    for (part, unit) in [(Part::Kubelet, KUBELET), (Part::Containerd, CONTAINERD)] {
        let mut restored = false;
        for record in of(part) {
            match restore(layout, record) {
                Ok(Restored::Yes) => {
                    restored = true;
                    outcome.files.push(record.path.clone());
                }
                Ok(Restored::Already) => {}
                Ok(Restored::Left(why)) => outcome.left.push(why),
                Err(e) => problems.push(e),
            }
        }
        if restored {
            match systemctl.restart(&[unit]) {
                Ok(()) => outcome.restarted.push(unit.to_owned()),
                Err(e) => problems.push(e),
            }
        }
    }
    let units = services(state.mode);
    let mut args = vec!["disable", "--now"];
    // (an install by a regcred before the socket unit has none)
    if state.files.iter().any(|f| is_agent_socket(&f.path)) {
        args.push(AGENT_SOCKET);
    }
    args.extend_from_slice(units);
    if let Err(e) = systemctl.run(&args) {
        problems.push(e);
    }
    for record in of(Part::Unit).chain(of(Part::Binary)) {
        match restore(layout, record) {
            Ok(Restored::Yes) => outcome.files.push(record.path.clone()),
            Ok(Restored::Already) => {}
            Ok(Restored::Left(why)) => outcome.left.push(why),
            Err(e) => problems.push(e),
        }
    }
    if let Err(e) = systemctl.run(&["daemon-reload"]) {
        problems.push(e);
    }
    if !problems.is_empty() {
        return Err(format!(
            "uninstall did not finish: {}; run it again (the state is kept)",
            problems.join("; ")
        ));
    }
    // A copy of a file left alone stays where the message says it is.
    InstallState::remove(layout, outcome.left.is_empty())?;
    remove_empty(layout, &state.created_dirs);
    Ok(outcome)
}

enum Restored {
    Yes,
    Already,
    Left(String),
}

/// Puts one file back as it was before regcred, if it still is what regcred wrote.
fn restore(layout: &Layout, record: &FileRecord) -> Result<Restored, String> {
    let target = layout.on_host(&record.path);
    let now = match sha256_of_file(&target) {
        Ok(digest) => Some(digest),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {}: {e}", target.display())),
    };
    match (&record.previous, now) {
        (Previous::Absent, None) => Ok(Restored::Already),
        (Previous::Kept { sha256: was, .. }, Some(now)) if *was == now => Ok(Restored::Already),
        (previous, Some(now)) if now == record.sha256 => {
            match previous {
                Previous::Absent => std::fs::remove_file(&target)
                    .map_err(|e| format!("removing {}: {e}", target.display()))?,
                Previous::Kept {
                    backup,
                    mode,
                    sha256: was,
                } => {
                    let kept = layout.on_host(backup);
                    let digest = sha256_of_file(&kept)
                        .map_err(|e| format!("reading the kept copy {}: {e}", kept.display()))?;
                    if digest != *was {
                        return Err(format!(
                            "the kept copy {} of {} is damaged; {} is left as regcred wrote it",
                            kept.display(),
                            record.path.display(),
                            record.path.display()
                        ));
                    }
                    write_atomic(&target, &Content::File(kept), *mode)?;
                }
            }
            Ok(Restored::Yes)
        }
        (previous, now) => Ok(Restored::Left(format!(
            "{} was {} since regcred installed it; left as it is{}",
            record.path.display(),
            if now.is_some() { "changed" } else { "removed" },
            match previous {
                Previous::Kept { backup, .. } => {
                    format!(
                        " (the file regcred replaced is kept at {})",
                        backup.display()
                    )
                }
                Previous::Absent => String::new(),
            }
        ))),
    }
}

//! The kit's registries (`scripts/cluster`): three `docker-registry` processes on loopback,
//! one with htpasswd auth, one with token auth behind the harness's token server
//! (password and refresh-token grants), one anonymous, each holding the same runnable
//! image built from busybox-static; also writes the kit's pause image as an OCI archive.
//! For the tests of cached images (who may use an image already on the node), three more
//! images, each with its own content and so its own ID: `private/cached:v1` on the
//! htpasswd registry only, `open/hello:v1` on the anonymous registry only, and one written
//! as an OCI archive (`--preloaded-archive`) to import into containerd by hand.
//!
//! Runs until SIGTERM or SIGINT, then stops the registries (their process groups) and the
//! token server. SIGHUP kills every registry and starts it again on the same address with
//! the same storage (a restarted registry logs to `registry-restart-N.log` beside its first
//! log). The credentials come from the environment, never the command line:
//! `REGCRED_KIT_USERNAME`, `REGCRED_KIT_PASSWORD`, `REGCRED_KIT_REFRESH_TOKEN`.
//!
//! Usage: `regcred-kit-registries --state FILE --pause-archive FILE --pause-name NAME
//! --image REPO:TAG --busybox PATH --preloaded-archive FILE --preloaded-name NAME`. FILE gets `NAME=value` lines once everything serves
//! (written to a temporary name, then renamed), and `ready` goes to stdout.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use regcred_tests::harness::{Registry, TestImage, TokenServer};

/// The busybox applets the images link (the shell and what the command uses).
const APPLETS: &[&str] = &["sh", "sleep", "echo", "cat", "hostname", "ls", "true"];

/// What every kit container prints, then it waits for SIGTERM (a shell as PID 1 has no
/// default SIGTERM action, hence the trap).
const HELLO: &str = "echo \"regcred-kit hello from $(hostname)\"; trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done";

/// The private image only the htpasswd registry holds.
const CACHED_IMAGE: (&str, &str) = ("private/cached", "v1");
/// The public image only the anonymous registry holds.
const OPEN_IMAGE: (&str, &str) = ("open/hello", "v1");

/// A kit container that says which image it runs, then waits as [`HELLO`] does.
fn hello_as(what: &str) -> String {
    format!(
        "echo \"regcred-kit {what} from $(hostname)\"; trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done"
    )
}

/// The pause container: nothing but waiting for SIGTERM.
const PAUSE: &str = "trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("regcred-kit-registries: {message}");
            ExitCode::FAILURE
        }
    }
}

struct Args {
    state: PathBuf,
    pause_archive: PathBuf,
    pause_name: String,
    image: String,
    busybox: PathBuf,
    preloaded_archive: PathBuf,
    preloaded_name: String,
}

fn parse_args() -> Result<Args, String> {
    let mut values = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        values.insert(flag, value);
    }
    let mut take = |flag: &str| {
        values
            .remove(flag)
            .ok_or_else(|| format!("missing {flag} (usage: see the source's header)"))
    };
    let args = Args {
        state: take("--state")?.into(),
        pause_archive: take("--pause-archive")?.into(),
        pause_name: take("--pause-name")?,
        image: take("--image")?,
        busybox: take("--busybox")?.into(),
        preloaded_archive: take("--preloaded-archive")?.into(),
        preloaded_name: take("--preloaded-name")?,
    };
    if let Some(flag) = values.keys().next() {
        return Err(format!("unknown flag {flag}"));
    }
    Ok(args)
}

fn env(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(format!("{name} must be set (and not empty)")),
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let username = env("REGCRED_KIT_USERNAME")?;
    let password = env("REGCRED_KIT_PASSWORD")?;
    let refresh_token = env("REGCRED_KIT_REFRESH_TOKEN")?;
    let (repository, tag) = args
        .image
        .rsplit_once(':')
        .ok_or_else(|| format!("--image {} is not REPO:TAG", args.image))?;
    let busybox = std::fs::read(&args.busybox).map_err(|e| {
        format!(
            "reading {} (Debian's busybox-static): {e}",
            args.busybox.display()
        )
    })?;

    let hello = busybox_image(&busybox, HELLO);
    let pause = busybox_image(&busybox, PAUSE);
    write_atomically(&args.pause_archive, &pause.oci_archive(&args.pause_name))?;
    let cached = busybox_image(&busybox, &hello_as("cached"));
    let open = busybox_image(&busybox, &hello_as("open"));
    let preloaded = busybox_image(&busybox, &hello_as("preloaded"));
    write_atomically(
        &args.preloaded_archive,
        &preloaded.oci_archive(&args.preloaded_name),
    )?;

    // One thread for everything: the registries' parent-death signal is tied to the thread
    // that spawned them, which must live as long as they do.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    let args = &args;
    runtime.block_on(async move {
        let tokens = TokenServer::builder()
            .user(&username, &password)
            .refresh_token(&refresh_token, &username)
            .start();
        let basic = Registry::start_htpasswd(&[(&username, &password)]).await;
        let token = Registry::start_with_token_auth(&tokens).await;
        let public = Registry::start_anonymous().await;
        // The kit's image on every registry; the cached-image tests' own on one each.
        let pushes = [
            (&hello, &basic, (repository, tag), "htpasswd"),
            (&hello, &token, (repository, tag), "token"),
            (&hello, &public, (repository, tag), "anonymous"),
            (&cached, &basic, CACHED_IMAGE, "htpasswd"),
            (&open, &public, OPEN_IMAGE, "anonymous"),
        ];
        for (image, registry, (repository, tag), what) in pushes {
            image
                .push(
                    &registry.url(),
                    repository,
                    tag,
                    Some((&username, &password)),
                )
                .await
                .map_err(|e| format!("pushing {repository}:{tag} to the {what} registry: {e}"))?;
        }
        let state = [
            ("BASIC_REGISTRY", basic.host()),
            ("TOKEN_REGISTRY", token.host()),
            ("PUBLIC_REGISTRY", public.host()),
            ("TOKEN_REALM", tokens.realm()),
            ("IMAGE_ID", hello.config_digest().to_owned()),
            ("IMAGE_DIGEST", hello.manifest_digest().to_owned()),
            ("BASIC_REGISTRY_LOG", path_string(basic.log_path())),
            ("TOKEN_REGISTRY_LOG", path_string(token.log_path())),
            ("PUBLIC_REGISTRY_LOG", path_string(public.log_path())),
            ("TOKEN_SERVER_LOG", path_string(tokens.log_path())),
            ("PAUSE_IMAGE_ID", pause.config_digest().to_owned()),
            (
                "CACHED_IMAGE",
                format!("{}:{}", CACHED_IMAGE.0, CACHED_IMAGE.1),
            ),
            ("CACHED_IMAGE_ID", cached.config_digest().to_owned()),
            ("OPEN_IMAGE", format!("{}:{}", OPEN_IMAGE.0, OPEN_IMAGE.1)),
            ("OPEN_IMAGE_ID", open.config_digest().to_owned()),
            ("PRELOADED_IMAGE", args.preloaded_name.clone()),
            ("PRELOADED_IMAGE_ID", preloaded.config_digest().to_owned()),
        ]
        .iter()
        .map(|(name, value)| format!("{name}={value}\n"))
        .collect::<String>();
        write_atomically(&args.state, state.as_bytes())?;
        println!("ready");
        let _ = std::io::stdout().flush();

        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("installing the SIGTERM handler: {e}"))?;
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| format!("installing the SIGHUP handler: {e}"))?;
        let (mut basic, mut token, mut public) = (basic, token, public);
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                // SIGHUP: every registry killed and started again on its address, with its
                // storage (scripts/scale-bench soak restarts them this way).
                _ = hangup.recv() => {
                    for (registry, what) in [(&mut basic, "htpasswd"), (&mut token, "token"), (&mut public, "anonymous")] {
                        match registry.restart().await {
                            Ok(()) => println!("restarted the {what} registry on {}", registry.host()),
                            Err(log) => eprintln!("the {what} registry did not start again on {}:\n{log}", registry.host()),
                        }
                        let _ = std::io::stdout().flush();
                    }
                }
            }
        }
        // Registries first (their process groups are killed on drop), then the token server.
        drop((basic, token, public));
        drop(tokens);
        Ok(())
    })
}

/// An image of busybox-static with its applet links, running `sh -c SCRIPT`.
fn busybox_image(busybox: &[u8], script: &str) -> TestImage {
    let links: Vec<(String, &str)> = APPLETS
        .iter()
        .map(|applet| (format!("/bin/{applet}"), "busybox"))
        .collect();
    let links: Vec<(&str, &str)> = links.iter().map(|(p, t)| (p.as_str(), *t)).collect();
    TestImage::runnable(
        &[
            ("/bin/busybox", busybox, 0o755),
            ("/etc/hostname", b"", 0o644),
        ],
        &links,
        &["/bin/busybox", "sh", "-c", script],
    )
}

fn path_string(path: &Path) -> String {
    path.display().to_string()
}

fn write_atomically(path: &Path, content: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

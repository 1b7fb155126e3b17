//! Tests of the pulled-image records (`records/`).

use super::*;

#[test]
fn credential_fields_debug_shows_no_secret_value() {
    let fields = CredentialFields {
        username: "robot",
        password: "CANARY-password",
        auth: "CANARY-auth",
        server_address: "https://r.example",
        identity_token: "CANARY-identity",
        registry_token: "",
    };
    let shown = format!("{fields:?} {fields:#?}");
    assert!(!shown.contains("CANARY"), "{shown}");
    assert!(
        shown.contains("robot") && shown.contains("https://r.example"),
        "{shown}"
    );
    assert!(shown.contains(r#"password: "<redacted>""#), "{shown}");
    assert!(shown.contains(r#"registry_token: """#), "{shown}");
}

fn fields(password: &'static str) -> CredentialFields<'static> {
    CredentialFields {
        username: "robot",
        password,
        auth: "",
        server_address: "127.0.0.1:5000",
        identity_token: "",
        registry_token: "",
    }
}

#[test]
fn a_pod_grant_is_its_uids_alone_survives_a_restart_and_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let records_dir = dir.path().join("records");
    {
        let records = PullRecords::open(&records_dir, Duration::from_secs(3600)).unwrap();
        records
            .grant("sha256:aa", "team/web", "uid-1", "team/pull")
            .unwrap();
        // No uid, no identity: nothing recorded.
        records.grant("sha256:aa", "team/web", "", "x").unwrap();
        assert_eq!(records.granted("sha256:aa", "team/web", ""), None);
    }
    let records = PullRecords::open(&records_dir, Duration::from_secs(3600)).unwrap();
    assert_eq!(
        records.granted("sha256:aa", "team/web", "uid-1").as_deref(),
        Some("team/pull")
    );
    // The same name with another uid (deleted and created again), another image,
    // another pod with the uid: not granted.
    assert_eq!(records.granted("sha256:aa", "team/web", "uid-2"), None);
    assert_eq!(records.granted("sha256:bb", "team/web", "uid-1"), None);
    assert_eq!(records.granted("sha256:aa", "team/db", "uid-1"), None);
    for n in 0..MAX_POD_GRANTS + 10 {
        records
            .grant("sha256:aa", &format!("team/p{n}"), &format!("u{n}"), "")
            .unwrap();
    }
    assert_eq!(
        records.lock().images["sha256:aa"].pods.len(),
        MAX_POD_GRANTS
    );
    assert_eq!(
        records.granted("sha256:aa", "team/web", "uid-1"),
        None,
        "oldest out"
    );
    assert!(records.granted("sha256:aa", "team/p265", "u265").is_some());
    // Past the lifetime a grant counts for nothing, and `retain` drops it.
    records.lock().images.get_mut("sha256:aa").unwrap().pods[0].at = 0;
    let first = records.lock().images["sha256:aa"].pods[0].clone();
    assert_eq!(records.granted("sha256:aa", &first.pod, &first.uid), None);
    let present = BTreeSet::from(["sha256:aa".to_owned()]);
    records.retain(&present).unwrap();
    assert_eq!(
        records.lock().images["sha256:aa"].pods.len(),
        MAX_POD_GRANTS - 1
    );
}

#[test]
fn a_summary_finds_an_image_by_id_or_name_and_shows_no_hash() {
    let dir = tempfile::tempdir().unwrap();
    let records = PullRecords::open(&dir.path().join("r"), Duration::from_secs(3600)).unwrap();
    let hash = records.hash(fields("CANARY-pw"));
    records
        .credentialed("sha256:aa", "r/team/app:v1", &hash, "team/pull")
        .unwrap();
    records
        .grant("sha256:aa", "team/web", "uid-1", "team/pull")
        .unwrap();
    records.flush().unwrap();
    // What `regcred explain --records-dir` reads: the file, beside the running agent.
    let inspected = PullRecords::inspect(&dir.path().join("r"), Duration::from_secs(3600)).unwrap();
    for reference in ["sha256:aa", "r/team/app:v1"] {
        let summary = inspected.summary(reference).expect(reference);
        assert_eq!(summary.id, "sha256:aa");
        assert_eq!(summary.access, "private");
        assert_eq!(summary.names, ["r/team/app:v1"]);
        assert_eq!(summary.secrets, ["team/pull"]);
        assert_eq!(
            summary.pods,
            [PodSummary {
                pod: "team/web".into(),
                uid: "uid-1".into(),
                secret: "team/pull".into()
            }]
        );
        let shown = format!("{summary:?} {}", serde_json::to_string(&summary).unwrap());
        assert!(
            !shown.contains("hmac") && !shown.contains("CANARY"),
            "{shown}"
        );
    }
    assert_eq!(inspected.summary("r/team/other:v1"), None);
    // Past the lifetime, the grants and credentials are not shown; the access stays.
    let expired = PullRecords::inspect(&dir.path().join("r"), Duration::ZERO).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let summary = expired.summary("sha256:aa").unwrap();
    assert!(
        summary.pods.is_empty() && summary.secrets.is_empty(),
        "{summary:?}"
    );
    assert_eq!(summary.access, "private");
}

#[test]
fn private_wins_over_a_later_pull_without_credentials() {
    let records = PullRecords::in_memory(Duration::from_secs(3600));
    let hash = records.hash(fields("pw"));
    records
        .credentialed("sha256:aa", "r/team/app:v1", &hash, "team/pull")
        .unwrap();
    records
        .public("sha256:aa", "mirror.example/app:v1")
        .unwrap();
    assert_eq!(records.access("sha256:aa"), ImageAccess::Private);
    assert_eq!(
        records.names("sha256:aa"),
        ["r/team/app:v1"],
        "a private image's record is not touched by a pull without credentials"
    );
    // The other order too.
    records.public("sha256:bb", "mirror.example/b:v1").unwrap();
    assert_eq!(records.access("sha256:bb"), ImageAccess::Public);
    records
        .credentialed("sha256:bb", "r/team/b:v1", &hash, "team/pull")
        .unwrap();
    assert_eq!(records.access("sha256:bb"), ImageAccess::Private);
}

#[test]
fn an_image_keeps_its_most_recent_names_only() {
    let records = PullRecords::in_memory(Duration::from_secs(3600));
    let hash = records.hash(fields("pw"));
    for i in 0..100 {
        records
            .credentialed("sha256:aa", &format!("r/app:tag-{i}"), &hash, "team/pull")
            .unwrap();
    }
    records
        .credentialed("sha256:aa", "r/app:tag-90", &hash, "team/pull")
        .unwrap();
    let names = records.names("sha256:aa");
    assert_eq!(names.len(), MAX_NAMES, "{names:?}");
    assert_eq!(names[0], "r/app:tag-90", "most recent first: {names:?}");
    assert_eq!(names[1], "r/app:tag-99", "{names:?}");
    assert!(!names.contains(&"r/app:tag-83".to_owned()), "{names:?}");
    assert_eq!(records.access("sha256:aa"), ImageAccess::Private);
}

#[test]
fn a_directory_with_other_files_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubelet"), b"not ours").unwrap();
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        || std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777
    };
    let err = PullRecords::open(dir.path(), Duration::from_secs(1)).unwrap_err();
    assert!(
        matches!(&err, RecordsError::NotOurs { entry, .. } if entry == "kubelet"),
        "{err}"
    );
    assert!(
        err.to_string().contains("not a regcred records directory"),
        "{err}"
    );
    #[cfg(unix)]
    assert_eq!(mode(), 0o755, "the directory's mode is left alone");
    assert!(!dir.path().join(RECORDS_FILE).exists());

    // Missing (with missing parents) or empty: made regcred's own, mode 0700.
    let fresh = dir.path().join("a/b/records");
    PullRecords::open(&fresh, Duration::from_secs(1)).unwrap();
    let empty_parent = tempfile::tempdir().unwrap();
    let empty = empty_parent.path().join("records");
    std::fs::create_dir(&empty).unwrap();
    PullRecords::open(&empty, Duration::from_secs(1)).unwrap();
    #[cfg(unix)]
    for d in [fresh.as_path(), empty.as_path()] {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(d).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}

/// Issue 23, finding 5: "preloaded" is the set of images present at the first
/// start, noted once; an image that came later without a record, or whose record
/// was lost with the file, is not preloaded.
#[test]
fn preloaded_is_the_first_listing_and_lost_records_are_not_preloaded() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("records");
    let ttl = Duration::from_secs(3600);
    let records = PullRecords::open(&dir, ttl).unwrap();
    assert!(!records.preloaded_known());
    // Before the listing nothing counts as preloaded.
    assert_eq!(records.access("sha256:aa"), ImageAccess::Unrecorded);
    let hash = records.hash(fields("pw"));
    records
        .credentialed("sha256:priv", "r/team/app:v1", &hash, "team/pull")
        .unwrap();
    let present: BTreeSet<String> = ["sha256:aa", "sha256:bb", "sha256:priv"]
        .map(String::from)
        .into();
    assert!(records.note_preloaded(&present).unwrap());
    assert_eq!(records.access("sha256:aa"), ImageAccess::Preloaded);
    assert_eq!(records.access("sha256:priv"), ImageAccess::Private);
    assert_eq!(records.preloaded_len(), 2);
    // Noted once: a later listing changes nothing.
    assert!(
        !records
            .note_preloaded(&["sha256:cc".to_owned()].into())
            .unwrap()
    );
    assert_eq!(records.access("sha256:cc"), ImageAccess::Unrecorded);
    // Removed, then pulled again by another way: no longer preloaded.
    records.remove("sha256:bb").unwrap();
    assert_eq!(records.access("sha256:bb"), ImageAccess::Unrecorded);
    drop(records);

    let reopened = PullRecords::open(&dir, ttl).unwrap();
    assert_eq!(reopened.access("sha256:aa"), ImageAccess::Preloaded);
    drop(reopened);

    // The file moved away (or lost), the key kept: not a first start, nothing is
    // preloaded any more, and the next listing does not make it so.
    std::fs::rename(dir.join(RECORDS_FILE), parent.path().join("moved.json")).unwrap();
    let lost = PullRecords::open(&dir, ttl).unwrap();
    assert!(lost.preloaded_known());
    assert!(!lost.note_preloaded(&present).unwrap());
    assert_eq!(lost.access("sha256:aa"), ImageAccess::Unrecorded);
    assert_eq!(lost.access("sha256:priv"), ImageAccess::Unrecorded);
    drop(lost);

    // Both gone (a node wiped on purpose): a first start again.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(default_key_file(&dir)).unwrap();
    let fresh = PullRecords::open(&dir, ttl).unwrap();
    assert!(!fresh.preloaded_known());
}

/// A pull answered with another reference than the ID keeps it as an alias: the
/// record is found, granted, pruned and removed by either.
#[test]
fn an_alias_finds_its_images_record() {
    let records = PullRecords::in_memory(Duration::from_secs(3600));
    let hash = records.hash(fields("pw"));
    let key = ImageKey {
        id: "sha256:id",
        alias: Some("r/team/app@sha256:digest"),
    };
    records
        .credentialed(key, "r/team/app:v1", &hash, "team/pull")
        .unwrap();
    assert_eq!(
        records.access("r/team/app@sha256:digest"),
        ImageAccess::Private
    );
    assert_eq!(
        records.remembered("r/team/app@sha256:digest", std::slice::from_ref(&hash)),
        Some(0)
    );
    records
        .grant("r/team/app@sha256:digest", "team/web", "uid-1", "team/pull")
        .unwrap();
    assert_eq!(records.len(), 1, "the grant went to the ID's record");
    assert!(records.granted("sha256:id", "team/web", "uid-1").is_some());
    assert_eq!(records.retain(&["sha256:id".to_owned()].into()).unwrap(), 0);
    assert!(records.remove("r/team/app@sha256:digest").unwrap());
    assert!(records.is_empty());
}

/// Changes are written by the writer thread; a failed write is remembered (and each
/// later change says so) until a write succeeds.
#[test]
fn a_failed_write_is_remembered_until_one_succeeds() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("records");
    let records = PullRecords::open(&dir, Duration::from_secs(3600)).unwrap();
    let file = dir.join(RECORDS_FILE);
    let hash = records.hash(fields("pw"));
    // Written in the background, soon.
    records
        .credentialed("sha256:aa", "r/app:v1", &hash, "team/pull")
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&file)
        .unwrap()
        .contains("sha256:aa")
    {
        assert!(std::time::Instant::now() < deadline, "never written");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A directory where the file goes: every rename onto it fails, root or not.
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    std::fs::write(file.join("in-the-way"), "").unwrap();
    records.public("sha256:bb", "r/open:v1").unwrap();
    assert!(records.flush().is_err());
    assert!(records.unwritten());
    let err = records.public("sha256:cc", "r/open:v1").unwrap_err();
    assert!(
        matches!(err, RecordsError::Unwritten { .. }) && err.to_string().contains("kept in memory"),
        "{err}"
    );
    assert_eq!(
        records.access("sha256:aa"),
        ImageAccess::Private,
        "kept in memory"
    );
    std::fs::remove_dir_all(&file).unwrap();
    records.flush().unwrap();
    assert!(!records.unwritten());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("sha256:cc"), "{text}");
    // A change made just before the records go is written by their drop.
    records.public("sha256:dd", "r/open:v1").unwrap();
    drop(records);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("sha256:dd")
    );
}

#[test]
fn records_survive_a_reopen_and_hold_no_secret() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("records");
    let records = PullRecords::open(&dir, Duration::from_secs(3600)).unwrap();
    let hash = records.hash(fields("CANARY-pw"));
    assert!(
        hash.starts_with("hmac-sha256:") && hash.len() == 76,
        "{hash}"
    );
    assert_ne!(hash, records.hash(fields("other")));
    records
        .credentialed("sha256:aa", "r/team/app:v1", &hash, "team/pull")
        .unwrap();
    records.public("sha256:bb", "r/public:v1").unwrap();
    records.flush().unwrap();
    // Another opener is refused while these records live; a look is not.
    assert!(matches!(
        PullRecords::open(&dir, Duration::from_secs(3600)),
        Err(RecordsError::Locked { .. })
    ));
    let looked = PullRecords::inspect(&dir, Duration::from_secs(3600)).unwrap();
    assert_eq!(looked.access("sha256:aa"), ImageAccess::Private);
    drop(records);

    let reopened = PullRecords::open(&dir, Duration::from_secs(3600)).unwrap();
    assert_eq!(reopened.access("sha256:aa"), ImageAccess::Private);
    assert_eq!(reopened.access("sha256:bb"), ImageAccess::Public);
    assert_eq!(reopened.access("sha256:cc"), ImageAccess::Unrecorded);
    assert_eq!(
        reopened.remembered(
            "sha256:aa",
            &[
                reopened.hash(fields("other")),
                reopened.hash(fields("CANARY-pw"))
            ]
        ),
        Some(1)
    );
    assert_eq!(
        reopened.remembered("sha256:aa", &[reopened.hash(fields("other"))]),
        None
    );
    let text = std::fs::read_to_string(dir.join(RECORDS_FILE)).unwrap();
    assert!(!text.contains("CANARY"), "{text}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn the_key_is_kept_apart_and_a_version_1_file_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let records_dir = dir.path().join("cri-proxy");
    let key_file = default_key_file(&records_dir);
    assert_eq!(key_file, dir.path().join("cri-proxy.key"));
    let hash = {
        let records = PullRecords::open(&records_dir, Duration::from_secs(3600)).unwrap();
        let hash = records.hash(fields("CANARY-pw"));
        assert!(hash.starts_with("hmac-sha256:"), "{hash}");
        records
            .credentialed("sha256:aa", "r/a:v1", &hash, "t/s")
            .unwrap();
        let shown = format!("{records:?}");
        assert!(shown.contains("HashKey(<redacted>)"), "{shown}");
        hash
    };
    let key = std::fs::read(&key_file).unwrap();
    assert_eq!(key.len(), KEY_BYTES);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(records_dir.join(RECORDS_FILE)).unwrap();
    assert!(
        !text.contains("salt") && !text.contains(&hex(&key)),
        "{text}"
    );
    // The same key next time: the hash is remembered.
    let records = PullRecords::open(&records_dir, Duration::from_secs(3600)).unwrap();
    assert_eq!(records.hash(fields("CANARY-pw")), hash);
    assert!(
        records
            .remembered("sha256:aa", std::slice::from_ref(&hash))
            .is_some()
    );
    drop(records);
    // Another key (the key file lost): nothing is remembered, the image stays private.
    let elsewhere = dir.path().join("other.key");
    let records =
        PullRecords::open_with_key(&records_dir, &elsewhere, Duration::from_secs(3600)).unwrap();
    assert_ne!(records.hash(fields("CANARY-pw")), hash);
    assert_eq!(records.access("sha256:aa"), ImageAccess::Private);
    drop(records);
    // A key file of the wrong length is an error naming it.
    std::fs::write(&elsewhere, b"short").unwrap();
    let err = PullRecords::open_with_key(&records_dir, &elsewhere, Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("other.key") && err.contains("32 bytes"),
        "{err}"
    );

    // Version 1 (salted hashes in the file): read, hashes and grants dropped, private
    // images stay private.
    let v1 = format!(
        r#"{{"version": 1, "salt": "{}", "images": {{"sha256:bb": {{"names": ["r/b:v1"],
            "privateSince": 1, "credentials": [{{"hash": "sha256:00", "secret": "t/s", "at": 1}}],
            "pods": [{{"pod": "t/p", "uid": "u", "secret": "t/s", "at": 1}}]}}}}}}"#,
        "ab".repeat(32)
    );
    std::fs::write(records_dir.join(RECORDS_FILE), v1).unwrap();
    let records = PullRecords::open(&records_dir, Duration::from_secs(3600)).unwrap();
    assert_eq!(records.access("sha256:bb"), ImageAccess::Private);
    assert_eq!(records.names("sha256:bb"), ["r/b:v1"]);
    assert!(records.lock().images["sha256:bb"].credentials.is_empty());
    assert_eq!(records.granted("sha256:bb", "t/p", "u"), None);
}

#[test]
fn each_node_salts_its_hashes() {
    let (a, b) = (
        PullRecords::in_memory(Duration::from_secs(1)),
        PullRecords::in_memory(Duration::from_secs(1)),
    );
    assert_ne!(a.hash(fields("pw")), b.hash(fields("pw")));
}

#[test]
fn expired_credentials_do_not_count_but_the_image_stays_private() {
    let records = PullRecords::in_memory(Duration::ZERO);
    let hash = records.hash(fields("pw"));
    records
        .credentialed("sha256:aa", "r/a:v1", &hash, "t/s")
        .unwrap();
    // Records of this second are still fresh with a zero lifetime; age one by hand.
    records
        .lock()
        .images
        .get_mut("sha256:aa")
        .unwrap()
        .credentials[0]
        .at -= 5;
    assert_eq!(records.remembered("sha256:aa", &[hash]), None);
    assert_eq!(records.access("sha256:aa"), ImageAccess::Private);
    records
        .lock()
        .images
        .get_mut("sha256:aa")
        .unwrap()
        .public_at = Some(now() - 5);
    assert_eq!(records.access("sha256:aa"), ImageAccess::Private);
}

#[test]
fn removed_and_absent_images_are_forgotten() {
    let records = PullRecords::in_memory(Duration::from_secs(60));
    let hash = records.hash(fields("pw"));
    for id in ["sha256:aa", "sha256:bb", "sha256:cc"] {
        records.credentialed(id, "r/a:v1", &hash, "t/s").unwrap();
    }
    assert!(records.remove("sha256:aa").unwrap());
    assert!(!records.remove("sha256:aa").unwrap());
    let present = BTreeSet::from(["sha256:bb".to_owned()]);
    assert_eq!(records.retain(&present).unwrap(), 1);
    assert_eq!(records.len(), 1);
    assert_eq!(records.access("sha256:cc"), ImageAccess::Unrecorded);
}

#[test]
fn a_damaged_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(RECORDS_FILE), b"{\"version\": 1,").unwrap();
    let err = PullRecords::open(dir.path(), Duration::from_secs(1)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(RECORDS_FILE) && text.contains("move the file away"),
        "{text}"
    );
}

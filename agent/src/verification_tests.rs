//! Tests of `verification.rs` (its `tests` module, in a file of its own).

use super::*;

#[test]
fn policies_have_kubelets_names() {
    for policy in [
        VerificationPolicy::NeverVerify,
        VerificationPolicy::NeverVerifyPreloadedImages,
        VerificationPolicy::NeverVerifyAllowlistedImages,
        VerificationPolicy::AlwaysVerify,
    ] {
        assert_eq!(policy.as_str().parse::<VerificationPolicy>(), Ok(policy));
    }
    let err = "alwaysverify".parse::<VerificationPolicy>().unwrap_err();
    assert!(err.contains("AlwaysVerify"), "{err}");
    assert_eq!(
        VerificationPolicy::default(),
        VerificationPolicy::NeverVerifyPreloadedImages
    );
}

#[test]
fn allowlist_matches_names_and_paths_without_tags() {
    let records = Arc::new(PullRecords::in_memory(std::time::Duration::from_secs(1)));
    let v = ImageVerification::new(VerificationPolicy::NeverVerifyAllowlistedImages, records)
        .allowlist(vec![
            "registry.k8s.io/pause".into(),
            "127.0.0.1:5000/team/*".into(),
            "busybox".into(),
            // A registry alone, and Docker Hub's users.
            "registry.example.com/*".into(),
            "localhost:5001/*".into(),
            "tools/*".into(),
        ])
        .unwrap();
    for yes in [
        "registry.k8s.io/pause:3.10",
        "127.0.0.1:5000/team/app:v1",
        "127.0.0.1:5000/team/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "busybox:1.36",
        "docker.io/library/busybox",
        // Docker Hub's other spellings, by the policy's ImageRef.
        "index.docker.io/library/busybox:1.36",
        "registry-1.docker.io/library/busybox",
        "registry.example.com/app:v1",
        "Registry.Example.com/team/app",
        "localhost:5001/app",
        "tools/kubectl:1.37",
        "docker.io/tools/kubectl",
    ] {
        assert!(v.allowlisted(yes), "{yes}");
    }
    for no in [
        "registry.k8s.io/pause2",
        "127.0.0.1:5000/team",
        "127.0.0.1:5000/teams/x",
        "other/busybox",
        "not an image",
        "registry.example.co/app",
        "localhost:5000/app",
        "toolsx/kubectl",
    ] {
        assert!(!v.allowlisted(no), "{no}");
    }
    let records = Arc::new(PullRecords::in_memory(std::time::Duration::from_secs(1)));
    for bad in ["r.io/a:v1", "r.io/*/x", "r.io/a@sha256:00", "/*"] {
        let err = ImageVerification::new(VerificationPolicy::AlwaysVerify, Arc::clone(&records))
            .allowlist(vec![bad.into()])
            .unwrap_err();
        assert!(err.contains(bad), "{err}");
    }
}

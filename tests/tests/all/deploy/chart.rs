//! The chart's objects in every mode, and the webhook's certificate modes and values.

use super::*;

#[test]
fn every_rendered_object_parses_into_its_api_type() {
    for variant in VARIANTS {
        let objects = render(variant);
        parse(&objects);
        for object in &objects {
            let name = &object["metadata"]["name"];
            // Selectors: the name label only, as before the chart, so that no upgrade
            // changes an immutable selector.
            let selector = match object["kind"].as_str().unwrap() {
                "Deployment" | "DaemonSet" | "PodDisruptionBudget" => {
                    &object["spec"]["selector"]["matchLabels"]
                }
                "Service" => &object["spec"]["selector"],
                _ => continue,
            };
            assert_eq!(
                *selector,
                json!({ "app.kubernetes.io/name": name }),
                "{variant:?}: {} {name}",
                object["kind"]
            );
            // Pod templates carry none of the chart's version labels: a new chart version
            // alone does not roll the pods.
            let pod_labels = &object["spec"]["template"]["metadata"]["labels"];
            if let Some(pod_labels) = pod_labels.as_object() {
                let keys: BTreeSet<&str> = pod_labels.keys().map(String::as_str).collect();
                assert_eq!(
                    keys,
                    BTreeSet::from(["app.kubernetes.io/name", "app.kubernetes.io/component"]),
                    "{variant:?}: {} {name}",
                    object["kind"]
                );
            }
        }
    }

    let objects = render(CERT_MANAGER);
    assert!(
        objects.iter().all(|o| o["kind"] != "Namespace"),
        "the release namespace is helm's (--create-namespace), not the chart's"
    );
    let rendered = parse(&objects);
    let named = |names: Vec<Option<String>>| {
        names
            .into_iter()
            .flatten()
            .any(|n| n.starts_with("regcred-webhook"))
    };
    for names in [
        names(&rendered.service_accounts),
        names(&rendered.config_maps),
        names(&rendered.services),
        names(&rendered.deployments),
        names(&rendered.budgets),
        names(&rendered.webhooks),
    ] {
        assert!(named(names));
    }
    assert_eq!(
        rendered.cert_manager.len(),
        4,
        "{:?}",
        rendered.cert_manager.keys()
    );
}

/// `helm lint --strict` has nothing to say in any variant: no warning, no error (an INFO,
/// such as "icon is recommended", is not a finding).
#[test]
fn the_chart_lints_clean() {
    for variant in VARIANTS {
        let output = Command::new(helm())
            .args(["lint", "--strict", "--kube-version", &kube_version()])
            .arg(root().join("deploy/chart"))
            .args(sets(variant))
            .output()
            .expect("helm runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && !said.contains("[WARNING]") && !said.contains("[ERROR]"),
            "helm lint --set {variant:?}:\n{said}"
        );
    }
}

/// `helm install` with the defaults needs no CRDs: the serving certificate is the
/// webhook's own (mode selfManaged), cert-manager's objects come with mode certManager
/// only. Mode certManager is mode secret plus its four objects and the inject-ca-from
/// annotation, less the caBundle (cainjector's to write): the same Deployment, mounting
/// the same Secret.
#[test]
fn the_default_needs_no_crds() {
    let default = render(&[]);
    for object in &default {
        let api_version = object["apiVersion"].as_str().unwrap();
        assert!(
            ["v1", "apps/v1", "policy/v1"].contains(&api_version)
                || api_version.contains(".k8s.io/"),
            "the default renders {api_version} {}",
            object["metadata"]["name"]
        );
    }
    let with_cert_manager = render(CERT_MANAGER);
    let mut without: Vec<Value> = with_cert_manager
        .iter()
        .filter(|o| {
            !o["apiVersion"]
                .as_str()
                .unwrap()
                .starts_with("cert-manager.io/")
        })
        .cloned()
        .collect();
    assert_eq!(with_cert_manager.len() - without.len(), 4);
    for object in &mut without {
        if object["kind"] == "ValidatingWebhookConfiguration" {
            let metadata = object["metadata"].as_object_mut().unwrap();
            let annotations = metadata.remove("annotations").unwrap();
            assert_eq!(
                annotations,
                json!({ "cert-manager.io/inject-ca-from": format!("{NAMESPACE}/regcred-webhook") })
            );
            // "CA" in base64.
            object["webhooks"][0]["clientConfig"]["caBundle"] = json!("Q0E=");
        }
    }
    let secret = render(&[
        "webhook.certificate.mode=secret",
        "webhook.certificate.caBundle=CA",
    ]);
    assert_eq!(secret, without);
}

/// The default certificate mode, selfManaged: the webhook makes its CA and serving
/// certificate in a Secret, renews them, and writes the configuration's caBundle itself.
/// So: no TLS volume, the four flags that say which Secret, names and configuration, no
/// caBundle in the manifest (helm's upgrades then leave the webhook's alone), the Secret
/// made empty (the release's, so `helm uninstall` removes it), the token mounted, and RBAC
/// for exactly that: create Secrets; get, update and patch the one Secret; get and patch
/// the one ValidatingWebhookConfiguration. In the other modes the webhook has no token,
/// no role and no Secret of the chart's.
#[test]
fn the_default_webhook_manages_its_own_certificate() {
    let objects = render(&[]);
    let rendered = parse(&objects);
    let deployment = webhook_deployment(&rendered);
    let pod = pod_spec(deployment);
    assert_eq!(pod.automount_service_account_token, Some(true));
    let account = rendered
        .service_accounts
        .iter()
        .find(|a| a.metadata.name.as_deref() == pod.service_account_name.as_deref())
        .expect("the webhook's ServiceAccount");
    assert_eq!(
        account.automount_service_account_token,
        Some(false),
        "only the webhook's pods mount the token"
    );
    let volumes = pod.volumes.as_ref().unwrap();
    assert!(
        volumes.iter().all(|v| v.secret.is_none()),
        "no Secret volume: {volumes:?}"
    );
    assert_eq!(
        volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["policy"]
    );

    let container = webhook_container(deployment);
    assert_eq!(flag(container, "tls-cert"), None);
    assert_eq!(flag(container, "tls-key"), None);
    let certificate_flags: Vec<&str> = container
        .args
        .as_ref()
        .unwrap()
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("--tls-") || a.starts_with("--webhook-configuration"))
        .collect();
    assert_eq!(
        certificate_flags,
        [
            "--tls-secret=regcred-system/regcred-webhook-tls",
            "--tls-dns-name=regcred-webhook.regcred-system.svc",
            "--tls-dns-name=regcred-webhook.regcred-system.svc.cluster.local",
            "--webhook-configuration=regcred-webhook",
        ]
    );
    // The names are those of the Service the configuration calls and of the configuration.
    let configuration = webhook_configuration(&rendered);
    let webhook = &configuration.webhooks.as_ref().unwrap()[0];
    let service = webhook.client_config.service.as_ref().unwrap();
    assert_eq!(
        flag(container, "tls-dns-name"),
        Some(format!("{}.{}.svc", service.name, service.namespace).as_str())
    );
    assert_eq!(
        flag(container, "webhook-configuration"),
        configuration.metadata.name.as_deref()
    );
    assert_eq!(configuration.metadata.annotations, None);
    let raw = find(
        &objects,
        "ValidatingWebhookConfiguration",
        "regcred-webhook",
    )
    .unwrap();
    assert!(
        raw["webhooks"][0]["clientConfig"].get("caBundle").is_none(),
        "the manifest sets no caBundle: {}",
        raw["webhooks"][0]["clientConfig"]
    );

    // The Secret is the release's, empty: the webhook writes its data, and `helm
    // uninstall` removes it.
    assert_eq!(rendered.secrets.len(), 1);
    let secret = &rendered.secrets[0];
    assert_eq!(secret.metadata.name.as_deref(), Some("regcred-webhook-tls"));
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert!(secret.data.is_none() && secret.string_data.is_none());

    assert_eq!(
        grants_to(&objects, "regcred-webhook"),
        BTreeSet::from(
            [
                "regcred-system: create secrets",
                "regcred-system: get secrets/regcred-webhook-tls",
                "regcred-system: update secrets/regcred-webhook-tls",
                "regcred-system: patch secrets/regcred-webhook-tls",
                "cluster: get admissionregistration.k8s.io/validatingwebhookconfigurations/regcred-webhook",
                "cluster: patch admissionregistration.k8s.io/validatingwebhookconfigurations/regcred-webhook",
            ]
            .map(String::from)
        )
    );

    for values in [
        CERT_MANAGER,
        &[
            "webhook.certificate.mode=secret",
            "webhook.certificate.caBundle=CA",
        ][..],
    ] {
        let objects = render(values);
        assert_eq!(
            grants_to(&objects, "regcred-webhook"),
            BTreeSet::new(),
            "{values:?}"
        );
        let rendered = parse(&objects);
        assert!(
            rendered.secrets.is_empty(),
            "{values:?}: the Secret is not the chart's"
        );
        let container = webhook_container(webhook_deployment(&rendered));
        assert_eq!(flag(container, "tls-secret"), None, "{values:?}");
        assert_eq!(flag(container, "webhook-configuration"), None, "{values:?}");
    }
}

/// Mode secret: the operator's Secret and CA. Without webhook.certificate.caBundle the
/// chart does not render (the API server could not trust the webhook); with it, the PEM
/// given is the configuration's caBundle and the Secret is mounted where the flags point.
#[test]
fn the_secret_mode_needs_its_ca_bundle() {
    let error = helm_template(&sets(&["webhook.certificate.mode=secret"]))
        .expect_err("mode secret without a caBundle must not render");
    assert!(
        error.contains(
            "webhook.certificate.caBundle is required with webhook.certificate.mode=secret"
        ),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----\n";
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, pem).unwrap();
    let mut args = sets(&["webhook.certificate.mode=secret"]);
    args.extend([
        "--set-file".to_owned(),
        format!("webhook.certificate.caBundle={}", ca.display()),
    ]);
    let rendered = parse(&helm_template(&args).unwrap());
    let webhook = &webhook_configuration(&rendered).webhooks.as_ref().unwrap()[0];
    assert_eq!(
        webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice()),
        Some(pem.as_bytes())
    );
    let deployment = webhook_deployment(&rendered);
    let container = webhook_container(deployment);
    assert_eq!(
        flag(container, "tls-cert"),
        Some("/etc/regcred/tls/tls.crt")
    );
    let pod = pod_spec(deployment);
    assert_eq!(pod.automount_service_account_token, Some(false));
    let secret = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find_map(|v| v.secret.as_ref())
        .expect("the Secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("regcred-webhook-tls"));
}

/// webhook.checkDockerSecrets: the API server sends the Docker config Secrets too, and the
/// webhook checks them (--check-docker-secrets); by default neither.
#[test]
fn check_docker_secrets_widens_the_match_condition() {
    for (values, types, checks) in [
        (&[][..], &["'kubernetes.io/regcredentials'"][..], false),
        (
            &["webhook.checkDockerSecrets=true"][..],
            &[
                "'kubernetes.io/regcredentials'",
                "'kubernetes.io/dockerconfigjson'",
                "'kubernetes.io/dockercfg'",
            ][..],
            true,
        ),
    ] {
        let rendered = parse(&render(values));
        let webhook = &webhook_configuration(&rendered).webhooks.as_ref().unwrap()[0];
        let conditions = webhook.match_conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            conditions[0].expression,
            format!("has(object.type) && object.type in [{}]", types.join(", ")),
            "{values:?}"
        );
        let container = webhook_container(webhook_deployment(&rendered));
        assert_eq!(
            container
                .args
                .as_ref()
                .unwrap()
                .iter()
                .any(|a| a == "--check-docker-secrets"),
            checks,
            "{values:?}"
        );
    }
}

/// webhook.extraArgs: more `regcred webhook` flags, after the chart's own.
#[test]
fn extra_args_follow_the_charts_own() {
    let rendered = parse(&render(&[
        "webhook.extraArgs[0]=--max-connections=128",
        "webhook.extraArgs[1]=--idle-timeout=30",
    ]));
    let args = webhook_container(webhook_deployment(&rendered))
        .args
        .clone()
        .unwrap();
    assert_eq!(
        args[args.len() - 3..],
        [
            "--log-level=info",
            "--max-connections=128",
            "--idle-timeout=30"
        ]
    );
}

/// webhook.policy is the ConfigMap's policy-config.yaml (valid against
/// schemas/policy-config.schema.json), and the pods' checksum/policy annotation is the
/// sha256 of exactly that file: a policy change rolls the pods.
#[test]
fn a_policy_value_lands_in_the_config_map_and_rolls_the_pods() {
    let schema = std::fs::read_to_string(root().join("schemas/policy-config.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&serde_json::from_str(&schema).unwrap()).unwrap();
    let policy_of = |values: &[&str]| {
        let rendered = parse(&render(values));
        let map = rendered
            .config_maps
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some("regcred-webhook-policy"))
            .expect("the ConfigMap regcred-webhook-policy");
        let file = map.data.as_ref().unwrap()["policy-config.yaml"].clone();
        let deployment = webhook_deployment(&rendered);
        let annotations = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap();
        let checksum = annotations["checksum/policy"].clone();
        let digest = regcred_tests::harness::sha256_digest(file.as_bytes());
        assert_eq!(
            Some(checksum.as_str()),
            digest.strip_prefix("sha256:"),
            "{values:?}: checksum/policy is the file's sha256"
        );
        let policy: Value = serde_yaml::from_str(&file).unwrap();
        assert!(validator.is_valid(&policy), "{values:?}: {file}");
        (policy, checksum)
    };
    let (default, default_checksum) = policy_of(&[]);
    assert_eq!(default, json!({}));
    let (policy, checksum) = policy_of(&[
        "webhook.policy.allowedRegistries[0]=registry.example.com",
        "webhook.policy.allowedRegistries[1]=*.corp.example",
        "webhook.policy.maxValueBytes=16384",
    ]);
    assert_eq!(
        policy,
        json!({
            "allowedRegistries": ["registry.example.com", "*.corp.example"],
            "maxValueBytes": 16384
        })
    );
    assert_ne!(checksum, default_checksum);
}

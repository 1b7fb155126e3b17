//! The webhook's Deployment, Service, configuration, ServiceMonitor and NetworkPolicy agreeing and locked down.

use super::*;

/// metrics.serviceMonitor: a ServiceMonitor of the webhook Service's metrics port, with
/// the interval and extra labels given.
#[test]
fn the_service_monitor_scrapes_the_webhook_metrics_port() {
    assert!(parse(&render(&[])).service_monitors.is_empty());
    let rendered = parse(&render(&[
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.interval=15s",
        "metrics.serviceMonitor.labels.release=prometheus",
    ]));
    assert_eq!(rendered.service_monitors.len(), 1);
    let monitor = &rendered.service_monitors[0];
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let service = rendered
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("regcred-webhook"))
        .unwrap();
    let service_labels = service.metadata.labels.as_ref().unwrap();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            service_labels.get(key).map(String::as_str),
            value.as_str(),
            "{key}"
        );
    }
    let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["interval"], "15s");
    assert_eq!(endpoints[0]["path"], "/metrics");
    let port = endpoints[0]["port"].as_str().unwrap();
    assert!(
        service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p.name.as_deref() == Some(port) && p.port == 9090),
        "the Service's port {port} is metrics (9090)"
    );
}

#[test]
fn the_webhook_configuration_service_and_deployment_agree() {
    let rendered = parse_all();
    let namespace = NAMESPACE;
    let configuration = webhook_configuration(&rendered);
    let webhooks = configuration.webhooks.as_ref().unwrap();
    assert_eq!(webhooks.len(), 1);
    let webhook = &webhooks[0];

    // What the API server is told.
    assert_eq!(webhook.admission_review_versions, ["v1"]);
    assert_eq!(webhook.side_effects, "None");
    assert!(matches!(
        webhook.failure_policy.as_deref(),
        Some("Fail" | "Ignore")
    ));
    let timeout = webhook.timeout_seconds.expect("timeoutSeconds is set");
    assert!((1..=30).contains(&timeout), "timeoutSeconds {timeout}");
    let rules = webhook.rules.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(rule.api_versions.as_deref(), Some(&["v1".to_string()][..]));
    assert_eq!(
        rule.resources.as_deref(),
        Some(&["secrets".to_string()][..])
    );
    let mut operations = rule.operations.clone().unwrap();
    operations.sort();
    assert_eq!(operations, ["CREATE", "UPDATE"]);
    let conditions = webhook.match_conditions.as_ref().expect("matchConditions");
    assert!(
        conditions
            .iter()
            .any(|c| c.expression.contains("object.type")
                && c.expression.contains("'kubernetes.io/regcredentials'")),
        "{conditions:?}"
    );

    // The Service it calls.
    let target = webhook
        .client_config
        .service
        .as_ref()
        .expect("a service reference");
    assert_eq!(target.namespace, namespace);
    assert_eq!(target.path.as_deref(), Some("/validate"));
    let service = rendered
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(target.name.as_str()))
        .unwrap_or_else(|| panic!("no Service {}", target.name));
    assert_eq!(service.metadata.namespace.as_deref(), Some(namespace));
    let service_spec = service.spec.as_ref().unwrap();
    let port = service_spec
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.port == target.port.unwrap_or(443))
        .expect("the Service has the port the webhook configuration names");

    // The Deployment behind it.
    let deployment = webhook_deployment(&rendered);
    assert_eq!(deployment.metadata.namespace.as_deref(), Some(namespace));
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let selector = service_spec.selector.as_ref().unwrap();
    assert!(!selector.is_empty());
    for (key, value) in selector {
        assert_eq!(
            pod_labels.get(key),
            Some(value),
            "Service selector {key}={value}"
        );
    }
    for (key, value) in spec.selector.match_labels.as_ref().unwrap() {
        assert_eq!(
            pod_labels.get(key),
            Some(value),
            "Deployment selector {key}={value}"
        );
    }
    let container = webhook_container(deployment);
    let https_port = container_port(
        container,
        port.target_port
            .as_ref()
            .expect("the Service names a target port"),
    );
    let addr = flag(container, "addr").expect("--addr");
    assert!(
        addr.ends_with(&format!(":{https_port}")),
        "--addr={addr} vs port {https_port}"
    );

    // Probes: the paths the server answers, over plain HTTP, on --probe-addr's port,
    // which is not the reviews' port (issue 23, finding 6).
    let probe_addr = flag(container, "probe-addr").expect("--probe-addr");
    for (probe, path) in [
        (container.readiness_probe.as_ref(), "/readyz"),
        (container.liveness_probe.as_ref(), "/healthz"),
    ] {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .expect("an httpGet probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.scheme.as_deref().unwrap_or("HTTP"), "HTTP");
        let port = container_port(container, &get.port);
        assert_ne!(port, https_port, "probes share the reviews' port");
        assert!(
            probe_addr.ends_with(&format!(":{port}")),
            "--probe-addr={probe_addr} vs port {port}"
        );
    }

    // Metrics: the flag, the container port and the Service port agree.
    let metrics_addr = flag(container, "metrics-addr").expect("--metrics-addr");
    let metrics_port = container_port(container, &IntOrString::String("metrics".into()));
    assert!(metrics_addr.ends_with(&format!(":{metrics_port}")));

    // The policy configuration is mounted where --policy-config points.
    let policy_config = flag(container, "policy-config").expect("--policy-config");
    let pod = spec.template.spec.as_ref().unwrap();
    let mounts = container.volume_mounts.as_ref().unwrap();
    let mount_of = |file: &str| {
        mounts
            .iter()
            .find(|m| file.starts_with(&format!("{}/", m.mount_path)))
            .unwrap_or_else(|| panic!("nothing is mounted at {file}"))
    };
    let policy_volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount_of(policy_config).name)
        .unwrap();
    let config_map = policy_volume
        .config_map
        .as_ref()
        .expect("a ConfigMap volume");
    let rendered_map = rendered
        .config_maps
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some(config_map.name.as_str()))
        .expect("the mounted ConfigMap is rendered");
    let file = Path::new(policy_config)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(rendered_map.data.as_ref().unwrap().contains_key(file));

    // The serving certificate: the Secret cert-manager writes is the one mounted where
    // --tls-cert and --tls-key point, for the Service's DNS name, and its CA is injected.
    let tls_cert = flag(container, "tls-cert").expect("--tls-cert");
    let tls_key = flag(container, "tls-key").expect("--tls-key");
    assert_eq!(mount_of(tls_cert).name, mount_of(tls_key).name);
    assert!(tls_cert.ends_with("/tls.crt") && tls_key.ends_with("/tls.key"));
    let tls_volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount_of(tls_cert).name)
        .unwrap();
    let tls_secret = tls_volume
        .secret
        .as_ref()
        .unwrap()
        .secret_name
        .clone()
        .unwrap();
    let inject = configuration
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("cert-manager.io/inject-ca-from"))
        .expect("the cert-manager.io/inject-ca-from annotation");
    let certificate = rendered
        .cert_manager
        .get(&format!("Certificate/{inject}"))
        .unwrap_or_else(|| panic!("inject-ca-from names {inject}, which is not rendered"));
    assert_eq!(certificate["spec"]["secretName"], tls_secret.as_str());
    let dns_names = certificate["spec"]["dnsNames"].as_array().unwrap();
    assert!(dns_names.contains(&Value::from(format!("{}.{namespace}.svc", target.name))));
    let issuer = &certificate["spec"]["issuerRef"];
    assert_eq!(issuer["kind"], "Issuer");
    let issuer = rendered
        .cert_manager
        .get(&format!(
            "Issuer/{namespace}/{}",
            issuer["name"].as_str().unwrap()
        ))
        .expect("the serving certificate's Issuer is rendered");
    // A CA issuer whose CA certificate is itself rendered and self-signed.
    let ca_secret = issuer["spec"]["ca"]["secretName"]
        .as_str()
        .expect("a CA Issuer");
    let ca = rendered
        .cert_manager
        .values()
        .find(|o| o["kind"] == "Certificate" && o["spec"]["secretName"] == ca_secret)
        .expect("the CA Certificate");
    assert_eq!(ca["spec"]["isCA"], true);
    let root_issuer = rendered
        .cert_manager
        .get(&format!(
            "Issuer/{namespace}/{}",
            ca["spec"]["issuerRef"]["name"].as_str().unwrap()
        ))
        .expect("the CA's Issuer");
    assert!(root_issuer["spec"]["selfSigned"].is_object());
}

/// webhook.certificate.certManager.issuerRef: the serving certificate from an issuer of
/// the operator's; the chart then makes no CA of its own.
#[test]
fn cert_manager_uses_the_given_issuer() {
    let rendered = parse(&render(&[
        "webhook.certificate.mode=certManager",
        "webhook.certificate.certManager.issuerRef.name=corp-ca",
        "webhook.certificate.certManager.issuerRef.kind=ClusterIssuer",
        "webhook.certificate.certManager.issuerRef.group=cert-manager.io",
    ]));
    assert_eq!(
        rendered.cert_manager.keys().collect::<Vec<_>>(),
        [&format!("Certificate/{NAMESPACE}/regcred-webhook")]
    );
    let certificate = rendered.cert_manager.values().next().unwrap();
    assert_eq!(
        certificate["spec"]["issuerRef"],
        json!({ "name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io" })
    );
    assert_eq!(
        certificate["spec"]["dnsNames"],
        json!([
            "regcred-webhook.regcred-system.svc",
            "regcred-webhook.regcred-system.svc.cluster.local"
        ])
    );
}

#[test]
fn the_webhook_pods_run_locked_down() {
    // The token is mounted only where the webhook manages its certificate (selfManaged,
    // the default; the_default_webhook_manages_its_own_certificate checks its RBAC).
    for (values, token) in [(CERT_MANAGER, false), (&[][..], true)] {
        let rendered = parse(&render(values));
        let deployment = webhook_deployment(&rendered);
        let pod = pod_spec(deployment);
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod.automount_service_account_token,
            Some(token),
            "{values:?}"
        );
        let account = pod.service_account_name.as_deref().unwrap();
        assert!(
            rendered
                .service_accounts
                .iter()
                .any(|a| a.metadata.name.as_deref() == Some(account))
        );
        let container = webhook_container(deployment);
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let requests = container
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
        let budget = rendered
            .budgets
            .iter()
            .find(|b| b.metadata.name.as_deref() == Some("regcred-webhook"))
            .expect("the webhook's PodDisruptionBudget");
        let budget_selector = budget.spec.as_ref().unwrap().selector.as_ref().unwrap();
        let labels = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (key, value) in budget_selector.match_labels.as_ref().unwrap() {
            assert_eq!(labels.get(key), Some(value));
        }
    }
    // One replica: no budget of minAvailable 1, which would block every drain of its node.
    let single = parse(&render(&["webhook.replicas=1"]));
    assert!(single.budgets.is_empty());
}

/// Issue 14, finding 3: the webhook pods admit ingress to their HTTPS port only.
#[test]
fn the_network_policy_admits_only_the_webhook_and_probe_ports() {
    let rendered = parse_all();
    let deployment = webhook_deployment(&rendered);
    let pod_labels = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let policy = rendered
        .network_policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("regcred-webhook"))
        .expect("the regcred-webhook NetworkPolicy");
    let spec = policy.spec.as_ref().unwrap();
    let selector = spec
        .pod_selector
        .as_ref()
        .and_then(|s| s.match_labels.clone());
    let selector = selector.expect("the policy selects by labels");
    assert!(!selector.is_empty());
    for (key, value) in &selector {
        assert_eq!(pod_labels.get(key), Some(value), "{key}");
    }
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_owned()][..])
    );
    let rules = spec.ingress.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    let ports = rules[0].ports.as_ref().unwrap();
    let port_named = |name: &str| {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers[0].ports.as_ref())
            .and_then(|p| p.iter().find(|p| p.name.as_deref() == Some(name)))
            .map(|p| p.container_port)
            .unwrap_or_else(|| panic!("the {name} container port"))
    };
    // The reviews' port and the probes' port; never metrics.
    let admitted: Vec<_> = ports.iter().map(|p| p.port.clone()).collect();
    assert_eq!(
        admitted,
        vec![
            Some(IntOrString::Int(port_named("https"))),
            Some(IntOrString::Int(port_named("probes")))
        ]
    );
    // webhook.networkPolicy.metricsFrom admits the metrics port from those peers only.
    let scraped = helm_template(&[
        "--set-json".to_owned(),
        r#"webhook.networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#.to_owned(),
    ])
    .unwrap();
    let scraped = parse(&scraped);
    let rules = scraped.network_policies[0]
        .spec
        .as_ref()
        .and_then(|s| s.ingress.clone())
        .unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(
        rules[1].ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(port_named("metrics")))
    );
    let from = rules[1].from.as_ref().unwrap();
    assert_eq!(from.len(), 1);
    assert!(from[0].namespace_selector.is_some() && from[0].pod_selector.is_none());
    // webhook.networkPolicy.enabled=false leaves it out.
    let without = parse(&render(&["webhook.networkPolicy.enabled=false"]));
    assert!(without.network_policies.is_empty());
}

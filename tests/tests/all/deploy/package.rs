//! `scripts/package-chart` and the chart's alert rules and dashboard.

use super::*;

/// `scripts/package-chart`: `helm package` made reproducible. Two runs, with the chart's
/// files touched in between (new modification times, as a fresh checkout has), give the
/// same bytes; the archive lints, and renders the objects the chart directory renders.
#[test]
fn the_packaged_chart_is_reproducible_and_renders_as_the_directory() {
    let package = |out: &Path| {
        let output = Command::new(root().join("scripts/package-chart"))
            .arg("--out")
            .arg(out)
            .arg("--helm")
            .arg(helm())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "scripts/package-chart: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let mut lines = stdout.lines();
        let path = PathBuf::from(lines.next().unwrap());
        let digest = lines.next().unwrap().to_owned();
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{stdout}"
        );
        (path, digest)
    };
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (archive, digest) = package(first.path());
    let values = root().join("deploy/chart/values.yaml");
    let file = std::fs::File::options().write(true).open(&values).unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(7))
        .unwrap();
    drop(file);
    let (again, digest_again) = package(second.path());
    assert_eq!(digest, digest_again, "two packages of one commit differ");
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(&again).unwrap()
    );
    assert_eq!(
        archive.file_name().unwrap().to_str().unwrap(),
        "regcred-0.1.0.tgz"
    );
    let from_archive = helm_template_of(&archive, &[]).unwrap();
    assert_eq!(from_archive, helm_template(&[]).unwrap());
}

/// The alerts and the dashboard. The PrometheusRule's spec is
/// `files/prometheus-rules.yaml` as it is, which Debian's promtool checks (`check rules`)
/// and tests (`test rules tests/prometheus/rules-test.yaml`: every alert fires on the
/// series that should fire it, with its message, and not on healthy ones); the dashboard
/// ConfigMap holds `files/grafana-dashboard.json`; every regcred metric the rules and the
/// dashboard query is one METRICS.md documents (the unit tests keep METRICS.md complete
/// the other way).
#[test]
fn the_alerts_and_the_dashboard_query_documented_metrics() {
    let files = root().join("deploy/chart/files");
    let rules_text = std::fs::read_to_string(files.join("prometheus-rules.yaml")).unwrap();
    let dashboard_text = std::fs::read_to_string(files.join("grafana-dashboard.json")).unwrap();
    let objects = render(&[
        "metrics.prometheusRule.enabled=true",
        "metrics.grafanaDashboard.enabled=true",
    ]);
    let rule = find(&objects, "PrometheusRule", "regcred").expect("the PrometheusRule");
    let rules: Value = serde_yaml::from_str(&rules_text).unwrap();
    assert_eq!(rule["spec"], rules);
    let dashboard =
        find(&objects, "ConfigMap", "regcred-grafana-dashboard").expect("the dashboard");
    assert_eq!(
        dashboard["data"]["regcred.json"].as_str().unwrap().trim(),
        dashboard_text.trim()
    );
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert!(
        find(&render(&[]), "PrometheusRule", "regcred").is_none(),
        "off by default"
    );

    let mut exprs: Vec<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exprs.len(), 9);
    let board: Value = serde_json::from_str(&dashboard_text).unwrap();
    for panel in board["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    let metrics_doc = std::fs::read_to_string(root().join("METRICS.md")).unwrap();
    let name = metric_families(&exprs);
    assert!(name.len() >= 8, "{name:?}");
    for metric in &name {
        assert!(
            metrics_doc.contains(&format!("| `{metric}` |")),
            "{metric} is queried but not in METRICS.md"
        );
    }

    let promtool = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("promtool"))
                .find(|p| p.is_file())
        })
        .expect("promtool is not installed: run scripts/setup (Debian's prometheus)");
    for args in [
        vec![
            "check".to_owned(),
            "rules".to_owned(),
            files.join("prometheus-rules.yaml").display().to_string(),
        ],
        vec![
            "test".to_owned(),
            "rules".to_owned(),
            root()
                .join("tests/prometheus/rules-test.yaml")
                .display()
                .to_string(),
        ],
    ] {
        let output = Command::new(&promtool).args(&args).output().unwrap();
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The regcred metric names in PromQL expressions (histogram series by their family).
fn metric_families(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("regcred_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(family.to_owned());
            rest = &tail[end..];
        }
    }
    names
}

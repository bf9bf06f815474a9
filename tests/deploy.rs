//! deploy/ and localstack/ checked by what can run here (no Docker engine): manifests and the
//! compose file parse as YAML and say what they must, embedded configs parse with our own
//! parser, and the systemd unit passes `systemd-analyze verify`.

use std::path::Path;

use serde_yaml::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

#[test]
fn kubernetes_manifests_parse_and_fit_together() {
    let mut kinds = Vec::new();
    let mut grace = 0;
    let mut shutdown_grace = 0;
    let mut cluster_secret = None;
    let mut secrets = Vec::new();
    for e in std::fs::read_dir(root().join("deploy/k8s")).unwrap() {
        let p = e.unwrap().path();
        let rel = p
            .strip_prefix(root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        for d in docs(&rel) {
            let kind = d["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{rel}: no kind"))
                .to_string();
            assert!(
                d["apiVersion"].is_string() && d["metadata"]["name"].is_string(),
                "{rel}"
            );
            match kind.as_str() {
                "Deployment" => {
                    let spec = &d["spec"]["template"]["spec"];
                    grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
                    let c = &spec["containers"][0];
                    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
                    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
                    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
                    // The cluster: each pod's own address, and the shared secret.
                    let env = c["env"].as_sequence().unwrap();
                    let var = |n: &str| env.iter().find(|e| e["name"] == n).cloned();
                    assert_eq!(
                        var("PV_POD_IP").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
                        "status.podIP"
                    );
                    assert!(var("PV_NODE_URL").unwrap()["value"]
                        .as_str()
                        .unwrap()
                        .contains("$(PV_POD_IP)"));
                    let r = &var("PV_CLUSTER_SECRET").unwrap()["valueFrom"]["secretKeyRef"];
                    cluster_secret = Some((
                        r["name"].as_str().unwrap().to_string(),
                        r["key"].as_str().unwrap().to_string(),
                    ));
                }
                "Secret" => secrets.push(d.clone()),
                "ConfigMap" => {
                    let toml_text = d["data"]["config.toml"].as_str().unwrap();
                    let dir = tempfile::tempdir().unwrap();
                    std::fs::write(dir.path().join("c.toml"), toml_text).unwrap();
                    let cfg = profile_vault::config::Config::parse_file(&dir.path().join("c.toml"))
                        .unwrap();
                    shutdown_grace = cfg.sessions.shutdown_grace;
                }
                _ => {}
            }
            kinds.push(kind);
        }
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Secret",
            "Service"
        ]
    );
    let (name, key) = cluster_secret.expect("the Deployment sets PV_CLUSTER_SECRET");
    assert!(
        secrets
            .iter()
            .any(|s| s["metadata"]["name"] == name.as_str()
                && s["stringData"][key.as_str()].is_string()),
        "the cluster secret {name}/{key} is in secret.yaml"
    );
    assert!(
        grace > shutdown_grace,
        "terminationGracePeriodSeconds {grace} must exceed sessions.shutdown_grace {shutdown_grace}"
    );
}

#[test]
fn compose_file_runs_a_cluster_and_the_minio_profile() {
    let mut d = docs("deploy/docker-compose.yml").remove(0);
    d.apply_merge().unwrap();
    let s = &d["services"];
    for name in [
        "localstack",
        "profile-vault-1",
        "profile-vault-2",
        "balancer",
        "minio",
        "minio-init",
        "profile-vault-minio",
    ] {
        assert!(s[name].is_mapping(), "service {name}");
    }
    assert_eq!(s["minio"]["profiles"][0], "minio");
    let mounts = s["localstack"]["volumes"][0].as_str().unwrap();
    assert!(
        mounts.starts_with("../localstack/init/ready.d:"),
        "{mounts}"
    );
    assert!(root().join("localstack/init/ready.d/10-bucket.sh").exists());
    assert!(root().join("localstack/init/ready.d/20-kms.sh").exists());
    let services = s["localstack"]["environment"]["SERVICES"].as_str().unwrap();
    assert!(services.split(',').any(|x| x == "kms"), "{services}");

    // Two nodes of one cluster: one store, one public address (the balancer's), each its
    // own node address (a service name the balancer and the other node resolve), its own
    // data volume, and the secrets from the env file (the cluster secret among them).
    let balancer = &s["balancer"];
    let published = balancer["ports"][0].as_str().unwrap();
    let public_port = published.rsplit(':').nth(1).unwrap();
    let mut volumes = Vec::new();
    for (i, name) in ["profile-vault-1", "profile-vault-2"].iter().enumerate() {
        let n = &s[*name];
        let env = &n["environment"];
        assert_eq!(env["PV_STORE"], "s3://profile-vault/compose", "{name}");
        assert_eq!(env["PV_S3_PATH_STYLE"], "true", "{name}");
        assert_eq!(env["PV_KMS_KEYS"], "vault=alias/profile-vault", "{name}");
        assert_eq!(
            env["PV_PUBLIC_URL"].as_str().unwrap(),
            format!("http://127.0.0.1:{public_port}"),
            "{name}: cdp_url and embed_url point at the balancer"
        );
        assert_eq!(
            env["PV_NODE_URL"].as_str().unwrap(),
            format!("http://profile-vault-{}:8080", i + 1),
            "{name}"
        );
        assert_eq!(n["env_file"], ".env", "{name}: PV_CLUSTER_SECRET from .env");
        assert_eq!(n["restart"], "on-failure", "{name}");
        assert!(
            n["ports"].is_null(),
            "{name} is reached through the balancer only"
        );
        assert_eq!(
            n["depends_on"]["localstack"]["condition"], "service_healthy",
            "{name}"
        );
        volumes.push(n["volumes"][0].as_str().unwrap().to_string());
    }
    assert_ne!(volumes[0], volumes[1], "each node has its own data dir");
    // The balancer runs the nginx config the cluster test runs, over both nodes.
    let mount = balancer["volumes"][0].as_str().unwrap();
    let (src, dst) = mount.split_once(':').unwrap();
    assert_eq!(src, "./nginx/profile-vault.conf");
    assert!(dst.starts_with("/etc/nginx/conf.d/"), "{mount}");
    let conf = std::fs::read_to_string(root().join("deploy").join(src)).unwrap();
    for node in ["profile-vault-1:8080", "profile-vault-2:8080"] {
        assert!(conf.contains(&format!("server {node}")), "{node} upstream");
    }
    assert!(published.ends_with(":8080") && conf.contains("listen 8080;"));

    // The LocalStack healthcheck, run against the LocalStack the tests started (whose
    // hooks scripts/test-servers.sh ran): it passes there.
    let check = &s["localstack"]["healthcheck"]["test"];
    assert_eq!(check[0], "CMD-SHELL");
    let ep = crate::common::endpoint("PV_TEST_LOCALSTACK");
    let cmd = check[1]
        .as_str()
        .unwrap()
        .replace("http://localhost:4566", &ep);
    let ok = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .status()
        .unwrap();
    assert!(ok.success(), "healthcheck failed: {cmd}");
}

#[test]
fn dockerfile_is_multi_stage_and_non_root() {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
    assert!(text.contains("apt-get install") && text.contains("chromium"));
    let user = text.lines().find(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
}

#[test]
fn systemd_unit_verifies() {
    let unit =
        std::fs::read_to_string(root().join("deploy/systemd/profile-vault.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Point ExecStart at the binary built for these tests; the rest is verified as written.
    let unit = unit.replace(
        "/usr/local/bin/profile-vault",
        env!("CARGO_BIN_EXE_profile-vault"),
    );
    let path = dir.path().join("profile-vault.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is on this kind of machine");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let relevant: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("profile-vault.service"))
        .collect();
    assert!(
        out.status.success() && relevant.is_empty(),
        "systemd-analyze verify: {text}"
    );
}

#[test]
fn the_balancer_logs_no_query_strings() {
    // cdp_url and embed_url carry tokens in their query: nginx's default log line ("$request")
    // would write them to disk.
    let conf = std::fs::read_to_string(root().join("deploy/nginx/profile-vault.conf")).unwrap();
    let format = conf
        .split("log_format profile_vault")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("a log_format of its own");
    for leak in [
        "$request ",
        "$request\"",
        "$request_uri",
        "$args",
        "$query_string",
        "$arg_",
    ] {
        assert!(!format.contains(leak), "the log format contains {leak}");
    }
    assert!(format.contains("$uri"), "{format}");
    let access: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("access_log"))
        .collect();
    assert!(!access.is_empty(), "an access_log line");
    for l in access {
        assert!(
            l.ends_with("profile_vault;") || l == "access_log off;",
            "{l}"
        );
    }
}

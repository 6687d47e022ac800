use super::*;

fn resolve(env: &[(&str, &str)], flags: &[(Key, &str)]) -> Result<Config, ConfigError> {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let flags = flags.iter().map(|(k, v)| (*k, v.to_string())).collect();
    Layers::collect(None, |name| env.get(name).cloned(), &flags)?.resolve()
}

#[test]
fn defaults_are_the_threat_model() {
    let c = resolve(&[], &[]).expect("defaults resolve");
    assert_eq!(c.preset, Preset::Standard);
    assert_eq!(c.mode, ExecutionMode::Oci);
    assert_eq!(c.runtime, RuntimeChoice::Auto);
    assert!(!c.network_enabled);
    assert!(!c.allow_unsafe_runtime);
    assert_eq!(c.limits.memory_bytes, 536_870_912);
    assert_eq!(c.limits.cpus, 1.0);
    assert_eq!(c.limits.pids, 50);
    assert_eq!(c.limits.timeout, Duration::from_secs(30));
}

#[test]
fn env_overrides_preset_and_flags_override_env() {
    let c = resolve(
        &[("RLM_MEMORY_LIMIT", "1g"), ("RLM_DOCKER_RUNTIME", "runc")],
        &[(Key::MemoryLimit, "256m")],
    )
    .expect("valid");
    assert_eq!(c.limits.memory_bytes, 256 << 20);
    assert_eq!(c.runtime, RuntimeChoice::Runc);
}

#[test]
fn docker_is_an_alias_of_oci() {
    let c = resolve(&[("RLM_EXECUTION_MODE", "docker")], &[]).expect("valid");
    assert_eq!(c.mode, ExecutionMode::Oci);
}

#[test]
fn bad_values_name_the_variable_the_value_and_the_form() {
    let err = resolve(&[("RLM_MEMORY_LIMIT", "lots")], &[]).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "invalid RLM_MEMORY_LIMIT value \"lots\": expected a size: a byte count or a \
         number with k, m or g (binary units), e.g. 512m"
    );
    let err = resolve(&[], &[(Key::ExecutionTimeout, "-3")]).expect_err("refused");
    assert!(
        err.to_string()
            .starts_with("invalid --timeout value \"-3\""),
        "{err}"
    );
    let err = resolve(&[("RLM_DOCKER_RUNTIME", "kata")], &[]).expect_err("refused");
    assert!(
        err.to_string().contains("one of auto, runsc, runc"),
        "{err}"
    );
    let err = resolve(&[("RLM_NETWORK_ENABLED", "maybe")], &[]).expect_err("refused");
    assert!(err.to_string().contains("RLM_NETWORK_ENABLED"), "{err}");
    let err = resolve(&[("RLM_CPU_LIMIT", "0")], &[]).expect_err("refused");
    assert!(err.to_string().contains("RLM_CPU_LIMIT"), "{err}");
    let err = resolve(&[("RLM_PIDS_LIMIT", "2")], &[]).expect_err("refused");
    assert!(err.to_string().contains("from 8 to"), "{err}");
}

#[test]
fn maximum_refuses_runc_and_network() {
    assert!(resolve(&[("RLM_PRESET", "maximum")], &[]).is_ok());
    let err = resolve(
        &[("RLM_PRESET", "maximum"), ("RLM_DOCKER_RUNTIME", "runc")],
        &[],
    )
    .expect_err("refused");
    assert!(err.to_string().contains("requires runtime runsc"), "{err}");
    assert!(resolve(
        &[("RLM_PRESET", "maximum"), ("RLM_NETWORK_ENABLED", "true")],
        &[]
    )
    .is_err());
}

#[test]
fn sizes() {
    assert_eq!(parse_size("512m"), Some(512 << 20));
    assert_eq!(parse_size("512MiB"), Some(512 << 20));
    assert_eq!(parse_size("1G"), Some(1 << 30));
    assert_eq!(parse_size("64k"), Some(64 << 10));
    assert_eq!(parse_size("536870912"), Some(536_870_912));
    assert_eq!(parse_size("100b"), Some(100));
    for bad in ["", "m", "1.5g", "-1m", "12x", "0", "99999999999999999999g"] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
}

#[test]
fn config_file_is_the_lowest_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"memory_limit": "128m", "pids_limit": 64, "cpu_limit": 0.5}"#,
    )
    .expect("write");
    let env = [("RLM_PIDS_LIMIT".to_string(), "100".to_string())];
    let c = Layers::collect(
        Some(&path),
        |n| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()),
        &BTreeMap::new(),
    )
    .and_then(|l| l.resolve())
    .expect("valid");
    assert_eq!(c.limits.memory_bytes, 128 << 20);
    assert_eq!(c.limits.pids, 100);
    assert_eq!(c.limits.cpus, 0.5);

    std::fs::write(&path, r#"{"memory_limit": "huge"}"#).expect("write");
    let err = Layers::collect(Some(&path), |_| None, &BTreeMap::new())
        .and_then(|l| l.resolve())
        .expect_err("refused");
    assert!(
        err.to_string().starts_with("invalid memory_limit in "),
        "{err}"
    );

    std::fs::write(&path, r#"{"memroy_limit": "1g"}"#).expect("write");
    let err = Layers::collect(Some(&path), |_| None, &BTreeMap::new()).expect_err("refused");
    assert!(
        err.to_string().contains("unknown setting \"memroy_limit\""),
        "{err}"
    );
}

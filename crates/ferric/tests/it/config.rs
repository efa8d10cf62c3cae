//! Configuration: layering, unknown keys, validation, secret masking. All in
//! process through explicit `Sources`, so the test's own environment never
//! leaks in.

use ferric::config::{Config, Sources};
use std::path::PathBuf;
use std::time::Duration;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn problems(sources: &Sources) -> Vec<String> {
    match Config::load(sources) {
        Ok(c) => panic!("expected an error, loaded {c:?}"),
        Err(e) => e.problems,
    }
}

const FILE: &str = r#"
[database]
url = "sqlite://file.db"
max_connections = 3

[conductor]
heartbeat_interval = "7s"
heartbeat_timeout = "70s"

[api]
port = 7000
"#;

#[test]
fn defaults_alone_are_valid() {
    let c = Config::load(&Sources::default()).unwrap();
    assert_eq!(c.database.url, "sqlite://./ferric.db");
    assert_eq!(c.api.host, "127.0.0.1");
    assert_eq!(c.api.port, 6385);
    assert_eq!(c.conductor.heartbeat_interval, Duration::from_secs(10));
}

#[test]
fn layers_apply_in_order_defaults_file_env_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "ferric.toml", FILE);

    // file over defaults
    let only_file = Sources {
        file: Some(file.clone()),
        ..Sources::default()
    };
    let c = Config::load(&only_file).unwrap();
    assert_eq!(c.database.url, "sqlite://file.db");
    assert_eq!(c.database.max_connections, 3);
    assert_eq!(c.conductor.heartbeat_interval, Duration::from_secs(7));
    assert_eq!(c.api.port, 7000);
    assert_eq!(
        c.api.host, "127.0.0.1",
        "a key the file does not set keeps its default"
    );

    // env over file
    let with_env = Sources {
        env: env(&[
            ("FERRIC_DATABASE__URL", "sqlite://env.db"),
            ("FERRIC_CONDUCTOR__HEARTBEAT_INTERVAL", "5s"),
            ("FERRIC_API__PORT", "7001"),
        ]),
        ..only_file.clone()
    };
    let c = Config::load(&with_env).unwrap();
    assert_eq!(c.database.url, "sqlite://env.db");
    assert_eq!(c.conductor.heartbeat_interval, Duration::from_secs(5));
    assert_eq!(c.api.port, 7001);
    assert_eq!(
        c.database.max_connections, 3,
        "the file still sets what env does not"
    );
    assert_eq!(c.conductor.heartbeat_timeout, Duration::from_secs(70));

    // flag over env
    let with_flag = with_env
        .clone()
        .flag("database.url", "--database-url", Some("sqlite://flag.db"))
        .flag("conductor.host", "--host", Some("c-flag"))
        .flag("conductor.conductor_group", "--unused", None);
    let c = Config::load(&with_flag).unwrap();
    assert_eq!(c.database.url, "sqlite://flag.db");
    assert_eq!(c.conductor.host, "c-flag");
    assert_eq!(c.conductor.heartbeat_interval, Duration::from_secs(5));
}

#[test]
fn ferric_variables_that_are_not_config_keys_are_ignored() {
    let sources = Sources {
        env: env(&[
            ("FERRIC_CONFIG", "/nonexistent.toml"),
            ("FERRIC_LOG", "debug"),
            ("FERRIC_LOG_FORMAT", "json"),
            ("FERRIC_TEST_PG_URL", "postgres://root@127.0.0.1:5432/test"),
            ("HOME", "/root"),
        ]),
        ..Sources::default()
    };
    assert_eq!(
        Config::load(&sources).unwrap(),
        Config::load(&Sources::default()).unwrap()
    );
}

#[test]
fn unknown_key_in_file_is_rejected_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "typo.toml",
        "[conductor]\nhearbeat_interval = \"5s\"\n",
    );
    let p = problems(&Sources {
        file: Some(file.clone()),
        ..Sources::default()
    });
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("conductor.hearbeat_interval "), "{p:?}");
    assert!(p[0].contains("unknown key"), "{p:?}");
    assert!(p[0].contains(&file.display().to_string()), "{p:?}");
    assert!(
        p[0].contains("heartbeat_interval"),
        "suggests the valid keys: {p:?}"
    );
}

#[test]
fn unknown_key_in_env_is_rejected_naming_the_variable() {
    let p = problems(&Sources {
        env: env(&[("FERRIC_DATABASE__URI", "sqlite://x.db")]),
        ..Sources::default()
    });
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("database.uri "), "{p:?}");
    assert!(
        p[0].contains("environment variable FERRIC_DATABASE__URI"),
        "{p:?}"
    );
}

#[test]
fn unknown_section_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "s.toml", "[databse]\nurl = \"sqlite://x.db\"\n");
    let p = problems(&Sources {
        file: Some(file),
        ..Sources::default()
    });
    assert!(
        p.iter()
            .any(|p| p.starts_with("databse ") && p.contains("unknown section")),
        "{p:?}"
    );
}

#[test]
fn wrong_types_in_every_section_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "types.toml",
        "[database]\nmax_connections = \"many\"\n[conductor]\nheartbeat_interval = \"soon\"\n",
    );
    let p = problems(&Sources {
        file: Some(file),
        env: env(&[("FERRIC_API__PORT", "70000")]),
        ..Sources::default()
    });
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        p.iter().any(|p| p.starts_with("database.max_connections ")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.starts_with("conductor.heartbeat_interval ")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.starts_with("api.port ") && p.contains("FERRIC_API__PORT")),
        "{p:?}"
    );
}

#[test]
fn invalid_values_are_all_reported_together() {
    let p = problems(&Sources {
        env: env(&[
            ("FERRIC_DATABASE__URL", "mysql://root:hunter2@db/ferric"),
            ("FERRIC_DATABASE__MAX_CONNECTIONS", "0"),
            ("FERRIC_CONDUCTOR__HEARTBEAT_INTERVAL", "2m"),
            ("FERRIC_CONDUCTOR__NODE_LOCKED_RETRY_ATTEMPTS", "0"),
            ("FERRIC_API__HOST", "not a host"),
        ]),
        ..Sources::default()
    });
    let expect = [
        "database.url",
        "database.max_connections",
        "conductor.heartbeat_timeout",
        "conductor.node_locked_retry_attempts",
        "api.host",
    ];
    assert_eq!(p.len(), expect.len(), "{p:?}");
    for key in expect {
        assert!(
            p.iter().any(|p| p.starts_with(key)),
            "no problem about {key}: {p:?}"
        );
    }
    assert!(
        !p.iter().any(|p| p.contains("hunter2")),
        "a problem shows the password: {p:?}"
    );
}

#[test]
fn a_missing_config_file_is_an_error() {
    let p = problems(&Sources {
        file: Some(PathBuf::from("/nonexistent/ferric.toml")),
        ..Sources::default()
    });
    assert!(p[0].contains("/nonexistent/ferric.toml"), "{p:?}");
}

#[test]
fn a_toml_syntax_error_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "broken.toml", "[api]\nport = \n");
    let p = problems(&Sources {
        file: Some(file.clone()),
        ..Sources::default()
    });
    assert!(p[0].contains(&file.display().to_string()), "{p:?}");
    assert!(p[0].contains("line 2"), "{p:?}");
}

#[test]
fn shown_config_masks_secrets_and_loads_back() {
    let sources = Sources::default().flag(
        "database.url",
        "--database-url",
        Some("postgres://root:hunter2@db.example:5432/ferric"),
    );
    let config = Config::load(&sources).unwrap();
    let shown = config.to_toml_masked().unwrap();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("postgres://root:****@db.example:5432/ferric"),
        "{shown}"
    );
    assert!(!format!("{config:?}").contains("hunter2"));

    // What `config show` prints is itself a complete, valid config file.
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "shown.toml", &shown);
    let reloaded = Config::load(&Sources {
        file: Some(file),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(reloaded, config.masked());
}

#[test]
fn the_readme_config_example_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let example = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a ```toml example");
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "readme.toml", example);
    let config = Config::load(&Sources {
        file: Some(file),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(config.conductor.host, "conductor-1");
    assert_eq!(config.database.url, "sqlite://./ferric.db");
}

#[test]
fn a_non_loopback_api_needs_an_explicit_insecure_no_auth() {
    let p = problems(&Sources {
        env: env(&[("FERRIC_API__HOST", "0.0.0.0")]),
        ..Sources::default()
    });
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("not a loopback address") && p[0].contains("--insecure-no-auth"),
        "{p:?}"
    );
    for host in ["127.0.0.1", "127.0.0.2", "::1", "localhost"] {
        let loaded = Config::load(&Sources {
            env: env(&[("FERRIC_API__HOST", host)]),
            ..Sources::default()
        });
        assert!(loaded.is_ok(), "{host}: {loaded:?}");
    }
    let loaded = Config::load(&Sources {
        env: env(&[
            ("FERRIC_API__HOST", "0.0.0.0"),
            ("FERRIC_API__INSECURE_NO_AUTH", "true"),
        ]),
        ..Sources::default()
    });
    assert!(loaded.is_ok(), "{loaded:?}");
}

#[cfg(feature = "amqp")]
#[test]
fn notifications_section_loads_checks_and_masks_the_amqp_password() {
    let sources = Sources {
        env: env(&[
            ("FERRIC_NOTIFICATIONS__SINK", "amqp"),
            (
                "FERRIC_NOTIFICATIONS__AMQP_URL",
                "amqp://guest:hunter2@127.0.0.1:5672/%2f",
            ),
        ]),
        ..Sources::default()
    };
    let c = Config::load(&sources).unwrap();
    assert_eq!(c.notifications.sink, ferric::notifications::SinkKind::Amqp);
    let shown = c.to_toml_masked().unwrap();
    assert!(shown.contains("[notifications]"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!format!("{c:?}").contains("hunter2"));

    let bad = Sources {
        env: env(&[("FERRIC_NOTIFICATIONS__SINK", "webhook")]),
        ..Sources::default()
    };
    let p = problems(&bad);
    assert!(
        p.iter().any(|m| m.starts_with("notifications.webhook_url")),
        "{p:?}"
    );
}

#[test]
fn hardware_section_is_checked_against_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "hw.toml",
        "[hardware]\nenabled_hardware_types = [\"redfish\", \"idrac\"]\n\
         enabled_boot_interfaces = [\"fake\", \"ipxe\", \"pxe\", \"http\"]\n\
         default_deploy_interface = \"ansible\"\n",
    );
    let p = problems(&Sources {
        file: Some(file),
        ..Sources::default()
    });
    for needle in [
        "hardware.enabled_hardware_types: unknown hardware type \"idrac\"",
        "hardware.enabled_boot_interfaces: unknown boot interface \"http\"",
        "hardware.default_deploy_interface: \"ansible\" is not in enabled_deploy_interfaces",
    ] {
        assert!(
            p.iter().any(|x| x.contains(needle)),
            "{needle} not in {p:?}"
        );
    }
    // A valid choice loads.
    let file = write(
        &dir,
        "ok.toml",
        "[hardware]\nenabled_hardware_types = [\"redfish\"]\ndefault_boot_interface = \"pxe\"\n",
    );
    let c = Config::load(&Sources {
        file: Some(file),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(c.hardware.default_boot_interface, "pxe");
}

#[test]
fn ipmi_section_has_ironics_defaults_and_is_checked() {
    let c = Config::load(&Sources::default()).unwrap();
    assert_eq!(
        c.ipmi.min_command_interval,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(
        c.ipmi.command_retry_timeout,
        std::time::Duration::from_secs(60)
    );
    assert!(c.ipmi.kill_on_timeout && c.ipmi.disable_boot_timeout);
    assert!(!c.ipmi.use_ipmitool_retries && !c.ipmi.store_cred_in_env);

    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "ipmi.toml",
        "[hardware]\nenabled_hardware_types = [\"ipmi\"]\n\
         enabled_power_interfaces = [\"ipmitool\"]\n\
         enabled_management_interfaces = [\"ipmitool\"]\n\
         [ipmi]\nmin_command_interval = \"250ms\"\ncommand_retry_timeout = \"10s\"\n",
    );
    let c = Config::load(&Sources {
        file: Some(file),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(
        c.ipmi.min_command_interval,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(c.hardware.enabled_hardware_types, ["ipmi"]);

    let file = write(
        &dir,
        "bad.toml",
        "[ipmi]\ncommand_retry_timeout = \"0s\"\ncipher_suite_versions = [\"x\"]\n",
    );
    let p = problems(&Sources {
        file: Some(file),
        ..Sources::default()
    });
    assert!(
        p.iter().any(|x| x.contains("ipmi.command_retry_timeout")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|x| x.contains("ipmi.cipher_suite_versions")),
        "{p:?}"
    );
    let file = write(
        &dir,
        "typo.toml",
        "[ipmi]\nmin_command_intervall = \"1s\"\n",
    );
    let p = problems(&Sources {
        file: Some(file),
        ..Sources::default()
    });
    assert!(
        p.iter().any(|x| x.contains("min_command_intervall")),
        "{p:?}"
    );
}

/// A ferric built without the `amqp` feature refuses the AMQP sink as a
/// configuration problem that says why.
#[cfg(not(feature = "amqp"))]
#[test]
fn an_amqp_sink_without_the_amqp_feature_is_a_problem() {
    let sources = Sources {
        env: env(&[
            ("FERRIC_NOTIFICATIONS__SINK", "amqp"),
            (
                "FERRIC_NOTIFICATIONS__AMQP_URL",
                "amqp://guest:hunter2@127.0.0.1:5672/%2f",
            ),
        ]),
        ..Sources::default()
    };
    let p = problems(&sources);
    assert!(
        p.iter()
            .any(|m| m.contains("built without the `amqp` feature")),
        "{p:?}"
    );
}

/// Issue 17: `api.public_endpoint` (Ironic's `[api] public_endpoint`) is an
/// http(s) URL without query or fragment, checked at start; empty is the
/// default (links name the connection's address).
#[test]
fn public_endpoint_is_checked_at_start() {
    let c = Config::load(&Sources::default()).unwrap();
    assert_eq!(c.api.public_endpoint, "");
    assert_eq!(c.api.public_endpoint().unwrap(), None);
    let c = Config::load(&Sources {
        env: env(&[(
            "FERRIC_API__PUBLIC_ENDPOINT",
            "https://ironic.example.com:6385/baremetal/",
        )]),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(
        c.api.public_endpoint().unwrap().unwrap().as_str(),
        "https://ironic.example.com:6385/baremetal"
    );
    for (bad, why) in [
        ("ironic.example.com:6385", "scheme"),
        ("ftp://ironic.example.com", "scheme"),
        ("https://ironic.example.com/?a=b", "query"),
        ("https://ironic.example.com/#x", "fragment"),
        ("https://admin:pw@ironic.example.com", "user information"),
    ] {
        let p = problems(&Sources {
            env: env(&[("FERRIC_API__PUBLIC_ENDPOINT", bad)]),
            ..Sources::default()
        });
        assert_eq!(p.len(), 1, "{bad}: {p:?}");
        assert!(
            p[0].starts_with("api.public_endpoint ") && p[0].contains(why),
            "{bad}: {p:?}"
        );
        assert!(!p[0].contains("pw@"), "the password is shown: {p:?}");
    }
}

/// Durations are humantime strings everywhere; the integer keys of earlier
/// versions still load (operators' files must not break), with a warning.
#[test]
fn notification_durations_are_strings_and_old_integer_keys_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let new = write(
        &dir,
        "new.toml",
        "[notifications]\nwebhook_timeout = \"7s\"\nflush_timeout = \"1m\"\n",
    );
    let c = Config::load(&Sources {
        file: Some(new),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(c.notifications.webhook_timeout, Duration::from_secs(7));
    assert_eq!(c.notifications.flush_timeout, Duration::from_secs(60));

    let old = write(
        &dir,
        "old.toml",
        "[notifications]\nwebhook_timeout_secs = 9\nflush_timeout_secs = 30\n",
    );
    let c = Config::load(&Sources {
        file: Some(old.clone()),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(c.notifications.webhook_timeout, Duration::from_secs(9));
    assert_eq!(c.notifications.flush_timeout, Duration::from_secs(30));
    // Printed in the new spelling only.
    let shown = c.to_toml_masked().unwrap();
    assert!(
        shown.contains("webhook_timeout = \"9s\"")
            && !shown.contains("webhook_timeout_secs")
            && !shown.contains("flush_timeout_secs"),
        "{shown}"
    );
    // The environment's old keys too.
    let c = Config::load(&Sources {
        env: env(&[("FERRIC_NOTIFICATIONS__WEBHOOK_TIMEOUT_SECS", "120")]),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(c.notifications.webhook_timeout, Duration::from_secs(120));

    // Both spellings with different values: a problem naming both keys.
    let both = Sources {
        file: Some(old),
        env: env(&[("FERRIC_NOTIFICATIONS__WEBHOOK_TIMEOUT", "3s")]),
        ..Sources::default()
    };
    let p = problems(&both);
    assert!(
        p.iter()
            .any(|m| m.contains("notifications.webhook_timeout_secs")
                && m.contains("notifications.webhook_timeout =")),
        "{p:?}"
    );
    // Bounds are on the duration key.
    let p = problems(&Sources {
        env: env(&[("FERRIC_NOTIFICATIONS__WEBHOOK_TIMEOUT", "0s")]),
        ..Sources::default()
    });
    assert!(
        p.iter()
            .any(|m| m.starts_with("notifications.webhook_timeout (0s)")),
        "{p:?}"
    );
}

/// The binary logs the deprecation (one line naming the new key).
#[test]
fn old_integer_keys_log_a_deprecation_warning() {
    let out = crate::helpers::output(
        crate::helpers::ferric()
            .args(["config", "show"])
            .env("FERRIC_NOTIFICATIONS__FLUSH_TIMEOUT_SECS", "20"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("flush_timeout = \"20s\""), "{stdout}");
    assert!(
        stderr.contains("notifications.flush_timeout_secs is deprecated") && stderr.contains("20s"),
        "{stderr}"
    );
}

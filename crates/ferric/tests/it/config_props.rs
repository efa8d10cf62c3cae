//! Property tests of configuration loading (issue #7): arbitrary TOML files,
//! `FERRIC_*` variables and flag values never make loading panic; every
//! rejection is a `ConfigError` whose problems name the offending key (or
//! the file, variable or flag); a loaded config shows without its secrets
//! and what it shows loads back. Sources are built by hand, so the process
//! environment is never read or written.

use ferric::config::{env_key, Config, ConfigError, Sources, SECTIONS};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use std::path::PathBuf;

/// Fixed seed (override with `PROPTEST_RNG_SEED`) and `PROPTEST_CASES`.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(cases),
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x0c0f_1600);
    }
    c
}

/// Every key of every section.
const KEYS: &[(&str, &[&str])] = &[
    ("database", &["url", "max_connections"]),
    (
        "conductor",
        &[
            "host",
            "conductor_group",
            "heartbeat_interval",
            "heartbeat_timeout",
            "node_locked_retry_attempts",
            "node_locked_retry_interval",
            "max_waiters_per_node",
            "workers_pool_size",
            "sqlite_poll_interval",
            "recovery_interval",
            "check_provision_state_interval",
            "deploy_callback_timeout",
            "clean_callback_timeout",
            "inspect_wait_timeout",
            "rescue_callback_timeout",
            "service_callback_timeout",
            "graceful_shutdown_timeout",
            "hash_partition_exponent",
            "sync_power_state_interval",
            "power_state_sync_max_retries",
            "sync_power_state_workers",
            "force_power_state_during_sync",
            "fake_step_delay",
        ],
    ),
    (
        "api",
        &[
            "host",
            "port",
            "insecure_no_auth",
            "auth",
            "htpasswd_file",
            "token_file",
            "token",
        ],
    ),
    (
        "notifications",
        &[
            "sink",
            "webhook_url",
            "webhook_timeout",
            "webhook_timeout_secs",
            "flush_timeout",
            "amqp_url",
            "amqp_exchange",
            "queue_capacity",
            "max_attempts",
        ],
    ),
];

/// Every `section.key`.
fn all_keys() -> Vec<String> {
    KEYS.iter()
        .flat_map(|(s, ks)| ks.iter().map(move |k| format!("{s}.{k}")))
        .collect()
}

fn section_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(SECTIONS.to_vec()).prop_map(str::to_string),
        1 => select(vec!["databse", "Database", "api ", "default", "x"]).prop_map(str::to_string),
    ]
}

fn key_in(section: &str) -> BoxedStrategy<String> {
    let keys: Vec<&str> = KEYS
        .iter()
        .find(|(s, _)| *s == section)
        .map_or(vec!["url"], |(_, k)| k.to_vec());
    prop_oneof![
        8 => select(keys).prop_map(str::to_string),
        1 => select(vec!["hearbeat_interval", "URL", "port ", "tokens", "extra"]).prop_map(str::to_string),
    ]
    .boxed()
}

/// A string that means something to some key, or nothing.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec![
            "", " ", "0s", "1ms", "10s", "5m", "-1s", "soon", "1", "18446744073709551616s",
            "999999999999h", "0.5s", "sqlite://./x.db", "sqlite:", "sqlite://", "sqlite::memory:",
            "postgres://", "postgres://root@127.0.0.1:5432/test", "mysql://h/db", "http://hook",
            "https://u:p@hook/x", "ftp://x", "amqp://guest:guest@rabbit:5672/%2f", "amqp://",
            "127.0.0.1", "0.0.0.0", "::1", "localhost", "bad host", "-x", "a..b", "[::1]",
            "none", "basic", "token", "Token", "log", "webhook", "amqp", "smtp", "g1", "bad group",
            "true", "5", "\u{0}", "é",
        ])
        .prop_map(str::to_string),
        2 => "\\PC{0,24}",
    ]
}

fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        6 => text().prop_map(toml::Value::String),
        4 => prop_oneof![
            select(vec![-1i64, 0, 1, 2, 3, 5, 12, 13, 256, 257, 1000, 1001, 65535, 65536, 10_001]),
            any::<i64>(),
        ]
        .prop_map(toml::Value::Integer),
        1 => any::<f64>().prop_map(toml::Value::Float),
        2 => any::<bool>().prop_map(toml::Value::Boolean),
        1 => select(vec!["1979-05-27T07:32:00Z", "1979-05-27", "07:32:00"])
            .prop_map(|s| s.parse::<toml::value::Datetime>().map_or(toml::Value::Integer(0), toml::Value::Datetime)),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(toml::Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// `(section, key, value)` settings, plausible in shape.
fn settings() -> impl Strategy<Value = Vec<(String, String, toml::Value)>> {
    prop::collection::vec(
        section_name().prop_flat_map(|s| {
            let k = key_in(&s);
            (Just(s), k, toml_value())
        }),
        0..8,
    )
}

fn to_toml(
    settings: &[(String, String, toml::Value)],
    top: Option<(String, toml::Value)>,
) -> String {
    let mut root = toml::Table::new();
    for (s, k, v) in settings {
        let section = root
            .entry(s.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = section {
            t.insert(k.clone(), v.clone());
        }
    }
    if let Some((k, v)) = top {
        root.insert(k, v);
    }
    toml::to_string(&root).unwrap_or_default()
}

/// Every problem is non-empty and names what is wrong: a key (`section.key`
/// or a section), the file, the variable or the flag.
fn check_error(e: &ConfigError, named: &[String]) -> Result<(), TestCaseError> {
    prop_assert!(!e.problems.is_empty(), "an error without problems");
    let keys = all_keys();
    for p in &e.problems {
        prop_assert!(!p.trim().is_empty());
        let names_something = p.starts_with("config file ")
            || p.starts_with("(top level)")
            || p.contains("environment variable FERRIC_")
            || p.contains("flag --")
            || keys.iter().any(|k| p.contains(k.as_str()))
            || SECTIONS.iter().any(|s| p.starts_with(&format!("{s}.")))
            || named.iter().any(|n| {
                !n.is_empty()
                    && (p.starts_with(&format!("{n} ")) || p.starts_with(&format!("{n}:")))
            });
        prop_assert!(names_something, "problem names no key: {:?}", p);
    }
    prop_assert!(!e.to_string().is_empty());
    Ok(())
}

/// Load; check the error, or that the config shows, reloads as shown, and
/// validates.
fn load_and_check(sources: &Sources, named: &[String]) -> Result<Option<Config>, TestCaseError> {
    let extracted = Config::extract(sources);
    match Config::load(sources) {
        Err(e) => {
            check_error(&e, named)?;
            if let Ok(c) = &extracted {
                // `config show` prints even a config with problems.
                prop_assert!(c.to_toml_masked().is_ok());
            }
            Ok(None)
        }
        Ok(c) => {
            prop_assert_eq!(extracted.ok(), Some(c.clone()));
            prop_assert!(c.problems().is_empty());
            let shown = c.to_toml_masked();
            prop_assert!(shown.is_ok(), "cannot show: {:?}", shown.err());
            let shown = shown.unwrap_or_default();
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let path = dir.path().join("shown.toml");
            std::fs::write(&path, &shown).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = Config::extract(&Sources {
                file: Some(path),
                ..Sources::default()
            });
            prop_assert_eq!(
                back.ok(),
                Some(c.masked()),
                "shown config does not load back:\n{}",
                shown
            );
            Ok(Some(c))
        }
    }
}

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("ferric.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Names of environment variables: real keys, wrong ones, not ours.
fn env_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(all_keys()).prop_map(|k| format!("FERRIC_{}", k.replace('.', "__").to_uppercase())),
        2 => select(vec![
            "FERRIC___X", "FERRIC_API__", "FERRIC__API", "FERRIC_A__B__C", "FERRIC_API__PORT__X",
            "FERRIC_DATABASE__URI", "FERRIC_CONFIG", "FERRIC_LOG", "FERRIC_API____PORT",
            "FERRIC_api__port", "OTHER__X",
        ])
        .prop_map(str::to_string),
        1 => "FERRIC_[A-Z_]{0,12}",
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary text as the config file.
    #[test]
    fn arbitrary_file_text(text in prop_oneof![
        any::<String>(),
        "\\PC{0,200}",
        prop::collection::vec(select(vec![
            "[database]", "[conductor]", "[api]", "[notifications]", "[[api]]", "[api.x]",
            "url = \"sqlite://a.db\"", "port = 1", "port = \"1\"", "a.b.c = 1", "= x", "k = ",
            "\"k\" = 'v'", "heartbeat_interval = \"0s\"", "host = \"\"", "[database", "x = [1,",
            "token = 1234", "\u{0}", "#", "database = 5", "conductor = []",
        ]), 0..8).prop_map(|l| l.join("\n")),
    ]) {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources { file: Some(write(&dir, &text)), ..Sources::default() };
        // A problem may name a key as the file spells it.
        let words: Vec<String> = text
            .split(|c: char| !(c.is_alphanumeric() || "_-".contains(c)))
            .map(str::to_string)
            .collect();
        load_and_check(&sources, &words)?;
    }

    /// TOML of the right shape with values of any type, unknown keys and
    /// sections, and out-of-range values.
    #[test]
    fn plausible_files(
        settings in settings(),
        top in prop::option::weighted(0.1, ("[a-z]{1,6}", toml_value())),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let text = to_toml(&settings, top.clone());
        let sources = Sources { file: Some(write(&dir, &text)), ..Sources::default() };
        let mut named: Vec<String> = settings.iter().map(|(s, _, _)| s.clone()).collect();
        named.extend(top.map(|(k, _)| k));
        load_and_check(&sources, &named)?;
    }

    /// `FERRIC_*` variables with any values, over a file.
    #[test]
    fn arbitrary_environment(
        settings in settings(),
        env in prop::collection::vec((env_name(), prop_oneof![3 => text(), 1 => any::<String>()]), 0..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            file: Some(write(&dir, &to_toml(&settings, None))),
            env: env.clone(),
            ..Sources::default()
        };
        let mut named: Vec<String> = settings.iter().map(|(s, _, _)| s.clone()).collect();
        named.extend(env.iter().filter_map(|(n, _)| env_key(n)));
        load_and_check(&sources, &named)?;
    }

    /// The flags of `serve` with any values.
    #[test]
    fn arbitrary_flags(
        url in prop::option::of(text()),
        host in prop::option::of(text()),
        api_host in prop::option::of(text()),
        api_port in prop::option::of(prop_oneof![text(), "-?[0-9]{1,7}"]),
        group in prop::option::of(text()),
    ) {
        let sources = Sources::default()
            .flag("database.url", "--database-url", url.as_deref())
            .flag("conductor.host", "--host", host.as_deref())
            .flag("api.host", "--api-host", api_host.as_deref())
            .flag_parsed("api.port", "--api-port", api_port.as_deref())
            .flag("conductor.conductor_group", "--conductor-group", group.as_deref());
        load_and_check(&sources, &[])?;
    }

    /// Secrets (the database and AMQP passwords, webhook credentials, the
    /// API token), set in any layer, never show: not in `config show`, not
    /// in `Debug`, not in an error.
    #[test]
    fn secrets_never_show(
        secret in prop_oneof![
            "Zq[A-Za-z0-9]{4,12}",
            "Zq[A-Za-z0-9@:/?#%!=&]{4,12}",
            "[1-9][0-9]{5,12}",
        ],
        field in select(vec!["database.url", "api.token", "notifications.amqp_url", "notifications.webhook_url"]),
        layer in select(vec!["file", "env", "flag"]),
        auth_token in any::<bool>(),
        typed in any::<bool>(),
    ) {
        let value = match field {
            "database.url" => format!("postgres://root:{secret}@db.example:5432/ferric"),
            "notifications.amqp_url" => format!("amqp://guest:{secret}@rabbit:5672/%2f"),
            "notifications.webhook_url" => format!("https://hook:{secret}@hooks.example/ferric"),
            _ => secret.clone(),
        };
        let (section, key) = field.split_once('.').unwrap_or_default();
        let dir = tempfile::tempdir().unwrap();
        let mut base = String::new();
        if field.starts_with("notifications.") {
            let sink = if key == "amqp_url" { "amqp" } else { "webhook" };
            base.push_str(&format!("[notifications]\nsink = \"{sink}\"\n"));
        }
        if auth_token && field == "api.token" {
            base.push_str("[api]\nauth = \"token\"\n");
        }
        let mut sources = Sources::default();
        match layer {
            "file" => {
                let mut t: toml::Table = toml::from_str(&base).unwrap();
                let s = t.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(s) = s {
                    // A number where a string belongs: a type error, which
                    // must not echo the value.
                    let v = match value.parse::<i64>() {
                        Ok(n) if typed => toml::Value::Integer(n),
                        _ => toml::Value::String(value.clone()),
                    };
                    s.insert(key.to_string(), v);
                }
                sources.file = Some(write(&dir, &toml::to_string(&t).unwrap()));
            }
            "env" => {
                sources.file = Some(write(&dir, &base));
                sources.env = vec![(format!("FERRIC_{}__{}", section.to_uppercase(), key.to_uppercase()), value.clone())];
            }
            _ => {
                sources.file = Some(write(&dir, &base));
                sources = sources.flag(field, "--secret", Some(&value));
            }
        }
        match Config::load(&sources) {
            Ok(c) => {
                let shown = c.to_toml_masked().unwrap();
                prop_assert!(!shown.contains(&secret), "shown: {}", shown);
                let debug = format!("{c:?}");
                prop_assert!(!debug.contains(&secret), "debug: {}", debug);
                load_and_check(&sources, &[])?;
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(!text.contains(&secret), "error shows the secret: {}", text);
            }
        }
    }
}

// ----- regressions: minimal inputs of bugs the properties found -------------

/// `FERRIC_API__TOKEN=100000` was parsed as a number: the config was refused
/// with `invalid type: found unsigned int `100000``, the token in the error.
#[test]
fn a_digits_only_token_from_the_environment_is_a_token() {
    let sources = Sources {
        env: vec![
            ("FERRIC_API__AUTH".into(), "token".into()),
            ("FERRIC_API__TOKEN".into(), "100000".into()),
            ("FERRIC_CONDUCTOR__HOST".into(), "42".into()),
        ],
        ..Sources::default()
    };
    let c = Config::load(&sources).unwrap();
    assert_eq!(c.api.token, "100000");
    assert_eq!(c.conductor.host, "42");
    // Numbers still parse where numbers belong.
    let sources = Sources {
        env: vec![("FERRIC_API__PORT".into(), "7001".into())],
        ..Sources::default()
    };
    assert_eq!(Config::load(&sources).unwrap().api.port, 7001);
}

/// A webhook password with `#` made the URL unparsable, and the problem
/// repeated the raw URL after the masked one; a number as `api.token` in a
/// file was echoed in the type error.
#[test]
fn problems_never_show_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    for text in [
        "[notifications]\nsink = \"webhook\"\nwebhook_url = \"https://hook:Zq#a0=@hooks.example/ferric\"\n",
        "[api]\ntoken = 100000\n",
        "[database]\nurl = 100000\n",
    ] {
        let sources = Sources {
            file: Some(write(&dir, text)),
            ..Sources::default()
        };
        let e = Config::load(&sources).unwrap_err().to_string();
        assert!(
            !e.contains("Zq#a0") && !e.contains("100000"),
            "{e}"
        );
        assert!(
            e.contains("notifications.webhook_url") || e.contains("api.token") || e.contains("database.url"),
            "{e}"
        );
    }
}

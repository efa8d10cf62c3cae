//! Strategies shared by the property tests: JSON values of every type,
//! JSON-pointer paths (real, read-only, nested, malformed), patch operations.

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{json, Map, Value};

/// A proptest config with `cases` cases (`PROPTEST_CASES` overrides) and a
/// fixed seed, so CI runs the same cases every time; set `PROPTEST_RNG_SEED`
/// to explore other ones. Failures are persisted under `proptest-regressions/`.
pub fn config(cases: u32) -> Config {
    let mut c = Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(cases),
        // Shrinking HTTP cases is slow; a few hundred steps are plenty.
        max_shrink_iters: 512,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x0f3e_7a11_c0de);
    }
    c
}

/// Writable root fields of a node.
pub const WRITABLE: &[&str] = &[
    "name",
    "driver",
    "driver_info",
    "properties",
    "extra",
    "instance_info",
    "instance_uuid",
    "maintenance",
    "maintenance_reason",
    "conductor_group",
    "power_interface",
    "boot_interface",
    "deploy_interface",
    "network_interface",
    "vendor_interface",
];

/// Fields only the conductor writes.
pub const READ_ONLY: &[&str] = &[
    "uuid",
    "id",
    "created_at",
    "updated_at",
    "provision_state",
    "target_provision_state",
    "power_state",
    "target_power_state",
    "provision_updated_at",
    "reservation",
    "last_error",
    "driver_internal_info",
    "conductor",
    "links",
    "ports",
    "console_enabled",
    "fault",
];

/// Ironic fields ferric does not store, and plain unknown ones.
pub const OTHER: &[&str] = &[
    "owner",
    "lessee",
    "traits",
    "description",
    "resource_class",
    "retired",
    "colour",
    "UUID",
    "Name",
    "name ",
    "_interface",
    "foo_interface",
];

/// The dictionary fields.
pub const DICTS: &[&str] = &["extra", "properties", "driver_info", "instance_info"];

/// Strings that mean something somewhere (names, drivers, interfaces,
/// groups, UUIDs, states) and strings that break things.
pub fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "",
            " ",
            "n1",
            "node-2",
            "x.y_z~w",
            "bad name",
            "fake-hardware",
            "redfish",
            "ipmi",
            "fake",
            "noop",
            "direct",
            "redfish-virtual-media",
            "Group_A",
            "group a",
            "0d8b5a41-6f7e-4e0a-9d3b-6c1f0b3a1e22",
            "6a2e0f3c-1b9d-4c57-8e21-5b7f3a9c0d44",
            "not-a-uuid",
            "active",
            "manage",
            "power on",
            "null",
            "true",
            "\u{0}",
            "a\u{0}b",
            "\u{feff}",
            "é",
            "☃",
            "\u{10ffff}",
            "\\",
            "\"",
            "~1",
            "%00",
        ])
        .prop_map(str::to_string),
        2 => "\\PC{0,12}",
        1 => any::<String>(),
        1 => (1usize..400).prop_map(|n| "a".repeat(n)),
    ]
}

/// A JSON leaf of any type.
pub fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        string().prop_map(Value::from),
    ]
}

/// Any JSON value, nested a few levels.
pub fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((string(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// `{"a": {"a": ... leaf}}` (or arrays) `depth` levels deep.
pub fn nested(depth: usize, arrays: bool) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = if arrays {
            Value::Array(vec![v])
        } else {
            let mut m = Map::new();
            m.insert("a".to_string(), v);
            Value::Object(m)
        };
    }
    v
}

/// Deeply nested values, around the depth limits of serde_json (128).
pub fn deep_value() -> impl Strategy<Value = Value> {
    (1usize..200, any::<bool>()).prop_map(|(d, arrays)| nested(d, arrays))
}

/// A reference token: plain, escaped, empty, numeric.
pub fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec!["a", "b", "k", "cpus", "a~1b", "~0", "~1", "~", "~2", "", "0", "-", "a b"])
            .prop_map(str::to_string),
        1 => "[a-z0-9~/ ]{0,4}",
    ]
}

/// A patch path.
pub fn path() -> impl Strategy<Value = String> {
    let root = prop_oneof![
        4 => select(WRITABLE),
        2 => select(READ_ONLY),
        1 => select(OTHER),
    ];
    prop_oneof![
        6 => root.clone().prop_map(|f| format!("/{f}")),
        6 => (select(DICTS), prop::collection::vec(token(), 1..4))
            .prop_map(|(d, t)| format!("/{d}/{}", t.join("/"))),
        1 => (root, prop::collection::vec(token(), 1..3))
            .prop_map(|(f, t)| format!("/{f}/{}", t.join("/"))),
        1 => (select(DICTS), 1usize..300).prop_map(|(d, n)| format!("/{d}{}", "/a".repeat(n))),
        2 => select(vec!["", "/", "//", "foo", "/a~2b", "/extra/a~2b", "extra", "/~", "/extra/", " /name", "/name/"])
            .prop_map(str::to_string),
        1 => "\\PC{0,16}",
    ]
}

/// A value that suits the path's root field, so that some patches succeed.
pub fn plausible_value(path: &str) -> BoxedStrategy<Value> {
    let root = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let nested_path = path.trim_start_matches('/').contains('/');
    if nested_path {
        return value().boxed();
    }
    match root {
        "name" => prop_oneof![
            select(vec!["n1", "n2", "node-x", "a.b~c"]).prop_map(Value::from),
            Just(Value::Null)
        ]
        .boxed(),
        "driver" => select(vec!["fake-hardware", "redfish"])
            .prop_map(Value::from)
            .boxed(),
        "maintenance" => any::<bool>().prop_map(Value::from).boxed(),
        "maintenance_reason" => string().prop_map(Value::from).boxed(),
        "conductor_group" => select(vec!["", "g1", "Group-2"])
            .prop_map(Value::from)
            .boxed(),
        "instance_uuid" => prop_oneof![
            Just(Value::Null),
            Just(json!("0d8b5a41-6f7e-4e0a-9d3b-6c1f0b3a1e22"))
        ]
        .boxed(),
        r if r.ends_with("_interface") => select(vec!["fake", "redfish", "noop", "direct"])
            .prop_map(Value::from)
            .boxed(),
        r if DICTS.contains(&r) => prop::collection::vec((string(), value()), 0..4)
            .prop_map(|kv| Value::Object(kv.into_iter().collect()))
            .boxed(),
        _ => value().boxed(),
    }
}

/// An operation name: RFC 6902's six, and garbage.
pub fn op_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(vec!["add", "remove", "replace", "test", "move", "copy"]).prop_map(str::to_string),
        1 => select(vec!["", "ADD", "Add", "delete", "add "]).prop_map(str::to_string),
        1 => "\\PC{0,8}",
    ]
}

/// One operation as a JSON object: sometimes well-formed, sometimes not
/// (missing or extra members, members of the wrong type).
pub fn op_json() -> impl Strategy<Value = Value> {
    let well_formed = (op_name(), path())
        .prop_flat_map(|(op, path)| {
            let v = prop_oneof![
                6 => plausible_value(&path).prop_map(Some),
                3 => value().prop_map(Some),
                1 => deep_value().prop_map(Some),
                2 => Just(None),
            ];
            let from = prop_oneof![8 => Just(None), 1 => path_from()];
            (Just(op), Just(path), v, from)
        })
        .prop_map(|(op, path, value, from)| {
            let mut m = Map::new();
            // `remove` must not have a value: mostly follow the rule.
            let value = if op == "remove" && value.as_ref().is_some_and(|_| path.len() % 4 != 0) {
                None
            } else {
                value
            };
            m.insert("op".into(), json!(op));
            m.insert("path".into(), json!(path));
            if let Some(v) = value {
                m.insert("value".into(), v);
            }
            if let Some(f) = from {
                m.insert("from".into(), json!(f));
            }
            Value::Object(m)
        });
    prop_oneof![
        12 => well_formed,
        1 => value(),
        1 => prop::collection::vec((select(vec!["op", "path", "value", "from", "extra"]), value()), 0..5)
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
    ]
}

/// An operation likely to be accepted: add / replace / remove of a writable
/// field or a dictionary key, with a value of the right type.
pub fn plausible_op() -> impl Strategy<Value = Value> {
    let path = prop_oneof![
        select(WRITABLE).prop_map(|f| format!("/{f}")),
        (select(DICTS), select(vec!["a", "k", "new", "a~1b", "cpus"]))
            .prop_map(|(d, k)| format!("/{d}/{k}")),
        select(vec!["/extra/a/b", "/extra/a/c", "/properties/a/b"]).prop_map(str::to_string),
    ];
    (select(vec!["add", "add", "add", "replace", "remove"]), path)
        .prop_flat_map(|(op, path)| (Just(op), plausible_value(&path), Just(path)))
        .prop_map(|(op, value, path)| {
            if op == "remove" {
                json!({"op": op, "path": path})
            } else {
                json!({"op": op, "path": path, "value": value})
            }
        })
}

fn path_from() -> impl Strategy<Value = Option<String>> {
    path().prop_map(Some)
}

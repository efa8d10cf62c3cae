//! `apply_patch` on arbitrary operation sequences: it never panics, a
//! rejection is a 400 with a message, and an accepted patch leaves the
//! conductor's fields alone and produces a node the store can keep.

use crate::props::gen::{self, config};
use ferric_api::{apply_patch, render, ApiError, PatchOp, Version};
use ferric_core::{DbTime, Node, PowerState, ProvisionState, Reservation};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A stored node in some state, with dictionaries to descend into.
fn node() -> impl Strategy<Value = Node> {
    (
        prop::option::of(prop::sample::select(vec!["n1", "node-x"])),
        prop::option::of(Just(Uuid::from_u128(
            0x6a2e_0f3c_1b9d_4c57_8e21_5b7f_3a9c_0d44,
        ))),
        any::<bool>(),
        prop::sample::select(vec!["fake-hardware", "redfish"]),
        prop::sample::select(vec![
            ProvisionState::Enroll,
            ProvisionState::Manageable,
            ProvisionState::Available,
            ProvisionState::Active,
        ]),
        prop::option::of(Just(Reservation {
            holder: "cond-a".into(),
            task_id: Uuid::from_u128(7),
            epoch: 4,
            purpose: "node update".into(),
            acquired_at: DbTime(1_700_000_000_000),
        })),
    )
        .prop_map(
            |(name, instance_uuid, maintenance, driver, state, reservation)| {
                // A stored node has every interface field, valid for its driver.
                let mut interfaces = BTreeMap::new();
                ferric_conductor::drivers::Drivers::builtin()
                    .check_and_fill(driver, &mut interfaces)
                    .expect("the built-in hardware types have defaults");
                Node {
                    uuid: Uuid::from_u128(0x0d8b_5a41_6f7e_4e0a_9d3b_6c1f_0b3a_1e22),
                    name: name.map(str::to_string),
                    driver: driver.to_string(),
                    driver_info: map(
                        json!({"redfish_address": "http://bmc", "redfish_password": "s"}),
                    ),
                    properties: map(json!({"cpus": 8, "a": {"b": [1, 2]}})),
                    extra: map(json!({"a": {"b": {"c": 1}}, "k": [1, 2], "a/b": 1, "~": null})),
                    instance_info: Map::new(),
                    instance_uuid,
                    interfaces,
                    driver_internal_info: Default::default(),
                    clean_step: Default::default(),
                    deploy_step: Default::default(),
                    provision_state: state,
                    target_provision_state: None,
                    power_state: Some(PowerState::Off),
                    target_power_state: None,
                    maintenance,
                    maintenance_reason: maintenance.then(|| "why".to_string()),
                    last_error: Some("earlier failure".into()),
                    conductor_group: "g1".into(),
                    conductor_affinity: Some("cond-a".into()),
                    reservation,
                    lock_epoch: 4,
                    lock_waiters: 0,
                    revision: 42,
                    created_at: DbTime(1_690_000_000_000),
                    updated_at: Some(DbTime(1_695_000_000_000)),
                    provision_updated_at: Some(DbTime(1_695_000_000_000)),
                    attrs: Default::default(),
                }
            },
        )
}

/// Decode operations the way the handler does; `None` when the body would
/// already be refused by JSON decoding.
fn decode(ops: &[Value]) -> Option<Vec<PatchOp>> {
    let body = serde_json::to_vec(ops).ok()?;
    ferric_api::extract::parse_json::<Vec<PatchOp>>(&body).ok()
}

/// The fields only the conductor writes, as a comparable tuple.
fn conductor_fields(n: &Node) -> impl PartialEq + std::fmt::Debug {
    (
        n.uuid,
        n.provision_state,
        n.target_provision_state,
        n.power_state,
        n.target_power_state,
        n.last_error.clone(),
        n.reservation.clone(),
        n.conductor_affinity.clone(),
        (n.lock_epoch, n.lock_waiters, n.revision),
        (n.created_at, n.updated_at, n.provision_updated_at),
    )
}

fn check_rejection(e: &ApiError) -> Result<(), TestCaseError> {
    // Replacing the instance of an associated node is Ironic's
    // NodeAssociated, a 409; every other refusal is bad input.
    let associated = e.message().contains("is associated with instance");
    prop_assert_eq!(
        e.status().as_u16(),
        if associated { 409 } else { 400 },
        "not a 400: {}",
        e
    );
    let m = e.message();
    prop_assert!(!m.trim().is_empty(), "empty message");
    prop_assert!(!m.contains("panicked"), "{}", m);
    Ok(())
}

/// What must hold of every accepted patch.
fn check_accepted(before: &Node, after: &Node) -> Result<(), TestCaseError> {
    prop_assert_eq!(conductor_fields(before), conductor_fields(after));
    if let Some(name) = &after.name {
        prop_assert!(
            ferric_core::node::validate_name(name).is_ok(),
            "invalid name {:?}",
            name
        );
    }
    prop_assert!(ferric_conductor::drivers::Drivers::builtin().has(&after.driver));
    prop_assert_eq!(
        ferric_core::node::normalize_conductor_group(&after.conductor_group).ok(),
        Some(after.conductor_group.clone())
    );
    if let (Some(old), Some(new)) = (before.instance_uuid, after.instance_uuid) {
        prop_assert_eq!(old, new, "instance_uuid replaced while associated");
    }
    if !after.maintenance {
        prop_assert_eq!(&after.maintenance_reason, &None);
    }
    // The store keeps the node as JSON: every dictionary, and the whole node
    // (the change feed's snapshot), must read back as it was written.
    for (field, dict) in [
        ("driver_info", &after.driver_info),
        ("properties", &after.properties),
        ("extra", &after.extra),
        ("instance_info", &after.instance_info),
    ] {
        let text = serde_json::to_string(dict).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: Result<Map<String, Value>, _> = serde_json::from_str(&text);
        prop_assert!(
            back.is_ok(),
            "{} does not read back: {:?}",
            field,
            back.err()
        );
    }
    let text = serde_json::to_string(after).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: Result<Node, _> = serde_json::from_str(&text);
    prop_assert!(back.is_ok(), "node does not read back: {:?}", back.err());
    prop_assert_eq!(back.ok(), Some(after.clone()));
    // And it renders at every version.
    for v in [Version::MIN, Version::MAX] {
        let doc = render::node(after, "http://x", v, None);
        prop_assert!(serde_json::to_string(&doc).is_ok());
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    /// Arbitrary operation sequences: never a panic; a rejection is a 400
    /// with a message and leaves the node alone; an acceptance keeps every
    /// invariant.
    #[test]
    fn arbitrary_patches(node in node(), ops in prop::collection::vec(gen::op_json(), 0..6)) {
        let Some(ops) = decode(&ops) else { return Ok(()) };
        let before = node.clone();
        match apply_patch(&node, &ops) {
            Err(e) => check_rejection(&e)?,
            Ok(after) => check_accepted(&before, &after)?,
        }
        prop_assert_eq!(&node, &before);
    }

    /// The body decoder never panics on arbitrary bytes and refuses with a 400.
    #[test]
    fn arbitrary_patch_bodies(body in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Err(e) = ferric_api::extract::parse_json::<Vec<PatchOp>>(&body) {
            check_rejection(&e)?;
        }
    }

    /// One bad operation anywhere rejects the whole patch.
    #[test]
    fn one_bad_op_rejects_the_patch(
        node in node(),
        ops in prop::collection::vec(gen::op_json(), 0..4),
        bad in prop::sample::select(vec![
            json!({"op": "replace", "path": "/uuid", "value": "x"}),
            json!({"op": "add", "path": "/provision_state", "value": "active"}),
            json!({"op": "remove", "path": "/reservation"}),
            json!({"op": "test", "path": "/name", "value": "n1"}),
            json!({"op": "add", "path": "/nope", "value": 1}),
            json!({"op": "replace", "path": "/maintenance", "value": "yes"}),
            json!({"op": "remove", "path": "/extra/missing/deeper"}),
        ]),
        at in any::<prop::sample::Index>(),
    ) {
        let mut ops = ops;
        let i = at.index(ops.len() + 1);
        ops.insert(i, bad);
        let Some(ops) = decode(&ops) else { return Ok(()) };
        let e = apply_patch(&node, &ops);
        prop_assert!(e.is_err(), "accepted: {:?}", ops);
        if let Err(e) = e {
            check_rejection(&e)?;
        }
    }

    /// Adding a fresh key to a dictionary and removing it again is a no-op;
    /// replacing a key with its own value is a no-op.
    #[test]
    fn add_then_remove_is_identity(
        node in node(),
        dict in prop::sample::select(gen::DICTS),
        key in gen::string(),
        value in gen::value(),
    ) {
        let escaped = key.replace('~', "~0").replace('/', "~1");
        let fresh = match dict {
            "extra" => !node.extra.contains_key(&key),
            "properties" => !node.properties.contains_key(&key),
            "driver_info" => !node.driver_info.contains_key(&key),
            _ => !node.instance_info.contains_key(&key),
        };
        prop_assume!(fresh);
        let path = format!("/{dict}/{escaped}");
        let ops = decode(&[
            json!({"op": "add", "path": path, "value": value}),
            json!({"op": "remove", "path": path}),
        ]);
        prop_assert!(ops.is_some());
        let after = apply_patch(&node, &ops.unwrap_or_default());
        prop_assert_eq!(after.ok(), Some(node.clone()));
        let ops = decode(&[json!({"op": "replace", "path": "/extra/k", "value": [1, 2]})]);
        let after = apply_patch(&node, &ops.unwrap_or_default());
        prop_assert_eq!(after.ok(), Some(node.clone()));
    }

    /// Nesting built up by several operations (each value within the body
    /// parser's limit) must still leave a node the store can read back.
    #[test]
    fn nesting_stays_readable(
        node in node(),
        first in 1usize..126,
        second in 1usize..126,
        arrays in any::<bool>(),
    ) {
        let inner = "/a".repeat(first);
        let ops = decode(&[
            json!({"op": "add", "path": "/extra/deep", "value": gen::nested(first, false)}),
            json!({"op": "add", "path": format!("/extra/deep{inner}"), "value": gen::nested(second, arrays)}),
        ]);
        // The body itself parsed, so each value was within the parser's limit.
        prop_assume!(ops.is_some());
        match apply_patch(&node, &ops.unwrap_or_default()) {
            Err(e) => check_rejection(&e)?,
            Ok(after) => check_accepted(&node, &after)?,
        }
    }
}

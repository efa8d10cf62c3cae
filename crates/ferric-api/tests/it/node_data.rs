//! The node sub-resources and small endpoints of `ferric_api::node_sub`
//! over real HTTP: management (boot device, NMI) through the fake
//! management interface, history, BIOS, firmware, inventory (written through
//! the store, as inspection and cleaning will), virtual media, vendor
//! passthru, driver properties and events. Each with its version gate,
//! unknown node 404, bad input 400 with Ironic's message, and the lock.

use crate::common::{App, Options, Reply};
use ferric_conductor::drivers::fake::FakeHardware;
use ferric_conductor::drivers::{BootDevice, Drivers};
use ferric_store::{BiosSetting, FirmwareComponent, NewHistoryEvent, NodeIdent};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn spawn(fake: Arc<FakeHardware>) -> App {
    Options::new()
        .locked_retry(3, Duration::from_millis(50))
        .drivers(Some(Drivers::new().with(fake)))
        .spawn()
        .await
        .unwrap()
}

impl App {
    /// A new fake-hardware node (enroll); its uuid.
    async fn enroll(&self, name: &str, driver_info: Value) -> Uuid {
        let r = self
            .send(
                Method::POST,
                "/v1/nodes",
                json!({"driver": "fake-hardware", "name": name, "driver_info": driver_info}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["uuid"].as_str().unwrap().parse().unwrap()
    }

    /// Run `f` with the node's exclusive lock held (as the conductor does
    /// when it writes the caches).
    async fn locked<F, Fut>(&self, node: Uuid, f: F)
    where
        F: FnOnce(ferric_store::LockToken) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let task = self
            .tm
            .acquire(NodeIdent::Uuid(node))
            .purpose("test writes")
            .exclusive()
            .await
            .unwrap();
        f(task.token().clone()).await;
        task.release().await.unwrap();
    }
}

fn assert_fault(r: &Reply, status: StatusCode, message: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.fault(), message);
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn boot_device_through_the_fake_management_interface() {
    let fake = Arc::new(FakeHardware::new());
    let app = spawn(fake.clone()).await;
    let uuid = app.enroll("bd", json!({})).await;

    let r = app.get("/v1/nodes/bd/management/boot_device").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"boot_device": "pxe", "persistent": false}));
    let r = app
        .get("/v1/nodes/bd/management/boot_device/supported")
        .await;
    assert_eq!(
        r.body,
        json!({"supported_boot_devices": ["pxe", "disk", "cdrom", "bios"]})
    );

    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/bd/management/boot_device",
            json!({"boot_device": "disk", "persistent": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(fake.boot_device(uuid), Some((BootDevice::Disk, true)));
    let r = app
        .get(&format!("/v1/nodes/{uuid}/management/boot_device"))
        .await;
    assert_eq!(r.body, json!({"boot_device": "disk", "persistent": true}));
    // `persistent` defaults to false; strings are Ironic booleans.
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/bd/management/boot_device",
            json!({"boot_device": "cdrom", "persistent": "no"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(fake.boot_device(uuid), Some((BootDevice::Cdrom, false)));

    // Bad input: 400 with Ironic's words, nothing changed.
    let bad = [
        (
            json!({"boot_device": "floppy"}),
            "Invalid boot device floppy specified.",
        ),
        (
            json!({"boot_device": "uefihttp"}),
            "Invalid boot device uefihttp specified.",
        ),
        (json!({"persistent": true}), "Missing argument: \"boot_device\""),
        (
            json!({"boot_device": 5}),
            "Expected string for boot_device: 5",
        ),
        (
            json!({"boot_device": "pxe", "persistent": "maybe"}),
            "Invalid persistent: Unrecognized value 'maybe', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'",
        ),
        (
            json!({"boot_device": "pxe", "other": 1}),
            "Unknown argument: \"other\"",
        ),
    ];
    for (body, message) in bad {
        let r = app
            .send(Method::PUT, "/v1/nodes/bd/management/boot_device", body)
            .await;
        assert_fault(&r, StatusCode::BAD_REQUEST, message);
    }
    assert_eq!(fake.boot_device(uuid), Some((BootDevice::Cdrom, false)));

    // Unknown node.
    for path in [
        "/v1/nodes/nope/management/boot_device",
        "/v1/nodes/nope/management/boot_device/supported",
    ] {
        assert_fault(
            &app.get(path).await,
            StatusCode::NOT_FOUND,
            "Node nope could not be found.",
        );
    }

    // An invalid management interface (driver_info) is a 400 before any change.
    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/bd",
            json!([{"op": "add", "path": "/driver_info/fake_invalid", "value": "no BMC address"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/bd/management/boot_device",
            json!({"boot_device": "pxe"}),
        )
        .await;
    assert_fault(&r, StatusCode::BAD_REQUEST, "no BMC address");
    assert_fault(
        &app.get("/v1/nodes/bd/management/boot_device").await,
        StatusCode::BAD_REQUEST,
        "no BMC address",
    );
    assert_eq!(fake.boot_device(uuid), Some((BootDevice::Cdrom, false)));
    app.tm.shutdown();
}

#[tokio::test]
async fn management_waits_for_the_lock_then_answers_409() {
    let fake = Arc::new(FakeHardware::new());
    let app = spawn(fake.clone()).await;
    let uuid = app.enroll("busy", json!({})).await;
    let task = app
        .tm
        .acquire(NodeIdent::Uuid(uuid))
        .purpose("something long")
        .exclusive()
        .await
        .unwrap();
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/busy/management/boot_device",
            json!({"boot_device": "disk"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    // Reads of the boot device take the exclusive lock too (as Ironic).
    let r = app.get("/v1/nodes/busy/management/boot_device").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    // The supported devices need only a shared lock.
    let r = app
        .get("/v1/nodes/busy/management/boot_device/supported")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(fake.boot_device(uuid), None, "nothing changed");
    task.release().await.unwrap();
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/busy/management/boot_device",
            json!({"boot_device": "disk"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    app.tm.shutdown();
}

#[tokio::test]
async fn inject_nmi_is_gated_and_refused_by_the_fake_interface() {
    let app = spawn(Arc::new(FakeHardware::new())).await;
    app.enroll("nmi", json!({})).await;
    let r = app
        .at(
            Method::PUT,
            "/v1/nodes/nmi/management/inject_nmi",
            "1.28",
            None,
        )
        .await;
    assert_fault(
        &r,
        StatusCode::NOT_FOUND,
        "The resource could not be found. (It needs API version 1.29 or later.)",
    );
    let r = app
        .at(
            Method::PUT,
            "/v1/nodes/nmi/management/inject_nmi",
            "1.29",
            None,
        )
        .await;
    assert_fault(
        &r,
        StatusCode::BAD_REQUEST,
        "Driver fake-hardware does not support inject_nmi (disabled or not implemented).",
    );
    let r = app
        .at(
            Method::PUT,
            "/v1/nodes/nope/management/inject_nmi",
            "1.29",
            None,
        )
        .await;
    assert_fault(&r, StatusCode::NOT_FOUND, "Node nope could not be found.");
    app.tm.shutdown();
}

/// Poll the node's history until it has `n` entries.
async fn history_len(app: &App, node: &str, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let r = app
            .get(&format!("/v1/nodes/{node}/history?detail=True"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let items = r.body["history"].as_array().unwrap().clone();
        if items.len() >= n {
            return items;
        }
        assert!(Instant::now() < until, "history never had {n}: {}", r.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn failed_verification_is_in_the_history() {
    let app = spawn(Arc::new(FakeHardware::new())).await;
    let uuid = app
        .enroll("h1", json!({"fake_power_state_error": "BMC unreachable"}))
        .await;
    let r = app
        .at(Method::GET, "/v1/nodes/h1/history", "1.77", None)
        .await;
    assert_fault(
        &r,
        StatusCode::NOT_FOUND,
        "The resource could not be found. (It needs API version 1.78 or later.)",
    );
    let r = app
        .at(Method::GET, "/v1/nodes/h1/history", "1.78", None)
        .await;
    assert_eq!(r.body, json!({"history": []}));

    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/h1/states/provision",
            json!({"target": "manage"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let items = history_len(&app, "h1", 1).await;
    let e = &items[0];
    assert_eq!(e["severity"], "ERROR", "{e}");
    assert_eq!(e["event_type"], "verifying", "{e}");
    assert_eq!(e["conductor"], "cond-a", "{e}");
    assert!(e["user"].is_null());
    let node = app.node("h1").await;
    assert_eq!(e["event"], node["last_error"], "{e} {node}");
    assert!(
        e["event"].as_str().unwrap().contains("BMC unreachable"),
        "{e}"
    );
    // Fields of 1.113 (project) and 1.115 (state, ...) are shown from them.
    assert_eq!(
        keys(e),
        [
            "conductor",
            "created_at",
            "duration_seconds",
            "event",
            "event_type",
            "links",
            "project",
            "severity",
            "state",
            "target_provision_state",
            "user",
            "uuid"
        ]
    );
    let old = app
        .call(
            Method::GET,
            "/v1/nodes/h1/history?detail=True",
            Some("1.112"),
            None,
        )
        .await;
    assert_eq!(
        keys(&old.body["history"][0]),
        [
            "conductor",
            "created_at",
            "event",
            "event_type",
            "links",
            "severity",
            "user",
            "uuid"
        ]
    );
    let ev = e["uuid"].as_str().unwrap();
    assert_eq!(
        e["links"],
        json!([{"href": format!("{}/v1/nodes/{uuid}/history/{ev}", app.base), "rel": "self"}])
    );
    let one = app.get(&format!("/v1/nodes/h1/history/{ev}")).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(&one.body, e);
    app.tm.shutdown();
}

#[tokio::test]
async fn history_lists_page_and_validate() {
    let app = spawn(Arc::new(FakeHardware::new())).await;
    let uuid = app.enroll("h2", json!({})).await;
    let long = "x".repeat(300);
    app.locked(uuid, |token| {
        let store = app.tm.store().clone();
        let long = long.clone();
        async move {
            for event in ["first", "second", long.as_str()] {
                let ev = NewHistoryEvent {
                    event: event.into(),
                    event_type: Some("monitoring".into()),
                    ..Default::default()
                };
                store.add_node_history(&token, &ev).await.unwrap();
            }
        }
    })
    .await;
    let r = app.get("/v1/nodes/h2/history").await;
    let items = r.body["history"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(r.body.get("next").is_none());
    assert_eq!(
        keys(&items[0]),
        ["created_at", "event", "links", "severity", "uuid"]
    );
    assert_eq!(items[0]["event"], "first");
    assert_eq!(items[0]["severity"], "INFO");
    // Without detail a long event is cut to 251 characters and "...".
    let cut = items[2]["event"].as_str().unwrap();
    assert_eq!(cut.len(), 254);
    assert!(cut.ends_with("..."));
    let detail = app.get("/v1/nodes/h2/history?detail=true").await;
    assert_eq!(detail.body["history"][2]["event"], long.as_str());

    // Paging: limit, next, marker; newest first with sort_dir=desc.
    let r = app.get("/v1/nodes/h2/history?limit=2").await;
    let page = r.body["history"].as_array().unwrap();
    assert_eq!(page.len(), 2);
    let second = page[1]["uuid"].as_str().unwrap();
    assert_eq!(
        r.body["next"],
        format!(
            "{}/v1/nodes/h2/history?sort_key=created_at&sort_dir=asc&fields=uuid,created_at,severity,event&limit=2&marker={second}",
            app.base
        )
    );
    let r = app
        .get(&format!("/v1/nodes/h2/history?limit=2&marker={second}"))
        .await;
    assert_eq!(r.body["history"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["history"][0]["event"], cut);
    let r = app.get("/v1/nodes/h2/history?sort_dir=desc&limit=1").await;
    assert_eq!(r.body["history"][0]["event"], cut);

    let bad = [
        ("limit=0", "Limit must be positive"),
        ("limit=x", "Expected an integer for limit: x"),
        ("marker=abc", "Expected UUID for marker: abc"),
        (
            "sort_dir=up",
            "Invalid sort direction: up. Acceptable values are 'asc' or 'desc'",
        ),
        (
            "sort_key=event",
            "The sort_key value event is an invalid field for sorting",
        ),
    ];
    for (q, message) in bad {
        let r = app.get(&format!("/v1/nodes/h2/history?{q}")).await;
        assert_fault(&r, StatusCode::BAD_REQUEST, message);
    }
    let missing = Uuid::new_v4();
    assert_fault(
        &app.get(&format!("/v1/nodes/h2/history?marker={missing}"))
            .await,
        StatusCode::NOT_FOUND,
        &format!("Node history record {missing} could not be found."),
    );
    assert_fault(
        &app.get(&format!("/v1/nodes/h2/history/{missing}")).await,
        StatusCode::NOT_FOUND,
        &format!("Node history record {missing} could not be found."),
    );
    assert_fault(
        &app.get("/v1/nodes/nope/history").await,
        StatusCode::NOT_FOUND,
        "Node nope could not be found.",
    );

    // The history goes with the node.
    let r = app
        .call(Method::DELETE, "/v1/nodes/h2", Some("latest"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    app.enroll("h2", json!({})).await;
    assert_eq!(
        app.get("/v1/nodes/h2/history").await.body,
        json!({"history": []})
    );
    app.tm.shutdown();
}

#[tokio::test]
async fn bios_firmware_and_inventory_from_the_store() {
    let app = spawn(Arc::new(FakeHardware::new())).await;
    let uuid = app.enroll("c1", json!({})).await;
    // Gates first, then the empty caches.
    for (path, minor) in [
        ("/v1/nodes/c1/bios", 40),
        ("/v1/nodes/c1/bios/BootMode", 40),
        ("/v1/nodes/c1/firmware", 86),
        ("/v1/nodes/c1/inventory", 81),
    ] {
        let r = app
            .at(Method::GET, path, &format!("1.{}", minor - 1), None)
            .await;
        assert_fault(
            &r,
            StatusCode::NOT_FOUND,
            &format!("The resource could not be found. (It needs API version 1.{minor} or later.)"),
        );
    }
    assert_eq!(app.get("/v1/nodes/c1/bios").await.body, json!({"bios": []}));
    assert_eq!(
        app.get("/v1/nodes/c1/firmware").await.body,
        json!({"firmware": []})
    );
    assert_fault(
        &app.get("/v1/nodes/c1/inventory").await,
        StatusCode::NOT_FOUND,
        &format!("Node inventory record for node {uuid} could not be found."),
    );

    let inventory =
        json!({"cpu": {"count": 8, "architecture": "x86_64"}, "memory": {"physical_mb": 16384}});
    app.locked(uuid, |token| {
        let store = app.tm.store().clone();
        let inventory = inventory.clone();
        async move {
            let boot = BiosSetting {
                name: "BootMode".into(),
                value: Some("Uefi".into()),
                attribute_type: Some("Enumeration".into()),
                allowable_values: Some(vec!["Bios".into(), "Uefi".into()]),
                read_only: Some(false),
                reset_required: Some(true),
                ..Default::default()
            };
            let procs = BiosSetting {
                name: "ProcVirtualization".into(),
                value: Some("Enabled".into()),
                ..Default::default()
            };
            store
                .set_bios_settings(&token, &[boot, procs])
                .await
                .unwrap();
            let fw = FirmwareComponent {
                component: "bios".into(),
                initial_version: "v1.0.0".into(),
                current_version: Some("v1.2.0".into()),
                last_version_flashed: Some("v1.2.0".into()),
                vendor: Some("Acme".into()),
                ..Default::default()
            };
            store.set_firmware_components(&token, &[fw]).await.unwrap();
            store
                .set_node_inventory(&token, &inventory, &json!({"root_disk": "sda"}))
                .await
                .unwrap();
        }
    })
    .await;

    // BIOS at 1.40: name and value (and the timestamps and links).
    let r = app.at(Method::GET, "/v1/nodes/c1/bios", "1.40", None).await;
    let first = &r.body["bios"][0];
    assert_eq!(
        keys(first),
        ["created_at", "links", "name", "updated_at", "value"]
    );
    assert_eq!(first["name"], "BootMode");
    assert_eq!(first["value"], "Uefi");
    assert!(first["updated_at"].is_null());
    assert_eq!(
        first["links"][0]["href"],
        format!("{}/v1/nodes/c1/bios/BootMode", app.base)
    );
    for q in ["detail=True", "fields=name"] {
        let r = app
            .at(Method::GET, &format!("/v1/nodes/c1/bios?{q}"), "1.73", None)
            .await;
        assert_fault(
            &r,
            StatusCode::BAD_REQUEST,
            &format!("Invalid query parameter ?{q} received."),
        );
    }
    // 1.74: detail has the registry fields; fields picks.
    let r = app.get("/v1/nodes/c1/bios?detail=True").await;
    let d = &r.body["bios"][0];
    assert_eq!(d["allowable_values"], json!(["Bios", "Uefi"]));
    assert_eq!(d["attribute_type"], "Enumeration");
    assert_eq!(d["reset_required"], true);
    assert!(d["upper_bound"].is_null());
    assert_eq!(r.body["bios"][1]["allowable_values"], json!([]));
    let r = app.get("/v1/nodes/c1/bios?fields=name,read_only").await;
    assert_eq!(
        keys(&r.body["bios"][0]),
        ["created_at", "links", "name", "read_only", "updated_at"]
    );
    assert_fault(
        &app.get("/v1/nodes/c1/bios?fields=name&detail=True").await,
        StatusCode::BAD_REQUEST,
        "Can not specify ?detail=True and fields in the same request.",
    );
    let r = app.get("/v1/nodes/c1/bios?fields=bogus").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r
        .fault()
        .starts_with("Schema error: 'bogus' is not one of ["));
    // One setting, keyed by its name.
    let r = app
        .at(Method::GET, "/v1/nodes/c1/bios/BootMode", "1.40", None)
        .await;
    assert_eq!(keys(&r.body), ["BootMode"]);
    assert_eq!(
        keys(&r.body["BootMode"]),
        ["created_at", "links", "name", "updated_at", "value"]
    );
    let r = app.get("/v1/nodes/c1/bios/BootMode").await;
    assert_eq!(r.body["BootMode"]["attribute_type"], "Enumeration");
    assert_eq!(
        r.body["BootMode"]["links"][1]["href"],
        format!("{}/nodes/{uuid}/bios/BootMode", app.base)
    );
    assert_fault(
        &app.get("/v1/nodes/c1/bios/Nope").await,
        StatusCode::NOT_FOUND,
        &format!("Node {uuid} doesn't have a BIOS setting 'Nope'"),
    );
    assert_fault(
        &app.get("/v1/nodes/nope/bios").await,
        StatusCode::NOT_FOUND,
        "Node nope could not be found.",
    );

    // Firmware: the identity fields need 1.114.
    let r = app
        .call(Method::GET, "/v1/nodes/c1/firmware", Some("1.113"), None)
        .await;
    assert_eq!(
        r.body,
        json!({"firmware": [{
            "component": "bios", "initial_version": "v1.0.0", "current_version": "v1.2.0",
            "last_version_flashed": "v1.2.0",
            "created_at": r.body["firmware"][0]["created_at"], "updated_at": null,
        }]})
    );
    assert!(r.body["firmware"][0]["created_at"].is_string());
    let latest = app.get("/v1/nodes/c1/firmware").await;
    for k in ["vendor", "model", "serial_number"] {
        assert!(
            latest.body["firmware"][0].get(k).is_some(),
            "{k}: {}",
            latest.body
        );
    }
    let r = app.get("/v1/nodes/c1/firmware?fields=component").await;
    assert_eq!(
        keys(&r.body["firmware"][0]),
        ["component", "created_at", "updated_at"]
    );
    assert_fault(
        &app
            .call(
                Method::GET,
                "/v1/nodes/c1/firmware?fields=component,vendor",
                Some("1.113"),
                None,
            )
            .await,
        StatusCode::BAD_REQUEST,
        "Fields vendor are not allowed in this API version. They require at least API version 1.114.",
    );

    // Inventory.
    let r = app.get("/v1/nodes/c1/inventory").await;
    assert_eq!(
        r.body,
        json!({"inventory": inventory, "plugin_data": {"root_disk": "sda"}})
    );
    app.tm.shutdown();
}

#[tokio::test]
async fn virtual_media_is_refused_as_for_an_unsupporting_ironic_driver() {
    let app = spawn(Arc::new(FakeHardware::new())).await;
    let uuid = app.enroll("vm", json!({})).await;
    let attach = json!({"device_type": "cdrom", "image_url": "http://example.com/boot.iso"});
    let r = app
        .at(
            Method::POST,
            "/v1/nodes/vm/vmedia",
            "1.88",
            Some(attach.clone()),
        )
        .await;
    assert_fault(
        &r,
        StatusCode::NOT_FOUND,
        "The resource could not be found. (It needs API version 1.89 or later.)",
    );
    let r = app
        .at(Method::GET, "/v1/nodes/vm/vmedia", "1.92", None)
        .await;
    assert_fault(
        &r,
        StatusCode::NOT_FOUND,
        "The resource could not be found. (It needs API version 1.93 or later.)",
    );
    assert_fault(
        &app.get("/v1/nodes/vm/vmedia").await,
        StatusCode::BAD_REQUEST,
        "Driver fake-hardware does not support get_virtual_media (disabled or not implemented).",
    );

    let bad = [
        (
            json!({"device_type": "cdrom"}),
            "Schema error: 'image_url' is a required property",
        ),
        (
            json!({"device_type": "tape", "image_url": "http://x/y.iso"}),
            "Schema error: 'tape' is not one of ['disk', 'cdrom', 'floppy']",
        ),
        (
            json!({"device_type": "cdrom", "image_url": "http://x/y.iso", "x": 1}),
            "Schema error: Additional properties are not allowed ('x' was unexpected)",
        ),
        (
            json!({"device_type": "cdrom", "image_url": "ftp://x/y.iso"}),
            "Unsupported or missing URL scheme: ftp",
        ),
        (
            json!({"device_type": "cdrom", "image_url": "/tmp/y.iso"}),
            "Unsupported or missing URL scheme: ",
        ),
    ];
    for (body, message) in bad {
        let r = app.send(Method::POST, "/v1/nodes/vm/vmedia", body).await;
        assert_fault(&r, StatusCode::BAD_REQUEST, message);
    }
    assert!(app.node("vm").await["last_error"].is_null());

    // Accepted; the attach fails as the node's action (last_error, history).
    let r = app.send(Method::POST, "/v1/nodes/vm/vmedia", attach).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let error = format!(
        "Could not attach device cdrom to node {uuid}: Driver fake-hardware does not support attach_virtual_media (disabled or not implemented)."
    );
    assert_eq!(app.node("vm").await["last_error"], error.as_str());
    let items = history_len(&app, "vm", 1).await;
    assert_eq!(items[0]["event"], error.as_str());
    assert_eq!(items[0]["severity"], "ERROR");

    let r = app
        .call(
            Method::DELETE,
            "/v1/nodes/vm/vmedia?device_types=cdrom,tape",
            Some("latest"),
            None,
        )
        .await;
    assert_fault(
        &r,
        StatusCode::BAD_REQUEST,
        "Invalid device type(s) tape (valid are disk, cdrom, floppy)",
    );
    let r = app
        .call(
            Method::DELETE,
            "/v1/nodes/vm/vmedia?device_types=cdrom",
            Some("latest"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(
        app.node("vm").await["last_error"],
        format!("Could not detach device(s) ['cdrom'] from node {uuid}: Driver fake-hardware does not support detach_virtual_media (disabled or not implemented).")
    );
    let r = app
        .call(Method::DELETE, "/v1/nodes/vm/vmedia", Some("latest"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(app.node("vm").await["last_error"]
        .as_str()
        .unwrap()
        .starts_with("Could not detach device(s) None from node"));
    // openstacksdk sends the device types in a JSON body (Ironic's
    // string_list: lower-cased, without duplicates).
    let r = app
        .send(
            Method::DELETE,
            "/v1/nodes/vm/vmedia",
            json!({"device_types": "FLOPPY,disk,floppy"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(app.node("vm").await["last_error"]
        .as_str()
        .unwrap()
        .starts_with("Could not detach device(s) ['floppy', 'disk'] from node"));
    let r = app
        .send(
            Method::DELETE,
            "/v1/nodes/vm/vmedia",
            json!({"device_types": ["cdrom", 5]}),
        )
        .await;
    assert_fault(
        &r,
        StatusCode::BAD_REQUEST,
        "Expected string for device_types: 5",
    );
    assert_eq!(history_len(&app, "vm", 4).await.len(), 4);
    let r = app
        .call(
            Method::DELETE,
            "/v1/nodes/nope/vmedia",
            Some("latest"),
            None,
        )
        .await;
    assert_fault(&r, StatusCode::NOT_FOUND, "Node nope could not be found.");
    app.tm.shutdown();
}

#[tokio::test]
async fn vendor_passthru_and_driver_properties() {
    let app = spawn(Arc::new(FakeHardware::new())).await;
    app.enroll("vp", json!({})).await;
    let r = app.get("/v1/nodes/vp/vendor_passthru/methods").await;
    assert_eq!((r.status, r.body), (StatusCode::OK, json!({})));
    assert_fault(
        &app.get("/v1/nodes/nope/vendor_passthru/methods").await,
        StatusCode::NOT_FOUND,
        "Node nope could not be found.",
    );
    for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
        let r = app
            .call(
                method.clone(),
                "/v1/nodes/vp/vendor_passthru?method=reset_bmc",
                Some("latest"),
                None,
            )
            .await;
        assert_fault(
            &r,
            StatusCode::BAD_REQUEST,
            "No handler for method reset_bmc",
        );
    }
    // python-ironicclient puts the method in the path.
    assert_fault(
        &app.send(
            Method::POST,
            "/v1/nodes/vp/vendor_passthru/reset_bmc",
            json!({}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "No handler for method reset_bmc",
    );
    assert_fault(
        &app.send(
            Method::PUT,
            "/v1/drivers/redfish/vendor_passthru/lookup",
            json!({}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "No handler for method lookup",
    );
    assert_fault(
        &app.send(Method::POST, "/v1/nodes/vp/vendor_passthru", json!({}))
            .await,
        StatusCode::BAD_REQUEST,
        "Method not specified",
    );
    assert_fault(
        &app.get("/v1/nodes/nope/vendor_passthru?method=x").await,
        StatusCode::NOT_FOUND,
        "Node nope could not be found.",
    );

    for driver in ["fake-hardware", "redfish"] {
        let r = app
            .get(&format!("/v1/drivers/{driver}/vendor_passthru/methods"))
            .await;
        assert_eq!((r.status, r.body), (StatusCode::OK, json!({})));
        let r = app
            .send(
                Method::POST,
                &format!("/v1/drivers/{driver}/vendor_passthru?method=lookup"),
                json!({}),
            )
            .await;
        assert_fault(&r, StatusCode::BAD_REQUEST, "No handler for method lookup");
    }
    let missing = "Could not find the following driver(s) or hardware type(s): ipmi.";
    for path in [
        "/v1/drivers/ipmi/vendor_passthru/methods",
        "/v1/drivers/ipmi/vendor_passthru?method=x",
        "/v1/drivers/ipmi/properties",
    ] {
        assert_fault(&app.get(path).await, StatusCode::NOT_FOUND, missing);
    }

    let r = app.get("/v1/drivers/redfish/properties").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        keys(&r.body),
        [
            "agent_verify_ca",
            "deploy_kernel",
            "deploy_ramdisk",
            "kernel_append_params",
            "redfish_address",
            "redfish_password",
            "redfish_system_id",
            "redfish_username",
            "redfish_verify_ca",
            "rescue_kernel",
            "rescue_ramdisk"
        ]
    );
    assert!(r.body["redfish_address"]
        .as_str()
        .unwrap()
        .starts_with("Required."));
    assert!(!r.body["redfish_password"]
        .as_str()
        .unwrap()
        .starts_with("Required."));
    let r = app.get("/v1/drivers/fake-hardware/properties").await;
    assert!(r.body["fake_power_state_error"].is_string(), "{}", r.body);
    assert!(r.body.get("redfish_address").is_none());
    app.tm.shutdown();
}

#[tokio::test]
async fn events_are_validated_as_ironic() {
    let app = spawn(Arc::new(FakeHardware::new())).await;
    let good = json!({"events": [{
        "event": "network.bind_port",
        "port_id": "11111111-2222-3333-4444-555555555555",
        "mac_address": "52:54:00:12:34:56",
        "status": "ACTIVE",
        "device_id": null,
        "binding:host_id": "22222222-2222-3333-4444-555555555555",
        "binding:vnic_type": "baremetal",
    }]});
    let r = app
        .at(Method::POST, "/v1/events", "1.53", Some(good.clone()))
        .await;
    assert_fault(
        &r,
        StatusCode::NOT_FOUND,
        "The resource could not be found. (It needs API version 1.54 or later.)",
    );
    let r = app
        .at(Method::POST, "/v1/events", "1.54", Some(good.clone()))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(r.body.is_null());

    let event = |patch: Value| {
        let mut e = good["events"][0].clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                e.as_object_mut().unwrap().remove(k);
            } else {
                e[k] = v.clone();
            }
        }
        json!({"events": [e]})
    };
    let bad = [
        (json!({}), "'events' is a required property"),
        (json!({"events": []}), "[] should be non-empty"),
        (json!({"events": "x"}), "'x' is not of type 'array'"),
        (
            json!({"events": [], "x": 1}),
            "Additional properties are not allowed ('x' was unexpected)",
        ),
        (
            event(json!({"event": "network.create_port"})),
            "'network.create_port' is not one of ['network.bind_port', 'network.unbind_port', 'network.delete_port']",
        ),
        (
            event(json!({"port_id": "abc"})),
            "'abc' is not a 'uuid'",
        ),
        (
            event(json!({"mac_address": "52:54:00"})),
            "'52:54:00' is not a 'mac-address'",
        ),
        (
            event(json!({"status": null})),
            "'status' is a required property",
        ),
        (
            event(json!({"status": 1})),
            "1 is not of type 'string'",
        ),
        (
            event(json!({"extra": "y"})),
            "Additional properties are not allowed ('extra' was unexpected)",
        ),
    ];
    for (body, message) in bad {
        let r = app.send(Method::POST, "/v1/events", body.clone()).await;
        assert_fault(
            &r,
            StatusCode::BAD_REQUEST,
            &format!("Schema error: {message}"),
        );
    }
    app.tm.shutdown();
}

#[tokio::test]
async fn openapi_describes_the_sub_resources() {
    let app = spawn(Arc::new(FakeHardware::new())).await;
    let r = app.get("/openapi.json").await;
    let paths = r.body["paths"].as_object().unwrap();
    for p in [
        "/v1/nodes/{ident}/management/boot_device",
        "/v1/nodes/{ident}/management/inject_nmi",
        "/v1/nodes/{ident}/history",
        "/v1/nodes/{ident}/bios/{setting}",
        "/v1/nodes/{ident}/firmware",
        "/v1/nodes/{ident}/inventory",
        "/v1/nodes/{ident}/vmedia",
        "/v1/drivers/{name}/properties",
        "/v1/events",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    // The existing paths are still there.
    assert!(paths.contains_key("/v1/nodes/{ident}"));
    app.tm.shutdown();
}

/// Poll until the node is unlocked in `state` (a failed state fails).
async fn settle(app: &App, ident: &str, state: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let n = app.node(ident).await;
        let ps = n["provision_state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!ps.ends_with("failed"), "node failed: {n}");
        if ps == state && n["target_provision_state"].is_null() && n["reservation"].is_null() {
            return n;
        }
        assert!(Instant::now() < until, "node never reached {state}: {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn clean(app: &App, ident: &str, steps: Value) {
    let r = app
        .send(
            Method::PUT,
            &format!("/v1/nodes/{ident}/states/provision"),
            json!({"target": "clean", "clean_steps": steps}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    settle(app, ident, "manageable").await;
}

#[tokio::test]
async fn fake_bios_clean_steps_write_the_cached_settings() {
    let app = spawn(Arc::new(FakeHardware::new())).await;
    app.enroll("fb", json!({})).await;
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/fb/states/provision",
            json!({"target": "manage"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    settle(&app, "fb", "manageable").await;

    let names = |r: &Reply| -> Vec<(String, Value)> {
        r.body["bios"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_string(), s["value"].clone()))
            .collect()
    };
    clean(
        &app,
        "fb",
        json!([{"interface": "bios", "step": "apply_configuration", "args": {"settings": [
            {"name": "BootMode", "value": "Uefi"}, {"name": "Hyperthreading", "value": "Enabled"},
        ]}}]),
    )
    .await;
    let r = app.get("/v1/nodes/fb/bios").await;
    assert_eq!(
        names(&r),
        [
            ("BootMode".to_string(), json!("Uefi")),
            ("Hyperthreading".to_string(), json!("Enabled"))
        ]
    );
    // Applying again is Ironic's sync: changed, kept, and missing (deleted).
    clean(
        &app,
        "fb",
        json!([{"interface": "bios", "step": "apply_configuration", "args": {"settings": [
            {"name": "BootMode", "value": "Bios"},
        ]}}]),
    )
    .await;
    let r = app.get("/v1/nodes/fb/bios").await;
    assert_eq!(names(&r), [("BootMode".to_string(), json!("Bios"))]);
    assert!(r.body["bios"][0]["updated_at"].is_string(), "{}", r.body);
    clean(
        &app,
        "fb",
        json!([{"interface": "bios", "step": "factory_reset"}]),
    )
    .await;
    assert_eq!(app.get("/v1/nodes/fb/bios").await.body, json!({"bios": []}));
    app.tm.shutdown();
}

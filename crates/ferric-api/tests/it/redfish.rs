//! The `redfish` driver against a real Redfish service: the sushy-tools
//! emulator started by `.ci/redfish.sh` (fake driver, HTTP basic auth).
//!
//! Skipped only when `FERRIC_TEST_REDFISH_URL` is unset. The emulator applies
//! power changes 1–11 s after the request, so every check polls with a bound
//! instead of sleeping.

use crate::common::{Api, Options};
use crate::scripted_agent;
use ferric_conductor::drivers::redfish::{Redfish, RedfishConfig};
use ferric_conductor::drivers::{BootDevice, Drivers};
use ferric_store::testing::{Engine, TestStore};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for one state change (the emulator's delay is up to 11 s;
/// some steps make two power changes).
const BOUND: Duration = Duration::from_secs(60);

struct Bmc {
    url: String,
    system: String,
    username: Option<String>,
    password: Option<String>,
}

impl Bmc {
    fn from_env() -> Option<Bmc> {
        let Ok(url) = std::env::var("FERRIC_TEST_REDFISH_URL") else {
            ferric_store::testing::skip("FERRIC_TEST_REDFISH_URL", "run .ci/redfish.sh");
            return None;
        };
        Some(Bmc {
            url,
            system: std::env::var("FERRIC_TEST_REDFISH_SYSTEM").unwrap_or_else(|_| {
                "/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094".into()
            }),
            username: std::env::var("FERRIC_TEST_REDFISH_USERNAME").ok(),
            password: std::env::var("FERRIC_TEST_REDFISH_PASSWORD").ok(),
        })
    }

    fn driver_info(&self) -> Value {
        let mut info = json!({
            "redfish_address": self.url,
            "redfish_system_id": self.system,
            "redfish_verify_ca": false,
        });
        if let Some(u) = &self.username {
            info["redfish_username"] = json!(u);
        }
        if let Some(p) = &self.password {
            info["redfish_password"] = json!(p);
        }
        info
    }

    /// The ComputerSystem as the emulator shows it now.
    async fn system(&self, http: &reqwest::Client) -> Value {
        let mut req = http.get(format!("{}{}", self.url, self.system));
        if let Some(u) = &self.username {
            req = req.basic_auth(u, self.password.as_deref());
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }
}

/// The API with the redfish driver registered, and that driver.
struct App {
    api: Api,
    driver: Arc<Redfish>,
}

impl Deref for App {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl App {
    /// Poll until `done(node)` (and the lock is free), failing after [`BOUND`].
    async fn converge(&self, ident: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let n = self.node(ident).await;
            if done(&n) && n["reservation"].is_null() {
                eprintln!("{ident}: {what} after {:?}", started.elapsed());
                return n;
            }
            let ps = n["provision_state"].as_str().unwrap_or_default();
            assert!(
                !ps.ends_with("failed") && ps != "error",
                "{what}: node failed: {n}"
            );
            assert!(
                started.elapsed() < BOUND,
                "{what}: no convergence in {BOUND:?}: {n}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn power(&self, ident: &str, target: &str, shown: &str) -> Value {
        let (s, b) = self
            .json(
                reqwest::Method::PUT,
                &format!("/v1/nodes/{ident}/states/power"),
                json!({ "target": target }),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        self.converge(ident, target, |n| {
            n["target_power_state"].is_null()
                && (n["power_state"] == shown || !n["last_error"].is_null())
        })
        .await
    }

    async fn provision(&self, ident: &str, target: &str, then: &str) -> Value {
        let (s, b) = self
            .json(
                reqwest::Method::PUT,
                &format!("/v1/nodes/{ident}/states/provision"),
                json!({ "target": target }),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        self.converge(ident, &format!("{target} -> {then}"), |n| {
            n["provision_state"] == then
        })
        .await
    }
}

async fn app(store: &TestStore) -> App {
    store.conductor("cond-a").await;
    let driver = Arc::new(Redfish::new(RedfishConfig {
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        retries: 3,
        retry_min_delay: Duration::from_millis(100),
        retry_max_delay: Duration::from_secs(1),
        power_state_change_timeout: Duration::from_secs(30),
        power_poll_interval: Duration::from_millis(250),
    }));
    let api = Options::new()
        .drivers(Some(Drivers::new().with(driver.clone())))
        .step(Duration::from_millis(10))
        .serve(store.store.clone())
        .await;
    App { api, driver }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_node_against_sushy_tools() {
    let Some(bmc) = Bmc::from_env() else { return };
    let started = Instant::now();
    let store = TestStore::open(Engine::Sqlite).await.unwrap();
    let app = app(&store).await;

    // Enroll through the API; the password is masked in what the API shows.
    let (s, n) = app
        .json(
            reqwest::Method::POST,
            "/v1/nodes",
            json!({"name": "rf1", "driver": "redfish", "driver_info": bmc.driver_info()}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    if let Some(p) = &bmc.password {
        assert!(!n.to_string().contains(p.as_str()), "password shown: {n}");
    }
    let (s, v) = app
        .json(reqwest::Method::GET, "/v1/nodes/rf1/validate", Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["power"]["result"], true, "{v}");
    assert_eq!(v["management"]["result"], true, "{v}");

    // Power on, off, reboot: the API's power state follows the BMC once the
    // emulator has applied the change.
    let n = app.power("rf1", "power on", "power on").await;
    assert!(n["last_error"].is_null(), "{n}");
    assert_eq!(bmc.system(&app.http).await["PowerState"], "On");
    let n = app.power("rf1", "power off", "power off").await;
    assert!(n["last_error"].is_null(), "{n}");
    assert_eq!(bmc.system(&app.http).await["PowerState"], "Off");
    let n = app.power("rf1", "rebooting", "power on").await;
    assert!(n["last_error"].is_null(), "{n}");
    assert_eq!(bmc.system(&app.http).await["PowerState"], "On");

    // Boot device through the driver under the node's lock.
    let uuid: uuid::Uuid = n["uuid"].as_str().unwrap().parse().unwrap();
    let task = app
        .tm
        .acquire(uuid)
        .purpose("set boot device")
        .exclusive()
        .await
        .unwrap();
    use ferric_conductor::drivers::{ManagementInterface, PowerInterface};
    app.driver
        .set_boot_device(&task, BootDevice::Pxe, false)
        .await
        .unwrap();
    assert_eq!(
        app.driver.get_power_state(task.node()).await.unwrap(),
        ferric_core::PowerState::On
    );
    task.release().await.unwrap();
    let sys = bmc.system(&app.http).await;
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Pxe", "{sys}");
    // (The emulator's fake driver keeps no BootSourceOverrideEnabled: it always shows Continuous.)

    // The whole provisioning flow on the emulator: cleaning and deploying
    // boot the ramdisk (PXE, power on) and wait for the agent's call-back.
    // The agent is the scripted one (crate::scripted_agent); the real one
    // runs in .ci/agent.sh.
    let (agent_url, agent) = scripted_agent::scripted_agent().await;
    let (s, b) = app
        .json(
            reqwest::Method::PATCH,
            "/v1/nodes/rf1",
            json!([{"op": "add", "path": "/instance_info", "value": {
                "image_source": "http://127.0.0.1:1/disk.raw", "image_checksum": scripted_agent::SHA}}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    app.provision("rf1", "manage", "manageable").await;
    app.provision("rf1", "provide", "clean wait").await;
    let n = scripted_agent::run_phase(&app, &agent_url, &agent, "rf1", "available").await;
    assert_eq!(n["power_state"], "power off", "{n}");
    app.provision("rf1", "active", "wait call-back").await;
    assert_eq!(
        bmc.system(&app.http).await["Boot"]["BootSourceOverrideTarget"],
        "Pxe"
    );
    let n = scripted_agent::run_phase(&app, &agent_url, &agent, "rf1", "active").await;
    assert_eq!(n["power_state"], "power on", "{n}");
    let sys = bmc.system(&app.http).await;
    assert_eq!(sys["PowerState"], "On");
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Hdd", "{sys}");

    // Wrong credentials: a permanent failure, recorded without the secret.
    if bmc.username.is_some() {
        let mut info = bmc.driver_info();
        info["redfish_password"] = json!("not-the-password-42");
        let (s, b) = app
            .json(
                reqwest::Method::POST,
                "/v1/nodes",
                json!({"name": "rf-bad", "driver": "redfish", "driver_info": info}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let n = app.power("rf-bad", "power on", "power on").await;
        let err = n["last_error"].as_str().unwrap_or_default();
        assert!(err.contains("401"), "{n}");
        assert!(!err.contains("not-the-password-42"), "{n}");
    }
    eprintln!("redfish test took {:?}", started.elapsed());
    app.tm.shutdown();
    store.cleanup().await;
}

/// The management endpoints (`ferric_api::node_sub`) through the redfish
/// management interface against the emulator: the boot device set and read
/// back from the ComputerSystem, the supported devices, NMI as a
/// `ComputerSystem.Reset` (the emulator's fake driver answers 501 to `Nmi`:
/// Ironic's 500 with the BMC's answer), and virtual media refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_management_against_sushy_tools() {
    let Some(bmc) = Bmc::from_env() else { return };
    let store = TestStore::open(Engine::Sqlite).await.unwrap();
    let app = app(&store).await;
    let (s, n) = app
        .json(
            reqwest::Method::POST,
            "/v1/nodes",
            json!({"name": "rf-mgmt", "driver": "redfish", "driver_info": bmc.driver_info()}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    let uuid = n["uuid"].as_str().unwrap().to_string();

    let (s, b) = app
        .json(
            reqwest::Method::PUT,
            "/v1/nodes/rf-mgmt/management/boot_device",
            json!({"boot_device": "cdrom", "persistent": false}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let sys = bmc.system(&app.http).await;
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Cd", "{sys}");
    let (s, b) = app
        .json(
            reqwest::Method::GET,
            "/v1/nodes/rf-mgmt/management/boot_device",
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["boot_device"], "cdrom", "{b}");
    // What the BMC reports (the emulator's fake driver always shows Continuous).
    let enabled = sys["Boot"]["BootSourceOverrideEnabled"].as_str();
    assert_eq!(
        b["persistent"],
        match enabled {
            Some("Continuous") => json!(true),
            Some("Once") => json!(false),
            _ => Value::Null,
        },
        "{b} {sys}"
    );
    let (s, b) = app
        .json(
            reqwest::Method::PUT,
            "/v1/nodes/rf-mgmt/management/boot_device",
            json!({"boot_device": "pxe", "persistent": true}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    assert_eq!(
        bmc.system(&app.http).await["Boot"]["BootSourceOverrideTarget"],
        "Pxe"
    );
    let (s, b) = app
        .json(
            reqwest::Method::GET,
            "/v1/nodes/rf-mgmt/management/boot_device/supported",
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b,
        json!({"supported_boot_devices": ["pxe", "disk", "cdrom", "bios", "uefihttp"]})
    );
    let (s, b) = app
        .json(
            reqwest::Method::PUT,
            "/v1/nodes/rf-mgmt/management/boot_device",
            json!({"boot_device": "floppy"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // NMI: the reset reaches the BMC, which refuses it (not implemented).
    let r = app
        .call(
            reqwest::Method::PUT,
            "/v1/nodes/rf-mgmt/management/inject_nmi",
            Some("latest"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    let fault = r.fault();
    assert!(
        fault.starts_with(&format!(
            "Redfish inject NMI failed for node {uuid}. Error: "
        )),
        "{fault}"
    );
    assert!(fault.contains("501") && fault.contains("Nmi"), "{fault}");

    // Virtual media: not in ferric's redfish interface yet.
    let (s, b) = app
        .json(
            reqwest::Method::POST,
            "/v1/nodes/rf-mgmt/vmedia",
            json!({"device_type": "cdrom", "image_url": "http://example.com/x.iso"}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let n = app.node("rf-mgmt").await;
    assert_eq!(
        n["last_error"],
        format!("Could not attach device cdrom to node {uuid}: Driver redfish does not support attach_virtual_media (disabled or not implemented).")
    );
    app.tm.shutdown();
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_boot_mode_and_secure_boot_against_sushy_tools() {
    let Some(bmc) = Bmc::from_env() else { return };
    let store = TestStore::open(Engine::Sqlite).await.unwrap();
    let app = app(&store).await;
    let (s, n) = app
        .json(
            reqwest::Method::POST,
            "/v1/nodes",
            json!({"name": "rf-bm", "driver": "redfish", "driver_info": bmc.driver_info()}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    for (mode, shown) in [("bios", "Legacy"), ("uefi", "UEFI")] {
        let r = app
            .call(
                reqwest::Method::PUT,
                "/v1/nodes/rf-bm/states/boot_mode",
                Some("1.76"),
                Some(json!({"target": mode})),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let n = app
            .converge("rf-bm", mode, |n| {
                n["boot_mode"] == mode || !n["last_error"].is_null()
            })
            .await;
        assert_eq!(n["boot_mode"], mode, "{n}");
        let sys = bmc.system(&app.http).await;
        assert_eq!(sys["Boot"]["BootSourceOverrideMode"], shown, "{sys}");
    }
    let sys = bmc.system(&app.http).await;
    if sys.get("SecureBoot").is_some() {
        for on in [true, false] {
            let r = app
                .call(
                    reqwest::Method::PUT,
                    "/v1/nodes/rf-bm/states/secure_boot",
                    Some("1.76"),
                    Some(json!({"target": on})),
                )
                .await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
            let n = app
                .converge("rf-bm", "secure boot", |n| {
                    n["secure_boot"] == on || !n["last_error"].is_null()
                })
                .await;
            assert_eq!(n["secure_boot"], on, "{n}");
        }
    }
    let _ = &app.driver;
}

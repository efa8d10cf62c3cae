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

    /// The test's own system (`FERRIC_TEST_REDFISH_SYSTEM_<TEST>`, else the
    /// shared one): the tests run in parallel, and the emulator's fake
    /// driver writes a system's whole record on each change, so one test's
    /// power change can undo another's boot device or mode.
    fn own(mut self, test: &str) -> Bmc {
        if let Ok(s) = std::env::var(format!("FERRIC_TEST_REDFISH_SYSTEM_{test}")) {
            self.system = s;
        }
        self
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
    let bmc = bmc.own("MGMT");
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
    let bmc = bmc.own("BOOTMODE");
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
    assert!(
        n["boot_mode"].is_null() && n["secure_boot"].is_null(),
        "{n}"
    );
    // Verify (manage) caches what the BMC reports (Ironic's node_update_cache).
    let (s, b) = app
        .json(
            reqwest::Method::PUT,
            "/v1/nodes/rf-bm/states/provision",
            json!({"target": "manage"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let n = app
        .converge("rf-bm", "manage", |n| n["provision_state"] == "manageable")
        .await;
    let sys = bmc.system(&app.http).await;
    let shown_mode = match sys["Boot"]["BootSourceOverrideMode"].as_str() {
        Some("UEFI") => json!("uefi"),
        Some("Legacy") => json!("bios"),
        _ => Value::Null,
    };
    assert_eq!(n["boot_mode"], shown_mode, "{n} {sys}");
    // The emulator's fake driver has a SecureBoot resource (feature set "full").
    assert!(sys["SecureBoot"]["@odata.id"].is_string(), "{sys}");
    assert!(n["secure_boot"].is_boolean(), "{n}");
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
    {
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

/// The API with the redfish driver and network boot, whose `http_url` is
/// `http_url` or (when `None`) this API's own listener.
async fn vmedia_app(store: &TestStore, state: &std::path::Path, http_url: Option<&str>) -> App {
    use ferric_conductor::netboot::{NetBoot, PxeConfig};
    store.conductor("cond-a").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = format!("http://{}", listener.local_addr().unwrap());
    let nb = NetBoot::new(PxeConfig {
        http_url: http_url.unwrap_or(&own).to_string(),
        state_dir: state.into(),
        ..PxeConfig::default()
    });
    let driver = Arc::new(Redfish::new(RedfishConfig {
        request_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(2),
        retries: 2,
        retry_min_delay: Duration::from_millis(100),
        retry_max_delay: Duration::from_secs(1),
        power_state_change_timeout: Duration::from_secs(30),
        power_poll_interval: Duration::from_millis(250),
    }));
    let api = Options::new()
        .drivers(Some(Drivers::new().with(driver.clone()).with(Arc::new(nb))))
        .step(Duration::from_millis(10))
        .serve_on(listener, store.store.clone())
        .await;
    App { api, driver }
}

impl Bmc {
    /// The system's virtual CD as the emulator shows it.
    async fn cd(&self, http: &reqwest::Client) -> Value {
        let mut req = http.get(format!("{}{}/VirtualMedia/Cd", self.url, self.system));
        if let Some(u) = &self.username {
            req = req.basic_auth(u, self.password.as_deref());
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }
}

/// How many times this API answered 200 on the boot image route.
async fn boot_images_served(app: &App) -> u64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| {
            l.starts_with("ferric_api_requests_total{")
                && l.contains("route=\"/boot/nodes/{node}/{file}\"")
                && l.contains("status=\"200\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

fn built_isos(state: &std::path::Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(state.join("netboot/vmedia")) {
        Ok(d) => d
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "iso"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `redfish-virtual-media` against the emulator: cleaning and deploying
/// build the ISO, the emulator's virtual CD is given its URL on ferric's
/// listener and downloads it from there (sushy-tools' `InsertMedia` fetches
/// the image before it answers), shows it inserted, the next boot is `Cd`;
/// clean-up and the instance boot eject it and remove the ISO. Validation
/// refuses a deploy without images (400, nothing changed), and a BMC that
/// cannot download the ISO fails cleaning with its own message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_virtual_media_against_sushy_tools() {
    let Some(bmc) = Bmc::from_env() else { return };
    let bmc = bmc.own("VMEDIA");
    let store = TestStore::open(Engine::Sqlite).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let images = tempfile::tempdir().unwrap();
    std::fs::write(images.path().join("vmlinuz"), b"not a kernel, but bytes").unwrap();
    std::fs::write(images.path().join("initrd"), vec![7u8; 300_000]).unwrap();
    let file = |n: &str| format!("file://{}", images.path().join(n).display());
    let app = vmedia_app(&store, state.path(), None).await;

    let mut info = bmc.driver_info();
    info["deploy_kernel"] = json!(file("vmlinuz"));
    info["deploy_ramdisk"] = json!(file("initrd"));
    info["kernel_append_params"] = json!("console=ttyS0 %default%");
    let (s, n) = app
        .json(
            reqwest::Method::POST,
            "/v1/nodes",
            json!({"name": "rf-vm", "driver": "redfish", "boot_interface": "redfish-virtual-media",
                   "driver_info": info,
                   "instance_info": {"image_source": "http://127.0.0.1:1/disk.raw",
                                     "image_checksum": scripted_agent::SHA}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    let uuid = n["uuid"].as_str().unwrap().to_string();
    let (s, v) = app
        .json(
            reqwest::Method::GET,
            "/v1/nodes/rf-vm/validate",
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["boot"]["result"], true, "{v}");
    let iso_url = format!("{}/boot/nodes/{uuid}/boot.iso", app.base);
    // Nothing is published while the node boots no ramdisk.
    let r = app.http.get(&iso_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Cleaning boots the ramdisk from the virtual CD.
    let (agent_url, agent) = scripted_agent::scripted_agent().await;
    app.provision("rf-vm", "manage", "manageable").await;
    let served_before = boot_images_served(&app).await;
    app.provision("rf-vm", "provide", "clean wait").await;
    let cd = bmc.cd(&app.http).await;
    assert_eq!(cd["Inserted"], true, "{cd}");
    assert_eq!(cd["Image"], iso_url, "{cd}");
    // The emulator names the media after the file it downloaded.
    assert_eq!(cd["ImageName"], "boot.iso", "{cd}");
    assert_eq!(cd["WriteProtected"], true, "{cd}");
    let sys = bmc.system(&app.http).await;
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Cd", "{sys}");
    // ferric served the ISO: the emulator's download is the only client.
    let served = boot_images_served(&app).await;
    assert!(
        served > served_before,
        "the BMC did not fetch the ISO from ferric"
    );
    let isos = built_isos(state.path());
    assert_eq!(isos.len(), 1, "{isos:?}");
    let local = std::fs::read(&isos[0]).unwrap();
    // What it fetched: the built ISO (ISO 9660, the ramdisk's command line).
    let r = app.http.get(&iso_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), local.len());
    assert_eq!(&body[0x8001..0x8006], b"CD001");
    let cmdline = format!(
        "console=ttyS0 nofb vga=normal ipa-api-url={} boot_method=vmedia",
        app.base
    );
    assert!(
        body.windows(cmdline.len()).any(|w| w == cmdline.as_bytes()),
        "the ISO lacks {cmdline:?}"
    );
    let n = scripted_agent::run_phase(&app, &agent_url, &agent, "rf-vm", "available").await;
    assert!(n["last_error"].is_null(), "{n}");
    let cd = bmc.cd(&app.http).await;
    assert_eq!(cd["Inserted"], false, "ejected after cleaning: {cd}");
    assert_eq!(cd["Image"], "", "{cd}");
    assert!(
        built_isos(state.path()).is_empty(),
        "ISO removed after cleaning"
    );

    // A deploy without images is refused before anything changes.
    let (s, b) = app
        .json(
            reqwest::Method::PATCH,
            "/v1/nodes/rf-vm",
            json!([{"op": "remove", "path": "/driver_info/deploy_kernel"},
                   {"op": "remove", "path": "/driver_info/deploy_ramdisk"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let before = app.node("rf-vm").await;
    let r = app
        .call(
            reqwest::Method::PUT,
            "/v1/nodes/rf-vm/states/provision",
            Some("latest"),
            Some(json!({"target": "active"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.fault().contains("Error validating Redfish virtual media. Some parameters were missing in node's driver_info. Missing are: ['deploy_kernel', 'deploy_ramdisk']"),
        "{}",
        r.fault()
    );
    assert_eq!(
        app.node("rf-vm").await,
        before,
        "a refused deploy changes nothing"
    );
    assert_eq!(bmc.cd(&app.http).await["Inserted"], false);
    // deploy_iso instead: that ISO is served as given (nothing built).
    let given: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(images.path().join("ipa.iso"), &given).unwrap();
    let (s, b) = app
        .json(
            reqwest::Method::PATCH,
            "/v1/nodes/rf-vm",
            json!([{"op": "add", "path": "/driver_info/deploy_iso", "value": file("ipa.iso")}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Deploying boots the ramdisk from the CD again; the instance boot
    // ejects it and boots the disk.
    app.provision("rf-vm", "active", "wait call-back").await;
    let cd = bmc.cd(&app.http).await;
    assert_eq!(cd["Inserted"], true, "{cd}");
    assert_eq!(cd["Image"], iso_url, "{cd}");
    assert_eq!(
        bmc.system(&app.http).await["Boot"]["BootSourceOverrideTarget"],
        "Cd"
    );
    let r = app.http.get(&iso_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), given.as_slice());
    assert!(
        built_isos(state.path()).is_empty(),
        "a given ISO is not rebuilt"
    );
    let n = scripted_agent::run_phase(&app, &agent_url, &agent, "rf-vm", "active").await;
    assert!(n["last_error"].is_null(), "{n}");
    let cd = bmc.cd(&app.http).await;
    assert_eq!(
        cd["Inserted"], false,
        "ejected at prepare_instance_boot: {cd}"
    );
    let sys = bmc.system(&app.http).await;
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Hdd", "{sys}");
    assert!(built_isos(state.path()).is_empty());
    let r = app.http.get(&iso_url).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "no ISO for an active node"
    );
    app.tm.shutdown();
    store.cleanup().await;

    // A BMC that cannot download the ISO (its URL points at a server
    // without it): cleaning fails with the BMC's answer in last_error, and
    // nothing stays inserted.
    let store = TestStore::open(Engine::Sqlite).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let app = vmedia_app(&store, state.path(), Some(&bmc.url)).await;
    let mut info = bmc.driver_info();
    info["deploy_kernel"] = json!(file("vmlinuz"));
    info["deploy_ramdisk"] = json!(file("initrd"));
    let (s, n) = app
        .json(
            reqwest::Method::POST,
            "/v1/nodes",
            json!({"name": "rf-vm-err", "driver": "redfish", "boot_interface": "redfish-virtual-media",
                   "driver_info": info}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    let uuid = n["uuid"].as_str().unwrap().to_string();
    app.provision("rf-vm-err", "manage", "manageable").await;
    let (s, b) = app
        .json(
            reqwest::Method::PUT,
            "/v1/nodes/rf-vm-err/states/provision",
            json!({"target": "provide"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let started = Instant::now();
    let n = loop {
        let n = app.node("rf-vm-err").await;
        if n["provision_state"] == "clean failed" && n["reservation"].is_null() {
            break n;
        }
        assert!(started.elapsed() < BOUND, "cleaning never failed: {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with(&format!(
            "Failed to prepare node {uuid} for cleaning: Virtual media mount failed for node {uuid} with image {}/boot/nodes/{uuid}/boot.iso. Error: ",
            bmc.url
        )),
        "{err}"
    );
    assert!(
        err.contains("Cannot download virtual media"),
        "the BMC's message: {err}"
    );
    if let Some(p) = &bmc.password {
        assert!(!err.contains(p.as_str()), "{err}");
    }
    assert_eq!(bmc.cd(&app.http).await["Inserted"], false);
    assert!(
        built_isos(state.path()).is_empty(),
        "ISO removed on failure"
    );
    app.tm.shutdown();
    store.cleanup().await;
}

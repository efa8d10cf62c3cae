//! The ramdisk agent's lookup and the agent token (issue 14), on SQLite and,
//! when `FERRIC_TEST_PG_URL` is set, PostgreSQL: lookup by port MAC or node
//! UUID in Ironic's states only, the token minted once (one winner among
//! racing lookups) and masked afterwards, heartbeats refused without the
//! right token with nothing changed, lookup and heartbeat public while every
//! other route needs credentials, and secrets masked in every node output.

use crate::common::{App, Options, V};
use ferric_api::auth::Auth;
use ferric_core::{NewNode, ProvisionState};
use ferric_store::testing::Engine;
use ferric_store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

const MAC: &str = "52:54:00:12:34:56";
const MASK: &str = "******";

both_engines!(
    lookup_finds_the_node_by_mac_only_in_agent_states,
    the_token_is_minted_once_and_masked_afterwards,
    racing_lookups_mint_exactly_one_token,
    heartbeats_without_the_right_token_are_refused_and_change_nothing,
    lookup_and_heartbeat_are_public_when_auth_is_on,
    secrets_are_masked_in_every_node_output,
);

async fn app(engine: Engine) -> Option<App> {
    Options::new()
        .engine(engine)
        .locked_retry(20, Duration::from_millis(20))
        .ramdisk_heartbeat_timeout(Duration::from_secs(42))
        .spawn()
        .await
}

/// A fake-hardware node straight in the store, in `state`, with a port
/// `mac` (none when empty).
async fn node_in(a: &App, name: &str, state: ProvisionState, mac: &str) -> Uuid {
    let uuid = a
        .store
        .store
        .create_node(NewNode {
            name: Some(name.into()),
            driver: "fake-hardware".into(),
            provision_state: Some(state),
            ..Default::default()
        })
        .await
        .unwrap()
        .uuid;
    if !mac.is_empty() {
        let r = a
            .send(
                Method::POST,
                "/v1/ports",
                json!({"node_uuid": uuid, "address": mac}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    uuid
}

/// `GET /v1/lookup?<query>` at `version`.
async fn lookup(a: &App, query: &str, version: &str) -> crate::common::Reply {
    a.at(Method::GET, &format!("/v1/lookup?{query}"), version, None)
        .await
}

/// The stored node's revision and its plain `driver_internal_info` token.
async fn stored(a: &App, node: Uuid) -> (i64, Option<String>) {
    let n = a.store.store.get_node(&node.into()).await.unwrap();
    let token = n
        .driver_internal_info
        .get("agent_secret_token")
        .and_then(Value::as_str)
        .map(str::to_string);
    (n.revision, token)
}

async fn lookup_finds_the_node_by_mac_only_in_agent_states(engine: Engine) {
    let Some(a) = app(engine).await else { return };
    let idle = node_in(&a, "idle", ProvisionState::Available, MAC).await;
    let before = stored(&a, idle).await;

    // Ironic's 404 for every miss: a node in a state where no agent runs,
    // an unknown MAC, an old microversion; the same message each time.
    for (query, version) in [
        (format!("addresses={MAC}"), "1.68"),
        ("addresses=52:54:00:00:00:01".to_string(), "1.68"),
        (format!("node_uuid={}", Uuid::new_v4()), "1.68"),
        (format!("addresses={MAC}"), "1.21"),
    ] {
        let r = lookup(&a, &query, version).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{query} @{version}: {}",
            r.body
        );
        assert_eq!(r.fault(), "Resource could not be found.", "{query}");
    }
    // Neither a valid address nor a UUID: Ironic's IncompleteLookup.
    for query in ["", "addresses=", "addresses=zz,not-a-mac"] {
        let r = lookup(&a, query, "1.68").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.body);
        assert_eq!(
            r.fault(),
            "At least one of 'addresses' and 'node_uuid' parameters is required"
        );
    }
    let r = lookup(&a, "node_uuid=nope", "1.68").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.fault(), "Expected UUID for node_uuid: nope");
    assert_eq!(stored(&a, idle).await, before, "misses change nothing");

    // Every state Ironic allows, found by MAC (any case, invalid ones
    // ignored) or by UUID; config is Ironic's.
    let allowed = [
        ProvisionState::Deploying,
        ProvisionState::DeployWait,
        ProvisionState::Cleaning,
        ProvisionState::CleanWait,
        ProvisionState::Inspecting,
        ProvisionState::InspectWait,
        ProvisionState::Rescuing,
        ProvisionState::RescueWait,
        ProvisionState::ServiceWait,
    ];
    for (i, state) in allowed.into_iter().enumerate() {
        let mac = format!("52:54:00:ab:cd:{i:02x}");
        let uuid = node_in(&a, &format!("n{i}"), state, &mac).await;
        let query = if i % 2 == 0 {
            format!("addresses=zz,{}", mac.to_ascii_uppercase())
        } else {
            format!("node_uuid={uuid}")
        };
        let r = lookup(&a, &query, "1.68").await;
        assert_eq!(r.status, StatusCode::OK, "{state}: {}", r.body);
        assert_eq!(r.body["node"]["uuid"], uuid.to_string());
        let keys: BTreeSet<&str> = r.body["node"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "uuid",
                "properties",
                "instance_info",
                "driver_internal_info",
                "links"
            ]),
            "Ironic's _LOOKUP_RETURN_FIELDS"
        );
        let c = &r.body["config"];
        assert_eq!(
            c["heartbeat_timeout"], 42,
            "[api] ramdisk_heartbeat_timeout"
        );
        assert_eq!(c["agent_token_required"], true);
        assert_eq!(c["agent_token"].as_str().unwrap().len(), 43);
        assert_eq!(c["agent_skip_bmc_detect"], false, "fake management");
        assert_eq!(
            c["permitted_image_formats"],
            json!(["raw", "gpt", "qcow2", "iso"])
        );
        assert_eq!(c["agent_md5_checksum_enable"], false, "ferric refuses MD5");
    }
    for (i, state) in [
        ProvisionState::Enroll,
        ProvisionState::Manageable,
        ProvisionState::Active,
        ProvisionState::DeployFailed,
        ProvisionState::CleanFailed,
        ProvisionState::Servicing,
    ]
    .into_iter()
    .enumerate()
    {
        let uuid = node_in(&a, &format!("x{i}"), state, "").await;
        let r = lookup(&a, &format!("node_uuid={uuid}"), "1.68").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{state}: {}", r.body);
        assert_eq!(stored(&a, uuid).await.1, None, "{state}: no token minted");
    }

    // Two nodes behind the addresses given: not found (Ironic's
    // DuplicateNodeOnLookup is a NotFound).
    node_in(&a, "dup", ProvisionState::DeployWait, "52:54:00:ee:ee:01").await;
    let r = lookup(&a, "addresses=52:54:00:ab:cd:00,52:54:00:ee:ee:01", "1.68").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    a.store.cleanup().await;
}

async fn the_token_is_minted_once_and_masked_afterwards(engine: Engine) {
    let Some(a) = app(engine).await else { return };
    // Below 1.62 the lookup mints nothing and shows nothing.
    let node = node_in(&a, "n1", ProvisionState::DeployWait, MAC).await;
    let r = lookup(&a, &format!("addresses={MAC}"), "1.61").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["config"]["agent_token"].is_null(), "{}", r.body);
    assert_eq!(stored(&a, node).await.1, None);

    let r = lookup(&a, &format!("addresses={MAC}"), "1.68").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.body["config"]["agent_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 43, "token_urlsafe(32)");
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(
        r.body["node"]["driver_internal_info"]["agent_secret_token"], MASK,
        "the node document masks it even in the minting answer"
    );
    let (rev, kept) = stored(&a, node).await;
    assert_eq!(
        kept.as_deref(),
        Some(token.as_str()),
        "kept for the conductor"
    );

    // Every later lookup, at any version, gets the mask; nothing changes.
    for version in ["1.62", "1.68", "latest", "1.61"] {
        let r = lookup(&a, &format!("node_uuid={node}"), version).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["config"]["agent_token"], MASK, "@{version}");
        assert!(!r.body.to_string().contains(&token));
    }
    assert_eq!(stored(&a, node).await, (rev, Some(token.clone())));

    // Another node gets its own token.
    node_in(&a, "n2", ProvisionState::CleanWait, "52:54:00:12:34:57").await;
    let r = lookup(&a, "addresses=52:54:00:12:34:57", "1.68").await;
    let other = r.body["config"]["agent_token"].as_str().unwrap();
    assert_eq!(other.len(), 43);
    assert_ne!(other, token);
    a.store.cleanup().await;
}

async fn racing_lookups_mint_exactly_one_token(engine: Engine) {
    let Some(a) = app(engine).await else { return };
    let node = node_in(&a, "race", ProvisionState::DeployWait, MAC).await;
    let mut joins = Vec::new();
    for _ in 0..12 {
        let (http, base) = (a.http.clone(), a.base.clone());
        joins.push(tokio::spawn(async move {
            let r = http
                .get(format!("{base}/v1/lookup?addresses={MAC}"))
                .header(V, "1.68")
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (
                status,
                body["config"]["agent_token"].as_str().map(str::to_string),
            )
        }));
    }
    let mut tokens = Vec::new();
    for j in joins {
        let (status, token) = j.await.unwrap();
        // A lookup that cannot get the lock within the retry is a 409
        // (IPA retries); every other one answers.
        assert!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "{status}"
        );
        if let Some(t) = token.filter(|t| t != MASK) {
            tokens.push(t);
        }
    }
    assert_eq!(
        tokens.len(),
        1,
        "exactly one lookup sees the token: {tokens:?}"
    );
    assert_eq!(stored(&a, node).await.1.as_ref(), tokens.first());
    a.store.cleanup().await;
}

/// `POST /v1/heartbeat/{node}` with `body` at 1.68.
async fn heartbeat(a: &App, node: &str, body: Value) -> crate::common::Reply {
    a.at(
        Method::POST,
        &format!("/v1/heartbeat/{node}"),
        "1.68",
        Some(body),
    )
    .await
}

async fn heartbeats_without_the_right_token_are_refused_and_change_nothing(engine: Engine) {
    let Some(a) = app(engine).await else { return };
    let node = node_in(&a, "hb", ProvisionState::DeployWait, MAC).await;
    let url = "http://127.0.0.1:9999";

    // No token yet on the node: nothing is valid.
    let before = a.node("hb").await;
    let r = heartbeat(
        &a,
        "hb",
        json!({"callback_url": url, "agent_version": "13.0.0", "agent_token": "x".repeat(43)}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.fault(), "Invalid or missing agent token received.");

    let token = lookup(&a, &format!("addresses={MAC}"), "1.68").await.body["config"]["agent_token"]
        .as_str()
        .unwrap()
        .to_string();
    let before = {
        let after_lookup = a.node("hb").await;
        assert_ne!(
            before["updated_at"], after_lookup["updated_at"],
            "minting is a write"
        );
        after_lookup
    };
    let rev = stored(&a, node).await.0;
    let mut wrong = token.clone().into_bytes();
    wrong[42] = if wrong[42] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();
    for (body, fault) in [
        (
            json!({"callback_url": url, "agent_version": "13.0.0"}),
            "Agent token is required for heartbeat processing.",
        ),
        (
            json!({"callback_url": url, "agent_version": "13.0.0", "agent_token": wrong}),
            "Invalid or missing agent token received.",
        ),
        (
            json!({"callback_url": url, "agent_version": "13.0.0", "agent_token": &token[..20]}),
            "Invalid or missing agent token received.",
        ),
        (
            json!({"callback_url": url, "agent_version": "13.0.0", "agent_token": MASK}),
            "Invalid or missing agent token received.",
        ),
        (
            json!({"callback_url": url, "agent_version": "13.0.0", "agent_token": ""}),
            "Invalid or missing agent token received.",
        ),
        (
            json!({"callback_url": url, "agent_token": token}),
            "Agent did not transmit a version, and a version is required. Please update the agent being used.",
        ),
        (
            json!({"callback_url": "ftp://127.0.0.1:9999", "agent_version": "13.0.0", "agent_token": token}),
            "An issue with the supplied \"callback_url\" has been detected.",
        ),
    ] {
        let r = heartbeat(&a, "hb", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert_eq!(r.fault(), fault, "{body}");
    }
    let r = a
        .at(
            Method::POST,
            "/v1/heartbeat/hb",
            "1.72",
            Some(json!({"callback_url": url, "agent_version": "13.0.0", "agent_token": token, "agent_status": "dancing"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.fault(),
        "Agent status is invalid. Valid states are start,end,error."
    );
    let after = a.node("hb").await;
    assert_eq!(before, after, "a refused heartbeat changes nothing");
    assert_eq!(stored(&a, node).await.0, rev, "revision unchanged");

    // A recorded agent_url that differs: refused before the token is looked at.
    let mut t = a.tm.acquire(node).exclusive().await.unwrap();
    t.node_mut()
        .driver_internal_info
        .insert("agent_url".into(), json!("http://127.0.0.1:9998"));
    t.save().await.unwrap();
    t.release().await.unwrap();
    let r = heartbeat(
        &a,
        "hb",
        json!({"callback_url": url, "agent_version": "13.0.0", "agent_token": token}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.fault(),
        "Detected change in ramdisk provided \"callback_url\""
    );

    // The right token (and URL) is accepted.
    let r = heartbeat(&a, &node.to_string(), json!({"callback_url": "http://127.0.0.1:9998", "agent_version": "13.0.0", "agent_token": token})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    a.tm.shutdown();
    a.store.cleanup().await;
}

async fn lookup_and_heartbeat_are_public_when_auth_is_on(engine: Engine) {
    let Some(a) = Options::new()
        .engine(engine)
        .auth(Auth::none().with_tokens(["admin-secret".to_string()]))
        .spawn()
        .await
    else {
        return;
    };
    let node = a
        .store
        .store
        .create_node(NewNode {
            name: Some("pub".into()),
            driver: "fake-hardware".into(),
            provision_state: Some(ProvisionState::DeployWait),
            ..Default::default()
        })
        .await
        .unwrap()
        .uuid;
    let admin = |m: Method, p: &str| a.request(m, p).header("X-Auth-Token", "admin-secret");
    let r = a
        .finish(admin(Method::POST, "/v1/ports").json(&json!({"node_uuid": node, "address": MAC})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // No credentials: the agent's endpoints answer.
    let r = lookup(&a, &format!("addresses={MAC}"), "1.68").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.body["config"]["agent_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = heartbeat(&a, &node.to_string(), json!({"callback_url": "http://127.0.0.1:9999", "agent_version": "13.0.0", "agent_token": token})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    // ... and refuse a wrong token by themselves.
    let r = heartbeat(&a, &node.to_string(), json!({"callback_url": "http://127.0.0.1:9999", "agent_version": "13.0.0", "agent_token": "nope"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // Every other route still needs them, including the heartbeat under a
    // name Ironic's public pattern does not cover and paths outside /v1.
    for (m, p) in [
        (Method::GET, "/v1/nodes".to_string()),
        (Method::GET, format!("/v1/nodes/{node}")),
        (Method::GET, "/v1/ports".to_string()),
        (Method::GET, "/v1/nodes/changes".to_string()),
        (Method::PUT, format!("/v1/nodes/{node}/states/provision")),
        (Method::POST, "/v1/heartbeat/PUB".to_string()),
        (Method::GET, format!("/lookup?addresses={MAC}")),
        (Method::GET, "/metrics".to_string()),
    ] {
        let r = a.call(m.clone(), &p, Some("1.68"), Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{m} {p}: {}", r.body);
    }
    a.tm.shutdown();
    a.store.cleanup().await;
}

async fn secrets_are_masked_in_every_node_output(engine: Engine) {
    let Some(a) = app(engine).await else { return };
    let node = node_in(&a, "sec", ProvisionState::Available, MAC).await;
    let rev0 = stored(&a, node).await.0;
    let secrets = [
        "hunter2",
        "s3cr3t-user-data",
        "tmp-url-sig",
        "bmc-pw-9",
        "nested-pw-9",
    ];
    let r = a
        .send(
            Method::PATCH,
            "/v1/nodes/sec",
            json!([
                {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1/img.qcow2"},
                {"op": "add", "path": "/instance_info/image_password", "value": "hunter2"},
                {"op": "add", "path": "/instance_info/configdrive", "value": {"user_data": "s3cr3t-user-data"}},
                {"op": "add", "path": "/instance_info/image_url", "value": "http://x/?sig=tmp-url-sig"},
                // driver_info: a freely named BMC password, and one nested deeper.
                {"op": "add", "path": "/driver_info/bmc_passwd", "value": "bmc-pw-9"},
                {"op": "add", "path": "/driver_info/vendor", "value": {"creds": [{"password": "nested-pw-9"}]}},
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let check = |what: &str, doc: &Value| {
        let text = doc.to_string();
        for s in secrets {
            assert!(!text.contains(s), "{what} shows {s}: {text}");
        }
    };
    check("PATCH answer", &r.body);
    let ii = &r.body["instance_info"];
    assert_eq!(ii["image_password"], MASK);
    assert_eq!(ii["configdrive"], MASK);
    assert_eq!(ii["image_url"], MASK);
    assert_eq!(ii["image_source"], "http://127.0.0.1/img.qcow2");
    assert_eq!(r.body["driver_info"]["bmc_passwd"], MASK);
    assert_eq!(
        r.body["driver_info"]["vendor"],
        json!({"creds": [{"password": MASK}]})
    );
    // The store keeps the values (the conductor needs them).
    let n = a.store.store.get_node(&node.into()).await.unwrap();
    assert_eq!(n.instance_info["image_password"], "hunter2");

    // Minting a token (the node in a lookup state).
    let mut t = a.tm.acquire(node).exclusive().await.unwrap();
    t.node_mut().provision_state = ProvisionState::DeployWait;
    t.save().await.unwrap();
    t.release().await.unwrap();
    let r = lookup(&a, &format!("addresses={MAC}"), "1.68").await;
    let token = r.body["config"]["agent_token"]
        .as_str()
        .unwrap()
        .to_string();
    check("lookup node", &r.body["node"]);
    assert_eq!(r.body["node"]["instance_info"]["image_password"], MASK);

    let token_hidden = |what: &str, doc: &Value| {
        check(what, doc);
        assert!(
            !doc.to_string().contains(&token),
            "{what} shows the agent token"
        );
    };
    let n = a.node("sec").await;
    token_hidden("GET node", &n);
    assert_eq!(n["driver_internal_info"]["agent_secret_token"], MASK);
    token_hidden(
        "GET node fields",
        &a.get("/v1/nodes/sec?fields=instance_info,driver_internal_info")
            .await
            .body,
    );
    token_hidden("detail list", &a.get("/v1/nodes/detail").await.body);
    token_hidden(
        "list with fields",
        &a.get("/v1/nodes?fields=uuid,instance_info,driver_internal_info")
            .await
            .body,
    );
    let r = a
        .send(
            Method::PATCH,
            "/v1/nodes/sec",
            json!([{"op": "add", "path": "/extra/x", "value": 1}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    token_hidden("PATCH answer", &r.body);
    assert_eq!(r.body["driver_internal_info"]["agent_secret_token"], MASK);
    let feed = a
        .get(&format!("/v1/nodes/changes?since={}", rev0 - 1))
        .await;
    assert_eq!(feed.status, StatusCode::OK);
    assert!(
        feed.body["changes"].as_array().unwrap().len() >= 3,
        "{}",
        feed.body
    );
    token_hidden("change feed", &feed.body);
    a.store.cleanup().await;
}

//! A scripted ironic-python-agent for the conductor-side tests of the agent
//! deploy: an HTTP server speaking IPA's command API (`/v1/commands/`),
//! recording every command with the token it came with, refusing a wrong
//! token as IPA does, answering `get_*_steps` with IPA's generic steps, and
//! running an `execute_*_step` for a set number of status reads before it
//! succeeds or fails. The real agent drives the same paths in `.ci/agent.sh`.

use crate::common::{Api, V};
use axum::extract::{Query, State};
use axum::http::StatusCode as AxStatus;
use axum::routing::get;
use axum::{Json, Router};
use ferric_conductor::Retry;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// A SHA-256 digest for instance_info.
pub const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// What the scripted agent does with an `execute_*_step`.
#[derive(Clone)]
pub struct Script {
    /// Status reads for which the command stays RUNNING.
    pub running_reads: u32,
    /// `Some(message)`: the step fails with it.
    pub fails_with: Option<String>,
}

#[derive(Default)]
pub struct AgentState {
    /// The token the agent accepts (None: any).
    pub token: Option<String>,
    /// (command name, params, token given) of every POST.
    pub received: Vec<(String, Value, Option<String>)>,
    /// Requests refused for a wrong token.
    pub refused: u32,
    pub commands: Vec<Value>,
    /// Reads left before the running command finishes.
    pub left: u32,
    pub script: Option<Script>,
}

pub type Shared = Arc<Mutex<AgentState>>;

fn steps_result(kind: &str) -> Value {
    let steps = if kind == "clean" {
        json!([
            {"interface": "deploy", "step": "erase_devices", "priority": 10, "abortable": true, "reboot_requested": false},
            {"interface": "deploy", "step": "erase_devices_metadata", "priority": 99, "abortable": true, "reboot_requested": false},
            {"interface": "deploy", "step": "burnin_cpu", "priority": 0, "abortable": true, "reboot_requested": false},
        ])
    } else {
        json!([
            {"interface": "deploy", "step": "write_image", "priority": 0, "reboot_requested": false},
            {"interface": "deploy", "step": "inject_files", "priority": 0, "reboot_requested": false},
        ])
    };
    json!({format!("{kind}_steps"): {"GenericHardwareManager": steps},
           "hardware_manager_version": {"generic_hardware_manager": "1.2"}})
}

async fn post_command(
    State(st): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> (AxStatus, Json<Value>) {
    let mut s = st.lock().unwrap();
    let given = q.get("agent_token").cloned();
    if s.token.is_some() && s.token != given {
        s.refused += 1;
        return (
            AxStatus::UNAUTHORIZED,
            Json(json!({"faultstring": "Token invalid."})),
        );
    }
    let name = body["name"].as_str().unwrap_or_default().to_string();
    s.received
        .push((name.clone(), body["params"].clone(), given));
    let short = name
        .split_once('.')
        .map_or(name.clone(), |(_, n)| n.to_string());
    let cmd = match name.as_str() {
        "deploy.get_deploy_steps" | "clean.get_clean_steps" => {
            let kind = &name[..name.find('.').unwrap()];
            json!({"command_name": short, "command_status": "SUCCEEDED",
                   "command_result": steps_result(kind), "command_error": null})
        }
        "deploy.execute_deploy_step" | "clean.execute_clean_step" => {
            if s.commands
                .last()
                .is_some_and(|c| c["command_status"] == "RUNNING")
            {
                return (
                    AxStatus::CONFLICT,
                    Json(json!({"faultstring": "Agent is busy running another command"})),
                );
            }
            s.left = s.script.as_ref().map_or(0, |sc| sc.running_reads);
            json!({"command_name": short, "command_status": "RUNNING",
                   "command_result": null, "command_error": null,
                   "command_params": body["params"].clone()})
        }
        "standby.sync" => {
            json!({"command_name": short, "command_status": "SUCCEEDED", "command_result": null, "command_error": null})
        }
        _ => {
            return (
                AxStatus::BAD_REQUEST,
                Json(json!({"faultstring": format!("Unknown command: {name}")})),
            )
        }
    };
    s.commands.push(cmd.clone());
    (AxStatus::OK, Json(cmd))
}

async fn list_commands(
    State(st): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> (AxStatus, Json<Value>) {
    let mut s = st.lock().unwrap();
    if s.token.is_some() && s.token.as_ref() != q.get("agent_token") {
        s.refused += 1;
        return (
            AxStatus::UNAUTHORIZED,
            Json(json!({"faultstring": "Token invalid."})),
        );
    }
    let script = s.script.clone();
    let left = s.left;
    if let Some(last) = s.commands.last_mut() {
        if last["command_status"] == "RUNNING" {
            if left > 0 {
                s.left -= 1;
            } else {
                let kind = if last["command_name"] == "execute_deploy_step" {
                    "deploy"
                } else {
                    "clean"
                };
                let step = last["command_params"]["step"].clone();
                match script.and_then(|sc| sc.fails_with) {
                    Some(m) => {
                        last["command_status"] = json!("FAILED");
                        last["command_error"] = json!({"type": "ImageChecksumError", "code": 500,
                                                       "message": "Error verifying image checksum", "details": m});
                    }
                    None => {
                        last["command_status"] = json!("SUCCEEDED");
                        last["command_result"] =
                            json!({format!("{kind}_step"): step, format!("{kind}_result"): null});
                    }
                }
            }
        }
    }
    (AxStatus::OK, Json(json!({"commands": s.commands})))
}

/// Start the scripted agent on loopback; its base URL and its state.
pub async fn scripted_agent() -> (String, Shared) {
    let st: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/commands/", get(list_commands).post(post_command))
        .with_state(st.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), st)
}

/// Give the node an agent token, as the lookup does (under the lock), and
/// make the agent accept only it.
pub async fn issue_token(api: &Api, agent: &Shared, node: Uuid) -> String {
    let token = format!("tok-{}", Uuid::new_v4().simple());
    let mut t = api
        .tm
        .acquire(node)
        .purpose("test: issue agent token")
        .retry(Retry::Patient)
        .exclusive()
        .await
        .unwrap();
    t.node_mut()
        .driver_internal_info
        .insert("agent_secret_token".into(), json!(token));
    t.save().await.unwrap();
    t.release().await.unwrap();
    agent.lock().unwrap().token = Some(token.clone());
    token
}

/// One heartbeat as IPA sends it, with the agent's URL and token.
///
/// Accepted (202), or refused because the node left its wait state between
/// the caller's look at it and this heartbeat (the phase ended, the agent's
/// session and token were wiped: 400 as in Ironic); anything else fails
/// the test.
pub async fn heartbeat(api: &Api, agent_url: &str, node: &str, token: &str) {
    let r = api
        .http
        .post(format!("{}/v1/heartbeat/{node}", api.base))
        .header(V, "1.68")
        .json(&json!({"callback_url": agent_url, "agent_version": "13.0.0", "agent_token": token}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    if status == StatusCode::ACCEPTED {
        return;
    }
    let text = r.text().await.unwrap();
    let n = api.node(node).await;
    let waiting = matches!(
        n["provision_state"].as_str(),
        Some("wait call-back" | "clean wait")
    );
    assert!(
        status == StatusCode::BAD_REQUEST
            && !waiting
            && n["driver_internal_info"]
                .get("agent_secret_token")
                .is_none(),
        "heartbeat refused ({status}) while the node waits for its agent: {text}; node: {n}"
    );
}

/// Play the agent for one phase of `node` (waiting in `wait call-back` or
/// `clean wait`): take a token, heartbeat until the node reaches `until`
/// with its lock free; the node as then shown.
pub async fn run_phase(
    api: &Api,
    agent_url: &str,
    agent: &Shared,
    node: &str,
    until: &str,
) -> Value {
    let bound = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let id = Uuid::parse_str(api.node(node).await["uuid"].as_str().unwrap()).unwrap();
    let token = issue_token(api, agent, id).await;
    loop {
        let n = api.node(node).await;
        if n["provision_state"] == until && n["reservation"].is_null() {
            return n;
        }
        assert!(
            std::time::Instant::now() < bound,
            "node never reached {until}: {n}"
        );
        if matches!(
            n["provision_state"].as_str(),
            Some("wait call-back" | "clean wait")
        ) {
            heartbeat(api, agent_url, node, &token).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
}

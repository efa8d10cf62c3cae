//! The agent token (Ironic's `agent_secret_token`; ironic.md §2.11): a
//! secret shared between ferric and one run of the ramdisk agent.
//!
//! * Minted at the agent's first lookup ([`issue`]), under the node's
//!   exclusive lock: 32 bytes from the operating system's CSPRNG
//!   (`getrandom`), URL-safe base64 without padding (43 characters, as
//!   Python's `secrets.token_urlsafe()` that Ironic uses). Later lookups get
//!   [`MASK`] instead (Ironic's `agent_token_present` branch): only the
//!   first caller ever sees the token.
//! * Kept in plain text in `driver_internal_info.agent_secret_token`
//!   (decision): the conductor must present it on every command it sends to
//!   the agent (IPA checks it), so a one-way hash cannot work. It is masked
//!   in every output instead (`ferric_core::mask`).
//! * Required on every heartbeat and compared in constant time
//!   ([`is_valid`]): SHA-256 digests of both sides compared with `subtle`,
//!   so neither the content nor the length of the stored token leaks
//!   through timing.
//! * Wiped (with `agent_url`) when the node leaves the agent states: that is
//!   the deploy/clean flow's job (Ironic's `wipe_token_and_url`), not this
//!   module's.

use crate::task::{Retry, TaskManager};
use crate::TaskError;
use base64::Engine as _;
use ferric_core::{Node, ProvisionState};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};
use uuid::Uuid;

/// `driver_internal_info` key of the token.
pub const TOKEN_KEY: &str = "agent_secret_token";
/// `driver_internal_info` key marking a token generated before the agent
/// booted (virtual media); such a token survives power-off in Ironic.
pub const PREGENERATED_KEY: &str = "agent_secret_token_pregenerated";
/// What a lookup shows once the token has been handed out.
pub const MASK: &str = ferric_core::mask::MASK;
/// Random bytes per token (Python's `token_urlsafe()` default is 32).
pub const TOKEN_BYTES: usize = 32;

/// Ironic's `LOOKUP_ALLOWED_STATES` (`restrict_lookup = True`, no fast
/// track): the states in which a ramdisk agent may look its node up.
pub const LOOKUP_ALLOWED_STATES: &[ProvisionState] = &[
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

/// Whether an agent may look up a node in `state`.
pub fn lookup_allowed(state: ProvisionState) -> bool {
    LOOKUP_ALLOWED_STATES.contains(&state)
}

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The operating system's random source failed.
    #[error("cannot generate an agent token: the system random source failed: {0}")]
    Random(String),
    /// The lock or the store said no.
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// A fresh token: [`TOKEN_BYTES`] random bytes, URL-safe base64, no padding.
pub fn mint() -> Result<String, TokenError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The token stored on `node`, if any (a string; anything else counts as
/// none).
fn stored(node: &Node) -> Option<&str> {
    node.driver_internal_info
        .get(TOKEN_KEY)
        .and_then(Value::as_str)
}

/// Whether `node` has a token (Ironic's `is_agent_token_present`).
pub fn is_present(node: &Node) -> bool {
    node.driver_internal_info
        .get(TOKEN_KEY)
        .is_some_and(|v| !v.is_null())
}

/// Whether `presented` is `node`'s token (Ironic's `is_agent_token_valid`):
/// no token presented, or none stored, is never valid. Constant time in the
/// tokens' content and length.
pub fn is_valid(node: &Node, presented: Option<&str>) -> bool {
    let (Some(presented), Some(known)) = (presented, stored(node)) else {
        return false;
    };
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(known.as_bytes());
    bool::from(a.ct_eq(&b))
}

/// What [`issue`] found.
#[derive(Debug)]
pub enum Issued {
    /// A token was minted and stored: the only time it is shown. `node` is
    /// the node as saved.
    Minted { node: Box<Node>, token: String },
    /// The node already has a token: the caller shows [`MASK`].
    AlreadyIssued(Box<Node>),
    /// The node left the lookup states before its lock was granted: no
    /// token (the caller answers as for an unknown node).
    NotAllowed(ProvisionState),
}

/// Ironic's `get_node_with_token`: mint the agent token of `node` unless it
/// has one. The check is made on a plain read first (no lock for the common
/// repeated lookup), then again under the node's exclusive lock, taken
/// with the conductor's bounded retry (`Retry::Default`): a lookup racing
/// another one, or a flow holding the lock, gets one token minted, and a
/// lock held longer is `NodeLocked` (409; IPA retries).
pub async fn issue(tm: &TaskManager, node: Uuid) -> Result<Issued, TokenError> {
    let read = tm
        .store()
        .get_node(&node.into())
        .await
        .map_err(TaskError::from)?;
    if is_present(&read) {
        warn!(node_uuid = %node, "agent token already issued for this node; the lookup gets a masked token");
        return Ok(Issued::AlreadyIssued(Box::new(read)));
    }
    let mut task = tm
        .acquire(node)
        .purpose("generate agent token")
        .retry(Retry::Default)
        .exclusive()
        .await?;
    let n = task.node();
    if !lookup_allowed(n.provision_state) {
        let state = n.provision_state;
        task.release().await?;
        return Ok(Issued::NotAllowed(state));
    }
    if is_present(n) {
        let n = n.clone();
        task.release().await?;
        return Ok(Issued::AlreadyIssued(Box::new(n)));
    }
    let token = match mint() {
        Ok(t) => t,
        Err(e) => {
            task.release().await?;
            return Err(e);
        }
    };
    let dii = &mut task.node_mut().driver_internal_info;
    dii.insert(TOKEN_KEY.into(), Value::String(token.clone()));
    dii.remove(PREGENERATED_KEY);
    if let Err(e) = task.save().await {
        if let Err(r) = task.release().await {
            warn!(node_uuid = %node, error.message = %r, "release after a failed token save failed");
        }
        return Err(e.into());
    }
    let saved = task.node().clone();
    task.release().await?;
    info!(node_uuid = %node, "agent token generated");
    Ok(Issued::Minted {
        node: Box::new(saved),
        token,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_differ() {
        let a = mint().unwrap();
        let b = mint().unwrap();
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }

    #[test]
    fn lookup_states_are_ironics() {
        assert!(lookup_allowed(ProvisionState::DeployWait));
        assert!(lookup_allowed(ProvisionState::Cleaning));
        assert!(!lookup_allowed(ProvisionState::Active));
        assert!(!lookup_allowed(ProvisionState::Available));
        assert!(!lookup_allowed(ProvisionState::Servicing));
    }
}

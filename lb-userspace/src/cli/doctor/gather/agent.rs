//! The agent's facts: whether one answers on the API socket, and with which deployment.

use std::path::Path;
use std::time::Duration;

use crate::api::{self, ApiError, Request, Response};
use crate::cli::doctor::facts::AgentState;

/// How long the agent gets to answer a status request.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn read_agent(socket: &Path) -> AgentState {
    let call = api::call(socket, &Request::Status);
    match tokio::time::timeout(AGENT_TIMEOUT, call).await {
        Err(_) => AgentState::Error(format!(
            "the agent did not answer a status request within {} s (still starting up, or stuck)",
            AGENT_TIMEOUT.as_secs()
        )),
        Ok(Ok(Response::Status(r))) => AgentState::Answered {
            pin_dir: r.agent.pin_dir,
            interfaces: r.agent.interfaces,
        },
        Ok(Ok(Response::Error { message })) => AgentState::Error(message),
        Ok(Ok(Response::Ok { message })) => {
            AgentState::Error(format!("unexpected answer: {message}"))
        }
        Ok(Err(ApiError::NotRunning { .. })) => AgentState::NotRunning,
        Ok(Err(ApiError::PermissionDenied { .. })) => AgentState::PermissionDenied,
        Ok(Err(e)) => AgentState::Error(e.to_string()),
    }
}

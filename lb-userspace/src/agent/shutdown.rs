//! Stopping: the agent's bounded teardown, and `xlb stop`, which asks for it.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::info;

use crate::api::{self, ApiCall, ApiError, Request, Response};
use crate::maps::AyaStore;
use crate::pinning;

use super::event_loop::Exit;
use super::state::Agent;

/// Bound on teardown: whatever is not done by then is abandoned (forwarding is unaffected).
const TEARDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Stops the probes, detaches if asked (or configured), answers a stop request, and closes the
/// API once its open connections have written their answers.
pub(super) async fn teardown(
    mut agent: Agent<AyaStore>,
    exit: Exit,
    api_rx: mpsc::Receiver<ApiCall>,
    api_task: JoinHandle<Result<(), ApiError>>,
) -> anyhow::Result<()> {
    info!("stopping");
    let (detach, reply) = match exit {
        Exit::Signal(name) => {
            info!(signal = name, "signal received");
            (agent.file.detach_on_exit, None)
        }
        Exit::Stop { detach, reply } => (detach || agent.file.detach_on_exit, Some(reply)),
    };
    let pin_dir = agent.file.pin_dir.clone();
    if detach && agent.withdraw_for_detach() {
        // Detaching stops forwarding: the routers must have moved the traffic away first.
        let grace = agent
            .file
            .announce
            .as_ref()
            .map_or(Duration::ZERO, |a| a.withdraw_grace);
        info!(?grace, "routes withdrawn; waiting before detaching");
        tokio::time::sleep(grace).await;
    }
    let _ = tokio::time::timeout(TEARDOWN_LIMIT, agent.health.shutdown()).await;
    let result = if detach {
        pinning::detach(&pin_dir).map(|()| {
            info!("detached: XDP links and maps unpinned, forwarding stopped");
            "stopped; XDP program detached and maps unpinned"
        })
    } else {
        info!("forwarding continues from the pinned program; a new agent will adopt it");
        Ok("stopped; forwarding continues from the pinned program")
    };
    if let Some(reply) = reply {
        let answer = match &result {
            Ok(msg) => Response::ok(*msg),
            Err(e) => Response::error(format!("stopped, but detaching failed: {e}")),
        };
        let _ = reply.send(answer);
    }
    // Closing the API's channel ends its server, which first lets the open connections write
    // their answers (this one included).
    drop(api_rx);
    let _ = tokio::time::timeout(TEARDOWN_LIMIT, api_task).await;
    result?;
    Ok(())
}

/// `xlb stop`: asks a running agent to stop; with `detach`, also when none runs (then the pins
/// are removed directly).
pub async fn stop(socket: &Path, pin_dir: &Path, detach: bool) -> anyhow::Result<String> {
    match api::call(socket, &Request::Shutdown { detach }).await {
        Ok(Response::Ok { message }) => Ok(message),
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(other) => bail!("unexpected answer: {other:?}"),
        Err(ApiError::NotRunning { .. }) if detach => {
            pinning::detach(pin_dir)?;
            Ok(format!(
                "no agent running; detached and unpinned {}",
                pin_dir.display()
            ))
        }
        Err(e) => Err(e.into()),
    }
}

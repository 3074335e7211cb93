//! The backplane's state changes in the log, for operators who do not poll `/health`.

use std::time::Duration;

use backplane_core::BackplaneStatus;

use crate::Hub;

/// Log every change of the hub's backplane state until the backplane stops, so operators
/// see disconnections and recoveries without polling `/health`.
pub async fn log_backplane_state(hub: Hub) {
    let mut last = None;
    let mut lost = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let health = hub.health();
        if last.as_ref() != Some(&health.status) {
            match &health.status {
                BackplaneStatus::Connected => {
                    tracing::info!(
                        hub = hub.name(),
                        reconnects = health.reconnects,
                        "backplane connected"
                    );
                }
                BackplaneStatus::Connecting => {
                    tracing::info!(hub = hub.name(), "backplane connecting")
                }
                BackplaneStatus::Disconnected { reason } => {
                    tracing::warn!(hub = hub.name(), %reason, "backplane disconnected");
                }
                BackplaneStatus::Stopped => {
                    tracing::info!(hub = hub.name(), "backplane stopped");
                    return;
                }
                other => tracing::info!(
                    hub = hub.name(),
                    status = other.as_str(),
                    "backplane state changed"
                ),
            }
            last = Some(health.status.clone());
        }
        if health.envelopes_lost > lost {
            tracing::error!(
                hub = hub.name(),
                lost = health.envelopes_lost - lost,
                "backplane reported lost envelopes"
            );
            lost = health.envelopes_lost;
        }
    }
}

//! The negotiate exchange: `POST {hub}/negotiate?negotiateVersion=1`, following redirects.

use hub_protocol::TransferFormat;
use serde::Deserialize;

use crate::config::Config;
use crate::error::ConnectError;
use crate::http;
use crate::transport::TransportType;
use crate::url::HubUrl;

/// The official clients give up after this many redirects.
const MAX_REDIRECTS: usize = 100;

/// The outcome of a successful negotiate: where and with what to open a transport.
#[derive(Debug)]
pub(crate) struct Negotiated {
    /// The hub URL to connect to: the original one, or where the server redirected.
    pub(crate) url: HubUrl,
    /// The public connection id (what the server's `Context.ConnectionId` is).
    pub(crate) connection_id: String,
    /// The secret that goes in the transport's `id` query parameter.
    pub(crate) connection_token: String,
    /// The access token to present: the provider's, or the one a redirect handed out.
    pub(crate) access_token: Option<String>,
    /// The transports the server offers, in its order (the order to try them in), with
    /// their transfer formats; names this client does not know are left out.
    pub(crate) transports: Vec<(TransportType, Vec<TransferFormat>)>,
    /// Every transport offered, as `name (formats)`, for error messages.
    offered: Vec<String>,
    /// The server granted stateful reconnect (it was asked for).
    pub(crate) use_stateful_reconnect: bool,
}

impl Negotiated {
    /// What negotiate offered, for an error message.
    pub(crate) fn describe_transports(&self) -> String {
        if self.offered.is_empty() {
            "none".to_owned()
        } else {
            self.offered.join(", ")
        }
    }
}

/// The negotiate response, all three shapes in one: a connection, a redirect, or an error.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NegotiateResponse {
    connection_id: Option<String>,
    connection_token: Option<String>,
    #[serde(default)]
    negotiate_version: u32,
    available_transports: Option<Vec<AvailableTransport>>,
    url: Option<String>,
    access_token: Option<String>,
    error: Option<String>,
    #[serde(default)]
    use_stateful_reconnect: bool,
    /// Only old ASP.NET (not Core) SignalR servers send this: it identifies them.
    #[serde(rename = "ProtocolVersion")]
    legacy_protocol_version: Option<serde::de::IgnoredAny>,
}

/// One transport the server offers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AvailableTransport {
    transport: String,
    #[serde(default)]
    transfer_formats: Vec<String>,
}

/// A refusing server's explanation: the text of its answer, bounded and on one line.
fn status_reason(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    line.trim().to_owned()
}

/// Negotiates with the server of `config`'s hub URL, following redirects, asking for
/// stateful reconnect when the config says so.
///
/// `access_token` is the provider's token for this attempt; a redirect may replace it.
/// Each request is bounded by the connect timeout.
///
/// # Errors
///
/// Any [`ConnectError`] negotiate can produce: unreachable server, bad status, a refusal, a
/// malformed answer, too many redirects, or a timeout.
pub(crate) async fn negotiate(
    config: &Config,
    mut access_token: Option<String>,
) -> Result<Negotiated, ConnectError> {
    let timeout = config.connect_timeout;
    let mut url = config.url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let target = url.negotiate_target(config.stateful_reconnect);
        let request = http::post(&url, &target, access_token.as_deref());
        let response =
            tokio::time::timeout(timeout, request)
                .await
                .map_err(|_| ConnectError::Timeout {
                    step: "negotiate",
                    after: timeout,
                })??;
        if !response.status.is_success() {
            return Err(ConnectError::Status {
                url: url.display(),
                status: response.status,
                reason: status_reason(&response.body),
            });
        }
        let invalid = |reason: String| ConnectError::InvalidNegotiateResponse {
            url: url.display(),
            reason,
        };
        let answer: NegotiateResponse =
            serde_json::from_slice(&response.body).map_err(|error| invalid(error.to_string()))?;
        if let Some(error) = answer.error {
            return Err(ConnectError::Refused(error));
        }
        if answer.legacy_protocol_version.is_some() {
            return Err(invalid(
                "this is an ASP.NET SignalR server; only ASP.NET Core SignalR is supported".into(),
            ));
        }
        if let Some(redirect) = answer.url {
            url = HubUrl::parse(&redirect)?;
            if let Some(token) = answer.access_token {
                access_token = Some(token);
            }
            continue;
        }
        let connection_id = answer
            .connection_id
            .ok_or_else(|| invalid("missing connectionId".into()))?;
        // Version 0 servers have no separate token: the id is what goes in `?id=`.
        let connection_token = if answer.negotiate_version == 0 {
            connection_id.clone()
        } else {
            answer
                .connection_token
                .ok_or_else(|| invalid("missing connectionToken".into()))?
        };
        let available = answer.available_transports.unwrap_or_default();
        let offered = available
            .iter()
            .map(|offer| format!("{} ({})", offer.transport, offer.transfer_formats.join("/")))
            .collect();
        let transports = available
            .iter()
            .filter_map(|offer| {
                let transport = TransportType::from_name(&offer.transport)?;
                let formats = offer
                    .transfer_formats
                    .iter()
                    .filter_map(|name| match name.as_str() {
                        "Text" => Some(TransferFormat::Text),
                        "Binary" => Some(TransferFormat::Binary),
                        _ => None,
                    })
                    .collect();
                Some((transport, formats))
            })
            .collect();
        return Ok(Negotiated {
            url,
            connection_id,
            connection_token,
            access_token,
            transports,
            offered,
            use_stateful_reconnect: answer.use_stateful_reconnect && answer.negotiate_version >= 1,
        });
    }
    Err(ConnectError::TooManyRedirects)
}

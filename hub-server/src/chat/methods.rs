//! The chat hub: the methods and hooks of ASP.NET Core's chat sample, the unverified
//! name as user id, and the limits on group names and counts.

use backplane_core::{BackplaneError, HubError, ManagerOptions};

use super::{HUB_NAME, MAX_GROUP_NAME_CHARS, MAX_GROUPS_PER_CONNECTION};
use crate::{Caller, Clients, Groups, Hub, HubBuilder, MethodError, SendError, access_token};

/// The chat hub: its methods and hooks, the access token as user id, and at most
/// [`MAX_GROUPS_PER_CONNECTION`] groups per connection. Add options or a backplane, then
/// [`HubBuilder::build`]. [`HubBuilder::manager_options`] replaces the group limit too:
/// set [`ManagerOptions::max_groups_per_connection`] in what you pass.
pub fn hub_builder() -> HubBuilder {
    Hub::builder(HUB_NAME)
        .manager_options(
            ManagerOptions::default().max_groups_per_connection(MAX_GROUPS_PER_CONNECTION),
        )
        .method("SendMessage", send_message)
        .method("JoinGroup", join_group)
        .method("LeaveGroup", leave_group)
        .method("SendMessageToGroup", send_message_to_group)
        .on_connected(user_connected)
        .on_disconnected(user_disconnected)
        .user_id(unverified_name)
}

/// The chat hub's user id without an authenticator: the access token the client sent,
/// taken as a display name (see the module documentation), unless it looks like a JWT
/// (three dot-separated base64url parts), which is refused as a name: the connection is
/// anonymous.
pub fn unverified_name(request: &axum::http::request::Parts) -> Option<String> {
    let token = access_token(request)?;
    if looks_like_jwt(&token) {
        tracing::warn!(
            "a client sent a JWT, but this server validates no tokens (start it with --jwt-key-file or --jwt-key-env): the connection is anonymous"
        );
        return None;
    }
    Some(token)
}

/// Whether `token` has the shape of a JWS compact serialization.
fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && parts[0].starts_with("eyJ")
}

// `user` and `message` may be null, as .NET's `string` parameters of the original sample
// may: a client that sends null gets it relayed, not a binding error.
async fn send_message(
    clients: Clients,
    user: Option<String>,
    message: Option<String>,
) -> Result<(), MethodError> {
    clients
        .all()
        .send("ReceiveMessage", (&user, &message))
        .await
        .map_err(|error| unsent(Unsent::Message, error))
}

/// What a failed send was for: a message, or a new connection's announcement.
#[derive(Debug, Clone, Copy)]
enum Unsent {
    Message,
    Connection,
}

/// A send that failed, as the caller sees it. When the backplane (the other servers)
/// refused it or is out of reach, saying so tells the user that trying again later is the
/// remedy, and that nobody connected here got the message (see `ClientProxy::send`); the
/// cause goes to the log only. When the backplane did not confirm it in time, it may
/// still have reached the other servers (a commit or acknowledgement that came too late):
/// a sender is told that, not that nobody got it, since sending it again may repeat it
/// for some; a connection is refused (its client reconnects and is announced again).
fn unsent(what: Unsent, error: SendError) -> MethodError {
    let lead = match what {
        Unsent::Message => "Message not sent",
        Unsent::Connection => "Connection refused",
    };
    match error {
        SendError::Hub(HubError::Backplane(cause @ BackplaneError::Timeout(_))) => {
            tracing::warn!(%cause, "{lead}: the backplane did not confirm it in time");
            MethodError::new(match what {
                Unsent::Message => {
                    "Message not confirmed: this server got no answer from the other servers \
                     in time. Nobody connected to it received it; people connected to the \
                     others may have, so sending it again may repeat it for them."
                }
                Unsent::Connection => {
                    "Connection refused: this server got no answer from the other servers in \
                     time. Try again later."
                }
            })
        }
        SendError::Hub(HubError::Backplane(cause)) => {
            tracing::warn!(%cause, "{lead}: the backplane refused it");
            MethodError::new(format!(
                "{lead}: this server could not pass it on to the other servers, and nobody \
                 connected to it received it. Try again later."
            ))
        }
        SendError::Hub(HubError::LocalOnly(cause)) => {
            tracing::warn!(%cause, "{lead}: the other servers are out of reach; delivered here only");
            MethodError::new(format!(
                "{lead}: this server cannot reach the other servers right now; only the people \
                 connected to it received it. Sending it again would repeat it for them."
            ))
        }
        other => MethodError::from(other),
    }
}

async fn join_group(
    caller: Caller,
    groups: Groups,
    clients: Clients,
    group: String,
) -> Result<(), MethodError> {
    check_group_name(&group)?;
    groups
        .add(caller.connection_id(), &group)
        .await
        .map_err(|error| match error {
            // The caller's own doing, and what to do about it: tell them.
            HubError::GroupRefused { reason, .. } => {
                MethodError::new(format!("cannot join group {group:?}: {reason}"))
            }
            other => MethodError::from(other),
        })?;
    tracing::debug!(connection_id = %caller.connection_id(), %group, "joined group");
    clients
        .group(group.clone())
        .send("UserJoinedGroup", (caller.user(), &group))
        .await?;
    Ok(())
}

async fn leave_group(
    caller: Caller,
    groups: Groups,
    clients: Clients,
    group: String,
) -> Result<(), MethodError> {
    check_group_name(&group)?;
    groups.remove(caller.connection_id(), &group).await?;
    tracing::debug!(connection_id = %caller.connection_id(), %group, "left group");
    clients
        .group(group.clone())
        .send("UserLeftGroup", (caller.user(), &group))
        .await?;
    Ok(())
}

async fn send_message_to_group(
    clients: Clients,
    group: String,
    user: Option<String>,
    message: Option<String>,
) -> Result<(), MethodError> {
    check_group_name(&group)?;
    clients
        .group(group.clone())
        .send("ReceiveGroupMessage", (&group, &user, &message))
        .await
        .map_err(|error| unsent(Unsent::Message, error))
}

async fn user_connected(caller: Caller, clients: Clients) -> Result<(), MethodError> {
    // A connection that cannot be announced is refused (the client sees this reason in
    // the Close message) rather than kept on a server cut off from the others. Once the
    // backplane's circuit is open, the announcement reaches this server's connections
    // (`LocalOnly`): the connection is kept, as one more user of this server while it is
    // cut off (refusing it now would leave the others with a `UserConnected` that no
    // `UserDisconnected` ever follows).
    match clients
        .all()
        .send("UserConnected", (caller.connection_id(),))
        .await
    {
        Ok(()) => Ok(()),
        Err(SendError::Hub(HubError::LocalOnly(cause))) => {
            tracing::warn!(%cause, "a connection was announced on this server only: the others are out of reach");
            Ok(())
        }
        Err(error) => Err(unsent(Unsent::Connection, error)),
    }
}

async fn user_disconnected(caller: Caller, clients: Clients) -> Result<(), MethodError> {
    clients
        .all()
        .send("UserDisconnected", (caller.connection_id(),))
        .await?;
    Ok(())
}

fn check_group_name(group: &str) -> Result<(), MethodError> {
    if group.is_empty() {
        return Err(MethodError::new("The group name must not be empty."));
    }
    if group.chars().count() > MAX_GROUP_NAME_CHARS {
        return Err(MethodError::new(format!(
            "The group name must not be longer than {MAX_GROUP_NAME_CHARS} characters."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwts_are_never_taken_as_names() {
        let request = |token: &str| {
            axum::http::Request::get(format!("/chathub?access_token={token}"))
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        assert_eq!(unverified_name(&request("ann")).as_deref(), Some("ann"));
        assert_eq!(unverified_name(&request("a.b.c")).as_deref(), Some("a.b.c"));
        assert_eq!(
            unverified_name(&request("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2ln")),
            None
        );
    }

    #[test]
    fn group_names_are_checked() {
        assert!(check_group_name("room").is_ok());
        assert!(check_group_name("").unwrap_err().is_for_caller());
        assert!(check_group_name(&"x".repeat(MAX_GROUP_NAME_CHARS)).is_ok());
        assert!(check_group_name(&"x".repeat(MAX_GROUP_NAME_CHARS + 1)).is_err());
    }
}

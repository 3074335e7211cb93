//! This node's connections, indexed by id, group and user, and local fan-out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::envelope::Target;
use crate::id::ConnectionId;
use crate::manager::{ConnectionSink, DeliveryError, LocalConnection};
use crate::message::SerializedMessage;

/// Above this many excluded ids a hash set beats scanning the list for every member.
const LINEAR_EXCLUSION_LIMIT: usize = 8;

/// One registered connection and the groups it belongs to (so disconnect can remove it
/// from each group without scanning every group).
#[derive(Debug)]
struct Entry {
    /// Where messages go.
    sink: Arc<dyn ConnectionSink>,
    /// The user, to remove the connection from the user index on disconnect.
    user: Option<String>,
    /// Groups this connection is a member of.
    groups: HashSet<String>,
}

/// Members of a group or connections of a user: id to sink, so fan-out never goes back
/// to the connection table.
type Members = HashMap<ConnectionId, Arc<dyn ConnectionSink>>;

/// The local connection registry of one hub on one node.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Every local connection.
    connections: HashMap<ConnectionId, Entry>,
    /// Group name to local members.
    groups: HashMap<String, Members>,
    /// User id to local connections.
    users: HashMap<String, Members>,
}

/// What a delivery attempt did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fanout {
    /// Connections the message was queued for.
    pub(crate) delivered: usize,
    /// Connections whose sink refused it.
    pub(crate) failed: usize,
}

impl Registry {
    /// Register a connection; `false` if the id is taken.
    pub(crate) fn insert(&mut self, connection: LocalConnection) -> bool {
        if self.connections.contains_key(&connection.id) {
            return false;
        }
        if let Some(user) = &connection.user {
            self.users
                .entry(user.clone())
                .or_default()
                .insert(connection.id.clone(), connection.sink.clone());
        }
        let entry = Entry {
            sink: connection.sink,
            user: connection.user,
            groups: HashSet::new(),
        };
        self.connections.insert(connection.id, entry);
        true
    }

    /// Remove a connection from every index; `false` if it was not registered.
    pub(crate) fn remove(&mut self, id: &ConnectionId) -> bool {
        let Some(entry) = self.connections.remove(id) else {
            return false;
        };
        for group in entry.groups {
            remove_member(&mut self.groups, &group, id);
        }
        if let Some(user) = entry.user {
            remove_member(&mut self.users, &user, id);
        }
        true
    }

    /// Whether the connection lives on this node.
    pub(crate) fn contains(&self, id: &ConnectionId) -> bool {
        self.connections.contains_key(id)
    }

    /// Number of local connections.
    pub(crate) fn len(&self) -> usize {
        self.connections.len()
    }

    /// Add a local connection to a group, unless it is already in `limit` groups.
    /// `None` if the connection is not local, otherwise whether it was newly added, or
    /// `Err(limit)` if it is in `limit` (or more) other groups.
    pub(crate) fn join(
        &mut self,
        id: &ConnectionId,
        group: &str,
        limit: Option<usize>,
    ) -> Option<Result<bool, usize>> {
        let entry = self.connections.get_mut(id)?;
        if entry.groups.contains(group) {
            return Some(Ok(false));
        }
        if let Some(limit) = limit.filter(|&limit| entry.groups.len() >= limit) {
            return Some(Err(limit));
        }
        entry.groups.insert(group.to_owned());
        self.groups
            .entry(group.to_owned())
            .or_default()
            .insert(id.clone(), entry.sink.clone());
        Some(Ok(true))
    }

    /// Remove a local connection from a group. `None` if the connection is not local,
    /// otherwise whether it was a member.
    pub(crate) fn leave(&mut self, id: &ConnectionId, group: &str) -> Option<bool> {
        let entry = self.connections.get_mut(id)?;
        if !entry.groups.remove(group) {
            return Some(false);
        }
        remove_member(&mut self.groups, group, id);
        Some(true)
    }

    /// Hand `message` to every local connection `target` selects, each at most once.
    pub(crate) fn deliver(&self, target: &Target, message: &SerializedMessage) -> Fanout {
        let mut fanout = Fanout::default();
        match target {
            Target::All => {
                for (id, entry) in &self.connections {
                    fanout.record(id, &entry.sink, message);
                }
            }
            Target::AllExcept(excluded) => {
                let excluded = Exclusion::new(excluded);
                for (id, entry) in &self.connections {
                    if !excluded.contains(id) {
                        fanout.record(id, &entry.sink, message);
                    }
                }
            }
            Target::Connection(id) => {
                if let Some(entry) = self.connections.get(id) {
                    fanout.record(id, &entry.sink, message);
                }
            }
            Target::Connections(ids) => {
                let mut seen = HashSet::with_capacity(ids.len());
                for id in ids {
                    if let Some(entry) = self.connections.get(id)
                        && seen.insert(id)
                    {
                        fanout.record(id, &entry.sink, message);
                    }
                }
            }
            Target::Group(group) => {
                if let Some(members) = self.groups.get(group) {
                    for (id, sink) in members {
                        fanout.record(id, sink, message);
                    }
                }
            }
            Target::Groups(groups) => {
                self.deliver_to_union(&self.groups, groups, message, &mut fanout)
            }
            Target::GroupExcept { group, excluded } => {
                if let Some(members) = self.groups.get(group) {
                    let excluded = Exclusion::new(excluded);
                    for (id, sink) in members {
                        if !excluded.contains(id) {
                            fanout.record(id, sink, message);
                        }
                    }
                }
            }
            Target::User(user) => {
                if let Some(members) = self.users.get(user) {
                    for (id, sink) in members {
                        fanout.record(id, sink, message);
                    }
                }
            }
            Target::Users(users) => self.deliver_to_union(&self.users, users, message, &mut fanout),
        }
        fanout
    }

    /// Deliver to the union of several member sets, each connection once.
    fn deliver_to_union(
        &self,
        index: &HashMap<String, Members>,
        keys: &[String],
        message: &SerializedMessage,
        fanout: &mut Fanout,
    ) {
        let sets: Vec<&Members> = dedup_keys(keys).filter_map(|key| index.get(key)).collect();
        if let [only] = sets.as_slice() {
            for (id, sink) in *only {
                fanout.record(id, sink, message);
            }
            return;
        }
        let mut seen: HashSet<&ConnectionId> = HashSet::new();
        for members in sets {
            for (id, sink) in members {
                if seen.insert(id) {
                    fanout.record(id, sink, message);
                }
            }
        }
    }
}

impl Fanout {
    fn record(
        &mut self,
        id: &ConnectionId,
        sink: &Arc<dyn ConnectionSink>,
        message: &SerializedMessage,
    ) {
        match sink.deliver(message) {
            Ok(()) => self.delivered += 1,
            Err(error) => {
                self.failed += 1;
                log_refusal(id, &error);
            }
        }
    }
}

#[cold]
fn log_refusal(id: &ConnectionId, error: &DeliveryError) {
    tracing::debug!(connection_id = %id, %error, "connection did not take a message");
}

/// Keys with duplicates removed, first occurrence kept.
fn dedup_keys(keys: &[String]) -> impl Iterator<Item = &String> {
    let mut seen = HashSet::with_capacity(keys.len());
    keys.iter().filter(move |key| seen.insert(key.as_str()))
}

fn remove_member(index: &mut HashMap<String, Members>, key: &str, id: &ConnectionId) {
    if let Some(members) = index.get_mut(key) {
        members.remove(id);
        if members.is_empty() {
            index.remove(key);
        }
    }
}

/// A set of excluded connection ids, scanned linearly when small.
enum Exclusion<'a> {
    Few(&'a [ConnectionId]),
    Many(HashSet<&'a ConnectionId>),
}

impl<'a> Exclusion<'a> {
    fn new(ids: &'a [ConnectionId]) -> Self {
        if ids.len() <= LINEAR_EXCLUSION_LIMIT {
            Exclusion::Few(ids)
        } else {
            Exclusion::Many(ids.iter().collect())
        }
    }

    fn contains(&self, id: &ConnectionId) -> bool {
        match self {
            Exclusion::Few(ids) => ids.contains(id),
            Exclusion::Many(ids) => ids.contains(id),
        }
    }
}

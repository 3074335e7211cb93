//! What a running hub lends the parameters of its methods: the lifetime manager that
//! [`Clients`](crate::Clients), [`Groups`](crate::Groups) and
//! [`HubContext`](crate::HubContext) send through, the application's extensions, and the
//! two limits that shape what a parameter gets.
//!
//! A module of its own so that the hub (`hub.rs`, which builds it), the extractors
//! (`extract.rs`, which carry it in every [`InvocationContext`](crate::InvocationContext))
//! and the senders (`clients.rs`, which read it) all point here and never at each other.
//! It points at none of them.

use std::fmt;
use std::sync::Arc;

use axum::http::Extensions;
use backplane_core::BackplaneHubLifetimeManager;

/// The part of a hub that hub method parameters reach; one per hub, shared by its
/// connections.
pub(crate) struct HubServices {
    /// Connections, groups, users and the backplane: every send and group change goes
    /// through it.
    pub(crate) manager: Arc<BackplaneHubLifetimeManager>,
    /// Application state for [`Extension`](crate::Extension) parameters (see
    /// [`HubBuilder::extension`](crate::HubBuilder::extension)).
    pub(crate) extensions: Extensions,
    /// Whether a connection runs one invocation at a time
    /// ([`HubOptions::max_parallel_invocations`](crate::HubOptions::max_parallel_invocations)
    /// at most 1): a method then waiting for its own caller's answer would deadlock, which
    /// the caller's [`Clients`](crate::Clients) refuse up front.
    pub(crate) serial_invocations: bool,
    /// How many items an [`UploadStream`](crate::UploadStream) buffers
    /// ([`StreamOptions::upload_buffer`](crate::StreamOptions::upload_buffer)).
    pub(crate) upload_buffer: usize,
}

impl fmt::Debug for HubServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubServices")
            .field("hub", &self.manager.hub())
            .field("serial_invocations", &self.serial_invocations)
            .field("upload_buffer", &self.upload_buffer)
            .finish_non_exhaustive()
    }
}

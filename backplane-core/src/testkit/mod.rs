//! The backplane conformance suite: one set of tests every backplane runs against itself.
//!
//! Enabled by the `testkit` feature. A backplane crate provides one async function that
//! builds a fresh, isolated cluster of `n` nodes, and invokes
//! [`backplane_conformance_tests!`](crate::backplane_conformance_tests) with it:
//!
//! ```ignore
//! // tests/conformance.rs of a backplane crate (needs tokio with "macros" and
//! // "rt-multi-thread" as a dev-dependency).
//! use std::sync::Arc;
//! use backplane_core::Backplane;
//!
//! async fn cluster(nodes: usize) -> Vec<Arc<dyn Backplane>> {
//!     my_backplane::cluster(nodes).await
//! }
//!
//! backplane_core::backplane_conformance_tests!(cluster);
//! ```
//!
//! A backend with connections to drop also passes the repair cases: give the macro a
//! [`ConnectionCutter`] (an `async fn(NodeId)` that cuts that node's receiving
//! connection), and it adds cases that cut it while others publish and check that
//! nothing is lost, duplicated or reordered:
//!
//! ```ignore
//! backplane_core::backplane_conformance_tests!(cluster, cut = cut_receiving);
//! ```
//!
//! Networked backplanes' own tests find two helpers here: [`CuttingProxy`], a loopback
//! TCP proxy that cuts every connection through it or silently stops forwarding,
//! [`scoped`], which deletes a test cluster's namespace when its last node shuts down,
//! and [`DisposableServer`], a server of the test's own to kill and restart; [`faults`]
//! holds the fault scenarios.
//!
//! Each case is also a public async function here, for backplanes that need custom
//! set-up around a case. Every wait is bounded by [`WAIT`]; a case that does not see
//! what it expects panics with a message that says what was missing.

mod cases;
mod client_results;
pub mod events;
pub mod faults;
mod proxy;
mod repair;
mod scope;
mod server;
mod sink;

pub use cases::*;
pub use client_results::{
    client_result_for_a_missing_tagged_connection_fails_fast, client_result_return_route,
};
pub use proxy::CuttingProxy;
pub use repair::{
    ConnectionCutter, repair_across_repeated_cuts, repair_after_dropped_subscription,
};
pub use scope::scoped;
pub use server::{DisposableServer, ServerProgram, spare_port};
pub use sink::RecordingSink;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::backplane::Backplane;

/// How long a case waits for something it expects before failing. Generous, because
/// networked backplanes share the machine with the test and with each other.
pub const WAIT: Duration = Duration::from_secs(30);

/// Something that builds a fresh cluster of nodes that see each other and nothing else.
///
/// Implemented for every `Fn(usize) -> impl Future<Output = Vec<Arc<dyn Backplane>>>`.
pub trait ClusterFactory {
    /// The future [`ClusterFactory::cluster`] returns.
    type Future: Future<Output = Vec<Arc<dyn Backplane>>>;

    /// A fresh cluster of `nodes` nodes, isolated from every other cluster.
    fn cluster(&self, nodes: usize) -> Self::Future;
}

impl<F, Fut> ClusterFactory for F
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Vec<Arc<dyn Backplane>>>,
{
    type Future = Fut;

    fn cluster(&self, nodes: usize) -> Fut {
        self(nodes)
    }
}

/// Generate one `#[tokio::test]` per conformance case, each calling the case with the
/// given cluster factory (a path to an `async fn(usize) -> Vec<Arc<dyn Backplane>>`).
///
/// With `cut = path` (an `async fn(NodeId)`, see [`ConnectionCutter`]) it also generates
/// the repair cases, which cut a node's receiving connection while others publish.
///
/// The calling crate needs `tokio` (features `macros`, `rt-multi-thread`) as a
/// dev-dependency and `backplane-core` with the `testkit` feature.
#[macro_export]
macro_rules! backplane_conformance_tests {
    ($factory:path) => {
        $crate::backplane_conformance_tests!(@cases $factory;
            subscription_reports_connected_first,
            fan_out_to_three_nodes,
            no_self_echo,
            send_to_reaches_the_destination,
            per_origin_ordering_of_10000_envelopes,
            one_mib_payload,
            concurrent_publishers,
            publish_after_shutdown_fails,
            other_hubs_are_not_delivered,
            every_target_kind_across_nodes,
            remote_group_add_and_remove_with_ack,
            group_change_for_unknown_connection_times_out,
            user_on_two_nodes,
            client_result_return_route,
            client_result_for_a_missing_tagged_connection_fails_fast,
        );
    };
    ($factory:path, cut = $cutter:path) => {
        $crate::backplane_conformance_tests!($factory);
        $crate::backplane_conformance_tests!(@repair $factory, $cutter;
            repair_after_dropped_subscription,
            repair_across_repeated_cuts,
        );
    };
    (@repair $factory:path, $cutter:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testkit::$case($factory, $cutter).await;
            }
        )*
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testkit::$case($factory).await;
            }
        )*
    };
}

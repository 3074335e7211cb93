//! What the tests of the Rust client (`chat_client`) share: the transport and protocol
//! pairs it runs on.

use chat_client::{Protocol, TransportType};

/// Every transport with every protocol it carries (Server-Sent Events carry text only).
pub const EVERY_TRANSPORT_AND_PROTOCOL: [(TransportType, Protocol); 5] = [
    (TransportType::WebSockets, Protocol::Json),
    (TransportType::WebSockets, Protocol::MessagePack),
    (TransportType::ServerSentEvents, Protocol::Json),
    (TransportType::LongPolling, Protocol::Json),
    (TransportType::LongPolling, Protocol::MessagePack),
];

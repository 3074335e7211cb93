//! Example hubs beside the chat hub, showing features the chat contract does not use.

pub mod streaming;

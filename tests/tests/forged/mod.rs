//! Forged backplane traffic on PostgreSQL: what any role that can connect could send on a
//! hub's notification channel, for the tests of what nodes do with it.

use backplane_core::NodeId;
use base64::Engine as _;
use tests::TestSchema;

/// An inline notification carrying `envelope` (encoded) as one envelope from `origin`
/// (the format of the backplane's `notification` module), without a tag.
pub(crate) fn inline_notification(origin: NodeId, envelope: &[u8]) -> String {
    let mut prefix = [0u8; hub_protocol::varint::MAX_PREFIX_LEN];
    let n = hub_protocol::varint::encode(envelope.len(), &mut prefix);
    let mut pack = prefix[..n].to_vec();
    pack.extend_from_slice(envelope);
    format!(
        "i{origin}:{}",
        base64::engine::general_purpose::STANDARD.encode(pack)
    )
}

/// NOTIFY `payload` on `hub`'s channel of `schema` (`schema.slug`, the slug being the
/// default one: the hub's name in lower case) from a plain connection.
pub(crate) async fn notify(schema: &TestSchema, hub: &str, payload: &str) {
    let channel = format!("{}.{}", schema.name(), hub.to_lowercase());
    schema
        .admin()
        .await
        .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
        .await
        .expect("NOTIFY from a raw connection");
}

//! SQL identifiers: validation, quoting, and the names derived from a schema and a slug.
//!
//! Every identifier the backplane puts into SQL text goes through [`quote_ident`], which
//! doubles embedded quotes, so a hostile schema name or slug is just an odd name and can
//! never end the quoted identifier. Values travel as bind parameters. Names longer than
//! PostgreSQL's 63-byte identifier limit would be truncated silently by the server (and
//! two long names could then collide), so schema names that long are rejected and slugs
//! are shortened with a hash.

use backplane_core::BackplaneError;

use crate::options::ChannelNameGenerator;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
pub(crate) const MAX_IDENTIFIER: usize = 63;

/// Slugs longer than this are shortened, so `{slug}_messages_inserted` fits 63 bytes.
const MAX_SLUG: usize = MAX_IDENTIFIER - "_messages_inserted".len();

/// `name` as a quoted SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Check a schema name.
///
/// # Errors
///
/// [`BackplaneError::Config`] when empty, longer than 63 bytes, or containing NUL.
pub(crate) fn validate_schema(schema: &str) -> Result<(), BackplaneError> {
    if schema.is_empty() {
        return Err(BackplaneError::Config(
            "schema_name must not be empty".into(),
        ));
    }
    if schema.len() > MAX_IDENTIFIER {
        return Err(BackplaneError::Config(format!(
            "schema_name is {} bytes long; PostgreSQL identifiers hold at most {MAX_IDENTIFIER}",
            schema.len()
        )));
    }
    if schema.contains('\0') {
        return Err(BackplaneError::Config(
            "schema_name must not contain NUL characters".into(),
        ));
    }
    Ok(())
}

/// Everything named after one (schema, slug) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableNames {
    /// The slug as the table name uses it (shortened if it was too long).
    pub(crate) slug: String,
    /// `"schema"."slug_messages"`, quoted.
    pub(crate) qualified: String,
    /// The unquoted table name, for catalog look-ups.
    pub(crate) table: String,
    /// The quoted name of the index catch-up and retention use.
    pub(crate) time_index: String,
    /// The notification channel (by default `schema.slug`), shortened with a hash to 63
    /// bytes.
    pub(crate) channel: String,
}

impl TableNames {
    /// The names for `slug` in `schema` (the schema already validated), with the
    /// channel `channel_name` makes.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] when the slug or the channel name is empty or contains
    /// NUL.
    pub(crate) fn new(
        schema: &str,
        slug: &str,
        channel_name: &ChannelNameGenerator,
    ) -> Result<Self, BackplaneError> {
        if slug.is_empty() {
            return Err(BackplaneError::Config(
                "the table slug generator returned an empty slug".into(),
            ));
        }
        if slug.contains('\0') {
            return Err(BackplaneError::Config(
                "table slugs must not contain NUL characters".into(),
            ));
        }
        let slug = shorten(slug, MAX_SLUG, &[slug]);
        let table = format!("{slug}_messages");
        let channel = channel_name(schema, &slug);
        if channel.is_empty() || channel.contains('\0') {
            return Err(BackplaneError::Config(format!(
                "the channel name generator returned {channel:?} for slug {slug:?}: channel names must be non-empty and contain no NUL"
            )));
        }
        let channel = shorten(&channel, MAX_IDENTIFIER, &[schema, &slug, &channel]);
        Ok(Self {
            qualified: format!("{}.{}", quote_ident(schema), quote_ident(&table)),
            time_index: quote_ident(&format!("{table}_inserted")),
            table,
            channel,
            slug,
        })
    }
}

/// `name` if it fits `limit` bytes, else a prefix of it, `_` and 16 hex digits of a hash
/// of `parts` (so distinct long names stay distinct).
fn shorten(name: &str, limit: usize, parts: &[&str]) -> String {
    if name.len() <= limit {
        return name.to_owned();
    }
    let hash = format!("{:016x}", fnv1a(parts));
    let mut cut = limit - hash.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}", &name[..cut])
}

/// 64-bit FNV-1a over `parts`, separated by NUL: stable across Rust versions and
/// platforms, which names shared by every node need (std's hasher promises neither).
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash ^= 0xff;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        for byte in part.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// An advisory lock key for `purpose` in `schema` (advisory locks take a bigint).
pub(crate) fn lock_key(purpose: &str, schema: &str) -> i64 {
    i64::from_ne_bytes(fnv1a(&["signalr-backplane", purpose, schema]).to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn default_channel() -> ChannelNameGenerator {
        Arc::new(|schema: &str, slug: &str| format!("{schema}.{slug}"))
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(
            quote_ident("x\"; DROP TABLE t; --"),
            "\"x\"\"; DROP TABLE t; --\""
        );
    }

    #[test]
    fn schema_validation() {
        assert!(validate_schema("signalr").is_ok());
        assert!(validate_schema("with space; \"quotes\" ünïcode").is_ok());
        assert!(validate_schema("").is_err());
        assert!(validate_schema(&"s".repeat(64)).is_err());
        assert!(validate_schema(&"s".repeat(63)).is_ok());
        assert!(validate_schema("a\0b").is_err());
    }

    #[test]
    fn names_fit_postgres_limits() {
        for slug in [
            "chat".to_owned(),
            "ü".repeat(40),
            "x".repeat(200),
            "a\"b".to_owned(),
        ] {
            let names = TableNames::new(&"s".repeat(63), &slug, &default_channel()).unwrap();
            assert!(names.table.len() <= MAX_IDENTIFIER, "{names:?}");
            assert!(
                format!("{}_inserted", names.table).len() <= MAX_IDENTIFIER,
                "{names:?}"
            );
            assert!(names.channel.len() <= MAX_IDENTIFIER, "{names:?}");
        }
        let names = TableNames::new("signalr", "chat", &default_channel()).unwrap();
        assert_eq!(names.qualified, "\"signalr\".\"chat_messages\"");
        assert_eq!(names.channel, "signalr.chat");
        assert!(TableNames::new("signalr", "", &default_channel()).is_err());
        assert!(TableNames::new("signalr", "a\0", &default_channel()).is_err());
        let custom: ChannelNameGenerator = Arc::new(|_: &str, slug: &str| format!("app_{slug}"));
        assert_eq!(
            TableNames::new("signalr", "chat", &custom).unwrap().channel,
            "app_chat"
        );
        let empty: ChannelNameGenerator = Arc::new(|_: &str, _: &str| String::new());
        assert!(TableNames::new("signalr", "chat", &empty).is_err());
    }

    #[test]
    fn long_names_stay_distinct() {
        let a = TableNames::new("s", &format!("{}a", "x".repeat(100)), &default_channel()).unwrap();
        let b = TableNames::new("s", &format!("{}b", "x".repeat(100)), &default_channel()).unwrap();
        assert_ne!(a.table, b.table);
        assert_ne!(a.channel, b.channel);
        let c =
            TableNames::new(&format!("{}1", "s".repeat(60)), "chat", &default_channel()).unwrap();
        let d =
            TableNames::new(&format!("{}2", "s".repeat(60)), "chat", &default_channel()).unwrap();
        assert_ne!(c.channel, d.channel);
    }
}

//! What one stream entry holds, and how `XREAD` replies are read.
//!
//! An entry has the fields `o` (the origin node id, 16 raw bytes, so receivers drop
//! their own echoes without decoding), `s` (sequence number, decimal) and either `e`
//! (the encoded envelope) or `t` (a *skipped run*: the numbers `t..=s` of a failed
//! batch, which receivers skip instead of reporting them lost).

use backplane_core::NodeId;
use backplane_core::sequencing::Stored;
use redis::Value;

/// Field names of an entry.
pub(crate) const ORIGIN: &str = "o";
/// The sequence number (of the envelope, or the last of a skipped run).
pub(crate) const SEQ: &str = "s";
/// The encoded envelope.
pub(crate) const ENVELOPE: &str = "e";
/// The first number of a skipped run.
pub(crate) const SKIPPED_FROM: &str = "t";

/// One entry read from a hub's stream.
#[derive(Debug)]
pub(crate) struct StreamEntry {
    /// Its stream id: reading resumes after it.
    pub(crate) id: String,
    /// What it says.
    pub(crate) body: Stored,
}

/// The entries of an `XREAD` reply for one stream (`Nil` when none arrived).
///
/// # Errors
///
/// A description if the reply does not have the shape of an `XREAD` reply.
pub(crate) fn parse_xread(reply: Value) -> Result<Vec<StreamEntry>, String> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.pop().expect("two items")),
                other => Err(format!("unexpected stream in XREAD reply: {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        other => return Err(format!("unexpected XREAD reply: {other:?}")),
    };
    let mut entries = Vec::new();
    for stream in streams {
        let Value::Array(items) = stream else {
            return Err("XREAD reply without an entry list".into());
        };
        for item in items {
            entries.push(parse_entry(item)?);
        }
    }
    Ok(entries)
}

/// The id of the first entry of an `XRANGE`/`XREVRANGE ... COUNT 1` reply, `None` for
/// an empty (or missing) stream.
///
/// # Errors
///
/// A description if the reply does not have the shape of a range reply.
pub(crate) fn first_id(reply: Value) -> Result<Option<String>, String> {
    match reply {
        Value::Array(items) => match items.into_iter().next() {
            Some(item) => parse_entry(item).map(|entry| Some(entry.id)),
            None => Ok(None),
        },
        other => Err(format!("unexpected range reply: {other:?}")),
    }
}

/// One `[id, [field, value, ...]]` item.
fn parse_entry(item: Value) -> Result<StreamEntry, String> {
    let Value::Array(mut pair) = item else {
        return Err("stream entry is not an array".into());
    };
    if pair.len() != 2 {
        return Err("stream entry is not an [id, fields] pair".into());
    }
    let fields = pair.pop().expect("two items");
    let id = match pair.pop().expect("two items") {
        Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|_| "non-UTF-8 entry id")?,
        Value::SimpleString(id) => id,
        _ => return Err("stream entry id is not a string".into()),
    };
    let body = match fields {
        Value::Array(fields) => body_of(fields),
        _ => Stored::Malformed("entry without fields"),
    };
    Ok(StreamEntry { id, body })
}

fn body_of(fields: Vec<Value>) -> Stored {
    let (mut origin, mut seq, mut envelope, mut first) = (None, None, None, None);
    let mut fields = fields.into_iter();
    while let (Some(Value::BulkString(name)), Some(Value::BulkString(value))) =
        (fields.next(), fields.next())
    {
        match name.as_slice() {
            b"o" => {
                origin = <[u8; 16]>::try_from(value.as_slice())
                    .ok()
                    .map(NodeId::from_bytes)
            }
            b"s" => seq = number(&value),
            b"e" => envelope = Some(value),
            b"t" => first = number(&value),
            _ => {}
        }
    }
    match (origin, seq, envelope, first) {
        (Some(origin), Some(seq), Some(bytes), None) => Stored::Envelope {
            origin,
            seq,
            bytes: bytes.into(),
        },
        (Some(origin), Some(last), None, Some(first)) if (1..=last).contains(&first) => {
            Stored::Skipped {
                origin,
                first,
                last,
            }
        }
        _ => Stored::Malformed("entry without a valid origin, sequence number and payload"),
    }
}

fn number(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(bytes: &[u8]) -> Value {
        Value::BulkString(bytes.to_vec())
    }

    #[test]
    fn reads_envelopes_skipped_runs_and_rejects_junk() {
        let origin = NodeId::from_u128(7);
        let entry = |id: &str, fields: Vec<Value>| {
            Value::Array(vec![bulk(id.as_bytes()), Value::Array(fields)])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"{signalr:chat}"),
            Value::Array(vec![
                entry(
                    "1-0",
                    vec![
                        bulk(b"o"),
                        bulk(&origin.to_bytes()),
                        bulk(b"s"),
                        bulk(b"3"),
                        bulk(b"e"),
                        bulk(b"xyz"),
                    ],
                ),
                entry(
                    "1-1",
                    vec![
                        bulk(b"o"),
                        bulk(&origin.to_bytes()),
                        bulk(b"s"),
                        bulk(b"6"),
                        bulk(b"t"),
                        bulk(b"4"),
                    ],
                ),
                entry("2-0", vec![bulk(b"s"), bulk(b"x")]),
            ]),
        ])]);
        let entries = parse_xread(reply).unwrap();
        assert_eq!(entries.len(), 3);
        assert!(
            matches!(&entries[0].body, Stored::Envelope { seq: 3, bytes, .. } if &bytes[..] == b"xyz")
        );
        assert!(matches!(
            entries[1].body,
            Stored::Skipped {
                first: 4,
                last: 6,
                ..
            }
        ));
        assert!(matches!(entries[2].body, Stored::Malformed(_)));
        assert_eq!(entries[2].id, "2-0");
        assert!(parse_xread(Value::Nil).unwrap().is_empty());
        assert!(parse_xread(Value::Int(3)).is_err());
        let range = Value::Array(vec![entry("5-1", vec![])]);
        assert_eq!(first_id(range).unwrap().as_deref(), Some("5-1"));
        assert_eq!(first_id(Value::Array(vec![])).unwrap(), None);
    }
}

//! Taking the TLS settings out of a connection string before tokio-postgres parses the
//! rest.
//!
//! libpq reads `sslmode` (`disable`, `allow`, `prefer`, `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert`; tokio-postgres knows only the first three modes
//! and rejects `sslrootcert` as an unknown option. So both are removed from the string
//! here, in either form libpq accepts (URL query parameters, or `key=value` pairs with
//! single quotes and backslash escapes), and the rest goes to tokio-postgres unchanged.

use backplane_core::BackplaneError;

/// The TLS settings found in a connection string, and the string without them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsParams {
    /// The connection string with `sslmode` and `sslrootcert` removed.
    pub(crate) rest: String,
    /// The last `sslmode` given, verbatim.
    pub(crate) sslmode: Option<String>,
    /// The last `sslrootcert` given, decoded.
    pub(crate) sslrootcert: Option<String>,
}

/// Split `connection_string` into the TLS settings and the rest.
///
/// # Errors
///
/// [`BackplaneError::Config`] for a malformed `key=value` string or percent escape. The
/// message never repeats the connection string (it may hold a password).
pub(crate) fn take_tls_params(connection_string: &str) -> Result<TlsParams, BackplaneError> {
    if ["postgres://", "postgresql://"]
        .iter()
        .any(|prefix| connection_string.starts_with(prefix))
    {
        from_url(connection_string)
    } else {
        from_key_values(connection_string)
    }
}

fn invalid(why: &str) -> BackplaneError {
    BackplaneError::Config(format!("invalid PostgreSQL connection string: {why}"))
}

/// The URL form: parameters after `?`, separated by `&`, percent-encoded.
fn from_url(url: &str) -> Result<TlsParams, BackplaneError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(TlsParams {
            rest: url.to_owned(),
            ..TlsParams::default()
        });
    };
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key)?.as_str() {
            "sslmode" => params.sslmode = Some(percent_decode(value)?),
            "sslrootcert" => params.sslrootcert = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    params.rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(params)
}

/// `%XX` escapes decoded (as the URL parser of tokio-postgres does).
fn percent_decode(text: &str) -> Result<String, BackplaneError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| invalid("a malformed percent escape in a URL parameter"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid("a URL parameter is not UTF-8 once decoded"))
}

/// The `key=value` form: pairs separated by whitespace, spaces allowed around `=`,
/// values either bare (backslash escapes the next character) or in single quotes
/// (backslash escapes inside too).
fn from_key_values(text: &str) -> Result<TlsParams, BackplaneError> {
    let mut params = TlsParams::default();
    let mut rest = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_space(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        skip_space(&mut chars);
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(invalid("expected `=` after a key"));
        }
        skip_space(&mut chars);
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err(invalid("an unterminated quoted value")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(invalid("an unterminated quoted value")),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    match chars.next() {
                        Some((_, escaped)) => value.push(escaped),
                        None => return Err(invalid("a trailing backslash")),
                    }
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(text.len(), |&(index, _)| index);
        match key.as_str() {
            "sslmode" => params.sslmode = Some(value),
            "sslrootcert" => params.sslrootcert = Some(value),
            _ => {
                if !rest.is_empty() {
                    rest.push(' ');
                }
                rest.push_str(&text[start..end]);
            }
        }
    }
    params.rest = rest;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_are_taken_and_the_rest_kept() {
        let params = take_tls_params(
            "postgres://u:p%3Fw@db.example:5433/app?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&application_name=a",
        )
        .unwrap();
        assert_eq!(params.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/etc/ca x.pem"));
        assert_eq!(
            params.rest,
            "postgres://u:p%3Fw@db.example:5433/app?connect_timeout=5&application_name=a"
        );
    }

    #[test]
    fn a_url_with_only_tls_parameters_loses_its_query() {
        let params = take_tls_params("postgresql://db/app?sslmode=require").unwrap();
        assert_eq!(params.rest, "postgresql://db/app");
        assert_eq!(params.sslmode.as_deref(), Some("require"));
        let plain = take_tls_params("postgresql://db/app").unwrap();
        assert_eq!(plain.rest, "postgresql://db/app");
        assert_eq!(plain.sslmode, None);
    }

    #[test]
    fn key_value_pairs_with_quotes_and_escapes() {
        let params = take_tls_params(
            "host=db  password='it''s' sslmode = verify-ca sslrootcert='/a dir/c\\'a.pem' dbname=app\\ x",
        );
        // `'it''s'` is not libpq syntax (it would be 'it\'s'): the quoted value ends
        // at the second quote and `'s'` starts a key, which then lacks its `=`.
        assert!(params.is_err());
        let params = take_tls_params(
            "host=db  password='it\\'s' sslmode = verify-ca sslrootcert='/a dir/c\\'a.pem' dbname=app\\ x",
        )
        .unwrap();
        assert_eq!(params.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/a dir/c'a.pem"));
        assert_eq!(params.rest, "host=db password='it\\'s' dbname=app\\ x");
    }

    #[test]
    fn malformed_strings_are_rejected_without_echoing_them() {
        for bad in [
            "host=db password='secret",
            "host=db secret",
            "postgres://db/app?sslrootcert=%zz&password=secret",
        ] {
            let error = take_tls_params(bad).unwrap_err().to_string();
            assert!(!error.contains("secret"), "{error}");
        }
    }
}

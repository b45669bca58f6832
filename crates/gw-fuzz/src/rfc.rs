//! RFC 9110/9112 grammar pieces, written from the ABNF and nothing else, for the oracles.

/// `tchar` (RFC 9110 §5.6.2).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `token = 1*tchar`.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// `field-vchar = VCHAR / obs-text`.
pub fn is_field_vchar(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// `OWS` characters.
pub fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `field-line = field-name ":" OWS field-value OWS` (RFC 9112 §5), without its line end:
/// the name and the value (OWS removed), or `None` when the line does not match.
pub fn field_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    if !is_token(name) {
        return None;
    }
    let mut value = &line[colon + 1..];
    while let [first, rest @ ..] = value
        && is_ws(*first)
    {
        value = rest;
    }
    while let [rest @ .., last] = value
        && is_ws(*last)
    {
        value = rest;
    }
    // field-value = *field-content: visible characters with single or repeated SP/HTAB
    // between them (the ends were trimmed above).
    if !value.iter().all(|&b| is_field_vchar(b) || is_ws(b)) {
        return None;
    }
    Some((name, value))
}

/// Comma-separated list elements, trimmed, empty ones left out (RFC 9110 §5.6.1).
pub fn list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|e| !e.is_empty())
}

/// Bytes for a message: printable ASCII as is, the rest escaped.
pub fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lines() {
        assert_eq!(field_line(b"a: b"), Some((&b"a"[..], &b"b"[..])));
        assert_eq!(field_line(b"a:\t b c \t"), Some((&b"a"[..], &b"b c"[..])));
        assert_eq!(field_line(b"a:"), Some((&b"a"[..], &b""[..])));
        assert_eq!(field_line(b"a :b"), None);
        assert_eq!(field_line(b": b"), None);
        assert_eq!(field_line(b"a: b\x01"), None);
        assert_eq!(field_line(b"a: b\rc"), None);
        assert_eq!(field_line(b"a: \xffb"), Some((&b"a"[..], &b"\xffb"[..])));
    }
}

//! `multipart/form-data` request bodies, parsed in memory (the route's body limit bounds
//! them): Hyperbeam's `POST /v0/vm` with an extension sends the JSON request as the part
//! `body` and the zipped extension as the part `ex`.

/// One part: its form name and its bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// `Content-Disposition: form-data; name="…"`.
    pub name: String,
    /// Its bytes.
    pub data: &'a [u8],
}

/// The boundary of a `multipart/form-data` content type, if it is one.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut it = content_type.split(';');
    let essence = it.next()?.trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    it.filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

/// The parts of `body`.
///
/// # Errors
/// A body that is not multipart with this boundary (no closing delimiter, a part without
/// headers or a name).
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let delimiter = format!("--{boundary}");
    let next = format!("\r\n--{boundary}");
    let start = memchr::memmem::find(body, delimiter.as_bytes()).ok_or("no multipart delimiter")?;
    let mut rest = &body[start + delimiter.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("a multipart delimiter is not followed by a line break")?;
        let head_end = memchr::memmem::find(rest, b"\r\n\r\n").ok_or("a part without headers")?;
        let head =
            std::str::from_utf8(&rest[..head_end]).map_err(|_| "part headers are not UTF-8")?;
        let name = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
            .and_then(|(_, v)| {
                v.split(';')
                    .filter_map(|p| p.trim().split_once('='))
                    .find(|(k, _)| k.trim() == "name")
                    .map(|(_, n)| n.trim().trim_matches('"').to_string())
            })
            .ok_or("a part without a form name")?;
        let data_and_more = &rest[head_end + 4..];
        let end = memchr::memmem::find(data_and_more, next.as_bytes())
            .ok_or("no closing multipart delimiter")?;
        parts.push(Part {
            name,
            data: &data_and_more[..end],
        });
        if parts.len() > 16 {
            return Err("too many parts".into());
        }
        rest = &data_and_more[end + next.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_found_and_broken_bodies_refused() {
        let ct = "multipart/form-data; boundary=\"XyZ\"";
        let b = boundary(ct).unwrap();
        assert_eq!(b, "XyZ");
        assert_eq!(boundary("application/json"), None);
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\n{\"a\":1}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"ex\"; filename=\"e.zip\"\r\nContent-Type: application/zip\r\n\r\nPK\x03\x04\r\n--X\r\n--XyZ--\r\n";
        let parts = parse(body, &b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].data),
            ("body", &b"{\"a\":1}"[..])
        );
        assert_eq!(
            (parts[1].name.as_str(), parts[1].data),
            ("ex", &b"PK\x03\x04\r\n--X"[..])
        );
        for bad in [
            &b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end"[..],
            b"nothing",
            b"--XyZ\r\nX: y\r\n\r\nv\r\n--XyZ--",
        ] {
            assert!(parse(bad, &b).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}

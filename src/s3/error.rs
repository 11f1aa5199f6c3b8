//! Reads `Code` and `Message` from an S3 XML error body (`<Error><Code>NoSuchKey</Code>
//! <Message>...</Message>...</Error>`), as documented in the S3 API reference "Error responses"
//! and as Ceph RGW, Garage and MinIO send it.
//!
//! Not on the hot path: runs only when an upstream answers with an error status, for logs and
//! metrics labels. Cost: a linear scan of at most [`MAX_ERROR_BODY_BYTES`] and two small
//! `String`s. Deliberately no XML dependency: the body is small, flat and machine-written; the
//! scan is tolerant (XML declaration, namespaces on `<Error>`, whitespace, empty
//! `<Message/>` elements, invalid UTF-8) and never fails, it only returns `None`.

/// Bytes of an error body that are looked at; S3 error bodies are well under 1 KiB, the rest of
/// a larger body is ignored.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// `Code` and `Message` of an S3 error response, entity-unescaped and trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3ErrorInfo {
    /// S3 error code, e.g. `NoSuchKey`, `AccessDenied`, `SignatureDoesNotMatch`.
    pub code: String,
    /// Human-readable message; empty when the element is missing or empty (RGW often sends
    /// `<Message></Message>`).
    pub message: String,
}

/// Parses `Code` and `Message` from an S3 XML error body.
///
/// Looks inside the first `<Error>` element when there is one (else anywhere in the body) for the
/// first `<Code>` and `<Message>` elements. Their text is trimmed and the XML entities `&amp;`
/// `&lt;` `&gt;` `&quot;` `&apos;` and numeric references `&#NN;` / `&#xHH;` are unescaped;
/// invalid UTF-8 is replaced with U+FFFD. Returns `None` if there is no non-empty `<Code>`.
/// Only the first [`MAX_ERROR_BODY_BYTES`] bytes are read.
#[must_use]
pub fn parse_error_xml(body: &[u8]) -> Option<S3ErrorInfo> {
    let body = &body[..body.len().min(MAX_ERROR_BODY_BYTES)];
    let scope = match find_open_tag(body, b"Error") {
        Some((_, content_start)) => &body[content_start..],
        None => body,
    };
    let code = element_text(scope, b"Code")?;
    if code.is_empty() {
        return None;
    }
    let message = element_text(scope, b"Message").unwrap_or_default();
    Some(S3ErrorInfo { code, message })
}

/// Finds the first start tag `<name>` or `<name attr...>` (not `<NameSuffix>`), returning
/// (index of '<', index after '>'), or `None`. A self-closing `<name/>` is reported with its
/// content start equal to the end, which `element_text` treats as empty.
fn find_open_tag(hay: &[u8], name: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(rel) = find(&hay[from..], b"<") {
        let lt = from + rel;
        let after_name = lt + 1 + name.len();
        if hay.get(lt + 1..after_name) == Some(name) {
            match hay.get(after_name) {
                Some(b'>') => return Some((lt, after_name + 1)),
                Some(b' ' | b'\t' | b'\r' | b'\n' | b'/') => {
                    let gt = after_name + find(&hay[after_name..], b">")?;
                    return Some((lt, gt + 1));
                }
                _ => {}
            }
        }
        from = lt + 1;
    }
    None
}

/// Text of the first `<name>...</name>` element in `hay`, trimmed and unescaped. A
/// self-closing `<name/>` gives an empty string; a missing element or end tag gives `None`.
fn element_text(hay: &[u8], name: &[u8]) -> Option<String> {
    let (lt, content_start) = find_open_tag(hay, name)?;
    if hay[lt..content_start].ends_with(b"/>") {
        return Some(String::new());
    }
    let rest = &hay[content_start..];
    let mut close = Vec::with_capacity(name.len() + 3);
    close.extend_from_slice(b"</");
    close.extend_from_slice(name);
    close.push(b'>');
    let end = find(rest, &close)?;
    let raw = String::from_utf8_lossy(&rest[..end]);
    Some(unescape(raw.trim()))
}

/// Byte-substring search; bodies are tiny, so the naive scan is fine.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Replaces XML's predefined entities and numeric character references; anything else after
/// `&` is kept literally.
fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&semi| semi <= 12).and_then(|semi| {
            let entity = &rest[1..semi];
            let ch = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .map(|hex| u32::from_str_radix(hex, 16))
                    .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                    .and_then(Result::ok)
                    .and_then(char::from_u32),
            };
            ch.map(|c| (c, semi + 1))
        });
        match decoded {
            Some((c, consumed)) => {
                out.push(c);
                rest = &rest[consumed..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_s3_no_such_key() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>a&amp;b &lt;c&gt;.txt</Key><RequestId>4442587FB7D0A2F9</RequestId><HostId>uHQh3dA9X+oVmpd0rHg1c0xNiPhyUvU5j6sb0XDLmSEGjG0J5sX8lGw=</HostId></Error>"#;
        let info = parse_error_xml(body).expect("parsed");
        assert_eq!(info.code, "NoSuchKey");
        assert_eq!(info.message, "The specified key does not exist.");
    }

    #[test]
    fn aws_signature_mismatch_with_entities() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>SignatureDoesNotMatch</Code>
  <Message>The request signature we calculated does not match the signature you provided. Check your key &amp; signing method &quot;v4&quot; &apos;now&apos; &lt;ok&gt; &#233;&#x263A;</Message>
  <AWSAccessKeyId>AKIAIOSFODNN7EXAMPLE</AWSAccessKeyId>
  <CanonicalRequest>GET
/b/k

host:h
</CanonicalRequest>
</Error>"#;
        let info = parse_error_xml(body).expect("parsed");
        assert_eq!(info.code, "SignatureDoesNotMatch");
        assert_eq!(
            info.message,
            "The request signature we calculated does not match the signature you provided. \
             Check your key & signing method \"v4\" 'now' <ok> é☺"
        );
    }

    #[test]
    fn ceph_rgw_error_with_empty_message() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchBucket</Code><Message></Message><BucketName>missing</BucketName><RequestId>tx00000a6b1c8f1e2d3c4b5-0065f0a1b2-1014-default</RequestId><HostId>1014-default-default</HostId></Error>"#;
        let info = parse_error_xml(body).expect("parsed");
        assert_eq!(info.code, "NoSuchBucket");
        assert_eq!(info.message, "");
    }

    #[test]
    fn rgw_access_denied_without_message_and_self_closing() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><BucketName>b</BucketName><RequestId>tx0</RequestId><HostId>1-default</HostId></Error>"#;
        assert_eq!(
            parse_error_xml(body),
            Some(S3ErrorInfo {
                code: "AccessDenied".into(),
                message: String::new()
            })
        );
        let body = b"<Error><Code>InvalidRange</Code><Message/></Error>";
        let info = parse_error_xml(body).expect("parsed");
        assert_eq!(
            (info.code.as_str(), info.message.as_str()),
            ("InvalidRange", "")
        );
    }

    #[test]
    fn namespaced_error_and_similar_tag_names() {
        // `<CodeX>` and `<Messages>` must not be taken for `<Code>` / `<Message>`.
        let body = br#"<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><CodeX>no</CodeX><Messages>no</Messages><Code> SlowDown </Code><Message>Please reduce your request rate.</Message></Error>"#;
        let info = parse_error_xml(body).expect("parsed");
        assert_eq!(info.code, "SlowDown");
        assert_eq!(info.message, "Please reduce your request rate.");
    }

    #[test]
    fn code_before_error_element_is_ignored() {
        let body = b"<Code>Outer</Code><Error><Code>Inner</Code></Error>";
        assert_eq!(parse_error_xml(body).map(|i| i.code), Some("Inner".into()));
    }

    #[test]
    fn absent_or_broken_bodies_give_none() {
        assert_eq!(parse_error_xml(b""), None);
        assert_eq!(
            parse_error_xml(b"<html><body>502 Bad Gateway</body></html>"),
            None
        );
        assert_eq!(parse_error_xml(b"<Error><Code>NoEnd"), None);
        assert_eq!(parse_error_xml(b"<Error><Code></Code></Error>"), None);
        assert_eq!(parse_error_xml(b"<Error><Code"), None);
    }

    #[test]
    fn invalid_utf8_and_unknown_entities_are_tolerated() {
        let body = b"<Error><Code>Bad\xffCode</Code><Message>a &bogus; b &amp c &#xZZ; d</Message></Error>";
        let info = parse_error_xml(body).expect("parsed");
        assert_eq!(info.code, "Bad\u{fffd}Code");
        assert_eq!(info.message, "a &bogus; b &amp c &#xZZ; d");
    }

    #[test]
    fn only_the_first_bytes_are_scanned() {
        let mut body = vec![b' '; MAX_ERROR_BODY_BYTES];
        body.extend_from_slice(b"<Error><Code>Late</Code></Error>");
        assert_eq!(parse_error_xml(&body), None);
    }
}

//! The login name in a client certificate, for listeners with
//! `use_identity_as_username` (the subject's common name) or
//! `use_subject_as_username` (the whole subject), taken as Mosquitto 2.0
//! takes it from OpenSSL. Only reads the certificate: rustls has verified
//! it against `cafile` during the handshake. rustls' own certificate
//! parser (webpki) finds the subject; this module reads the few DER
//! structures inside it (RFC 5280 `Name`), bounded by the certificate's
//! bytes and never panicking on any input.

use rustls::pki_types::CertificateDer;

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The first common name (CN) of the subject. An error (the client is then
/// refused with "bad user name or password", as Mosquitto does) when there
/// is none, when it is not a string, or when it holds a NUL.
pub fn common_name(der: &[u8]) -> Result<String, String> {
    for rdn in subject_rdns(der)? {
        for (oid, value) in rdn {
            if oid == OID_COMMON_NAME {
                let s = text(&value).ok_or("the client certificate's common name is not a string")?;
                if s.contains('\0') {
                    return Err("the client certificate's common name holds a NUL character".into());
                }
                return Ok(s);
            }
        }
    }
    Err("the client certificate's subject has no common name".into())
}

/// The subject written as OpenSSL's `X509_NAME_print_ex` with
/// `XN_FLAG_RFC2253` writes it (what Mosquitto uses): the list of entries
/// reversed (the last RDN first, and the entries of a multi-valued RDN
/// too), `,` between RDNs and `+` inside one, OpenSSL's short names (`CN`,
/// `O`, `emailAddress`; the dotted OID for others), RFC 2253 escapes
/// (`,+"\<>;`, a leading `#` or space and a trailing space with a
/// backslash; control characters and every byte above 0x7F as `\XX`), and
/// a value that is not a string as `#` and the hex of its DER encoding.
pub fn subject_rfc2253(der: &[u8]) -> Result<String, String> {
    let mut out = String::new();
    for rdn in subject_rdns(der)?.into_iter().rev() {
        if !out.is_empty() {
            out.push(',');
        }
        for (j, (oid, value)) in rdn.into_iter().rev().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let dotted = dotted_oid(&oid).ok_or("the client certificate's subject has a malformed OID")?;
            out.push_str(short_name(&dotted).unwrap_or(&dotted));
            out.push('=');
            match text(&value) {
                Some(s) => escape_2253(&mut out, s.as_bytes()),
                None => {
                    out.push('#');
                    value.whole.iter().for_each(|b| out.push_str(&format!("{b:02X}")));
                }
            }
        }
    }
    if out.is_empty() {
        return Err("the client certificate's subject is empty".into());
    }
    Ok(out)
}

/// One attribute value: its tag, its contents and its whole encoding.
struct Value {
    tag: u8,
    contents: Vec<u8>,
    whole: Vec<u8>,
}

/// One RDN's entries: (OID contents, value).
type Rdn = Vec<(Vec<u8>, Value)>;

/// The subject's RDNs in certificate order.
fn subject_rdns(der: &[u8]) -> Result<Vec<Rdn>, String> {
    let cert = CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&cert).map_err(|e| format!("unreadable client certificate: {e}"))?;
    let malformed = || "the client certificate's subject is malformed".to_string();
    // `subject()` is the Name's contents: SEQUENCE OF RDN, where an RDN is
    // a SET OF SEQUENCE { type OID, value ANY }.
    let mut rdns = Vec::new();
    let mut names = cert.subject();
    while !names.is_empty() {
        let (set, _, rest) = tlv(names, TAG_SET).ok_or_else(malformed)?;
        names = rest;
        let mut rdn = Vec::new();
        let mut entries = set;
        while !entries.is_empty() {
            let (entry, _, rest) = tlv(entries, TAG_SEQUENCE).ok_or_else(malformed)?;
            entries = rest;
            let (oid, _, value) = tlv(entry, TAG_OID).ok_or_else(malformed)?;
            let tag = *value.first().ok_or_else(malformed)?;
            let (contents, whole, rest) = tlv(value, tag).ok_or_else(malformed)?;
            if !rest.is_empty() {
                return Err(malformed());
            }
            rdn.push((oid.to_vec(), Value { tag, contents: contents.to_vec(), whole: whole.to_vec() }));
        }
        rdns.push(rdn);
    }
    Ok(rdns)
}

/// One DER element with tag `tag` at the start of `input` (one-byte tags,
/// definite lengths of up to four bytes): (contents, whole element, rest).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag || t & 0x1F == 0x1F {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7F) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((&rest[..len], &input[..header + len], &rest[len..]))
}

/// An attribute value as text, for the string types OpenSSL converts to
/// UTF-8: UTF8String, PrintableString, IA5String, NumericString,
/// VisibleString, T61String (read as Latin-1) and BMPString (UTF-16).
fn text(v: &Value) -> Option<String> {
    match v.tag {
        0x0C | 0x12 | 0x13 | 0x16 | 0x1A => String::from_utf8(v.contents.clone()).ok(),
        0x14 => Some(v.contents.iter().map(|&b| b as char).collect()),
        0x1E if v.contents.len().is_multiple_of(2) => {
            let units = v.contents.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().ok()
        }
        _ => None,
    }
}

/// An OID's DER contents in dotted form (`2.5.4.3`).
fn dotted_oid(bytes: &[u8]) -> Option<String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut n: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        n = n.checked_mul(128)? | (b & 0x7F) as u64;
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (n / 40).min(2);
                arcs.push(first);
                arcs.push(n - first * 40);
            } else {
                arcs.push(n);
            }
            n = 0;
        } else if i == bytes.len() - 1 {
            return None;
        }
    }
    if arcs.is_empty() {
        return None;
    }
    Some(arcs.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
}

/// OpenSSL's short names of the usual subject attributes.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.17" => "postalCode",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

fn escape_2253(out: &mut String, bytes: &[u8]) {
    let last = bytes.len().saturating_sub(1);
    for (i, &b) in bytes.iter().enumerate() {
        let special = matches!(b, b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';')
            || (i == 0 && (b == b'#' || b == b' '))
            || (i == last && b == b' ');
        if !(0x20..0x7F).contains(&b) {
            out.push_str(&format!("\\{b:02X}"));
        } else if special {
            out.push('\\');
            out.push(b as char);
        } else {
            out.push(b as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    fn der(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"));
        CertificateDer::from_pem_file(&path).unwrap_or_else(|e| panic!("{path}: {e:?}")).to_vec()
    }

    #[test]
    fn the_common_name_of_the_test_clients() {
        assert_eq!(common_name(&der("client.pem")).as_deref(), Ok("midge-test-client"));
        assert_eq!(subject_rfc2253(&der("client.pem")).as_deref(), Ok("CN=midge-test-client"));
        assert_eq!(common_name(&der("id-client.pem")).as_deref(), Ok("sensor-1"));
        assert_eq!(
            common_name(&der("id-nocn.pem")).unwrap_err(),
            "the client certificate's subject has no common name"
        );
        assert!(common_name(b"not a certificate").unwrap_err().starts_with("unreadable client certificate"));
    }

    /// The expected texts are what `openssl x509 -noout -subject -nameopt
    /// RFC2253` prints for these fixtures (scripts/gen-test-certs.sh).
    #[test]
    fn the_subject_as_openssl_writes_it() {
        let d = der("subject.pem");
        assert_eq!(
            subject_rfc2253(&d).as_deref(),
            Ok("emailAddress=ops@example.com,UID=s7+CN=sensor 7,OU=line\\, north,O=Acme \\+ Co,L=K\\C3\\B6ln,C=DE")
        );
        assert_eq!(common_name(&d).as_deref(), Ok("sensor 7"));
        assert_eq!(subject_rfc2253(&der("id-client.pem")).as_deref(), Ok("CN=sensor-1,O=plant\\, north,C=DE"));
        assert_eq!(subject_rfc2253(&der("id-nocn.pem")).as_deref(), Ok("O=midge test"));
    }

    #[test]
    fn escapes_oids_and_lengths() {
        let mut s = String::new();
        escape_2253(&mut s, b"# a;b<c>\"d\\ ");
        assert_eq!(s, "\\# a\\;b\\<c\\>\\\"d\\\\\\ ");
        let mut s = String::new();
        escape_2253(&mut s, "é\n".as_bytes());
        assert_eq!(s, "\\C3\\A9\\0A");
        assert_eq!(dotted_oid(&[0x55, 0x04, 0x03]).as_deref(), Some("2.5.4.3"));
        assert_eq!(
            dotted_oid(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01]).as_deref(),
            Some("1.2.840.113549.1.9.1")
        );
        assert_eq!(dotted_oid(&[0x55, 0x84]), None, "truncated arc");
        // Long-form length; a length past the input; a wrong tag.
        let long = [&[0x0C, 0x81, 0x03][..], b"abc", b"!"].concat();
        assert_eq!(tlv(&long, 0x0C).map(|(c, w, r)| (c.len(), w.len(), r)), Some((3, 6, &b"!"[..])));
        assert_eq!(tlv(&[0x0C, 0x05, b'a'], 0x0C), None);
        assert_eq!(tlv(&[0x13, 0x00], 0x0C), None);
        assert_eq!(tlv(&[0x0C, 0x85, 1, 1, 1, 1, 1], 0x0C), None);
    }
}

//! The name a connection's first bytes carry: the server name of a TLS ClientHello, or
//! the `Host` of an HTTP/1 request. Read from bytes peeked off the socket, so that the
//! connection is passed on untouched.

/// The most bytes looked at: a TLS record (16 KiB) and its header.
pub const MAX_PEEK: usize = 16 * 1024 + 5;

/// What the first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP/1 request for this host (lower case, without port).
    Http(String),
    /// A TLS ClientHello naming this server (lower case).
    Tls(String),
    /// A TLS ClientHello without a server name.
    TlsUnnamed,
    /// Something else, or a request without a name.
    Other,
}

/// What `buf` (the first bytes the client sent) is; None while more bytes could tell.
pub fn sniff(buf: &[u8]) -> Option<Sniffed> {
    match buf.first() {
        None => None,
        Some(0x16) => tls(buf),
        Some(b) if b.is_ascii_uppercase() => http(buf),
        Some(_) => Some(Sniffed::Other),
    }
}

fn http(buf: &[u8]) -> Option<Sniffed> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        // A request line alone tells nothing yet; a full buffer without a head's end is
        // not HTTP.
        return (buf.len() >= MAX_PEEK).then_some(Sniffed::Other);
    };
    let head = std::str::from_utf8(&buf[..end]).ok();
    let Some(head) = head else {
        return Some(Sniffed::Other);
    };
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (Some(method), Some(_target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Some(Sniffed::Other);
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !version.starts_with("HTTP/1.")
    {
        return Some(Sniffed::Other);
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("host") {
            return Some(match host_of(value.trim()) {
                Some(h) => Sniffed::Http(h),
                None => Sniffed::Other,
            });
        }
    }
    Some(Sniffed::Other)
}

/// The host of a `Host` value (`name`, `name:port`, `[v6]:port`), lower case.
fn host_of(value: &str) -> Option<String> {
    if value.starts_with('[') {
        return None;
    }
    let host = match value.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => value,
    };
    let host = host.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A cursor over a ClientHello; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn tls(buf: &[u8]) -> Option<Sniffed> {
    if buf.len() < 5 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf[1] != 3 || len == 0 {
        return Some(Sniffed::Other);
    }
    let record = buf.get(5..5 + len)?;
    Some(client_hello(record).unwrap_or(Sniffed::Other))
}

/// The server name of the ClientHello in `record`. None when it is not one (or is cut:
/// a ClientHello spread over several records is not looked into).
fn client_hello(record: &[u8]) -> Option<Sniffed> {
    let mut r = Reader { buf: record };
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let mut r = Reader { buf: r.take(len)? };
    r.take(2 + 32)?; // version, random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    if r.buf.is_empty() {
        return Some(Sniffed::TlsUnnamed);
    }
    let mut ext = Reader { buf: r.vec16()? };
    while !ext.buf.is_empty() {
        let kind = ext.u16()?;
        let data = ext.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader {
            buf: Reader { buf: data }.vec16()?,
        };
        while !list.buf.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(match host_of(name) {
                    Some(n) if n == name.to_ascii_lowercase().trim_end_matches('.') => {
                        Sniffed::Tls(n)
                    }
                    _ => Sniffed::Other,
                });
            }
        }
    }
    Some(Sniffed::TlsUnnamed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as a client would send it, with `sni` if given.
    pub(crate) fn client_hello_bytes(sni: Option<&str>) -> Vec<u8> {
        let mut exts = Vec::new();
        // A supported_versions extension before the name, as real clients send.
        exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        if let Some(name) = sni {
            let n = name.len() as u16;
            let mut list = vec![0u8];
            list.extend_from_slice(&n.to_be_bytes());
            list.extend_from_slice(name.as_bytes());
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&list);
            exts.extend_from_slice(&[0, 0]);
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(&data);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn the_server_name_of_a_client_hello() {
        let hello = client_hello_bytes(Some("API.Test"));
        assert_eq!(sniff(&hello), Some(Sniffed::Tls("api.test".into())));
        // Cut anywhere: more bytes are needed.
        for cut in [1, 4, 5, 20, hello.len() - 1] {
            assert_eq!(sniff(&hello[..cut]), None, "cut at {cut}");
        }
        assert_eq!(sniff(&client_hello_bytes(None)), Some(Sniffed::TlsUnnamed));
        // A corrupt length inside the record is not read past.
        let mut bad = client_hello_bytes(Some("a.test"));
        bad[6] = 0x7f;
        assert_eq!(sniff(&bad), Some(Sniffed::Other));
    }

    #[test]
    fn the_host_of_an_http_request() {
        let req = b"GET /x HTTP/1.1\r\nUser-Agent: curl\r\nHost: Allowed.Test:8080\r\n\r\n";
        assert_eq!(sniff(req), Some(Sniffed::Http("allowed.test".into())));
        assert_eq!(sniff(&req[..30]), None);
        assert_eq!(
            sniff(b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n"),
            Some(Sniffed::Http("a.test".into()))
        );
        assert_eq!(sniff(b"GET / HTTP/1.0\r\n\r\n"), Some(Sniffed::Other));
        assert_eq!(sniff(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(sniff(b"\x00\x01binary"), Some(Sniffed::Other));
        assert_eq!(sniff(&[b'A'; MAX_PEEK]), Some(Sniffed::Other));
    }
}

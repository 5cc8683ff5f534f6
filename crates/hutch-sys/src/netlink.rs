//! Netlink: requests to the kernel over an `AF_NETLINK` socket, as `ip` and `nft` send
//! them, without starting either.
//!
//! [`Message`] builds one request (header, family header, attributes, nested attributes);
//! [`Socket::transact`] sends a batch of them in one datagram and waits for the kernel's
//! acknowledgements. What the messages mean (links, addresses, routes, nftables set
//! elements) is up to the caller.
//!
//! A socket talks to the network namespace its creator was in when it was opened, for its
//! whole life: open one, enter another namespace, open another, and each keeps its own.

use std::os::fd::{AsFd, OwnedFd};

use rustix::io::{Errno, Result};
use rustix::net::{self, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// `NLM_F_REQUEST`: a request to the kernel.
pub const F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`: answer with an acknowledgement (an `NLMSG_ERROR` carrying 0) on success.
pub const F_ACK: u16 = 0x4;
/// `NLM_F_REPLACE`: replace the object if it exists.
pub const F_REPLACE: u16 = 0x100;
/// `NLM_F_EXCL`: fail if the object exists.
pub const F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`: create the object if it does not exist.
pub const F_CREATE: u16 = 0x400;
/// `NLM_F_DUMP`: every object that matches (the answer ends with `NLMSG_DONE`).
pub const F_DUMP: u16 = 0x300;
/// `NLA_F_NESTED`: the attribute holds attributes.
pub const NLA_F_NESTED: u16 = 0x8000;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// Rounds `n` up to netlink's 4-byte alignment.
const fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message under construction.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Vec<u8>,
    /// Offsets of the nested attributes still open.
    open: Vec<usize>,
    /// A dump request: its answer ends with `NLMSG_DONE`.
    dump: bool,
}

impl Message {
    /// A message of type `kind` with `flags` (`F_REQUEST` is added); its length and
    /// sequence number are filled in when it is sent.
    pub fn new(kind: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
        Message {
            buf,
            open: Vec::new(),
            dump: false,
        }
    }

    /// A dump request of type `kind` (`F_DUMP`): [`Socket::transact`] collects its data
    /// replies until the kernel's `NLMSG_DONE`.
    pub fn dump(kind: u16) -> Self {
        Message {
            dump: true,
            ..Message::new(kind, F_DUMP)
        }
    }

    /// Appends raw bytes (the family's fixed header, such as `struct ifinfomsg`), padded to
    /// the alignment.
    pub fn put(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    /// Appends attribute `kind` holding `data`.
    pub fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + data.len()).expect("netlink attribute over 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// Appends attribute `kind` holding `value` (host byte order).
    pub fn attr_u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    /// Appends attribute `kind` holding `value` and a terminating NUL.
    pub fn attr_str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut data = Vec::with_capacity(value.len() + 1);
        data.extend_from_slice(value.as_bytes());
        data.push(0);
        self.attr(kind, &data)
    }

    /// Opens nested attribute `kind` (marked `NLA_F_NESTED`); what follows goes inside it
    /// until the matching [`Message::end_nested`]. Pass `raw_nested` to leave the flag
    /// off, for the attributes whose kernel parser refuses it.
    pub fn begin_nested(&mut self, kind: u16, raw_nested: bool) -> &mut Self {
        self.open.push(self.buf.len());
        let kind = if raw_nested {
            kind
        } else {
            kind | NLA_F_NESTED
        };
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self
    }

    /// Closes the innermost open nested attribute.
    pub fn end_nested(&mut self) -> &mut Self {
        let start = self.open.pop().expect("end_nested without begin_nested");
        let len = u16::try_from(self.buf.len() - start).expect("netlink attribute over 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The message's bytes with `seq` and its length filled in.
    pub fn encode(&self, seq: u32) -> Vec<u8> {
        assert!(self.open.is_empty(), "netlink message with an open nest");
        let mut out = self.buf.clone();
        let len = u32::try_from(out.len()).expect("netlink message over 4 GiB");
        out[0..4].copy_from_slice(&len.to_ne_bytes());
        out[8..12].copy_from_slice(&seq.to_ne_bytes());
        out
    }

    /// The message's type.
    pub fn kind(&self) -> u16 {
        u16::from_ne_bytes([self.buf[4], self.buf[5]])
    }

    /// True when the message asks for an acknowledgement (or, a dump, ends with `NLMSG_DONE`).
    pub fn wants_ack(&self) -> bool {
        self.dump || u16::from_ne_bytes([self.buf[6], self.buf[7]]) & F_ACK != 0
    }

    fn pad(&mut self) {
        self.buf.resize(align(self.buf.len()), 0);
    }
}

/// What one datagram from the kernel said about the messages of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The message with this sequence number succeeded (`NLMSG_ERROR` carrying 0).
    Ack(u32),
    /// It failed with this error.
    Error(u32, Errno),
    /// A data reply to it (a `get`): the message type and the payload after the header.
    Data(u32, u16, Vec<u8>),
    /// The end of a dump.
    Done(u32),
}

/// Splits a datagram from the kernel into its messages.
pub fn parse_replies(mut buf: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let body = &buf[NLMSG_HDRLEN..len];
        out.push(match kind {
            NLMSG_ERROR if body.len() >= 4 => {
                let code = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                if code == 0 {
                    Reply::Ack(seq)
                } else {
                    Reply::Error(seq, Errno::from_raw_os_error(code.saturating_neg()))
                }
            }
            NLMSG_DONE => Reply::Done(seq),
            _ => Reply::Data(seq, kind, body.to_vec()),
        });
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

/// Attributes (type, payload) of a message body that starts with a fixed header of
/// `header_len` bytes. The `NLA_F_NESTED` and byte-order flags are cleared from the types.
pub fn attributes(body: &[u8], header_len: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = body.get(align(header_len)..).unwrap_or_default();
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((kind, &rest[4..len]));
        rest = &rest[align(len).min(rest.len())..];
    }
    out
}

/// A netlink socket of one protocol, in the network namespace it was opened in.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// Opens a `NETLINK_ROUTE` socket (links, addresses, routes).
    pub fn route() -> Result<Self> {
        Self::open(None)
    }

    /// Opens a `NETLINK_NETFILTER` socket (nftables).
    pub fn netfilter() -> Result<Self> {
        Self::open(Some(net::netlink::NETFILTER))
    }

    /// Opens a `NETLINK_SOCK_DIAG` socket (the sockets of its network namespace).
    pub fn sock_diag() -> Result<Self> {
        Self::open(Some(net::netlink::SOCK_DIAG))
    }

    fn open(protocol: Option<net::Protocol>) -> Result<Self> {
        let fd = net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            protocol,
        )?;
        Ok(Socket { fd, seq: 0 })
    }

    /// Sends `msgs` in one datagram (in order; for nftables, a whole batch) and waits until
    /// every one that asks for an acknowledgement has its answer. Returns the data replies;
    /// fails with the first error the kernel reports for any of them.
    pub fn transact(&mut self, msgs: &[Message]) -> Result<Vec<(u16, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut pending = Vec::new();
        let first = self.seq.wrapping_add(1);
        for m in msgs {
            self.seq = self.seq.wrapping_add(1);
            if m.wants_ack() {
                pending.push(self.seq);
            }
            out.extend_from_slice(&m.encode(self.seq));
        }
        let last = self.seq;
        let sent = net::send(self.fd.as_fd(), &out, SendFlags::empty())?;
        if sent != out.len() {
            return Err(Errno::MSGSIZE);
        }
        let ours = |seq: u32| seq.wrapping_sub(first) <= last.wrapping_sub(first);
        let mut data = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        while !pending.is_empty() {
            let (n, _) = net::recv(self.fd.as_fd(), &mut buf[..], RecvFlags::empty())?;
            for reply in parse_replies(&buf[..n]) {
                match reply {
                    Reply::Ack(seq) | Reply::Done(seq) => pending.retain(|s| *s != seq),
                    Reply::Error(seq, e) if ours(seq) => return Err(e),
                    Reply::Data(seq, kind, body) if ours(seq) => data.push((kind, body)),
                    // Answers to an earlier, abandoned exchange on this socket.
                    _ => {}
                }
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_length_type_flags_and_sequence() {
        let mut m = Message::new(16, F_ACK);
        m.put(&[1, 2, 3]).attr_str(3, "hv1");
        let b = m.encode(7);
        assert_eq!(b.len(), 16 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes(b[4..6].try_into().unwrap()), 16);
        assert_eq!(
            u16::from_ne_bytes(b[6..8].try_into().unwrap()),
            F_REQUEST | F_ACK
        );
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        assert_eq!(&b[16..20], &[1, 2, 3, 0]);
        // "hv1\0": length 8, type 3.
        assert_eq!(&b[20..24], &[8, 0, 3, 0]);
        assert_eq!(&b[24..28], b"hv1\0");
        assert!(m.wants_ack());
        assert_eq!(m.kind(), 16);
    }

    #[test]
    fn nested_attributes_get_their_length_and_flag() {
        let mut m = Message::new(1, 0);
        m.begin_nested(18, false)
            .attr_str(1, "veth")
            .begin_nested(2, true)
            .attr_u32(5, 9)
            .end_nested()
            .end_nested();
        let b = m.encode(1);
        let outer = &b[16..];
        assert_eq!(
            u16::from_ne_bytes([outer[0], outer[1]]) as usize,
            outer.len()
        );
        assert_eq!(u16::from_ne_bytes([outer[2], outer[3]]), 18 | NLA_F_NESTED);
        let attrs = attributes(&b[16..], 0);
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].0, 18);
        let inner = attributes(attrs[0].1, 0);
        assert_eq!(inner[0], (1, &b"veth\0"[..]));
        assert_eq!(inner[1].0, 2);
        assert_eq!(attributes(inner[1].1, 0), [(5, &9u32.to_ne_bytes()[..])]);
    }

    #[test]
    fn replies_are_split_into_acks_errors_and_data() {
        let mut buf = Vec::new();
        let mut push = |kind: u16, seq: u32, body: &[u8]| {
            let len = (16 + body.len()) as u32;
            buf.extend_from_slice(&len.to_ne_bytes());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(body);
            buf.resize(align(buf.len()), 0);
        };
        push(NLMSG_ERROR, 1, &0i32.to_ne_bytes());
        push(NLMSG_ERROR, 2, &(-17i32).to_ne_bytes());
        push(16, 3, &[9, 9, 9]);
        push(NLMSG_DONE, 4, &[]);
        assert_eq!(
            parse_replies(&buf),
            [
                Reply::Ack(1),
                Reply::Error(2, Errno::EXIST),
                Reply::Data(3, 16, vec![9, 9, 9]),
                Reply::Done(4),
            ]
        );
        // A truncated message ends the parse.
        assert_eq!(parse_replies(&buf[..20]), [Reply::Ack(1)]);
    }

    #[test]
    fn a_route_socket_answers_an_empty_get() {
        // RTM_GETLINK for an interface name that cannot exist: the kernel says ENODEV,
        // which proves the round trip without needing privileges.
        let mut s = Socket::route().expect("netlink socket");
        let mut m = Message::new(18, F_ACK);
        m.put(&[0u8; 16]).attr_str(3, "hutch-none-xx");
        assert_eq!(s.transact(&[m]), Err(Errno::NODEV));
    }
}

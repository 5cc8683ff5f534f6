use hutch_sys::netlink::{attributes, F_REQUEST, NLA_F_NESTED};

use super::*;
use crate::net::SandboxNet;

fn header(b: &[u8]) -> (u16, u16) {
    (
        u16::from_ne_bytes([b[4], b[5]]),
        u16::from_ne_bytes([b[6], b[7]]),
    )
}

/// The body of an encoded message (after the 16-byte netlink header).
fn body(m: &Message) -> Vec<u8> {
    m.encode(1)[16..].to_vec()
}

#[test]
fn veth_is_created_with_its_peer_named_and_placed_in_the_sandbox_namespace() {
    let (host_mac, peer_mac) = ([2, 0x68, 1, 0, 0, 7], [2, 0x68, 2, 0, 0, 7]);
    let m = new_veth("hv7", host_mac, "eth0", peer_mac, 42);
    let b = m.encode(1);
    assert_eq!(
        header(&b),
        (RTM_NEWLINK, F_REQUEST | F_ACK | F_CREATE | F_EXCL)
    );
    let body = &b[16..];
    // Index 0, no flag change: both ends are raised later.
    assert_eq!(&body[..IFINFOMSG_LEN], &[0u8; IFINFOMSG_LEN]);
    let attrs = attributes(body, IFINFOMSG_LEN);
    assert_eq!(attrs[0], (IFLA_IFNAME, &b"hv7\0"[..]));
    assert_eq!(attrs[1], (IFLA_ADDRESS, &host_mac[..]));
    assert_eq!(attrs[2].0, IFLA_LINKINFO);
    let info = attributes(attrs[2].1, 0);
    assert_eq!(info[0], (IFLA_INFO_KIND, &b"veth\0"[..]));
    let data = attributes(info[1].1, 0);
    assert_eq!(data[0].0, VETH_INFO_PEER);
    let peer = attributes(data[0].1, IFINFOMSG_LEN);
    assert_eq!(
        peer,
        [
            (IFLA_IFNAME, &b"eth0\0"[..]),
            (IFLA_ADDRESS, &peer_mac[..]),
            (IFLA_NET_NS_FD, &42u32.to_ne_bytes()[..]),
        ]
    );
    // As `ip` sends it: no NLA_F_NESTED on the link info nests.
    assert_eq!(
        u16::from_ne_bytes([body[IFINFOMSG_LEN + 22], body[IFINFOMSG_LEN + 23]]),
        IFLA_LINKINFO
    );
}

#[test]
fn a_neighbour_is_added_permanently_with_its_address() {
    let mac = [2, 0x68, 2, 0, 1, 2];
    let m = add_neighbour(9, Ipv4Addr::new(10, 201, 0, 6), mac);
    let b = m.encode(1);
    assert_eq!(
        header(&b),
        (RTM_NEWNEIGH, F_REQUEST | F_ACK | F_CREATE | F_REPLACE)
    );
    let body = &b[16..];
    assert_eq!(body[0], AF_INET);
    assert_eq!(u32::from_ne_bytes(body[4..8].try_into().unwrap()), 9);
    assert_eq!(u16::from_ne_bytes([body[8], body[9]]), NUD_PERMANENT);
    let attrs = attributes(body, 12);
    assert_eq!(
        attrs,
        [(NDA_DST, &[10u8, 201, 0, 6][..]), (NDA_LLADDR, &mac[..])]
    );
}

#[test]
fn slot_addresses_are_unicast_local_and_differ_per_end() {
    let net = SandboxNet {
        slot: 0x01_02_03,
        host_if: "hv1".into(),
        peer_if: String::new(),
        host_ip: Ipv4Addr::new(10, 201, 0, 5),
        sandbox_ip: Ipv4Addr::new(10, 201, 0, 6),
    };
    let (h, s) = (net.host_mac(), net.sandbox_mac());
    assert_ne!(h, s);
    for m in [h, s] {
        assert_eq!(m[0] & 0b11, 0b10, "locally administered unicast");
        assert_eq!(&m[3..], &[1, 2, 3]);
    }
}

#[test]
fn links_are_named_for_get_delete_and_up() {
    for (m, kind, up) in [
        (get_link("eth0"), RTM_GETLINK, false),
        (del_link("hv3"), RTM_DELLINK, false),
        (link_up("lo"), RTM_NEWLINK, true),
    ] {
        let b = m.encode(1);
        assert_eq!(header(&b), (kind, F_REQUEST | F_ACK));
        let flags = u32::from_ne_bytes(b[24..28].try_into().unwrap());
        let change = u32::from_ne_bytes(b[28..32].try_into().unwrap());
        assert_eq!((flags, change), if up { (1, 1) } else { (0, 0) });
        assert_eq!(attributes(&b[16..], IFINFOMSG_LEN).len(), 1);
    }
    let mut answer = [0u8; 20];
    answer[4..8].copy_from_slice(&9u32.to_ne_bytes());
    assert_eq!(link_index(&answer), Some(9));
    assert_eq!(link_index(&[0; 3]), None);
}

#[test]
fn address_and_route_carry_family_prefix_and_interface() {
    let ip = Ipv4Addr::new(10, 201, 0, 2);
    let b = body(&add_addr(5, ip, 30));
    assert_eq!(&b[..4], &[AF_INET, 30, 0, 0]);
    assert_eq!(&b[4..8], &5u32.to_ne_bytes());
    assert_eq!(
        attributes(&b, 8),
        [
            (IFA_LOCAL, &ip.octets()[..]),
            (IFA_ADDRESS, &ip.octets()[..])
        ]
    );

    let gw = Ipv4Addr::new(10, 201, 0, 1);
    let b = body(&add_default_route(5, gw));
    // Main table, boot protocol, universe scope, unicast, and dst_len 0: the default route.
    assert_eq!(&b[..8], &[AF_INET, 0, 0, 0, 254, 3, 0, 1]);
    assert_eq!(
        attributes(&b, 12),
        [
            (RTA_GATEWAY, &gw.octets()[..]),
            (RTA_OIF, &5u32.to_ne_bytes()[..])
        ]
    );
}

#[test]
fn noinet_elements_travel_in_an_nftables_batch() {
    let ip = Ipv4Addr::new(10, 201, 0, 6);
    for (add, kind, flags) in [
        (true, NFT_MSG_NEWSETELEM, F_REQUEST | F_ACK | F_CREATE),
        (false, NFT_MSG_DELSETELEM, F_REQUEST | F_ACK),
    ] {
        let Ok([begin, m, end]) = <[Message; 3]>::try_from(noinet_batch(ip, add)) else {
            panic!("a batch of three messages")
        };
        for (edge, k) in [(&begin, NFNL_MSG_BATCH_BEGIN), (&end, NFNL_MSG_BATCH_END)] {
            let b = edge.encode(1);
            assert_eq!(header(&b), (k, F_REQUEST));
            // AF_UNSPEC, version 0, the nftables subsystem (big-endian).
            assert_eq!(&b[16..20], &[0, 0, 0, 10]);
        }
        let b = m.encode(1);
        assert_eq!(header(&b), ((10 << 8) | kind, flags));
        assert_eq!(&b[16..20], &[NFPROTO_INET, 0, 0, 0]);
        let attrs = attributes(&b[16..], 4);
        assert_eq!(attrs[0], (NFTA_SET_ELEM_LIST_TABLE, &b"hutch\0"[..]));
        assert_eq!(attrs[1], (NFTA_SET_ELEM_LIST_SET, &b"noinet\0"[..]));
        assert_eq!(attrs[2].0, NFTA_SET_ELEM_LIST_ELEMENTS);
        let elem = attributes(attrs[2].1, 0);
        assert_eq!(elem[0].0, NFTA_LIST_ELEM);
        let key = attributes(elem[0].1, 0);
        assert_eq!(key[0].0, NFTA_SET_ELEM_KEY);
        assert_eq!(
            attributes(key[0].1, 0),
            [(NFTA_DATA_VALUE, &ip.octets()[..])]
        );
        // libmnl marks nftables nests NLA_F_NESTED; so do we.
        let raw_kind = u16::from_ne_bytes([b[16 + 4 + 12 + 12 + 2], b[16 + 4 + 12 + 12 + 3]]);
        assert_eq!(raw_kind, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
    }
}

#[test]
fn ranges_of_a_concatenated_set_carry_their_inclusive_last_key() {
    let from = [10, 201, 0, 6, 198, 18, 0, 0];
    let to = [10, 201, 0, 6, 198, 18, 255, 255];
    let m = set_elements("egress_deny", true, &[(from.to_vec(), Some(to.to_vec()))])
        .expect("one element");
    let b = m.encode(1);
    let attrs = attributes(&b[16..], 4);
    assert_eq!(attrs[1], (NFTA_SET_ELEM_LIST_SET, &b"egress_deny\0"[..]));
    let elem = attributes(attrs[2].1, 0);
    let parts = attributes(elem[0].1, 0);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].0, NFTA_SET_ELEM_KEY);
    assert_eq!(attributes(parts[0].1, 0), [(NFTA_DATA_VALUE, &from[..])]);
    assert_eq!(parts[1].0, NFTA_SET_ELEM_KEY_END);
    assert_eq!(attributes(parts[1].1, 0), [(NFTA_DATA_VALUE, &to[..])]);
    assert!(set_elements("egress_deny", false, &[]).is_none());
    assert_eq!(nft_batch(None).len(), 2);
}

#[test]
fn sockets_are_listed_in_every_state_but_listen_and_bound_and_ended_by_their_id() {
    let b = list_sockets(2, 6).encode(5);
    assert_eq!(header(&b), (20, F_REQUEST | 0x300));
    // struct inet_diag_req_v2: family, protocol, ext, pad, states, then a zero id.
    assert_eq!(&b[16..24], &[2, 6, 0, 0, 0xff, 0xdb, 0xff, 0xff]);
    assert_eq!(b.len(), 16 + 8 + INET_DIAG_SOCKID_LEN);
    assert!(b[24..].iter().all(|x| *x == 0));

    let mut reply = vec![0u8; INET_DIAG_MSG_LEN];
    reply[4..6].copy_from_slice(&49983u16.to_be_bytes());
    reply[44..52].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]); // the cookie
    let id = listed_socket(20, &reply).expect("a socket");
    assert_eq!(listed_socket(3, &reply), None);
    assert_eq!(listed_socket(20, &reply[..40]), None);
    let b = end_socket(10, 6, &id).encode(6);
    assert_eq!(header(&b), (21, F_REQUEST | F_ACK));
    assert_eq!(&b[16..20], &[10, 6, 0, 0]);
    assert_eq!(&b[24..], &id[..]);
}

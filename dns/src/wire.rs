//! Just enough DNS wire parsing for the UDP fast path (RFC 1035 §4.1,
//! RFC 6891 for OPT). It accepts only the plain shape almost every stub
//! resolver sends: a QUERY with one IN question, no answer/authority
//! records, and at most an OPT record without options. Anything else
//! returns `None` and goes to the hickory path, which decides FORMERR,
//! NOTIMP and the rest exactly as before.

/// DNS header length.
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire (RFC 1035 §3.1), including the final zero.
pub const MAX_NAME: usize = 255;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// A parsed plain query. `name` is the lower-cased qname in wire form
/// (labels with length bytes, final zero); the client's own spelling stays
/// in the datagram at `HEADER_LEN..HEADER_LEN + name.len()`.
#[derive(Debug)]
pub struct Query<'a> {
    pub name: &'a [u8],
    pub qtype: u16,
    /// Offset (within the name) of the last upper-case byte the client
    /// sent, if any: answers whose compression depends on spelling check it.
    pub last_upper: Option<usize>,
    /// The requester's UDP payload size from its OPT record, if it sent one.
    pub edns: Option<u16>,
    /// Label start offsets within the name (the root's zero not included).
    labels: [u8; 128],
    n_labels: usize,
}

impl Query<'_> {
    /// Whether the name is `suffix` (lower-case wire form) or below it.
    pub fn is_within(&self, suffix: &[u8]) -> bool {
        if suffix == [0] {
            return true;
        }
        let Some(start) = self.name.len().checked_sub(suffix.len()) else {
            return false;
        };
        self.labels[..self.n_labels]
            .iter()
            .any(|&l| usize::from(l) == start)
            && &self.name[start..] == suffix
    }

    /// The first label (lower-cased, without its length byte).
    pub fn first_label(&self) -> &[u8] {
        match self.name.first() {
            Some(&n) if n > 0 => &self.name[1..=usize::from(n)],
            _ => &[],
        }
    }

    /// Length of the question section (name, type, class) in the datagram.
    pub fn question_len(&self) -> usize {
        self.name.len() + 4
    }
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Parses `pkt` as a plain query, lower-casing the qname into `lower`.
pub fn parse<'a>(pkt: &[u8], lower: &'a mut [u8; MAX_NAME]) -> Option<Query<'a>> {
    if pkt.len() < HEADER_LEN + 5 {
        return None;
    }
    // QR = 0 and OPCODE = QUERY (0); the other request flags do not matter.
    if pkt[2] & 0xF8 != 0 {
        return None;
    }
    let (qd, an, ns, ar) = (
        u16_at(pkt, 4)?,
        u16_at(pkt, 6)?,
        u16_at(pkt, 8)?,
        u16_at(pkt, 10)?,
    );
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut labels = [0u8; 128];
    let mut n_labels = 0;
    let mut last_upper = None;
    let mut i = HEADER_LEN;
    let mut o = 0;
    loop {
        let len = usize::from(*pkt.get(i)?);
        if len == 0 {
            break;
        }
        // No compression pointers (0xC0) or extended labels in the
        // question, and the name must fit in 255 bytes.
        if len > 63 || o + 1 + len + 1 > MAX_NAME || n_labels == labels.len() {
            return None;
        }
        labels[n_labels] = o as u8;
        n_labels += 1;
        lower[o] = len as u8;
        let label = pkt.get(i + 1..i + 1 + len)?;
        for (k, &b) in label.iter().enumerate() {
            // Hostname bytes only: anything exotic (escapes, binary labels)
            // is left to hickory so its name handling decides.
            let b = match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => b,
                b'A'..=b'Z' => {
                    last_upper = Some(o + 1 + k);
                    b.to_ascii_lowercase()
                }
                _ => return None,
            };
            lower[o + 1 + k] = b;
        }
        o += 1 + len;
        i += 1 + len;
    }
    lower[o] = 0;
    let name_len = o + 1;
    i += 1;
    let qtype = u16_at(pkt, i)?;
    if u16_at(pkt, i + 2)? != CLASS_IN {
        return None;
    }
    i += 4;
    let mut edns = None;
    if ar == 1 {
        // OPT: root owner, TYPE 41, CLASS = payload size, TTL = extended
        // rcode/version/flags (ignored: the answer's OPT is always ours),
        // RDLENGTH 0. Options (cookies, ECS...) go to hickory.
        if pkt.get(i)? != &0 || u16_at(pkt, i + 1)? != TYPE_OPT || u16_at(pkt, i + 9)? != 0 {
            return None;
        }
        edns = Some(u16_at(pkt, i + 3)?);
        i += 11;
    }
    if i != pkt.len() {
        return None; // trailing bytes: not the plain shape
    }
    Some(Query {
        name: &lower[..name_len],
        qtype,
        last_upper,
        edns,
        labels,
        n_labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, opt: Option<u16>) -> Vec<u8> {
        let mut p = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(opt.is_some()),
        ];
        for l in name.split(|&b| b == b'.').filter(|l| !l.is_empty()) {
            p.push(l.len() as u8);
            p.extend_from_slice(l);
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        if let Some(size) = opt {
            p.extend_from_slice(&[0, 0, 41]);
            p.extend_from_slice(&size.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x80, 0, 0, 0]);
        }
        p
    }

    #[test]
    fn plain_query_is_lowercased_and_located() {
        let p = query(b"Web.default.SVC.cluster.local", 1, None);
        let mut buf = [0; MAX_NAME];
        let q = parse(&p, &mut buf).unwrap();
        assert_eq!(q.name, b"\x03web\x07default\x03svc\x07cluster\x05local\x00");
        assert_eq!(q.qtype, 1);
        assert_eq!(q.last_upper, Some(15)); // the C of SVC
        assert_eq!(q.edns, None);
        assert!(q.is_within(b"\x07cluster\x05local\x00"));
        assert!(!q.is_within(b"\x05uster\x05local\x00"));
        assert!(q.is_within(b"\x00"));
        assert_eq!(q.first_label(), b"web");
        assert_eq!(q.question_len(), q.name.len() + 4);
    }

    #[test]
    fn opt_without_options_gives_the_payload_size() {
        let p = query(b"a.cluster.local", 33, Some(1232));
        let mut buf = [0; MAX_NAME];
        assert_eq!(parse(&p, &mut buf).unwrap().edns, Some(1232));
    }

    #[test]
    fn anything_unusual_is_refused() {
        let mut buf = [0; MAX_NAME];
        let good = query(b"a.cluster.local", 1, None);
        assert!(parse(&good, &mut buf).is_some());
        let mut response = good.clone();
        response[2] |= 0x80;
        let mut notify = good.clone();
        notify[2] |= 4 << 3;
        let mut two = good.clone();
        two[5] = 2;
        let mut trailing = good.clone();
        trailing.push(0);
        let mut chaos = good.clone();
        let n = chaos.len();
        chaos[n - 1] = 3;
        let mut pointer = good.clone();
        pointer[12] = 0xC0;
        let mut opt_with_option = query(b"a.cluster.local", 1, Some(1232));
        let n = opt_with_option.len();
        opt_with_option[n - 1] = 4;
        opt_with_option.extend_from_slice(&[0, 10, 0, 0]);
        for p in [
            response,
            notify,
            two,
            trailing,
            chaos,
            pointer,
            opt_with_option,
            query(b"a b.cluster.local", 1, None),
            good[..good.len() - 1].to_vec(),
            vec![],
        ] {
            assert!(parse(&p, &mut buf).is_none(), "{p:?}");
        }
    }
}

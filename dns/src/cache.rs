//! The forwarding cache: upstream answers by (name, type), kept for their
//! TTL (negative answers for the SOA minimum), both capped, with a bounded
//! number of entries. Only the forwarding path touches it.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{LowerName, RData, RecordType};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub type Key = (LowerName, RecordType);

struct Entry {
    msg: Message,
    stored: Instant,
    expires: Instant,
}

pub struct Cache {
    entries: Mutex<HashMap<Key, Entry>>,
    capacity: usize,
    max_ttl: u32,
    max_negative_ttl: u32,
}

impl Cache {
    pub fn new(capacity: usize, max_ttl: u32, max_negative_ttl: u32) -> Cache {
        Cache {
            entries: Mutex::new(HashMap::new()),
            capacity,
            max_ttl,
            max_negative_ttl,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached answer, with TTLs lowered by the time it has spent here.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Message> {
        let mut map = self.lock();
        let e = map.get(key)?;
        if e.expires <= now {
            map.remove(key);
            return None;
        }
        let age = now.duration_since(e.stored).as_secs() as u32;
        let mut msg = e.msg.clone();
        drop(map);
        for r in msg
            .answers
            .iter_mut()
            .chain(msg.authorities.iter_mut())
            .chain(msg.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(msg)
    }

    /// Stores an upstream answer if it may be cached: positive answers for
    /// their smallest TTL, NXDOMAIN/NODATA only with an SOA (RFC 2308).
    pub fn put(&self, key: Key, msg: &Message, now: Instant) {
        let Some(ttl) = self.ttl_of(msg) else { return };
        if ttl == 0 || self.capacity == 0 {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, e| e.expires > now);
            // Still full: drop an arbitrary sixteenth rather than grow.
            if map.len() >= self.capacity {
                let victims: Vec<Key> = map.keys().take(self.capacity / 16 + 1).cloned().collect();
                for k in victims {
                    map.remove(&k);
                }
            }
        }
        let entry = Entry {
            msg: msg.clone(),
            stored: now,
            expires: now + Duration::from_secs(ttl.into()),
        };
        map.insert(key, entry);
    }

    fn ttl_of(&self, msg: &Message) -> Option<u32> {
        if msg.metadata.truncation {
            return None;
        }
        let negative = match msg.metadata.response_code {
            ResponseCode::NXDomain => true,
            ResponseCode::NoError => msg.answers.is_empty(),
            _ => return None,
        };
        if negative {
            let soa = msg.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })?;
            return Some(soa.min(self.max_negative_ttl));
        }
        let min = msg.answers.iter().map(|r| r.ttl).min()?;
        Some(min.min(self.max_ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, Record};

    fn key(n: &str) -> Key {
        (LowerName::new(&Name::from_ascii(n).unwrap()), RecordType::A)
    }

    fn answer(ttl: u32) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        let r = Record::from_rdata(
            Name::from_ascii("a.example.").unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        );
        m.add_answer(r);
        m
    }

    fn negative(rcode: ResponseCode, with_soa: bool) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        if with_soa {
            let n = Name::from_ascii("example.").unwrap();
            let soa = SOA::new(n.clone(), n.clone(), 1, 1, 1, 1, 30);
            m.add_authority(Record::from_rdata(n, 600, RData::SOA(soa)));
        }
        m
    }

    #[test]
    fn positive_answers_live_for_their_ttl_and_age() {
        let c = Cache::new(10, 3600, 300);
        let t0 = Instant::now();
        c.put(key("a.example."), &answer(60), t0);
        let got = c
            .get(&key("A.Example."), t0 + Duration::from_secs(10))
            .unwrap();
        assert_eq!(got.answers[0].ttl, 50);
        assert!(
            c.get(&key("a.example."), t0 + Duration::from_secs(61))
                .is_none()
        );
        assert!(c.is_empty(), "expired entries are removed on access");
    }

    #[test]
    fn ttls_are_capped() {
        let c = Cache::new(10, 100, 5);
        let t0 = Instant::now();
        c.put(key("a.example."), &answer(86400), t0);
        assert!(
            c.get(&key("a.example."), t0 + Duration::from_secs(101))
                .is_none()
        );
        c.put(
            key("n.example."),
            &negative(ResponseCode::NXDomain, true),
            t0,
        );
        assert!(
            c.get(&key("n.example."), t0 + Duration::from_secs(4))
                .is_some()
        );
        assert!(
            c.get(&key("n.example."), t0 + Duration::from_secs(6))
                .is_none()
        );
    }

    #[test]
    fn negative_answers_need_an_soa_and_failures_are_never_cached() {
        let c = Cache::new(10, 3600, 300);
        let t0 = Instant::now();
        c.put(
            key("n.example."),
            &negative(ResponseCode::NXDomain, false),
            t0,
        );
        c.put(
            key("s.example."),
            &negative(ResponseCode::ServFail, true),
            t0,
        );
        c.put(key("z.example."), &answer(0), t0);
        assert!(c.is_empty());
        // SOA minimum (30) beats the SOA TTL (600)
        c.put(
            key("d.example."),
            &negative(ResponseCode::NoError, true),
            t0,
        );
        assert!(
            c.get(&key("d.example."), t0 + Duration::from_secs(29))
                .is_some()
        );
        assert!(
            c.get(&key("d.example."), t0 + Duration::from_secs(31))
                .is_none()
        );
    }

    #[test]
    fn size_is_bounded() {
        let c = Cache::new(32, 3600, 300);
        let t0 = Instant::now();
        for i in 0..1000 {
            c.put(key(&format!("h{i}.example.")), &answer(60), t0);
            assert!(c.len() <= 32);
        }
        assert!(
            c.get(&key("h999.example."), t0).is_some(),
            "the newest entry is kept"
        );
    }
}

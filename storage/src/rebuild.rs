//! Full rebuild of the projections from the log: fold the whole log in memory (with the
//! lean decode, on several threads), then reconcile each projection tree with the fold in
//! one ordered merge pass, writing only the entries that differ.
//!
//! Why not clear the trees and refold: with sled 0.34, every write is a logged node
//! update (3 to 8 µs per key here), `Tree::clear` removes key by key, and freeing pages
//! (`drop_tree`, merges after removals) costs time linear in sled's free list per page,
//! quadratic overall. Refolding 1,000,000 issuances that way writes 2,000,000 keys and
//! runs at about 20,000 records/s. The merge pass instead reads each tree once in key
//! order and writes nothing where the tree already equals the fold; where it does not (a
//! lost or damaged projection), it writes in key order, which is sled's cheapest order.
//!
//! Memory: the fold holds about 48 bytes per issuance (plus 56 per revocation). A log
//! longer than [`PASS_RECORDS`] records is rebuilt in several passes, each folding and
//! reconciling only the serials of one hash partition, so memory stays bounded whatever
//! the log's length (each pass reads the whole log and the trees again).

use std::cmp::Ordering;
use std::ops::Range;
use std::time::Instant;

use ca_core::Serial;
use ca_core::projection::IndexEvent;
use ca_core::projection::{CertEntry, RevokedEntry};

use crate::project::{ProjState, Trees};
use crate::{StoreError, codec};

/// Records per pass. A pass's fold holds at most this many issuances (in expectation: the
/// partition is a hash of the serial), about 100 MB at 48 bytes each.
pub(crate) const PASS_RECORDS: u64 = 2_000_000;
/// Log-scanning threads per core: reading sled pages waits on `pread` (even from the OS
/// page cache), so two per core keep the cores busy (1.27 s with 2 threads, 0.93 s with 4,
/// for 1,000,000 records on 2 cores).
const SCAN_THREADS_PER_CORE: usize = 2;
const MAX_SCAN_THREADS: usize = 8;

/// What one rebuild changed, per tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    pub inserted: u64,
    pub updated: u64,
    pub removed: u64,
}

impl Diff {
    fn add(&mut self, o: Diff) {
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.removed += o.removed;
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Report {
    pub records: u64,
    pub passes: u64,
    pub certs: Diff,
    pub revoked: Diff,
    pub expiry: Diff,
    pub acme: Diff,
}

impl Report {
    pub(crate) fn log(&self, started: Instant, what: &'static str) {
        tracing::info!(
            records = self.records,
            passes = self.passes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            rate_per_sec = crate::project::rate(self.records, started),
            certs_written = self.certs.inserted + self.certs.updated,
            certs_removed = self.certs.removed,
            revoked_written = self.revoked.inserted + self.revoked.updated,
            revoked_removed = self.revoked.removed,
            expiry_written = self.expiry.inserted,
            expiry_removed = self.expiry.removed,
            acme_written = self.acme.inserted,
            acme_removed = self.acme.removed,
            "{what}"
        );
    }
}

/// A serial held inline (serials are 1..=20 bytes), so the fold allocates nothing per
/// record and sorts without indirection.
#[derive(Clone, Copy)]
struct Key {
    bytes: [u8; 20],
    len: u8,
}

impl Key {
    fn new(s: &Serial) -> Key {
        let b = s.as_bytes();
        let mut bytes = [0u8; 20];
        // A `Serial` holds 1..=20 bytes (`Serial::from_bytes` enforces it).
        let len = b.len().min(20);
        bytes[..len].copy_from_slice(&b[..len]);
        Key { bytes, len: len as u8 }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl PartialEq for Key {
    fn eq(&self, o: &Self) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl Eq for Key {}

impl Ord for Key {
    /// Byte order, as sled orders keys.
    fn cmp(&self, o: &Self) -> Ordering {
        self.as_slice().cmp(o.as_slice())
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

struct Issued {
    serial: Key,
    seq: u64,
    not_after: i64,
    issuer: u32,
}

struct Revoked {
    serial: Key,
    entry: RevokedEntry,
}

/// The fold of a range of the log, restricted to one partition of serials.
#[derive(Default)]
struct Fold {
    issued: Vec<Issued>,
    revoked: Vec<Revoked>,
    /// ACME index entries (`AcmeKey::entry(seq)`).
    acme: Vec<Vec<u8>>,
    ca_seq: Option<u64>,
    last_crl: u64,
    /// `issuers` tree entries (rotation seqs, CRL numbers of generations >= 1).
    issuers: std::collections::BTreeMap<[u8; 5], u64>,
}

impl Fold {
    /// The folds of consecutive ranges, as one: each vector is moved once into one of
    /// exactly the total size (appending to the first would grow it by doubling, holding
    /// up to three times the data at once).
    fn concat(parts: Vec<Fold>) -> Fold {
        let mut fold = Fold {
            issued: Vec::with_capacity(parts.iter().map(|p| p.issued.len()).sum()),
            revoked: Vec::with_capacity(parts.iter().map(|p| p.revoked.len()).sum()),
            acme: Vec::with_capacity(parts.iter().map(|p| p.acme.len()).sum()),
            ..Fold::default()
        };
        for p in parts {
            fold.issued.extend(p.issued);
            fold.revoked.extend(p.revoked);
            fold.acme.extend(p.acme);
            fold.ca_seq = fold.ca_seq.max(p.ca_seq);
            fold.last_crl = fold.last_crl.max(p.last_crl);
            for (k, v) in p.issuers {
                let e = fold.issuers.entry(k).or_default();
                *e = (*e).max(v);
            }
        }
        fold
    }
}

/// Which serials a pass owns: a hash partition, so every pass gets a similar share
/// whatever the serials look like.
#[derive(Clone, Copy)]
struct Part {
    index: u64,
    count: u64,
}

impl Part {
    fn owns(self, serial: &[u8]) -> bool {
        if self.count == 1 {
            return true;
        }
        // FNV-1a: stable across runs and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in serial {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        h % self.count == self.index
    }

    /// The serial inside an `expiry` key (a malformed key hashes whole: some pass owns it
    /// and removes it, as the fold never holds it).
    fn owns_expiry_key(self, key: &[u8]) -> bool {
        self.owns(if key.len() > 8 { &key[8..] } else { key })
    }
}

pub(crate) fn scan_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * SCAN_THREADS_PER_CORE).clamp(1, MAX_SCAN_THREADS)
}

/// Recompute the projections of log records `0..end` and make the trees equal them. The
/// caller flushes. `meta.projected_through` is removed first, so a crash midway leaves a
/// store whose next open runs this again (the trees may be partly reconciled meanwhile;
/// each entry is either its old or its final value).
pub(crate) fn rebuild(
    trees: &Trees,
    end: u64,
    pass_records: u64,
    threads: usize,
) -> Result<(ProjState, Report), StoreError> {
    ProjState::default().store(&trees.meta)?;
    let passes = end.div_ceil(pass_records.max(1)).max(1);
    let mut st = ProjState::default();
    let mut report = Report { records: end, passes, ..Report::default() };
    for index in 0..passes {
        let started = Instant::now();
        let part = Part { index, count: passes };
        let mut fold = scan(&trees.log, end, part, threads)?;
        // The CA and CRL counters do not depend on the partition.
        st.ca_seq = fold.ca_seq;
        st.last_crl = fold.last_crl;
        let scanned = started.elapsed();
        if index == 0 {
            // Not partitioned: the first pass owns the whole (tiny) tree.
            let issuers = std::mem::take(&mut fold.issuers);
            reconcile(&trees.issuers, issuers.iter().map(|(k, v)| (k, v.to_be_bytes())), |_| true)?;
        }
        let mut acme = std::mem::take(&mut fold.acme);
        acme.sort_unstable();
        acme.dedup();
        report.acme.add(reconcile(&trees.acme, acme.iter().map(|k| (k, [0u8; 0])), |k| part.owns(k))?);
        let (certs, expiry, revoked) = reconcile_fold(trees, fold, part)?;
        report.certs.add(certs);
        report.expiry.add(expiry);
        report.revoked.add(revoked);
        tracing::debug!(
            pass = index,
            passes,
            scan_ms = scanned.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "rebuild pass done"
        );
    }
    st.through = end.checked_sub(1);
    st.store(&trees.meta)?;
    Ok((st, report))
}

/// Fold `0..end` on `threads` threads, each over a contiguous range of seqs.
fn scan(log: &sled::Tree, end: u64, part: Part, threads: usize) -> Result<Fold, StoreError> {
    let threads = (threads.max(1) as u64).min(end.max(1));
    let ranges: Vec<Range<u64>> = (0..threads).map(|i| end * i / threads..end * (i + 1) / threads).collect();
    let results: Vec<Result<Fold, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = ranges[1..]
            .iter()
            .map(|r| {
                let r = r.clone();
                std::thread::Builder::new()
                    .name("ca-rebuild-scan".into())
                    .spawn_scoped(s, move || scan_range(log, r, part))
            })
            .collect();
        let mut out = vec![scan_range(log, ranges[0].clone(), part)];
        out.extend(handles.into_iter().map(joined));
        out
    });
    Ok(Fold::concat(results.into_iter().collect::<Result<Vec<_>, _>>()?))
}

fn scan_range(log: &sled::Tree, range: Range<u64>, part: Part) -> Result<Fold, StoreError> {
    // Most records are issuances; capacity that stays unused is never touched, so it
    // costs address space, not memory.
    let records = usize::try_from(range.end - range.start).unwrap_or(0);
    let mut fold = Fold { issued: Vec::with_capacity(records / part.count as usize), ..Fold::default() };
    crate::project::for_each_indexed(log, range.start, range.end, |seq, event| {
        match event {
            IndexEvent::CaInitialized => fold.ca_seq = Some(seq),
            IndexEvent::Audit => {}
            IndexEvent::CertificateIssued { serial, not_after, issuer } => {
                if part.owns(serial.as_bytes()) {
                    fold.issued.push(Issued { serial: Key::new(&serial), seq, not_after, issuer });
                }
            }
            IndexEvent::CertificateRevoked { serial, reason, revoked_at, invalidity_date } => {
                if part.owns(serial.as_bytes()) {
                    let entry = RevokedEntry { seq, reason, revoked_at, invalidity_date };
                    fold.revoked.push(Revoked { serial: Key::new(&serial), entry });
                }
            }
            IndexEvent::CrlPublished { number, delta_base: None, issuer: 0 } => {
                fold.last_crl = fold.last_crl.max(number)
            }
            IndexEvent::CrlPublished { number, delta_base: None, issuer } => {
                let e = fold.issuers.entry(codec::issuer_crl_key(issuer)).or_default();
                *e = (*e).max(number);
            }
            IndexEvent::CrlPublished { delta_base: Some(_), .. } => {}
            IndexEvent::IssuingCaRotated { generation } => {
                fold.issuers.insert(codec::issuer_seq_key(generation), seq);
            }
            IndexEvent::Acme(keys) => {
                fold.acme.extend(keys.iter().map(|k| k.entry(seq)).filter(|e| part.owns(e)));
            }
        }
        Ok(())
    })?;
    Ok(fold)
}

/// Sort the fold into each tree's key order and reconcile the three trees (`certs` and
/// `revoked` on this thread, `expiry` on another).
fn reconcile_fold(trees: &Trees, fold: Fold, part: Part) -> Result<(Diff, Diff, Diff), StoreError> {
    let Fold { mut issued, mut revoked, .. } = fold;
    // Later records win: sort by (serial, seq) and keep each serial's last entry.
    issued.sort_unstable_by(|a, b| a.serial.cmp(&b.serial).then(a.seq.cmp(&b.seq)));
    let issued = &issued;
    let expiry_job = move || {
        // `expiry` holds every issuance's (not_after, serial), superseded ones included: an
        // ordering of `issued` by that pair (8 bytes per issuance rather than a copy).
        let pair = |i: usize| (issued[i].not_after, &issued[i].serial);
        let mut order: Vec<usize> = (0..issued.len()).collect();
        order.sort_unstable_by(|a, b| pair(*a).cmp(&pair(*b)));
        order.dedup_by(|a, b| pair(*a) == pair(*b));
        let desired = order.iter().map(|i| (expiry_key(issued[*i].not_after, &issued[*i].serial), [0u8; 0]));
        reconcile(&trees.expiry, desired, |k| part.owns_expiry_key(k))
    };
    let (certs, revoked, expiry) = std::thread::scope(|s| {
        let expiry = std::thread::Builder::new().name("ca-rebuild-expiry".into()).spawn_scoped(s, expiry_job);
        let certs = reconcile(
            &trees.certs,
            last_per_serial(issued, |i| &i.serial).map(|i| {
                (
                    i.serial,
                    codec::cert_value(&CertEntry { seq: i.seq, not_after: i.not_after, issuer: i.issuer }),
                )
            }),
            |k| part.owns(k),
        );
        revoked.sort_unstable_by(|a, b| a.serial.cmp(&b.serial).then(a.entry.seq.cmp(&b.entry.seq)));
        let rev = reconcile(
            &trees.revoked,
            last_per_serial(&revoked, |r| &r.serial).map(|r| (r.serial, codec::revoked_value(&r.entry))),
            |k| part.owns(k),
        );
        (certs, rev, joined(expiry))
    });
    Ok((certs?, expiry?, revoked?))
}

/// The result of a scoped thread, a failed spawn or a panic as an error.
fn joined<T>(
    h: std::io::Result<std::thread::ScopedJoinHandle<'_, Result<T, StoreError>>>,
) -> Result<T, StoreError> {
    match h {
        Ok(h) => h.join().unwrap_or_else(|_| Err(std::io::Error::other("a rebuild thread panicked").into())),
        Err(e) => Err(e.into()),
    }
}

/// `codec::expiry_key` into a fixed buffer: (8 + serial) bytes, used up to `len`.
struct ExpiryKey {
    bytes: [u8; 28],
    len: usize,
}

impl AsRef<[u8]> for ExpiryKey {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn expiry_key(not_after: i64, serial: &Key) -> ExpiryKey {
    let mut bytes = [0u8; 28];
    bytes[..8].copy_from_slice(&((not_after as u64) ^ (1 << 63)).to_be_bytes());
    let s = serial.as_slice();
    bytes[8..8 + s.len()].copy_from_slice(s);
    ExpiryKey { bytes, len: 8 + s.len() }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// The last element of each run of equal serials in a slice sorted by serial.
fn last_per_serial<'a, T>(
    sorted: &'a [T],
    serial: impl Fn(&T) -> &Key + 'a,
) -> impl Iterator<Item = &'a T> + 'a {
    sorted
        .iter()
        .enumerate()
        .filter(move |(i, t)| sorted.get(i + 1).is_none_or(|next| serial(next) != serial(t)))
        .map(|(_, t)| t)
}

/// Make the entries of `tree` that `owned` selects equal `desired` (strictly increasing
/// keys): one pass over both in key order, inserting what is missing or different and
/// removing what the fold does not hold. Every write is at or behind the tree iterator's
/// position, so the iterator never sees its own writes.
fn reconcile<K, V>(
    tree: &sled::Tree,
    desired: impl Iterator<Item = (K, V)>,
    owned: impl Fn(&[u8]) -> bool,
) -> Result<Diff, StoreError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut diff = Diff::default();
    let mut existing = tree.iter();
    let mut next_existing = || -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
        for item in existing.by_ref() {
            let (k, v) = item?;
            if owned(&k) {
                return Ok(Some((k, v)));
            }
        }
        Ok(None)
    };
    let mut cur = next_existing()?;
    for (k, v) in desired {
        let (k, v) = (k.as_ref(), v.as_ref());
        loop {
            match &cur {
                Some((ek, _)) if ek.as_ref() < k => {
                    tree.remove(ek)?;
                    diff.removed += 1;
                    cur = next_existing()?;
                }
                Some((ek, ev)) if ek.as_ref() == k => {
                    if ev.as_ref() != v {
                        tree.insert(k, v)?;
                        diff.updated += 1;
                    }
                    cur = next_existing()?;
                    break;
                }
                _ => {
                    tree.insert(k, v)?;
                    diff.inserted += 1;
                    break;
                }
            }
        }
    }
    while let Some((ek, _)) = cur {
        tree.remove(&ek)?;
        diff.removed += 1;
        cur = next_existing()?;
    }
    Ok(diff)
}

#[cfg(test)]
mod tests {
    use ca_core::event::{
        CaInitialized, CertificateIssued, CertificateRevoked, CrlPublished, RevocationReason,
    };
    use ca_core::keys::KeyAlgorithm;
    use ca_core::projection::Inventory;
    use ca_core::{Event, Serial};

    use super::*;
    use crate::EventStore;

    /// Serials of 1 to 20 bytes, some a prefix of others (so key order is exercised).
    fn serial(n: u64) -> Serial {
        let len = 1 + (n % 20) as usize;
        let mut b: Vec<u8> = n.to_be_bytes().iter().cycle().take(len).copied().collect();
        b[0] = 0x01 + (n % 3) as u8;
        Serial::from_bytes(&b).unwrap()
    }

    fn issued(n: u64, not_after: i64) -> Event {
        Event::CertificateIssued(CertificateIssued {
            serial: serial(n),
            certificate_der: vec![0x30; 40],
            profile: "server".into(),
            requester: "test".into(),
            not_before: 0,
            not_after,
            names: vec![],
            issuer_generation: (n % 3) as u32,
        })
    }

    fn revoked(n: u64, at: i64, invalidity_date: Option<i64>) -> Event {
        Event::CertificateRevoked(CertificateRevoked {
            serial: serial(n),
            reason: RevocationReason::ALL[(n % 10) as usize],
            revoked_at: at,
            requester: "test".into(),
            invalidity_date,
        })
    }

    fn ca(tag: u8) -> Event {
        Event::CaInitialized(CaInitialized {
            root_der: vec![tag],
            intermediate_der: vec![tag],
            key_algorithm: KeyAlgorithm::EcdsaP256,
            imported: false,
        })
    }

    /// Every projection-relevant shape: two CAs, re-issued serials (certs keeps the last,
    /// expiry keeps both), a repeated issuance, serials revoked twice, shared not_after values, negative
    /// times, full and delta CRLs, an ACME event.
    fn history() -> Vec<Event> {
        let mut h = vec![ca(1)];
        for n in 0..120u64 {
            h.push(issued(n, 1_000 + (n % 7) as i64 - 3));
            if n % 5 == 0 {
                h.push(revoked(n / 2, n as i64, (n % 3 == 0).then_some(-(n as i64) - 1)));
            }
            if n % 17 == 0 {
                h.push(issued(n / 3, -5 - n as i64));
                h.push(Event::CrlPublished(CrlPublished {
                    number: n,
                    this_update: 1,
                    next_update: 2,
                    delta_base: (n % 2 == 1).then_some(1),
                    issuer_generation: (n % 3) as u32,
                    der_sha256: None,
                }));
            }
        }
        // The same issuance twice: one expiry entry.
        h.push(issued(7, 997));
        h.push(Event::AccountDeactivated(ca_core::event::AccountDeactivated { account_id: "a".into() }));
        h.push(Event::EabKeyRevoked(ca_core::event::EabKeyRevoked { kid: "k".into() }));
        h.push(ca(2));
        for generation in [1, 2] {
            h.push(Event::IssuingCaRotated(ca_core::event::IssuingCaRotated {
                generation,
                certificate_der: vec![0x30],
                key_ref: format!("issuing-{generation}.key"),
            }));
        }
        h
    }

    fn fold(store: &EventStore) -> Inventory {
        let mut inv = Inventory::default();
        for r in store.range(0) {
            let r = r.unwrap();
            inv.apply(r.seq, &r.event).unwrap();
        }
        inv
    }

    /// Missing, extra, altered and malformed entries in every tree, and a wrong meta.
    fn damage(t: &Trees) {
        let some_cert = t.certs.iter().nth(3).unwrap().unwrap().0;
        t.certs.remove(&some_cert).unwrap();
        let other_cert = t.certs.iter().nth(10).unwrap().unwrap().0;
        t.certs.insert(&other_cert, &[1, 2, 3][..]).unwrap();
        t.certs.insert(&[0xee, 0x01][..], &[0u8; 16][..]).unwrap();
        t.certs.insert(&[0x00][..], &[0u8; 16][..]).unwrap();
        let some_rev = t.revoked.iter().next().unwrap().unwrap().0;
        t.revoked.remove(&some_rev).unwrap();
        t.revoked.insert(&[0xff; 21][..], &[0u8; 25][..]).unwrap();
        let some_exp = t.expiry.iter().nth(5).unwrap().unwrap().0;
        t.expiry.remove(&some_exp).unwrap();
        t.expiry.insert(&[1, 2, 3][..], &[][..]).unwrap();
        t.expiry.insert(codec::expiry_key(77, &serial(999)), &[][..]).unwrap();
        t.expiry.insert(codec::expiry_key(1_000, &serial(5)), &[9][..]).unwrap();
        t.meta.insert(codec::META_LAST_CRL, &999u64.to_be_bytes()[..]).unwrap();
        let some_acme = t.acme.iter().next().unwrap().unwrap().0;
        t.acme.remove(&some_acme).unwrap();
        t.acme.insert(&b"zbogus"[..], &[][..]).unwrap();
    }

    fn store_with_history(dir: &tempfile::TempDir) -> EventStore {
        let store = EventStore::open(dir.path()).unwrap();
        for chunk in history().chunks(13) {
            store.append_blocking(chunk.to_vec()).unwrap();
        }
        store
    }

    #[test]
    fn rebuild_repairs_every_kind_of_damage_and_then_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_history(&dir);
        let expected = fold(&store);
        assert_eq!(store.inventory().unwrap(), expected);
        assert!(expected.expiry.len() > expected.certs.len(), "history re-issues serials");
        damage(store.trees());
        assert_ne!(store.inventory().ok(), Some(expected.clone()));

        assert_eq!(store.rebuild_projections().unwrap(), store.next_seq());
        assert_eq!(store.inventory().unwrap(), expected);
        assert_eq!(store.last_crl_number().unwrap(), expected.last_crl_number);

        let (_, report) = rebuild(store.trees(), store.next_seq(), PASS_RECORDS, 2).unwrap();
        assert_eq!(
            (report.certs, report.revoked, report.expiry, report.acme),
            Default::default(),
            "nothing left to fix"
        );
    }

    #[test]
    fn rebuild_counts_what_it_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_history(&dir);
        let t = store.trees();
        let some_cert = t.certs.iter().nth(3).unwrap().unwrap().0;
        t.certs.remove(&some_cert).unwrap();
        let other_cert = t.certs.iter().nth(10).unwrap().unwrap().0;
        t.certs.insert(&other_cert, &[1, 2, 3][..]).unwrap();
        t.certs.insert(&[0xee, 0x01][..], &[0u8; 16][..]).unwrap();
        t.expiry.insert(&[1, 2, 3][..], &[][..]).unwrap();
        let (_, report) = rebuild(t, store.next_seq(), PASS_RECORDS, 2).unwrap();
        assert_eq!(report.certs, Diff { inserted: 1, updated: 1, removed: 1 });
        assert_eq!(report.expiry, Diff { inserted: 0, updated: 0, removed: 1 });
        assert_eq!(report.revoked, Diff::default());
    }

    #[test]
    fn any_number_of_passes_and_threads_gives_the_fold() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_history(&dir);
        let expected = fold(&store);
        let end = store.next_seq();
        for (pass_records, threads) in [(1, 1), (7, 3), (40, 2), (end, 8), (2, 500)] {
            damage(store.trees());
            let (st, report) = rebuild(store.trees(), end, pass_records, threads).unwrap();
            assert_eq!(report.passes, end.div_ceil(pass_records));
            assert_eq!(st.through, Some(end - 1));
            assert_eq!(
                store.inventory().unwrap(),
                expected,
                "{pass_records} records per pass, {threads} threads"
            );
        }
    }

    #[test]
    fn an_interrupted_rebuild_is_finished_by_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_history(&dir);
        let expected = fold(&store);
        let n = store.next_seq();
        // What a rebuild writes before touching any tree, then a half-done repair.
        ProjState::default().store(&store.trees().meta).unwrap();
        damage(store.trees());
        store.flush().unwrap();
        drop(store);

        let store = EventStore::open(dir.path()).unwrap();
        assert_eq!(store.metrics().replayed_at_open, n);
        assert_eq!(store.inventory().unwrap(), expected);
        assert_eq!(store.ca().unwrap(), expected.ca);
    }

    #[test]
    fn rebuilding_an_empty_log_empties_the_projections() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(dir.path()).unwrap();
        damage_empty(store.trees());
        assert_eq!(store.rebuild_projections().unwrap(), 0);
        assert_eq!(store.inventory().unwrap(), Inventory::default());
    }

    fn damage_empty(t: &Trees) {
        t.certs.insert(&[1][..], &[0u8; 16][..]).unwrap();
        t.revoked.insert(&[1][..], &[0u8; 25][..]).unwrap();
        t.expiry.insert(codec::expiry_key(1, &serial(1)), &[][..]).unwrap();
        t.meta.insert(codec::META_LAST_CRL, &5u64.to_be_bytes()[..]).unwrap();
    }
}

//! `EventStore::watch`: history from the log, then the live broadcast, with the log as the
//! fallback whenever the live channel cannot prove continuity.
//!
//! Correctness rests on one ordering: the writer makes a batch visible in the committed
//! bound *before* broadcasting it, and the watcher subscribes *before* reading the bound.
//! So every record is either below the bound the watcher reads (it is in the log) or
//! arrives on the channel. Duplicates (seq below the next expected) are skipped; a jump
//! (seq above it, or a `Lagged` notice) sends the watcher back to the log.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::store::Shared;
use crate::{StoreError, StoredRecord};

/// Records read from the log per blocking read.
const HISTORY_CHUNK: u64 = 512;

type Item = Result<Arc<StoredRecord>, StoreError>;

enum Mode {
    History,
    Live,
    Done,
}

struct Watch {
    shared: Arc<Shared>,
    rx: broadcast::Receiver<Arc<StoredRecord>>,
    /// The seq the consumer gets next.
    next: u64,
    buf: VecDeque<Arc<StoredRecord>>,
    mode: Mode,
}

pub(crate) fn stream(
    shared: Arc<Shared>,
    rx: broadcast::Receiver<Arc<StoredRecord>>,
    from: u64,
) -> impl futures::Stream<Item = Item> + Send + 'static {
    let w = Watch { shared, rx, next: from, buf: VecDeque::new(), mode: Mode::History };
    futures::stream::unfold(w, |mut w| async move {
        let item = w.next_item().await?;
        Some((item, w))
    })
}

impl Watch {
    async fn next_item(&mut self) -> Option<Item> {
        loop {
            if let Some(r) = self.buf.pop_front() {
                self.next = r.seq + 1;
                return Some(Ok(r));
            }
            match self.mode {
                Mode::Done => return None,
                Mode::History => {
                    if self.next >= self.shared.committed().next_seq {
                        self.mode = Mode::Live;
                        continue;
                    }
                    let (shared, from) = (self.shared.clone(), self.next);
                    match tokio::task::spawn_blocking(move || shared.read_chunk(from, HISTORY_CHUNK)).await {
                        Ok(Ok(chunk)) if chunk.first().is_some_and(|r| r.seq == from) => {
                            self.buf.extend(chunk)
                        }
                        Ok(Ok(_)) => {
                            return self.fail(StoreError::Corrupt {
                                seq: from,
                                detail: "committed record missing from the log".into(),
                            });
                        }
                        Ok(Err(e)) => return self.fail(e),
                        // The runtime is shutting down.
                        Err(_) => return self.fail(StoreError::Closed),
                    }
                }
                Mode::Live => match self.rx.recv().await {
                    Ok(r) if r.seq < self.next => {}
                    Ok(r) if r.seq == self.next => {
                        self.next += 1;
                        return Some(Ok(r));
                    }
                    // A jump or an overrun: the log has everything the channel dropped.
                    Ok(_) | Err(RecvError::Lagged(_)) => self.mode = Mode::History,
                    // The writer has exited after broadcasting everything it committed.
                    Err(RecvError::Closed) => return self.fail(StoreError::Closed),
                },
            }
        }
    }

    /// Yield `e` and end the stream.
    fn fail(&mut self, e: StoreError) -> Option<Item> {
        self.mode = Mode::Done;
        Some(Err(e))
    }
}

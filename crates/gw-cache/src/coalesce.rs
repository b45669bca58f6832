//! Request coalescing: one upstream request per key at a time; other requests for the key
//! wait for its response (a bounded wait) and receive it as it streams, from a shared, growing
//! list of chunks with a change notification, without waiting for the whole body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::sync::watch;

use crate::cc::ResponseCc;
use crate::vary::Secondary;

/// The head shared with waiters: the response as it will be stored.
#[derive(Debug, Clone)]
pub(crate) struct SharedHead {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) secondary: Secondary,
    pub(crate) cc: ResponseCc,
}

#[derive(Debug, Default)]
struct State {
    head: Option<SharedHead>,
    chunks: Vec<Bytes>,
    /// `Some(true)`: complete; `Some(false)`: aborted.
    end: Option<bool>,
    /// The response cannot be shared: waiters go upstream.
    pass: bool,
    /// Chunks are still being kept.
    buffering: bool,
}

/// One response being fetched, shared by its leader and waiters.
#[derive(Debug)]
pub(crate) struct Flight {
    state: Mutex<State>,
    tx: watch::Sender<u64>,
}

impl Flight {
    pub(crate) fn new() -> Arc<Flight> {
        Arc::new(Flight { state: Mutex::new(State { buffering: true, ..State::default() }), tx: watch::Sender::new(0) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written (plain field
        // stores), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn set_head(&self, head: SharedHead) {
        self.lock().head = Some(head);
        self.notify();
    }

    pub(crate) fn pass(&self) {
        {
            let mut s = self.lock();
            s.pass = true;
            s.chunks.clear();
            s.buffering = false;
        }
        self.notify();
    }

    /// Append a chunk (dropped when no longer buffering).
    pub(crate) fn push(&self, c: Bytes) {
        {
            let mut s = self.lock();
            if !s.buffering {
                return;
            }
            s.chunks.push(c);
        }
        self.notify();
    }

    /// Stop keeping chunks when nobody but the leader holds this flight (the response is too
    /// large to store); waiters already streaming keep receiving it.
    pub(crate) fn release_if_alone(self: &Arc<Self>) {
        if Arc::strong_count(self) <= 1 {
            let mut s = self.lock();
            s.buffering = false;
            s.chunks = Vec::new();
        }
    }

    pub(crate) fn end(&self, ok: bool) {
        {
            let mut s = self.lock();
            if s.end.is_none() {
                s.end = Some(ok);
            }
        }
        self.notify();
    }

    pub(crate) fn chunks(&self) -> Vec<Bytes> {
        self.lock().chunks.clone()
    }

    #[cfg(test)]
    pub(crate) fn is_buffering(&self) -> bool {
        self.lock().buffering
    }
}

/// The in-flight map: which keys have a request upstream.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<u128, Arc<Flight>>>,
}

/// The result of joining the in-flight map.
pub(crate) enum Joined {
    /// This request leads: it goes upstream and fills.
    Lead(Arc<Flight>),
    /// Another request leads: wait for it.
    Wait(Arc<Flight>),
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<u128, Arc<Flight>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn join(&self, key: u128) -> Joined {
        let mut m = self.lock();
        if let Some(f) = m.get(&key) {
            return Joined::Wait(f.clone());
        }
        let f = Flight::new();
        m.insert(key, f.clone());
        Joined::Lead(f)
    }

    /// Whether a request for `key` is in flight.
    #[cfg(test)]
    pub(crate) fn contains(&self, key: u128) -> bool {
        self.lock().contains_key(&key)
    }

    /// The flight of `key`, if any (to wait for it without leading).
    pub(crate) fn get(&self, key: u128) -> Option<Arc<Flight>> {
        self.lock().get(&key).cloned()
    }

    /// Lead only if nobody is in flight (a background refresh).
    pub(crate) fn try_lead(&self, key: u128) -> Option<Arc<Flight>> {
        match self.join(key) {
            Joined::Lead(f) => Some(f),
            Joined::Wait(_) => None,
        }
    }

    pub(crate) fn remove(&self, key: u128, f: &Arc<Flight>) {
        let mut m = self.lock();
        if m.get(&key).is_some_and(|g| Arc::ptr_eq(g, f)) {
            m.remove(&key);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The leader's upstream exchange ended before the body was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the response being shared was aborted upstream")]
pub struct Aborted;

/// A body shared from another request's upstream response, chunk by chunk as it arrives.
#[derive(Debug)]
pub struct SharedBody {
    flight: Arc<Flight>,
    rx: watch::Receiver<u64>,
    idx: usize,
}

impl SharedBody {
    /// The next chunk, `None` at the end, `Err(Aborted)` when the upstream exchange failed.
    pub async fn next(&mut self) -> Option<Result<Bytes, Aborted>> {
        loop {
            self.rx.borrow_and_update();
            {
                let s = self.flight.lock();
                if let Some(c) = s.chunks.get(self.idx) {
                    self.idx += 1;
                    return Some(Ok(c.clone()));
                }
                match s.end {
                    Some(true) => return None,
                    Some(false) => return Some(Err(Aborted)),
                    None if !s.buffering => return Some(Err(Aborted)),
                    None => {}
                }
            }
            if self.rx.changed().await.is_err() {
                return Some(Err(Aborted));
            }
        }
    }
}

/// What a waiter got.
pub(crate) enum Waited {
    /// The shared head and its body.
    Head(Box<(SharedHead, SharedBody)>),
    /// Not shareable, aborted before the head, or the wait timed out.
    GoUpstream,
}

/// Wait for the head of `flight` at most `wait`.
pub(crate) async fn wait_head(flight: Arc<Flight>, wait: std::time::Duration) -> Waited {
    let mut rx = flight.tx.subscribe();
    let fut = async {
        loop {
            rx.borrow_and_update();
            {
                let s = flight.lock();
                if s.pass || s.end == Some(false) {
                    return None;
                }
                if let Some(h) = &s.head {
                    return Some(h.clone());
                }
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    };
    match tokio::time::timeout(wait, fut).await {
        Ok(Some(h)) => {
            Waited::Head(Box::new((h, SharedBody { flight: flight.clone(), rx: flight.tx.subscribe(), idx: 0 })))
        }
        _ => Waited::GoUpstream,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn head() -> SharedHead {
        SharedHead {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            secondary: Secondary::default(),
            cc: ResponseCc::default(),
        }
    }

    #[tokio::test]
    async fn waiters_stream_chunks_as_they_arrive() {
        let f = Flight::new();
        let w = tokio::spawn(wait_head(f.clone(), Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        f.set_head(head());
        let Ok(Waited::Head(b)) = w.await else { panic!("head expected") };
        let (_, mut body) = *b;
        f.push(Bytes::from_static(b"a"));
        assert_eq!(body.next().await, Some(Ok(Bytes::from_static(b"a"))));
        // The next chunk is not there yet: the reader waits for it.
        let reader = tokio::spawn(async move {
            let c = body.next().await;
            (c, body)
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!reader.is_finished(), "waits for the next chunk");
        f.push(Bytes::from_static(b"b"));
        let (c, mut body) = reader.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, Some(Ok(Bytes::from_static(b"b"))));
        f.end(true);
        assert_eq!(body.next().await, None);
    }

    #[tokio::test]
    async fn pass_abort_and_timeout_send_waiters_upstream() {
        let f = Flight::new();
        let w = tokio::spawn(wait_head(f.clone(), Duration::from_secs(5)));
        f.pass();
        assert!(matches!(w.await, Ok(Waited::GoUpstream)));
        let f = Flight::new();
        let t = std::time::Instant::now();
        assert!(matches!(wait_head(f.clone(), Duration::from_millis(50)).await, Waited::GoUpstream));
        assert!(t.elapsed() < Duration::from_secs(2));
        // Abort after the head: readers see the error.
        f.set_head(head());
        let Waited::Head(b) = wait_head(f.clone(), Duration::from_secs(1)).await else { panic!("head") };
        let (_, mut body) = *b;
        f.end(false);
        assert_eq!(body.next().await, Some(Err(Aborted)));
    }

    #[test]
    fn flights_map() {
        let m = Flights::default();
        let Joined::Lead(f) = m.join(7) else { panic!("first leads") };
        assert!(matches!(m.join(7), Joined::Wait(_)));
        assert!(m.try_lead(7).is_none());
        m.remove(7, &Flight::new());
        assert!(m.contains(7), "only the same flight is removed");
        m.remove(7, &f);
        assert_eq!(m.len(), 0);
        f.release_if_alone();
        assert!(!f.is_buffering());
    }
}
